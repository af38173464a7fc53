"""`blindspots robust`: robust accuracy under the AutoAttack ensemble with gradient-masking checks beside it, per
(model, threat model), and the MNIST zoo's robustness table.

Rooms: `study` (`evaluate_model`, `zoo_robustness`, the record's text and the docs' table), `cli` (the command line).
"""

from .cli import HELP, add_arguments, run
from .study import (ZOO_COMMAND, ZOO_RESULTS, ZOO_THREATS, evaluate_model, format_record, render_zoo_robustness, twin_of,
                    weights_sha256, zoo_robustness)

__all__ = ["HELP", "add_arguments", "run", "ZOO_THREATS", "ZOO_RESULTS", "ZOO_COMMAND", "evaluate_model", "format_record",
           "zoo_robustness", "render_zoo_robustness", "weights_sha256", "twin_of"]
