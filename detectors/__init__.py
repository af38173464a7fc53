"""detectors: Giant Star-forming Clump detection (Faster R-CNN) with swappable Zoobot / ImageNet backbones."""

# model side: backbones, Faster R-CNN, training, classifier wrappers
from .backbones import backbone_spec, build_backbone
from .classifier import as_classifier, clumpy_labels, fit_head
from .frcnn import PRESETS, ClumpDetector, DetectorPreset, build_detector, detect
from .train import TrainResult, load_checkpoint, train

# data side: simulator and injection, box tables, figures of merit
from .data import collate, load_cutouts, read_boxes_csv, read_coco, write_boxes_csv, write_coco
from .evaluate import (STRICT, MatchRule, ap50, average_precision, completeness_vs_flux, draw_detections,
                       evaluate_detections, loose_rule, score_sweep, select_threshold)
from .inject import inject_batch, inject_clumps
from .simulate import SimConfig, SimulatedBatch, SimulatedClumps  # not `simulate`:
# re-exporting the function would shadow the submodule `detectors.simulate`

__all__ = [
    "backbone_spec",
    "build_backbone",
    "as_classifier",
    "clumpy_labels",
    "fit_head",
    "PRESETS",
    "ClumpDetector",
    "DetectorPreset",
    "build_detector",
    "detect",
    "TrainResult",
    "load_checkpoint",
    "train",
    "collate",
    "load_cutouts",
    "read_boxes_csv",
    "read_coco",
    "write_boxes_csv",
    "write_coco",
    "STRICT",
    "MatchRule",
    "ap50",
    "average_precision",
    "completeness_vs_flux",
    "draw_detections",
    "evaluate_detections",
    "loose_rule",
    "score_sweep",
    "select_threshold",
    "inject_batch",
    "inject_clumps",
    "SimConfig",
    "SimulatedBatch",
    "SimulatedClumps",
]
