"""`blindspots tables`: the LST paper's Table 1 (distances, SSIM, confidence) and Table 2 (triangle hulls) on any
models and image pool, resumable and shardable; the protocol the claims study (`experiments.claims`) runs too.

Rooms: `study` (the fields and metrics of the tables, `run_study` / `run_tables`, the report, the command line).
"""

from .study import (HELP, HULL_DELTAS, TABLE1_FIELDS, TABLE2_FIELDS, add_arguments, build_tables, hull_deltas,
                    hull_metric, lpips_metric, main, open_unit_float, run, run_study, run_tables, table2_fields,
                    write_report)

__all__ = ["HELP", "TABLE1_FIELDS", "TABLE2_FIELDS", "HULL_DELTAS", "hull_deltas", "table2_fields", "hull_metric",
           "lpips_metric", "run_study", "build_tables", "write_report", "run_tables", "open_unit_float",
           "add_arguments", "run", "main"]
