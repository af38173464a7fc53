"""Machinery shared by the studies (`experiments`): the paper's pair protocol on top of the LST engine, sharding
across processes, tables and a static HTML report. Results live in a `blindspots.store.RunStore`.

A study is a set of LST *pairs* (model, round, source, target), run in deterministic *batches* of whole sources (all
rounds of a group of sources), so that per-source statistics (hull, attacks) are computed where that source's LST
outputs already are. Each pair gets a seed derived from (base seed, round, source), so its result does not depend on
which process or batch ran it. Results are appended record by record (one JSON line each, with the config and seed);
the LST outputs are saved per batch (safetensors) so per-source statistics can be recomputed on resume without
rerunning LST. A rerun into the same folder skips finished work; a batch with anything missing is rerun whole, so a
killed-and-resumed run ends with exactly the records of an uninterrupted one.

Rooms: `protocol` (pool, pairs, seeds, batches), `distributed` (torchrun), `tables` (summaries, CSV, JSON),
`html_report` (the report page), `measured` (a benchmark run's results file, `--results-to`).
"""

from .distributed import (DistInfo, barrier, broadcast_object, dedup_sorted, finish_distributed, gather_records,
                          init_distributed, open_run_store, study_device)
from .html_report import figure_to_png, write_html_report
from .protocol import (PairMetric, ProtocolConfig, SourceMetric, pair_key, pair_seed, plan_batches, run_pair_protocol,
                       select_pool, slug, source_key)
from .tables import display_rows, format_mean_std, markdown_table, spreadsheet_safe, summarize, write_csv, write_json

__all__ = [
    "DistInfo", "init_distributed", "finish_distributed", "barrier", "broadcast_object", "gather_records",
    "open_run_store", "dedup_sorted", "study_device",
    "ProtocolConfig", "PairMetric", "SourceMetric", "pair_seed", "pair_key", "source_key", "slug", "select_pool",
    "plan_batches", "run_pair_protocol",
    "summarize", "format_mean_std", "display_rows", "markdown_table", "spreadsheet_safe", "write_csv", "write_json",
    "figure_to_png", "write_html_report",
]
