"""Zoobot vs ImageNet under-sensitivity: a thin script over `experiments.zoobot_study`."""

from experiments.zoobot_study import main

if __name__ == "__main__":
    raise SystemExit(main())
