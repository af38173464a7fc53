"""`blindspots attack`: per image, the smallest flipping budget (over-sensitivity) beside Level Set Traversal towards
other-class images (under-sensitivity). Where is a model doubly brittle: flipped by tiny perturbations, yet blind to
large changes towards another class's image? `--attack NAME` runs any registered attack (`attacks.registry`): a
minimal-budget one searches the budget, a fixed-budget one (`--eps`) tells per image whether eps flips the model.

    from experiments.sensitivity import SensitivityConfig, run_sensitivity
    result = run_sensitivity(SensitivityConfig(norm="l2", rounds=2), "blindspots-out/attack-l2")
    print(result.rows[0]["min_eps"], result.rows[0]["lst_rms_l2"])

On tensors in memory: `sensitivity_profile(model, images)` (also `experiments.sensitivity_profile`). Rooms:
`config` (`SensitivityConfig`), `study` (`sensitivity_profile`, `SensitivityProfile`, `run_sensitivity`,
`SensitivityResult`), `report` (`plot_sensitivity`, the printed table), `cli` (the command line).

    blindspots attack                                  # the demo photos on the offline ImageNet model
    blindspots attack --images DIR --norm l2 --rounds 2 --out results/attack
    blindspots attack --attack apgd --eps 0.004 --rounds 0
"""

from .cli import add_arguments, config_from_args, run
from .config import SensitivityConfig
from .report import plot_sensitivity, text_table
from .study import SensitivityProfile, SensitivityResult, run_sensitivity, sensitivity_profile

HELP = "over- vs under-sensitivity: minimal flipping budget (or any registered attack) beside LST, per image"

__all__ = ["HELP", "SensitivityConfig", "SensitivityResult", "run_sensitivity", "SensitivityProfile",
           "sensitivity_profile", "plot_sensitivity", "text_table", "add_arguments", "config_from_args", "run",
           "main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("attack", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
