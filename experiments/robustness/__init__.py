"""`blindspots robust`: how robust is a model, really? Robust accuracy under the AutoAttack ensemble (APGD-CE,
APGD-T, FAB-T, Square; a sample counts robust only when no attack fools it, the per-sample worst case) with
gradient-masking checks beside it (eps sweep, black box vs white box, more steps and restarts, transfer from the
normal twin), so that a figure made by masked gradients is flagged rather than reported; and the MNIST zoo's
robustness table (every zoo model, l-inf eps 0.3 and l2 eps 2.0). Callable from Python:

    from experiments.robustness import RobustConfig, run_robust
    result = run_robust(RobustConfig(model="mnist-cnn-at", limit=100), "blindspots-out/robust", threads=1)
    print(result.robust_accuracy, result.record["robust_ci95"], result.flagged)

and on the command line:

    blindspots robust --model mnist-cnn-at                 # the zoo's 1,000 held-out digits, l-inf eps 0.3
    blindspots robust --model imagenet-lite0 --images DIR --eps 0.0157   # labels: the model's predictions
    blindspots robust --zoo --threads 1          # the zoo table -> blindspots/zoo/weights/mnist_robustness.json

Rooms: `config` (`RobustConfig`, `ZooRobustConfig`: the settings, checked when made), `study` (`run_robust`,
`run_zoo_robustness`, `evaluate_model`: one record per model and threat model), `report` (the printed record, the
docs' table of the zoo), `cli` (the command line).
"""

from .cli import add_arguments, config_from_args, run
from .config import DEFAULT_EPS, DEFAULT_MODEL, ZOO_THREATS, EnsembleSettings, RobustConfig, ZooRobustConfig, twin_of
from .report import format_record, format_result, render_zoo_robustness
from .study import (ZOO_COMMAND, ZOO_RESULTS, RobustResult, ZooRobustResult, evaluate_model, run_robust,
                    run_zoo_robustness, weights_sha256)

HELP = "robust accuracy under the AutoAttack ensemble, with gradient-masking checks (--zoo: the MNIST zoo's table)"

__all__ = ["HELP", "RobustConfig", "ZooRobustConfig", "EnsembleSettings", "RobustResult", "ZooRobustResult",
           "run_robust", "run_zoo_robustness", "evaluate_model", "format_record", "format_result",
           "render_zoo_robustness", "weights_sha256", "twin_of", "ZOO_THREATS", "ZOO_RESULTS", "ZOO_COMMAND",
           "DEFAULT_EPS", "DEFAULT_MODEL", "add_arguments", "config_from_args", "run", "main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("robust", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
