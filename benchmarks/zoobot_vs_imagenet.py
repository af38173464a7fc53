"""Zoobot vs ImageNet under-sensitivity (`blindspots zoobot`): a thin script over `experiments.zoobot`."""

from experiments.zoobot import main

if __name__ == "__main__":
    raise SystemExit(main())
