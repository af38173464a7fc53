"""`blindspots tables`: the LST paper's Table 1 (distances, SSIM, confidence) and Table 2 (triangle hulls) on any
models and image pool, resumable and shardable; the protocol the claims study (`experiments.claims`) runs too.

Rooms: `metrics` (the tables' columns and the metrics that fill them), `study` (`run_study`, `run_tables`), `report`
(`report.html`), `cli` (the command line).
"""

from .cli import HELP, add_arguments, main, open_unit_float, run
from .metrics import HULL_DELTAS, TABLE1_FIELDS, TABLE2_FIELDS, hull_deltas, hull_metric, lpips_metric, table2_fields
from .report import write_report
from .study import build_tables, run_study, run_tables

__all__ = ["HELP", "TABLE1_FIELDS", "TABLE2_FIELDS", "HULL_DELTAS", "hull_deltas", "table2_fields", "hull_metric",
           "lpips_metric", "run_study", "build_tables", "write_report", "run_tables", "open_unit_float",
           "add_arguments", "run", "main"]
