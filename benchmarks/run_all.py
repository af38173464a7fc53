"""Run every benchmark script that exists (`benchmarks/speed_*.py`, `detector_cpu.py`, `simulate_speed.py`) by
calling its `main()`, streaming its output, then print all their ratio / throughput lines together.

    python -m benchmarks                         # everything present, default settings
    python -m benchmarks --only speed_lst,simulate_speed
    python -m benchmarks --args speed_lst="--sizes 64 --repeats 2" --list

A script that is absent is reported as skipped; one that raises is reported as failed and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

__all__ = ["discover", "main", "RATIO_LINE"]

HERE = Path(__file__).resolve().parent
EXTRA = ("detector_cpu", "simulate_speed")
# Lines worth repeating in the summary: ratios (a/b=..., 1.7x, "ratio"), throughputs and target verdicts.
RATIO_LINE = re.compile(r"ratio|\b\w+_over_\w+|\b[a-z]{1,3}/[a-z]{1,3}\s*=|\d\.?\d*x\b|/s\b|target", re.I)


def discover() -> list[str]:
    """Module names of the benchmark scripts present, speed_* first (sorted), then the extra ones."""
    names = sorted(p.stem for p in HERE.glob("speed_*.py"))
    names += [n for n in EXTRA if (HERE / f"{n}.py").is_file()]
    return names


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def run_one(name: str, argv: list[str]) -> tuple[str, str, float]:
    """Import benchmarks.<name>, call main(argv) with stdout teed; returns (status, captured output, seconds)."""
    buf = io.StringIO()
    t0 = time.perf_counter()
    status = "ok"
    with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
            rc = mod.main(argv)
            if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
                status = f"exit {rc} (a target missed or a check failed)"
        except SystemExit as exc:
            status = "ok" if exc.code in (0, None) else f"exit {exc.code}"
        except Exception:  # noqa: BLE001 - one broken script must not stop the others
            traceback.print_exc(file=sys.stdout)
            status = "failed (exception above)"
    return status, buf.getvalue(), time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help="comma-separated script names (default: all present)")
    p.add_argument("--skip", default="", help="comma-separated script names to leave out")
    p.add_argument("--args", action="append", default=[], metavar='NAME="ARGS"',
                   help="extra command-line arguments for one script (repeatable)")
    p.add_argument("--list", action="store_true", help="only list the scripts found")
    args = p.parse_args(argv)
    found = discover()
    for name in EXTRA + ("speed_lst", "speed_geometry", "speed_attacks"):
        if name not in found:
            print(f"skipped: benchmarks/{name}.py not available")
    if args.list:
        print("\n".join(found))
        return 0
    wanted = found if args.only is None else [n for n in args.only.split(",") if n]
    for n in wanted:
        if n not in found:
            print(f"skipped: benchmarks/{n}.py not available")
    wanted = [n for n in wanted if n in found and n not in args.skip.split(",")]
    extra: dict[str, list[str]] = {}
    for item in args.args:
        name, _, rest = item.partition("=")
        extra[name.strip()] = shlex.split(rest)
    results = []
    for name in wanted:
        print(f"\n===== {name} {' '.join(extra.get(name, []))}", flush=True)
        status, out, secs = run_one(name, extra.get(name, []))
        results.append((name, status, out, secs))
    print("\n===== summary: all ratios")
    for name, status, out, secs in results:
        print(f"[{name}] {status}, {secs:.0f} s")
        for line in out.splitlines():
            if RATIO_LINE.search(line):
                print(f"    {line.strip()}")
    return 0 if all(s == "ok" for _, s, _, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
