"""Throughput of the clump simulator (`detectors.simulate`): images per second at 128 px on one CPU core.

Run: python benchmarks/simulate_speed.py [--n 300] [--size 128]
The target is >= 50 images/s. Timings are on whatever else the machine is running, so repeats are reported.
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images per repeat")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # one core: the simulator itself is single-threaded numpy
    from detectors.simulate import SimConfig, simulate

    config = SimConfig(image_size=args.size)
    simulate(5, config, seed=123)  # warm-up (imports, canvas caches)
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        batch = simulate(args.n, config, seed=r)
        rates.append(args.n / (time.perf_counter() - t0))
    n_sources = sum(len(t["labels"]) for t in batch.targets)
    best = max(rates)
    print(f"simulate: {args.size}px, {args.n} images x {args.repeats} repeats, "
          f"{n_sources / args.n:.2f} sources/image")
    print("images/s per repeat: " + ", ".join(f"{x:.1f}" for x in rates))
    print(f"best {best:.1f} images/s, median {sorted(rates)[len(rates) // 2]:.1f} images/s "
          f"(target >= 50: {'met' if best >= 50 else 'NOT met'})")
    return best


if __name__ == "__main__":
    main()
