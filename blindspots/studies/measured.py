"""Results files of measurements: `--results-to FILE` on a benchmark keeps its run's figures together with the command
that measured them, when, and on what machine, so that the docs' tables of measured figures are generated from the
file (`experiments.generated_docs`) instead of being typed.

A results file holds every run recorded into it::

    {"runs": [{"benchmark": "speed_geometry", "command": "python -m benchmarks.speed_geometry --threads 1",
               "measured": "2026-12-08 00:10 UTC", "machine": {...}, "met": false,
               "summary": "1.32x fewer evaluations, 1.23x faster: ...", "figures": {...}}, ...]}

A run replaces the earlier run of the same command (the latest measurement of a command is the one the docs show);
runs of other commands stay. `summary` is the one-line result the benchmark prints, made by its own code from
`figures`. A run copied from figures measured before this file existed says so in `transcribed`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError
from ..store import atomic_write_text, jsonable

__all__ = ["add_results_option", "record_run", "read_runs", "machine"]


def add_results_option(parser: argparse.ArgumentParser) -> None:
    """The one spelling of `--results-to FILE` for every benchmark."""
    parser.add_argument("--results-to", type=Path, default=None, metavar="FILE",
                        help="also record this run's figures in the JSON results FILE (the docs' tables are generated "
                             "from docs/results/benchmarks.json: python -m experiments.generated_docs)")


def machine() -> dict[str, Any]:
    """What a timing depends on: cores, torch threads, load average, torch version, accelerator."""
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": round(os.getloadavg()[0], 1), "torch": torch.__version__.split("+")[0],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def read_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs of a results file ([] when it does not exist yet); an unreadable file is one line naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        runs = data["runs"]
        if not isinstance(runs, list) or not all(isinstance(r, dict) and "command" in r for r in runs):
            raise ValueError("'runs' must be a list of runs, each with its command")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"results file {path} is not a list of recorded runs: {exc}") from None
    return runs


def record_run(path: str | os.PathLike, benchmark: str, argv: Sequence[str] | None, *, met: bool, summary: str,
               figures: Mapping[str, Any]) -> dict[str, Any]:
    """Record one run of `benchmark` (its arguments `argv`, minus --results-to) in the results file `path`,
    replacing the earlier run of the same command; returns the run."""
    args = list(argv or [])
    if "--results-to" in args:
        i = args.index("--results-to")
        del args[i:i + 2]
    args = [a for a in args if not a.startswith("--results-to=")]
    command = " ".join(["python -m benchmarks." + benchmark, *map(shlex.quote, args)])
    run = {"benchmark": benchmark, "command": command, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": machine(), "met": bool(met), "summary": summary, "figures": jsonable(dict(figures))}
    runs = [r for r in read_runs(path) if r["command"] != command] + [run]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"runs": runs}, indent=1) + "\n")
    return run
