"""`blindspots paper`: the LST paper's claims checked on real normal and adversarially trained models (MNIST CNN and
ViT, ImageNet), each decided by a rule fixed before the numbers. Do LST's outputs look like their targets (SSIM),
do straight paths from the source stay confident (star-like level sets), and do adversarially trained models keep
more of the triangle hull between two outputs confident (at the paper's settings and at matched distance)?

    from experiments.claims import ClaimsConfig, run_claims
    result = run_claims(ClaimsConfig(groups=("mnist",), sources=100), "blindspots-out/paper")
    print(result.claims[0]["overall"])

    blindspots paper --groups mnist --sources 100 --iterations 400
    blindspots paper --results-to docs/results/claims.json     # the file docs/studies.md's claims block is made from

Rooms: `config` (`ClaimsConfig`, checked when made), `groups` (`Group`, `GROUPS`: the models and their image sets),
`study` (`run_claims`: the protocol per group -> `ClaimsResult`), `rules` (each claim's rule and its constants, the
validity check, the verdicts), `matched_distance` (claim 3 with both models' outputs taken at the same distance to
their targets), `report` (the claims table, the findings, the docs' block, the figure and report.html), `cli` (the
command line). The protocol and Table 1/2 come from `experiments.tables`.
"""

from .cli import add_arguments, config_from_args, run
from .config import ClaimsConfig
from .groups import GROUPS, Group
from .matched_distance import matched_hull_records
from .report import claims_table, findings, render_markdown, triangle_table, write_report
from .rules import CONSTANTS, RULES, TITLES, RunInvalid, evaluate_claims
from .study import ClaimsResult, run_claims

HELP = "the LST paper's claims on real normal and adversarially trained models (MNIST CNN/ViT, ImageNet)"

__all__ = ["HELP", "ClaimsConfig", "ClaimsResult", "run_claims", "Group", "GROUPS", "add_arguments",
           "config_from_args", "run", "main", "RULES", "TITLES", "CONSTANTS", "RunInvalid", "evaluate_claims",
           "findings", "render_markdown", "claims_table", "triangle_table", "write_report", "matched_hull_records"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("paper", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
