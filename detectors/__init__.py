"""detectors: Giant Star-forming Clump detection (Faster R-CNN) with swappable Zoobot / ImageNet backbones."""
