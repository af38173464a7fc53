"""Throughput of the clump simulator (`detectors.simulate`): images per second at 128 px on one CPU core.

The target is >= --target images/s (default 50) in the best of --repeats runs (the best repeat is the one least
slowed by other work on the machine; every repeat and the median are printed beside it).

    python -m benchmarks.simulate_speed
    python -m benchmarks.simulate_speed --n 100 --size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

from blindspots.cli import Parser
from blindspots.studies.measured import add_results_option, record_run

__all__ = ["summary", "main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m benchmarks.simulate_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="images per repeat")
    p.add_argument("--size", type=int, default=128, help="image size in pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=50.0, help="images/s the best repeat must reach")
    p.add_argument("--quiet", action="store_true", help="print the verdict line only")
    add_results_option(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 if the best repeat reaches the target, else 1."""
    args = _parse(argv)
    import torch

    from detectors.simulate import SimConfig, simulate

    torch.set_num_threads(1)  # one core: the simulator itself is single-threaded numpy
    config = SimConfig(image_size=args.size)
    simulate(5, config, seed=args.seed + 123)  # warm-up (imports, canvas caches)
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        batch = simulate(args.n, config, seed=args.seed + r)
        rates.append(args.n / (time.perf_counter() - t0))
    best = max(rates)
    if not args.quiet:
        n_sources = sum(len(t["labels"]) for t in batch.targets)
        print(f"simulate: {args.size} px, {args.n} images x {args.repeats} repeats, "
              f"{n_sources / args.n:.2f} sources/image")
        print("images/s per repeat: " + ", ".join(f"{x:.1f}" for x in rates))
    ok = best >= args.target
    print(f"simulate: best {best:.1f} images/s, median {statistics.median(rates):.1f} images/s; "
          f"target (best >= {args.target:g} images/s): {'met' if ok else 'MISSED'}")
    if args.results_to:
        figures = {"best": best, "median": statistics.median(rates), "rates": rates, "size": args.size, "n": args.n,
                   "repeats": args.repeats, "target": args.target}
        record_run(args.results_to, "simulate_speed", sys.argv[1:] if argv is None else argv, met=ok,
                   summary=summary(figures), figures=figures)
    return 0 if ok else 1


def summary(figures: dict) -> str:
    """One line: the best repeat's rate against the target."""
    return (f"{figures['best']:.0f} simulated {figures['size']}-px images/s on one core, best of "
            f"{figures.get('repeats', len(figures['rates']))} repeats (target >= {figures['target']:g})")


if __name__ == "__main__":
    raise SystemExit(main())
