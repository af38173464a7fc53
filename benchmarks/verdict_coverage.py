"""Coverage of the 95% intervals of `blindspots.verdicts` on simulated data of known mean, by design and n.

    python -m benchmarks.verdict_coverage                       # 2,000 datasets per (design, n); a few minutes
    python -m benchmarks.verdict_coverage --reps 400 --n 10 20  # quicker

Designs (n = the number of independent units in the smallest pool; the true mean is 0):
  iid normal / iid skewed: one observation per unit, normal or centred lognormal(0, 1) values;
  clustered: 3 observations per source (source effect + noise), resampled by source;
  derangement: n images, 5 rounds of a random derangement, each pair (s, t) = a_s + b_t + noise with the image's
    source and target effects correlated (0.5), sources and targets resampled as one pool of images;
  shared targets: 2n sources x 3 pairs to n targets (each target in about 6 pairs), two pools.
Methods: the chosen BCa with the level expanded for n, BCa and percentile as scipy gives them, and the old intervals
(the percentile bootstrap over observations, or over sources only). Each design draws a fresh layout every 250
datasets. Coverage is shown with its Wilson 95% interval (binomial uncertainty of the simulation). Exits 1 when the
chosen interval covers less than 93% on a design of the studies' structure (every design but 'iid skewed', a
lognormal of skewness 6 that no method here brings to 93% at these n: it is shown as the known limit).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from blindspots.verdicts import proportion_interval, unit_intervals

TARGET = 0.93
LIMIT_ONLY = ("iid skewed",)  # reported, not held to TARGET
CHUNK = 250


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p


def design(name: str, n: int, reps: int, rng: np.random.Generator):
    """(values (reps, obs), units, pools) for one layout of `name` at n units."""
    if name in ("iid normal", "iid skewed"):
        x = rng.standard_normal((reps, n)) if name == "iid normal" else rng.lognormal(0, 1, (reps, n)) - np.exp(0.5)
        return x, {"unit": np.arange(n)}, {}
    if name == "clustered":
        src = np.repeat(np.arange(n), 3)
        return rng.standard_normal((reps, n))[:, src] + rng.standard_normal((reps, src.size)), {"source": src}, {}
    if name == "derangement":
        src = np.tile(np.arange(n), 5)
        tgt = np.concatenate([_derangement(n, rng) for _ in range(5)])
        a = rng.standard_normal((reps, n))
        b = 0.5 * a + np.sqrt(0.75) * rng.standard_normal((reps, n))
        x = a[:, src] + b[:, tgt] + rng.standard_normal((reps, src.size))
        return x, {"source": src, "target": tgt}, {"source": "image", "target": "image"}
    if name == "shared targets":
        src = np.repeat(np.arange(2 * n), 3)
        tgt = np.concatenate([rng.choice(n, 3, replace=False) for _ in range(2 * n)])
        x = rng.standard_normal((reps, 2 * n))[:, src] + rng.standard_normal((reps, n))[:, tgt] + \
            rng.standard_normal((reps, src.size))
        return x, {"source": src, "target": tgt}, {}
    raise ValueError(name)


METHODS = {
    "BCa, expanded (chosen)": dict(method="BCa", expand=True),
    "BCa": dict(method="BCa", expand=False),
    "percentile, expanded": dict(method="percentile", expand=True),
    "old: percentile over observations": dict(method="percentile", expand=False, units="observations"),
    "old: percentile over sources": dict(method="percentile", expand=False, units="sources"),
}
DESIGNS = ("iid normal", "iid skewed", "clustered", "derangement", "shared targets")


def coverage(name: str, n: int, reps: int, method: dict, seed: int, resamples: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    hits = total = 0
    for start in range(0, reps, CHUNK):
        x, units, pools = design(name, n, min(CHUNK, reps - start), rng)
        kw = dict(method)
        which = kw.pop("units", None)
        if which == "observations":
            units, pools = None, {}
        elif which == "sources":
            units, pools = {k: v for k, v in units.items() if k in ("source", "unit")}, {}
        est = unit_intervals(x, units, pools=pools, resamples=resamples, seed=seed + start, batch=200, **kw)
        hits += sum(e.low < 0 < e.high for e in est)
        total += len(est)
    return hits, total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verdict_coverage", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10, 20, 44], help="units in the smallest pool")
    p.add_argument("--reps", type=int, default=2000, help="simulated datasets per (design, n, method)")
    p.add_argument("--resamples", type=int, default=1999, help="bootstrap replicates per interval")
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print("| design | n | method | coverage of the 95% interval | Wilson 95% of the coverage |")
    print("|---|---|---|---|---|")
    worst = 1.0
    for name in args.designs:
        for n in args.n:
            for label, method in METHODS.items():
                if method.get("units") == "sources" and name in ("iid normal", "iid skewed", "clustered"):
                    continue  # the same as over observations / the chosen unit there
                k, total = coverage(name, n, args.reps, method, args.seed, args.resamples)
                ci = proportion_interval(k, total)
                print(f"| {name} | {n} | {label} | {k / total:.3f} ({k}/{total}) | [{ci.low:.3f}, {ci.high:.3f}] |",
                      flush=True)
                if label.endswith("(chosen)") and name not in LIMIT_ONLY:
                    worst = min(worst, k / total)
    met = worst >= TARGET
    print(f"\nchosen interval's worst coverage on the studies' designs {worst:.3f}; target >= {TARGET}: "
          f"{'met' if met else 'MISSED'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
