"""`blindspots paper`: the LST paper's claims checked on real normal and adversarially trained models (MNIST CNN and
ViT, ImageNet), each decided by a rule fixed before the numbers.

Rooms: `study` (`run_claims`: the protocol per group, the report, the command line), `rules` (each claim's rule and
its constants, the validity check, the findings and the docs' block), `matched_distance` (claim 3 with both models'
outputs taken at the same distance to their targets). The protocol and Table 1/2 come from `experiments.tables`.
"""

from .matched_distance import matched_hull_records
from .rules import CONSTANTS, RULES, TITLES, RunInvalid, evaluate_claims, findings, render_markdown
from .study import HELP, Group, add_arguments, main, run, run_claims

__all__ = ["HELP", "Group", "run_claims", "add_arguments", "run", "main", "RULES", "TITLES", "CONSTANTS",
           "RunInvalid", "evaluate_claims", "findings", "render_markdown", "matched_hull_records"]
