"""`blindspots zoobot`: is a galaxy-domain backbone (Zoobot) more or less under-sensitive than an ImageNet one of
the same architecture? A paired design with a verdict rule fixed before the numbers.

Backbones (one architecture, `--arch`): `imagenet` (ImageNet weights; efficientnet_lite0's are offline), `zoobot`
(a local `hf_hub:mwalmsley/zoobot-encoder-<arch>` file, [0, 1] inputs without mean/std), `galaxy-proxy` (pretrained
here on simulated galaxy morphology, same convention: a proxy for Zoobot, not Zoobot; its quality is measured by a
linear probe), `random`. Each is fine-tuned clumpy / not-clumpy on simulated galaxies at every `--seeds` seed; then
LST walks the same pairs (simulated held-out, and real cutouts split into cross-class and within-class by the
predicted classes) from the same start noise for every backbone, and each pair gives d = log(RMS-l2 left by the
backbone / by ImageNet). See `paired.RULE` for the verdict rule.

    blindspots zoobot                                      # offline default (efficientnet_lite0, 2 seeds)
    blindspots zoobot --model zoobot:convnext_nano --weights zoobot-convnext_nano.safetensors \\
        --imagenet-weights convnext_nano-imagenet.safetensors --seeds 0,1,2,3,4

Rooms: `data` (simulated sets, real cutouts, pairs), `backbones` (starts, training, probe), `proxy` (the proxy
encoder and its quality), `paired` (the paired statistics and the verdict rule), `study` (the run), `report`.
"""

from .backbones import BACKBONES, build_backbone
from .paired import RULE, Comparison, compare, verdict
from .study import add_arguments, analyse, measure, run

HELP = "Zoobot vs ImageNet: paired LST under-sensitivity of galaxy classifiers, with a verdict rule and intervals"

__all__ = ["HELP", "BACKBONES", "RULE", "Comparison", "build_backbone", "compare", "verdict", "add_arguments", "run",
           "analyse", "measure", "main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("zoobot", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
