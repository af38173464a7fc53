"""Peak memory of `blindspots.verdicts.unit_interval` grows linearly with n (issue 29: it allocated an n x n array,
13.6 GB at n = 20,000 and a MemoryError at 200,000).

Each n runs in a fresh process (`--one N`), which reports its peak resident memory above the imports' baseline
(`resource.getrusage`, the kernel's maxrss) and its wall time; the parent prints them side by side and exits 1 when
the peak at the largest n exceeds LIMIT_MB or grows faster than linearly (more than SLACK x the n ratio).

    python -m benchmarks.verdict_memory      # n = 20,000 and 200,000, 999 resamples (about a minute)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = (20_000, 200_000)
RESAMPLES = 999
LIMIT_MB = 2048  # at the largest n
SLACK = 1.5  # the peak may grow at most 1.5 x the ratio of the n's


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def one(n: int) -> dict:
    import numpy as np

    from blindspots import verdicts

    x = np.random.default_rng(0).normal(size=n)
    base = _peak_mb()
    t0 = time.perf_counter()
    est = verdicts.unit_interval(x, resamples=RESAMPLES)
    return {"n": n, "peak_mb": _peak_mb() - base, "baseline_mb": base, "seconds": time.perf_counter() - t0,
            "interval": [est.low, est.high]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verdict_memory", description=__doc__.split("\n")[0])
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one)))
        return 0
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"n = {n:>9,}: peak {r['peak_mb']:8.1f} MB above the imports ({r['baseline_mb']:.0f} MB), "
              f"{r['seconds']:6.1f} s, interval [{r['interval'][0]:.4f}, {r['interval'][1]:.4f}]", flush=True)
    first, last = rows[0], rows[-1]
    growth = last["peak_mb"] / max(first["peak_mb"], 1.0)
    allowed = SLACK * last["n"] / first["n"]
    print(f"peak grows {growth:.1f}x for {last['n'] / first['n']:.0f}x the n (allowed {allowed:.0f}x); "
          f"largest {last['peak_mb']:.0f} MB (limit {LIMIT_MB} MB)")
    return 0 if last["peak_mb"] <= LIMIT_MB and growth <= allowed else 1


if __name__ == "__main__":
    sys.exit(main())
