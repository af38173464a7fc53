"""Coverage of the 95% intervals of `blindspots.verdicts` on simulated data of known mean, by design and n.

    python -m benchmarks.verdict_coverage                       # 2,000 datasets per (design, n); a few minutes
    python -m benchmarks.verdict_coverage --reps 400 --n 10 20  # quicker
    python -m benchmarks.verdict_coverage --seed-pooled         # seeds as a random effect: coverage and power

Seed-pooled (`--seed-pooled`; `seed_pooled_rows`): S fine-tuning seeds measured on the SAME n images (derangement
pairs, 2 rounds, the same pairs at every seed as in the Zoobot study): d = mu + b_seed + a_source + c_target + noise,
a and c of one image correlated (0.5, SD 0.3 each), noise SD 0.8, seed SD 0 / 0.2 / 0.3. Coverage of mu = 0 for the
chosen interval beside two it replaces: fixed effects (the bootstrap variance over images alone, z; covers only the
seeds that were run) and a t interval of the S seed means (S - 1 df; ignores nothing, but wastes the images' shared
information when the seeds agree). Then power at mu = log 0.86 (the issue's real-arm ratio): the rate of 'holds'
(interval wholly below 0) of the pooled rule beside `seed_pooled_power`'s prediction (at the true variance
components) and the old rule's rate (every seed's own BCa interval below 0).

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

from scipy import stats

from blindspots.verdicts import (SeedPooledEstimate, proportion_interval, seed_pooled_power, seed_pooled_rows,
                                 unit_intervals)

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


SEED_SDS = (0.0, 0.2, 0.3)
SEEDS = (2, 3, 4)
EFFECT_SD, NOISE_SD, ROUNDS = 0.3, 0.8, 2


def seed_layout(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sources and targets of one derangement design (ROUNDS rounds over n images), shared by every seed."""
    return np.tile(np.arange(n), ROUNDS), np.concatenate([_derangement(n, rng) for _ in range(ROUNDS)])


def seed_study(n: int, seeds: int, seed_sd: float, mu: float, src, tgt, rng) -> np.ndarray:
    """(seeds, pairs) d values of one simulated study."""
    a = EFFECT_SD * rng.standard_normal(n)
    c = 0.5 * a + EFFECT_SD * np.sqrt(0.75) * rng.standard_normal(n)
    b = seed_sd * rng.standard_normal(seeds)
    return mu + b[:, None] + a[src][None] + c[tgt][None] + NOISE_SD * rng.standard_normal((seeds, src.size))


def seed_pooled_table(n_list, reps: int, resamples: int, seed: int) -> float:
    """Print the coverage and power tables of the seed-pooled interval; return its worst coverage."""
    print("| images | seeds | seed SD | seed-pooled t (chosen) | fixed effects (z, images only) | "
          "t of the seed means |")
    print("|---|---|---|---|---|---|")
    worst = 1.0
    for n in n_list:
        for s_count in SEEDS:
            for sd in SEED_SDS:
                rng = np.random.default_rng([seed, n, s_count, int(sd * 10)])
                src, tgt = seed_layout(n, rng)
                hits = np.zeros(3, dtype=int)
                for r in range(reps):
                    d = seed_study(n, s_count, sd, 0.0, src, tgt, rng)
                    e = pooled(d, src, tgt, resamples, r)
                    z = stats.norm.ppf(0.975) * np.sqrt(e.within)
                    means = d.mean(1)
                    t = stats.t.ppf(0.975, s_count - 1) * means.std(ddof=1) / np.sqrt(s_count)
                    hits += [e.low < 0 < e.high, abs(e.value) < z, abs(means.mean()) < t]
                cells = []
                for k in hits:
                    ci = proportion_interval(int(k), reps)
                    cells.append(f"{k / reps:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
                worst = min(worst, hits[0] / reps)
                print(f"| {n} | {s_count} | {sd:g} | " + " | ".join(cells) + " |", flush=True)
    mu = float(np.log(0.86))
    print(f"\nPower at mu = log 0.86 ({reps} studies per row): rate of 'holds' (interval wholly below 0)")
    print("| images | seeds | seed SD | seed-pooled rule | seed_pooled_power (true components) | old rule: every "
          "seed's own interval |")
    print("|---|---|---|---|---|---|")
    for n in n_list:
        for s_count in SEEDS:
            sd = 0.2
            rng = np.random.default_rng([seed, n, s_count, 99])
            src, tgt = seed_layout(n, rng)
            holds = old = 0
            ds = []
            for r in range(reps):
                d = seed_study(n, s_count, sd, mu, src, tgt, rng)
                ds.append(d)
                holds += pooled(d, src, tgt, resamples, r).high < 0
            ds = np.array(ds)
            every = np.ones(reps, bool)
            for s in range(s_count):
                est = unit_intervals(ds[:, s], {"source": src, "target": tgt},
                                     pools={"source": "image", "target": "image"}, resamples=resamples, seed=s,
                                     batch=100)
                every &= np.array([e.high < 0 for e in est])
            predicted = seed_pooled_power(truth(n, s_count, sd, mu, src, tgt, rng))
            print(f"| {n} | {s_count} | {sd:g} | {holds / reps:.3f} | {predicted:.3f} | {every.mean():.3f} |",
                  flush=True)
    return worst


def pooled(d: np.ndarray, src, tgt, resamples: int, seed: int) -> SeedPooledEstimate:
    s_count = d.shape[0]
    return seed_pooled_rows(d.ravel(), np.repeat(np.arange(s_count), src.size),
                            {"source": np.tile(src, s_count), "target": np.tile(tgt, s_count)},
                            pools={"source": "image", "target": "image"}, resamples=resamples, seed=seed)


def truth(n, s_count, sd, mu, src, tgt, rng, draws: int = 400) -> SeedPooledEstimate:
    """The variance components of the design, by simulation: C's mean diagonal and off-diagonal entry from the
    per-seed means of many studies without a seed effect."""
    means = np.array([seed_study(n, 2, 0.0, mu, src, tgt, rng).mean(1) for _ in range(draws)])
    cov = np.cov(means, rowvar=False)
    cd, co = float(np.mean(np.diag(cov))), float(cov[0, 1])
    return SeedPooledEstimate(mu, -1.0, 0.0, src.size * s_count, {}, {"image": n}, "truth",
                              seed_values=(0.0,) * s_count, cov_diag=cd, cov_off=co,
                              between=(sd ** 2 + cd - co) / s_count)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verdict_coverage", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=None,
                   help="units in the smallest pool (default 10 20 44; --seed-pooled: 12 24 48)")
    p.add_argument("--reps", type=int, default=None,
                   help="simulated datasets per (design, n, method) (default 2000; --seed-pooled: 1000)")
    p.add_argument("--resamples", type=int, default=1999, help="bootstrap replicates per interval")
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-pooled", action="store_true",
                   help="the seed-pooled interval's coverage and power instead (default --n 12 24 48, --reps 1000)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.seed_pooled:
        worst = seed_pooled_table(args.n or [12, 24, 48], args.reps or 1000, min(args.resamples, 999), args.seed)
        met = worst >= TARGET
        print(f"\nseed-pooled interval's worst coverage {worst:.3f}; target >= {TARGET}: "
              f"{'met' if met else 'MISSED'} ({time.perf_counter() - t0:.0f} s)")
        return 0 if met else 1
    args.n, args.reps = args.n or [10, 20, 44], args.reps or 2000
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
