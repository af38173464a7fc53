"""`blindspots tables`: the LST paper's Table 1 (distances, SSIM, confidence) and Table 2 (triangle hulls) on any
models and image pool, resumable and shardable; the protocol (`run_study`) is the one the claims study
(`experiments.claims`) runs too. How far does Level Set Traversal carry a correctly classified source towards an
image of another class while the model keeps its confidence, and how wide is the region between its outputs?

    from experiments.tables import TablesConfig, run_tables
    result = run_tables(TablesConfig(models="imagenet-lite0", rounds=2), "blindspots-out/tables")
    print(result.table1)

Protocol (Balasubramanian et al. 2023): the pool is the images every model classifies correctly (confidence >
`min_confidence`, strict; 0.6 in the paper); `rounds` derangements, each sending every source to a target of
another class; LST with the paper's settings (`LSTConfig.paper()`). Rooms: `config` (`TablesConfig`), `metrics`
(the tables' columns and the metrics that fill them), `study` (`run_study`, `build_tables`, `run_tables`,
`TablesResult`), `report` (`report.html`), `cli` (the command line).

    blindspots tables --iterations 40 --out blindspots-out/quick  # a quick look (not the paper's T)
    blindspots tables --model timm:resnet50,timm:deit_small_patch16_224 \\
        --weights resnet50.safetensors,deit_s.safetensors --images val_pool/ --labels val_pool/labels.csv \\
        --min-confidence 0.6
"""

from .cli import add_arguments, config_from_args, open_unit_float, run
from .config import TablesConfig
from .metrics import HULL_DELTAS, TABLE1_FIELDS, TABLE2_FIELDS, hull_deltas, hull_metric, lpips_metric, table2_fields
from .report import write_report
from .study import TablesResult, build_tables, run_study, run_tables

HELP = "the LST paper's Table 1 (distances, SSIM, confidence) and Table 2 (triangle hulls) for any models"

__all__ = ["HELP", "TablesConfig", "TablesResult", "TABLE1_FIELDS", "TABLE2_FIELDS", "HULL_DELTAS", "hull_deltas",
           "table2_fields", "hull_metric", "lpips_metric", "run_study", "build_tables", "write_report", "run_tables",
           "open_unit_float", "add_arguments", "config_from_args", "run", "main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    from blindspots.cli import run_command

    return run_command("tables", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))
