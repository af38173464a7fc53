"""Run the benchmarks named in BENCHMARKS (those present) and give one verdict: exit 0 only when every benchmark run
met its stated targets.

The contract of a benchmark `benchmarks/<name>.py`: `main(argv) -> int` returns 0 when its stated targets are met
and 1 when any is missed (printing which); a bad argument exits 2. Anything else (an exception, another return
value) counts as an error. The aggregate exits 1 on any miss or error, else 0.

    python -m benchmarks                               # every benchmark present, its default settings
    python -m benchmarks --only speed_geometry,simulate_speed --quiet
    python -m benchmarks --args speed_lst="--sizes 64 --repeats 3" --skip detector_cpu
    python -m benchmarks --list

A name in BENCHMARKS whose file is absent is skipped in a default run; asked for by --only, it is a miss (no
verdict). With --quiet each benchmark's output is kept for the summary only, and `--quiet` is passed on to every
benchmark that accepts it (no progress bars).
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

from blindspots.cli import Parser

__all__ = ["BENCHMARKS", "present", "run_one", "main"]

HERE = Path(__file__).resolve().parent
# The benchmarks with stated targets, in running order (quickest first).
BENCHMARKS = ("simulate_speed", "speed_geometry", "speed_attacks", "speed_lst", "lst_passes", "gpu_check",
              "detector_cpu")
# Output lines repeated in the summary: target verdicts, ratios and throughputs.
SUMMARY_LINE = re.compile(r"^\s*\[|target|verdict|MISSED|ratio|\b\w+_over_\w+|\d\.?\d*x\b|/s\b", re.I)


def present(names: Sequence[str] = BENCHMARKS) -> list[str]:
    """The names whose script exists in benchmarks/."""
    return [n for n in names if (HERE / f"{n}.py").is_file()]


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


def _accepts_quiet(module) -> bool:
    """Whether the benchmark's parser lists --quiet (read from its --help)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        try:
            module.main(["--help"])
        except SystemExit:
            pass
    return "--quiet" in buf.getvalue()


def _verdict(rc: object) -> str:
    if rc is None or isinstance(rc, bool) or not isinstance(rc, int):
        return f"error: main() returned {rc!r}, not 0 (met) or 1 (missed)"
    return {0: "met", 1: "MISSED"}.get(rc, f"error: exit {rc}")


def run_one(name: str, argv: list[str], quiet: bool = False) -> tuple[str, str, float]:
    """Import benchmarks.<name> and call its main(argv) (plus --quiet if asked and accepted); returns (verdict:
    'met', 'MISSED' or 'error: ...', its output, seconds)."""
    buf = io.StringIO()
    t0 = time.perf_counter()
    stream = buf if quiet else _Tee(sys.stdout, buf)
    with contextlib.redirect_stdout(stream):
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            if quiet and "--quiet" not in argv and _accepts_quiet(module):
                argv = [*argv, "--quiet"]
            verdict = _verdict(module.main(argv))
        except SystemExit as exc:
            verdict = _verdict(0 if exc.code is None else exc.code)
            if verdict == "met" and "--help" not in argv and "-h" not in argv:
                verdict = "error: exited 0 before giving a verdict"
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not stop the others
            traceback.print_exc(file=sys.stdout)
            verdict = f"error: {type(exc).__name__}: {exc}".splitlines()[0]
    return verdict, buf.getvalue(), time.perf_counter() - t0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, metavar="NAMES", help=f"comma-separated names from {', '.join(BENCHMARKS)}")
    p.add_argument("--skip", default="", metavar="NAMES", help="comma-separated names to leave out")
    p.add_argument("--args", action="append", default=[], metavar='NAME="ARGS"',
                   help="extra command-line arguments for one benchmark (repeatable)")
    p.add_argument("--list", action="store_true", help="list the benchmarks present and exit")
    p.add_argument("--quiet", action="store_true", help="print the summary only; pass --quiet on")
    args = p.parse_args(argv)
    named = [n for n in (args.only or "").split(",") + args.skip.split(",") if n]
    named += [item.partition("=")[0].strip() for item in args.args]
    unknown = sorted(set(named) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    found = present()
    if args.list:
        print("\n".join(found))
        return 0
    wanted = found if args.only is None else [n for n in args.only.split(",") if n]
    wanted = [n for n in wanted if n not in args.skip.split(",")]
    extra = {name.strip(): shlex.split(rest) for name, _, rest in (a.partition("=") for a in args.args)}
    results = []
    for name in wanted:
        if name not in found:
            results.append((name, f"MISSED: no verdict (benchmarks/{name}.py is not present)", "", 0.0))
            continue
        if not args.quiet:
            print(f"\n===== {name} {' '.join(extra.get(name, []))}", flush=True)
        results.append((name, *run_one(name, extra.get(name, []), args.quiet)))
    print("\n===== summary")
    for name in BENCHMARKS:
        if name not in found and args.only is None and name not in args.skip.split(","):
            print(f"[{name}] skipped: benchmarks/{name}.py is not present")
    for name, verdict, out, secs in results:
        print(f"[{name}] {verdict} ({secs:.0f} s)")
        for line in out.splitlines():
            if SUMMARY_LINE.search(line):
                print(f"    {line.strip()}")
    missed = [name for name, verdict, _, _ in results if verdict != "met"]
    print(f"verdict: {'targets MISSED or errors in: ' + ', '.join(missed) if missed else 'every target met'} "
          f"({len(results) - len(missed)} of {len(results)} benchmarks met their targets)")
    return 1 if missed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
