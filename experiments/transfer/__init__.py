"""`blindspots transfer`: the clump paper's own claims, checked (Popp et al. 2024). Do galaxy-pretrained backbones
detect clumps better than ImageNet ones, with less data, and do they reach completeness and purity >= 0.8? And does
the backbone that detects better also leave its detector more blind spots (LST against the detectors)?

    from experiments.transfer import TransferConfig, run_transfer
    result = run_transfer(TransferConfig(seeds=(0, 1, 2)), "blindspots-out/transfer", threads=1)
    print(result.verdicts)

Cells: backbone (`imagenet`, `galaxy-proxy`: the Zoobot study's encoder file, a proxy for Zoobot, not Zoobot;
`random`; `zoobot` with a local file) x body (`frozen`, `trainable`: the last k stages) x training-set size x seed,
one Faster R-CNN each, trained for the same number of steps; the score threshold is chosen on validation images
per detector; figures on one simulated test set and on real cutouts with injected clumps. `rules` holds the claims
and their rules (fixed before the numbers; seeds as a random effect, test images resampled), `analysis` the
estimates and verdicts, `lst` the bridge to the blind spots, `report` the page and the docs' blocks.

    blindspots transfer --threads 1                         # the offline default (2 CPU cores: see docs/studies.md)
    blindspots transfer --paper --imagenet-weights resnet50-imagenet.pth --zoobot-weights zoobot-resnet50.pth
"""

from .cli import add_arguments, run
from .config import BACKBONES, BODIES, TransferConfig
from .study import TransferResult, run_transfer

HELP = "the clump paper's claims: galaxy vs ImageNet backbones for clump detection, learning curves, verdicts, LST"

__all__ = ["HELP", "TransferConfig", "TransferResult", "run_transfer", "BACKBONES", "BODIES", "add_arguments", "run",
           "main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("transfer", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
