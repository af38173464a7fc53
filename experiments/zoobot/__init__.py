"""`blindspots zoobot`: is a galaxy-domain backbone (Zoobot) more or less under-sensitive than an ImageNet one of
the same architecture? A paired design with a verdict rule fixed before the numbers, callable from Python:

    from experiments.zoobot import ZoobotConfig, run_zoobot
    result = run_zoobot(ZoobotConfig(seeds=(0, 1, 2)), "blindspots-out/zoobot", threads=2)
    print(result.verdicts["galaxy-proxy"].reason)

Backbones (one architecture, `arch`): `imagenet` (ImageNet weights; efficientnet_lite0's are offline), `zoobot`
(a local `hf_hub:mwalmsley/zoobot-encoder-<arch>` file, [0, 1] inputs without mean/std), `galaxy-proxy` (pretrained
here on simulated galaxy morphology, same convention: a proxy for Zoobot, not Zoobot; its quality is measured by a
linear probe), `random`. Each is fine-tuned clumpy / not-clumpy on simulated galaxies at every seed of `seeds`;
then LST walks the same pairs from the same start noise for every backbone: simulated held-out galaxies, real hosts
as they are and with simulated clumps injected (labels known by construction), and real cutouts paired by predicted
class (reported only). Each pair gives d = log(RMS-l2 left by the backbone / by ImageNet); see `paired.RULE`.

    blindspots zoobot                                      # offline default (efficientnet_lite0, 3 seeds, 96 images)
    blindspots zoobot --model zoobot:convnext_nano --weights zoobot-convnext_nano.safetensors \\
        --imagenet-weights convnext_nano-imagenet.safetensors --seeds 0,1,2,3,4

Rooms: `config` (the settings), `data` (simulated sets, real cutouts, pairs), `real` (injected real hosts),
`backbones` (starts, training, probe), `proxy` (the proxy encoder), `paired` (statistics and the verdict rule on
`blindspots.verdicts`), `study` (`run_zoobot`), `report`, `cli` (the command line).
"""

from .backbones import BACKBONES, build_backbone
from .cli import add_arguments, run
from .config import LST_SETTINGS, ZoobotConfig
from .paired import RULE, Comparison, compare, verdict
from .study import ZoobotResult, analyse, measure, run_zoobot

HELP = "Zoobot vs ImageNet: paired LST under-sensitivity of galaxy classifiers, with a verdict rule and intervals"

__all__ = ["HELP", "ZoobotConfig", "LST_SETTINGS", "ZoobotResult", "run_zoobot", "BACKBONES", "RULE", "Comparison",
           "build_backbone", "compare", "verdict", "add_arguments", "run", "analyse", "measure", "main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("zoobot", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
