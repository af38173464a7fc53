"""Intervals and verdicts that a decision rests on, in one place: both studies decide their claims here.

Intervals resample the independent unit (an image, a source, a host), never the observations: an observation
(e.g. an LST pair) is tied to one unit per role (its source image and its target image), and a bootstrap replicate
weights it by the product of its units' multiplicities (the multiway or "pigeonhole" bootstrap, Owen 2007). Roles
drawn from one pool (sources and targets that are the same images, as in a derangement) share the multiplicities.
The replicates come from `scipy.stats.bootstrap` (BCa: bias corrected and accelerated, with a delete-one-unit
jackknife), its level expanded for the number of units as Hesterberg (2015) does for the percentile interval (z
replaced by sqrt(G / (G - 1)) t_{G-1}); measured coverage of the nominal 95% is in `benchmarks/verdict_coverage.py`
and `tests/test_verdicts.py`. Proportions get Wilson intervals (`scipy.stats.binomtest`), paired binary outcomes
an exact McNemar test, families of tests a Holm adjustment. Repeated trainings (seeds) measured on the same units
are a random effect (`seed_pooled_interval`, `seed_pooled_rows`): the mean over seeds with a t interval whose
variance adds the units' noise shared by the seeds (one bootstrap draw applied to every seed) to the seed-to-seed
spread, Satterthwaite degrees of freedom; `seed_pooled_power` / `seed_pooled_needs` give its power at a design
and the units (or seeds) that 80% power needs.

A `Rule` fixed before the numbers turns an estimate into one of `OUTCOMES`: holds / does not hold / inconclusive
(enough units, the interval straddles the bound) / equivalent (the interval inside bound +- margin) / underpowered
(fewer units than the rule needs, or no interval) / not evaluated; `combine` gives a verdict over models or groups
and says which parts decided it (mixed: the parts decided differently).

    from blindspots.verdicts import Rule, unit_interval, decide, combine
    rule = Rule("AT keeps more of the hull", bound=0.0, margin=0.01)      # claim: mean difference > 0
    print(rule.power_check(n_units=3))      # 'underpowered: needs n >= 10 units (has 3)' -> don't run
    est = unit_interval(diff, units={"source": src, "target": tgt}, pools={"source": "image", "target": "image"})
    v = decide(est, rule)                   # Verdict(outcome='holds', reason='...', estimate=est)
    print(est.describe(), v.outcome)        # 0.064 [0.048, 0.083] (95% BCa ..., n = 220; 44 source, 44 target)
    combine({"mnist": v, "imagenet": decide(None, rule)}).reason   # 'decided by mnist (holds); not deciding: imagenet
                                                                   #  (not evaluated)'
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from .errors import InputError

__all__ = ["LEVEL", "MIN_UNITS", "RESAMPLES", "MAX_EMPTY", "HOLDS", "DOES_NOT_HOLD", "INCONCLUSIVE", "EQUIVALENT",
           "UNDERPOWERED", "NOT_EVALUATED", "MIXED", "OUTCOMES", "Estimate", "unit_interval", "unit_intervals",
           "paired_interval",
           "weighted_mean", "expanded_level", "proportion_interval", "wilson_interval", "McNemar", "mcnemar_exact",
           "holm", "Rule", "Verdict", "decide", "combine", "SeedPooledEstimate", "seed_pooled_interval",
           "seed_pooled_rows", "seed_pooled_power", "seed_pooled_needs", "POWER"]

LEVEL = 0.95  # the level of every interval a verdict rests on
MIN_UNITS = 10  # default fewest independent units for a verdict (coverage is shown from 10 units up)
RESAMPLES = 4999  # bootstrap replicates per interval
CLIP = 1e-12  # Wilson bounds this close to 0 or 1 are float noise of 0 or 1
MAX_EMPTY = 0.01  # at most this share of replicates may weigh no observation (each then counts as the estimate)
POWER = 0.8  # the power a design should have: "units needed" is the n that reaches it
POOL_BATCH = 500  # bootstrap replicates per call of a seed-pooled statistic (memory: POOL_BATCH x units floats)

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, EQUIVALENT = "holds", "does not hold", "inconclusive", "equivalent"
UNDERPOWERED, NOT_EVALUATED, MIXED = "underpowered", "not evaluated", "mixed"
OUTCOMES = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, EQUIVALENT, UNDERPOWERED, NOT_EVALUATED, MIXED)
_DECIDED = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, EQUIVALENT)
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A statistic with its interval. `n`: observations; `units`: distinct units per role (e.g. {'source': 44,
    'target': 44}); `pools`: distinct units per resampled pool (the independent units; `min_units` is the
    smallest). `low`/`high` are NaN when no interval exists, with the reason in `note`."""

    value: float
    low: float
    high: float
    n: int
    units: dict[str, int]
    pools: dict[str, int]
    method: str
    level: float = LEVEL
    note: str = ""

    @property
    def min_units(self) -> int:
        return min(self.pools.values(), default=0)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def describe(self, digits: int = 3) -> str:
        """'0.576 [0.557, 0.595] (95% <method>, n = 220; 44 source, 44 target)'."""
        f = f"{{:.{digits}g}}"
        ci = f"[{f.format(self.low)}, {f.format(self.high)}]" if self.has_interval else "[no interval]"
        units = ", ".join(f"{k} {v}" for k, v in self.units.items())
        return f"{f.format(self.value)} {ci} ({self.level:.0%} {self.method}, n = {self.n}; {units})" + (
            f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- intervals over units


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A statistic in the form `unit_interval` takes: `values` (R, n) for R datasets, `weights` (R, M, n) for M
    replicates of each -> (R, M) weighted means; NaN where a replicate weighs nothing. (The default, None, computes
    the same mean faster from sums per unit.)"""
    total = weights.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.einsum("rmn,rn->rm", weights, values) / np.where(total > 0, total, 1), np.nan)


def expanded_level(level: float, units: int) -> float:
    """The level to ask of the bootstrap so that its interval has the width a t interval has at `units` units:
    2 Phi(sqrt(G / (G - 1)) t_{G-1, (1 + level) / 2}) - 1 (Hesterberg 2015, the expanded percentile interval)."""
    if units < 2:
        raise InputError(f"an interval needs at least 2 units, got {units}")
    t = stats.t.ppf((1 + level) / 2, units - 1)
    return float(2 * stats.norm.cdf(math.sqrt(units / (units - 1)) * t) - 1)


def unit_interval(values, units: Mapping[str, Sequence[Any]] | None = None, *,
                  pools: Mapping[str, str] | None = None, statistic: Statistic | None = None,
                  level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0, method: str = "BCa",
                  expand: bool = True) -> Estimate:
    """Interval of `statistic` (None: the mean, from sums per unit) over observations `values` (n,) tied to
    independent units.

    `units`: role -> one unit id per observation, e.g. {'source': src, 'target': tgt}; None: each observation is
    its own unit. `pools`: role -> pool name; roles of one pool are drawn together (sources and targets that are
    the same images: {'source': 'image', 'target': 'image'}); by default each role is its own pool. Each replicate
    draws every pool's units with replacement and weights an observation by the product of its units'
    multiplicities. `method`: 'BCa' or 'percentile' (scipy's); `expand`: ask for the level expanded for the smallest
    pool's number of units (`expanded_level`; False gives the textbook interval, for comparison).
    `statistic(values (R, n), weights (R, M, n)) -> (R, M)`, like `weighted_mean`.
    Below 2 units, or when every value is equal, the interval is NaN and `note` says why (never a zero width).
    A replicate that weighs no observation (few units, sparse designs) counts as the estimate, noted; more than
    `MAX_EMPTY` of them: no interval. NaN or inf values are refused.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise InputError(f"values must be 1-D, one per observation; got shape {v.shape}")
    return unit_intervals(v[None], units, pools=pools, statistic=statistic, level=level, resamples=resamples,
                          seed=seed, method=method, expand=expand)[0]


def unit_intervals(values, units: Mapping[str, Sequence[Any]] | None = None, *,
                   pools: Mapping[str, str] | None = None, statistic: Statistic | None = None,
                   level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0, method: str = "BCa",
                   expand: bool = True, batch: int | None = None) -> list[Estimate]:
    """`unit_interval` for R datasets of one design at once (`values` (R, n); rows resampled with the same draws):
    for coverage simulations. `batch`: replicates per statistic call (memory: R x batch x n floats)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise InputError(f"values must be (datasets, observations), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InputError(f"values hold {int((~np.isfinite(v)).sum())} NaN/inf of {v.size}: decide how to count "
                         "them before the interval")
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    if method not in ("BCa", "percentile"):
        raise InputError(f"method must be 'BCa' or 'percentile', got {method!r}")
    n_obs = v.shape[1]
    units = {"unit": np.arange(n_obs)} if units is None else {r: list(np.asarray(ids).tolist())
                                                               for r, ids in units.items()}
    if not units:
        raise InputError("units: give at least one role")
    pools = {role: (pools or {}).get(role, role) for role in units}
    for role, ids in units.items():
        if len(ids) != n_obs:
            raise InputError(f"units[{role!r}] has {len(ids)} ids for {n_obs} values")
    pool_names = list(dict.fromkeys(pools.values()))
    index = {p: {u: i for i, u in enumerate(dict.fromkeys(u for r in units if pools[r] == p for u in units[r]))}
             for p in pool_names}
    codes = {role: np.array([index[pools[role]][u] for u in ids], dtype=np.int64) for role, ids in units.items()}
    sizes = {p: len(index[p]) for p in pool_names}
    counts = {role: len(set(ids)) for role, ids in units.items()}
    described = f"{method} bootstrap over {', '.join(pool_names)}" + (", level expanded for n" if expand else "")
    r_count = v.shape[0]
    if statistic is None and len(units) > 2:
        statistic = weighted_mean
    value = (v.mean(1) if statistic is None else statistic(v, np.ones((r_count, 1, n_obs)))[:, 0]) if n_obs else \
        np.full(r_count, math.nan)
    g = min(sizes.values(), default=0)

    def make(i: int, lo: float, hi: float, note: str = "") -> Estimate:
        return Estimate(float(value[i]), lo, hi, n_obs, dict(counts), dict(sizes), described, level, note)

    if g < 2:
        return [make(i, math.nan, math.nan, f"no interval: {g} unit(s), an interval needs at least 2")
                for i in range(r_count)]

    roles = list(codes)
    if statistic is None and len(roles) <= 2:  # the mean by sums per unit (pair of units): no per-pair weights
        shape = tuple(sizes[pools[r]] for r in roles)
        flat_cell = np.ravel_multi_index(tuple(codes[r] for r in roles), shape)
        cells = int(np.prod(shape))
        sums = np.stack([np.bincount(flat_cell, weights=row, minlength=cells) for row in v]).reshape(-1, *shape)
        n_cell = np.bincount(flat_cell, minlength=cells).reshape(shape).astype(np.float64)

    empty = np.zeros(r_count, dtype=np.int64)  # replicates per dataset that weighed no observation

    def stat(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        est = _stat(*samples).reshape(r_count, -1)
        undefined = np.isnan(est)
        empty[:] += undefined.sum(1)
        return np.where(undefined, value[:, None], est).reshape(samples[0].shape[:-1])

    def _stat(*samples: np.ndarray) -> np.ndarray:
        lead = samples[0].shape[:-1]  # (R, ...) for R datasets
        mult = {}
        for p, s in zip(pool_names, samples):
            flat = s.reshape(-1, s.shape[-1])
            rows = np.arange(flat.shape[0])[:, None] * sizes[p]
            m = np.bincount((flat + rows).ravel(), minlength=flat.shape[0] * sizes[p])
            mult[p] = m.reshape(r_count, -1, sizes[p]).astype(np.float64)
        if statistic is None and len(roles) == 1:
            m = mult[pools[roles[0]]]
            num, den = np.einsum("rmg,rg->rm", m, sums), m @ n_cell
        elif statistic is None:
            m1, m2 = mult[pools[roles[0]]], mult[pools[roles[1]]]
            m1s = np.stack([m1[r] @ sums[r] for r in range(r_count)])  # a loop: numpy's stacked matmul is slow
            num, den = np.einsum("rmh,rmh->rm", m1s, m2), np.einsum("rmh,rmh->rm", m1 @ n_cell, m2)
        else:
            w = np.ones(())
            for role in roles:
                w = w * np.take(mult[pools[role]], codes[role], axis=2)
            return np.asarray(statistic(v, w)).reshape(lead)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan).reshape(lead)

    data = tuple(np.broadcast_to(np.arange(sizes[p]), (r_count, sizes[p])) for p in pool_names)
    asked = expanded_level(level, g) if expand else level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (stats.DegenerateDataWarning, RuntimeWarning))
        res = stats.bootstrap(data, stat, n_resamples=resamples, confidence_level=asked, vectorized=True,
                              paired=False, axis=-1, method=method, rng=np.random.default_rng(seed), batch=batch)
    lows = np.atleast_1d(res.confidence_interval.low)
    highs = np.atleast_1d(res.confidence_interval.high)
    out = []
    for i in range(r_count):
        lo, hi = float(lows[i]), float(highs[i])
        if np.all(v[i] == v[i, 0]):
            out.append(make(i, math.nan, math.nan, f"no interval: all {n_obs} values equal {v[i, 0]:.6g}"))
        elif empty[i] > MAX_EMPTY * resamples:
            out.append(make(i, math.nan, math.nan, f"no interval: {empty[i]} of {resamples} replicates drew no "
                                                   "observation (too few units for this design)"))
        elif not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            out.append(make(i, math.nan, math.nan, "no interval: the bootstrap distribution is degenerate"))
        else:
            out.append(make(i, lo, hi, f"{empty[i]} replicate(s) drew no observation and count as the estimate"
                            if empty[i] else ""))
    return out


def paired_interval(a, b, units: Mapping[str, Sequence[Any]] | None = None, **kwargs: Any) -> Estimate:
    """Interval of the mean paired difference a - b (same observations, same units); see `unit_interval`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired values need one shape, got {a.shape} and {b.shape}")
    return unit_interval(a - b, units, **kwargs)


# ------------------------------------------------------------------------ seeds as a random effect


@dataclass(frozen=True)
class SeedPooledEstimate(Estimate):
    """An `Estimate` pooled over S repeated trainings (seeds) that share their units, with what its power needs:
    `seed_values` (each seed's statistic), `se` (sqrt V), `df` (Satterthwaite), `within` (1'C1 / S^2, the units'
    share of V), `between` (s^2 / S, the seeds' share), `cov_diag` / `cov_off` (mean diagonal and off-diagonal
    entry of C). `scale`: 'log' when the values are logs of ratios (the estimate and the rule stay on the log
    scale; `ratio()` gives the geometric mean ratio and its interval), else 'identity'."""

    seed_values: tuple[float, ...] = ()
    se: float = math.nan
    df: float = math.nan
    within: float = math.nan
    between: float = math.nan
    cov_diag: float = math.nan
    cov_off: float = math.nan
    scale: str = "identity"

    @property
    def seeds(self) -> int:
        return len(self.seed_values)

    def ratio(self) -> tuple[float, float, float]:
        """(geometric mean ratio, low, high) = exp of (value, low, high); only for scale 'log'."""
        if self.scale != "log":
            raise InputError("ratio(): this estimate is not on the log scale")
        return math.exp(self.value), math.exp(self.low), math.exp(self.high)

    def describe(self, digits: int = 3) -> str:
        text = super().describe(digits)
        if self.scale != "log":
            return text
        f = f"{{:.{digits}g}}"
        g, lo, hi = self.ratio()
        ci = f"[{f.format(lo)}, {f.format(hi)}]" if self.has_interval else "[no interval]"
        return f"geometric mean ratio {f.format(g)}x {ci}; mean log ratio {text}"


def _draw_weights(sizes: Mapping[str, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, sum(sizes)) multiplicity vectors: per pool, `size` draws with replacement from its units."""
    return np.concatenate([rng.multinomial(g, np.full(g, 1.0 / g), size=count) for g in sizes.values()],
                          axis=1).astype(np.float64)


def seed_pooled_interval(per_seed: Callable[[np.ndarray], np.ndarray], n_units: int | Mapping[str, int], *,
                         level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0, unit: str = "unit",
                         seeds_label: str = "seed", n: int | None = None, units: Mapping[str, int] | None = None,
                         scale: str = "identity", batch: int = POOL_BATCH) -> SeedPooledEstimate:
    """Interval of D, the mean over S seeds of a per-seed statistic, with the seed as a random effect and the
    units (images, hosts) shared by the seeds.

    `per_seed(weights)`: `weights` (R, G) float multiplicity vectors over the G independent units (a row of ones is
    the data as observed) -> (R, S), each seed's statistic under those unit weights (S >= 2; NaN where a replicate
    leaves a seed nothing to weigh). `n_units`: G, or pool -> units for units drawn from separate pools (e.g.
    sources and targets of two sets; columns in the mapping's order, each pool drawn with replacement on its own).
    Each replicate draws ONE multiplicity vector and applies it to every seed, so C, the S x S bootstrap covariance
    of the per-seed statistics scaled by G / (G - 1) (G: the smallest pool), holds the units' noise shared by the
    seeds. V = 1'C1 / S^2 + s^2 / S, with s^2 the sample variance of the S per-seed statistics (the seed-to-seed
    spread, not reduced by the units' noise within it: conservative). The interval is D +- t_{df} sqrt(V) with
    Satterthwaite's degrees of freedom for the two variance components,
    df = V^2 / ((1'C1 / S^2)^2 / (G - 1) + (s^2 / S)^2 / (S - 1)): S - 1 when the units add no noise (the t interval
    of the S seed statistics), G - 1 when the seeds agree exactly. A replicate with a NaN is left out of C (as if
    redrawn) and counted in `note`; more than `MAX_EMPTY` of them: no interval. Memory: `batch` x G floats.
    `n` (observations, default G) and `units` (role -> distinct units, default {unit: G}) only label the estimate;
    `scale`: 'log' when the statistic is a mean log ratio (see `SeedPooledEstimate.ratio`).
    """
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 2:
        raise InputError(f"resamples must be an integer >= 2, got {resamples!r}")
    if scale not in ("identity", "log"):
        raise InputError(f"scale must be 'identity' or 'log', got {scale!r}")
    sizes = {unit: n_units} if not isinstance(n_units, Mapping) else dict(n_units)
    for p, g in sizes.items():
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
            raise InputError(f"n_units[{p!r}] must be a positive integer, got {g!r}")
    if not sizes:
        raise InputError("n_units: give at least one pool")
    total, g = sum(sizes.values()), min(sizes.values())

    def call(w: np.ndarray) -> np.ndarray:
        out = np.asarray(per_seed(w), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != w.shape[0]:
            raise InputError(f"per_seed must return (replicates, seeds) = ({w.shape[0]}, S), got shape {out.shape}")
        return out

    d = call(np.ones((1, total)))[0]
    s_count = d.size
    if s_count < 2:
        raise InputError(f"a seed-pooled interval needs at least 2 {seeds_label}s, got {s_count}")
    if not np.all(np.isfinite(d)):
        raise InputError(f"per_seed gave NaN/inf on the observed data for {seeds_label}(s) "
                         f"{np.flatnonzero(~np.isfinite(d)).tolist()} (no observation to weigh?)")
    value = float(d.mean())
    s2 = float(d.var(ddof=1))
    labels = dict(units) if units is not None else {unit: g} if len(sizes) == 1 else dict(sizes)
    labels[seeds_label + "s"] = s_count
    method = f"seed-pooled t ({seeds_label} as a random effect; bootstrap over {', '.join(sizes)} shared by the " \
             f"{seeds_label}s; Satterthwaite df)"

    def make(lo: float, hi: float, note: str = "", **parts: float) -> SeedPooledEstimate:
        return SeedPooledEstimate(value, lo, hi, int(total if n is None else n), labels, dict(sizes), method, level,
                                  note, tuple(float(x) for x in d), scale=scale, **parts)

    if g < 2:
        return make(math.nan, math.nan, f"no interval: {g} unit(s), an interval needs at least 2")
    rng = np.random.default_rng(seed)
    boot = np.concatenate([call(_draw_weights(sizes, min(batch, resamples - start), rng))
                           for start in range(0, resamples, max(1, int(batch)))])
    if boot.shape[1] != s_count:
        raise InputError(f"per_seed gave {boot.shape[1]} seeds on replicates, {s_count} on the data")
    bad = ~np.all(np.isfinite(boot), axis=1)
    if bad.sum() > MAX_EMPTY * resamples:
        return make(math.nan, math.nan, f"no interval: {int(bad.sum())} of {resamples} replicates left a "
                                        f"{seeds_label} no observation (too few units for this design)")
    cov = np.atleast_2d(np.cov(boot[~bad], rowvar=False, ddof=1)) * g / (g - 1)
    within, between = float(cov.sum()) / s_count ** 2, s2 / s_count
    var = within + between
    parts = dict(within=within, between=between, cov_diag=float(np.mean(np.diag(cov))),
                 cov_off=float((cov.sum() - np.trace(cov)) / (s_count * (s_count - 1))))
    note = f"{int(bad.sum())} replicate(s) left a {seeds_label} no observation and were redrawn" if bad.any() else ""
    if not var > 0:
        return make(math.nan, math.nan, "no interval: every value is equal (zero variance)", **parts)
    df = _satterthwaite(within, between, g, s_count)
    half = float(stats.t.ppf((1 + level) / 2, df)) * math.sqrt(var)
    return make(value - half, value + half, note, se=math.sqrt(var), df=df, **parts)


def _satterthwaite(within: float, between: float, units: float, seeds: float) -> float:
    """Welch-Satterthwaite df of within + between, estimated on units - 1 and seeds - 1 degrees of freedom."""
    den = within ** 2 / (units - 1) + between ** 2 / (seeds - 1)
    return float((within + between) ** 2 / den) if den > 0 else math.inf


def seed_pooled_rows(values, seeds: Sequence[Any], units: Mapping[str, Sequence[Any]], *,
                     pools: Mapping[str, str] | None = None, level: float = LEVEL, resamples: int = RESAMPLES,
                     seed: int = 0, seeds_label: str = "seed", scale: str = "identity",
                     batch: int = POOL_BATCH) -> SeedPooledEstimate:
    """`seed_pooled_interval` of the mean of per-row `values` (one per observation, e.g. a pair's d or a test
    image's F1 difference), each seed's statistic being the mean of its rows. `seeds[i]`: row i's seed; `units`:
    role -> one unit id per row (e.g. {'source': src, 'target': tgt}); `pools`: role -> pool (roles of one pool,
    like sources and targets that are the same images, share multiplicities; default: each role its own pool).
    A row's weight in a replicate is the product of its units' multiplicities, as in `unit_interval`. For a ratio,
    pass log ratios with scale='log': the rule decides on the log scale and `ratio()` is the geometric mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise InputError(f"values must be 1-D, one per observation; got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InputError(f"values hold {int((~np.isfinite(v)).sum())} NaN/inf of {v.size}: decide how to count "
                         "them before the interval")
    if len(seeds) != v.size:
        raise InputError(f"seeds has {len(seeds)} labels for {v.size} values")
    if not units:
        raise InputError("units: give at least one role")
    pools = {role: (pools or {}).get(role, role) for role in units}
    for role, ids in units.items():
        if len(ids) != v.size:
            raise InputError(f"units[{role!r}] has {len(ids)} ids for {v.size} values")
    pool_names = list(dict.fromkeys(pools.values()))
    index = {p: {u: i for i, u in enumerate(dict.fromkeys(u for r in units if pools[r] == p for u in units[r]))}
             for p in pool_names}
    sizes = {p: len(index[p]) for p in pool_names}
    offset = dict(zip(pool_names, np.cumsum([0] + [sizes[p] for p in pool_names])[:-1].tolist()))
    cols = [np.array([offset[pools[r]] + index[pools[r]][u] for u in ids], dtype=np.int64)
            for r, ids in units.items()]
    seed_ids = list(dict.fromkeys(seeds))
    s_code = np.array([seed_ids.index(s) for s in seeds], dtype=np.int64) if len(seed_ids) < 64 else \
        np.array([{s: i for i, s in enumerate(seed_ids)}[s] for s in seeds], dtype=np.int64)
    onehot = np.zeros((v.size, len(seed_ids)))
    onehot[np.arange(v.size), s_code] = 1.0
    weighted = onehot * v[:, None]

    def per_seed(w: np.ndarray) -> np.ndarray:
        row = np.ones((w.shape[0], v.size))
        for c in cols:
            row = row * w[:, c]
        num, den = row @ weighted, row @ onehot
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    counts = {role: len(set(ids)) for role, ids in units.items()}
    return seed_pooled_interval(per_seed, sizes, level=level, resamples=resamples, seed=seed, n=int(v.size),
                                units=counts, seeds_label=seeds_label, scale=scale, batch=batch)


def _projected(est: SeedPooledEstimate, n_units: float, seeds: int) -> tuple[float, float]:
    """(V, df) the estimate's design would have at `n_units` units and `seeds` seeds: the units' (co)variances scale
    as G0 / G; the between-seed variance tau^2 = s^2 - (mean diagonal - mean off-diagonal of C), floored at 0,
    stays (method of moments under exchangeable seeds)."""
    g0 = min(est.pools.values())
    k = g0 / n_units
    cd, co = est.cov_diag * k, est.cov_off * k
    tau2 = max(0.0, est.between * est.seeds - (est.cov_diag - est.cov_off))
    within = cd / seeds + co * (seeds - 1) / seeds
    between = (tau2 + max(0.0, cd - co)) / seeds
    return within + between, _satterthwaite(within, between, n_units, seeds)


def seed_pooled_power(est: SeedPooledEstimate, effect: float | None = None, *, bound: float = 0.0,
                      n_units: int | None = None, seeds: int | None = None, level: float | None = None) -> float:
    """Chance that the interval lies wholly on `effect`'s side of `bound` (the rule decides), for a true pooled
    effect `effect` (default: the observed D) at `n_units` units and `seeds` seeds (default: the estimate's), with
    the estimate's variance components (`_projected`): the noncentral t, P(T'_{df}(|effect - bound| / sqrt V) >
    t_{df, (1 + level) / 2})."""
    if not isinstance(est, SeedPooledEstimate) or not math.isfinite(est.cov_diag):
        raise InputError("seed_pooled_power needs a SeedPooledEstimate with an interval")
    effect = est.value if effect is None else float(effect)
    level = est.level if level is None else level
    g = min(est.pools.values()) if n_units is None else n_units
    s = est.seeds if seeds is None else seeds
    if g < 2 or s < 2:
        raise InputError(f"power needs at least 2 units and 2 seeds, got {g} and {s}")
    var, df = _projected(est, g, s)
    if not var > 0:
        return 1.0 if effect != bound else 0.0
    t = stats.t.ppf((1 + level) / 2, df)
    return float(stats.nct.sf(t, df, abs(effect - bound) / math.sqrt(var)))


def seed_pooled_needs(est: SeedPooledEstimate, effect: float | None = None, *, bound: float = 0.0,
                      power: float = POWER, seeds: int | None = None, n_units: int | None = None,
                      vary: str = "units", most: int = 100_000) -> int | None:
    """The fewest units (`vary`='units', at `seeds`, default the estimate's) or seeds (`vary`='seeds', at `n_units`,
    default the estimate's) at which `seed_pooled_power` reaches `power`; None when `most` do not (with units: the
    seed-to-seed spread alone keeps the power below, so more seeds are needed)."""
    if vary not in ("units", "seeds"):
        raise InputError(f"vary must be 'units' or 'seeds', got {vary!r}")

    def enough(k: int) -> bool:
        at = dict(n_units=k, seeds=seeds) if vary == "units" else dict(n_units=n_units, seeds=k)
        return seed_pooled_power(est, effect, bound=bound, **at) >= power

    if not enough(most):
        return None
    lo, hi = 2, most
    if enough(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


# ------------------------------------------------------------------------------------------------ proportions


def proportion_interval(k: int, n: int, *, level: float = LEVEL, unit: str = "unit") -> Estimate:
    """Wilson interval of the proportion k / n (`scipy.stats.binomtest`); n = 0 gives no interval. Bounds within
    1e-12 of 0 or 1 are returned as exactly 0 or 1."""
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise InputError(f"a proportion needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, {unit: 0}, {unit: 0}, "Wilson", level,
                        "no interval: n = 0")
    lo, hi = wilson_interval(k, n, level)
    return Estimate(k / n, float(lo), float(hi), n, {unit: n}, {unit: n}, "Wilson", level)


def wilson_interval(k, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k / n elementwise (`scipy.stats.binomtest(k, n).proportion_ci('wilson')`), NaN
    where n == 0; k must be whole numbers (counts that went through floats are rounded if within 1e-6)."""
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(np.abs(k - np.round(k)) > 1e-6) or np.any(np.abs(n - np.round(n)) > 1e-6):
        raise InputError("wilson_interval: k and n must be counts (whole numbers)")
    k, n = np.round(k).astype(np.int64), np.round(n).astype(np.int64)
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise InputError("wilson_interval: needs 0 <= k <= n")
    lo, hi = np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    for i in np.ndindex(k.shape):
        if n[i] > 0:
            ci = stats.binomtest(int(k[i]), int(n[i])).proportion_ci(confidence_level=level, method="wilson")
            lo[i], hi[i] = ci.low, ci.high
    lo = np.where(lo < CLIP, 0.0, lo)
    hi = np.where(hi > 1 - CLIP, 1.0, hi)
    return lo, hi


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of paired binary outcomes: `only_a` pairs where only a is true, `only_b` where only b."""

    n: int
    rate_a: float
    rate_b: float
    only_a: int
    only_b: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(a, b) -> McNemar:
    """Two-sided exact McNemar test (binomial test of the discordant pairs at 1/2) for paired booleans a, b."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"paired outcomes need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    n = int(a.size)
    return McNemar(n, float(a.mean()) if n else math.nan, float(b.mean()) if n else math.nan, only_a, only_b, p)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InputError("holm: p-values must be a 1-D sequence of numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


# ------------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Rule:
    """A claim 'the statistic lies `direction` `bound`', fixed before the numbers. holds: the interval lies wholly
    on the claimed side; does not hold: wholly on the other side; equivalent: inside bound +- `margin` (when a
    margin is given; checked first); inconclusive: otherwise. `interval`: 'mean' (a bootstrap over units) or
    'proportion' (Wilson). Fewer than `min_units` units, or no interval: underpowered."""

    claim: str
    bound: float
    direction: str = "above"
    margin: float | None = None
    min_units: int = MIN_UNITS
    interval: str = "mean"
    level: float = LEVEL

    def __post_init__(self) -> None:
        if self.direction not in ("above", "below"):
            raise InputError(f"direction must be 'above' or 'below', got {self.direction!r}")
        if self.interval not in ("mean", "proportion"):
            raise InputError(f"interval must be 'mean' or 'proportion', got {self.interval!r}")
        if self.margin is not None and not self.margin > 0:
            raise InputError(f"margin must be > 0, got {self.margin!r}")

    def needs(self) -> int:
        """The fewest units at which the rule can decide either way: `min_units`, and for a Wilson rule the
        smallest n whose best-case interval (all or none) clears the bound on both sides."""
        return self.min_units if self.interval == "mean" else max(self.min_units, _wilson_needs(self.bound,
                                                                                             self.level))

    def power_check(self, n_units: int, unit: str = "units") -> str | None:
        """'underpowered: needs n >= k <unit> (has m)' when the rule cannot decide at n_units; else None."""
        k = self.needs()
        return None if n_units >= k else f"{UNDERPOWERED}: needs n >= {k} {unit} (has {n_units})"

    def describe(self) -> str:
        side = ">" if self.direction == "above" else "<"
        text = (f"{self.claim}: holds when the {self.level:.0%} {'Wilson' if self.interval == 'proportion' else 'BCa'}"
                f" interval lies wholly {side} {self.bound:g}, does not hold when wholly on the other side")
        if self.margin is not None:
            text += f", equivalent when inside {self.bound:g} +- {self.margin:g} (checked first)"
        return text + f"; underpowered below n = {self.needs()} units"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"needs": self.needs(), "text": self.describe()}


@functools.lru_cache(maxsize=None)
def _wilson_needs(bound: float, level: float) -> int:
    """The smallest n at which n / n has a Wilson lower bound above `bound` and 0 / n an upper bound below it."""
    if not 0 < bound < 1:
        raise InputError(f"a proportion rule needs a bound in (0, 1), got {bound}")
    n = 1
    while not (wilson_interval(n, n, level)[0] > bound and wilson_interval(0, n, level)[1] < bound):
        n += 1
    return n


@dataclass(frozen=True)
class Verdict:
    """An outcome (one of OUTCOMES), the reason in words, and the estimate it rests on (None when combined)."""

    outcome: str
    reason: str
    estimate: Estimate | None = None
    parts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reason": self.reason, "parts": dict(self.parts),
                "estimate": self.estimate.to_dict() if self.estimate else None}


def decide(estimate: Estimate | None, rule: Rule) -> Verdict:
    """The rule's outcome for one estimate (None: not evaluated)."""
    if estimate is None:
        return Verdict(NOT_EVALUATED, "no data for this rule")
    short = rule.power_check(estimate.min_units, " / ".join(f"{p}s" for p in estimate.pools) or "units")
    if short:
        return Verdict(UNDERPOWERED, short, estimate)
    if not estimate.has_interval:
        return Verdict(UNDERPOWERED, f"{UNDERPOWERED}: {estimate.note or 'no interval'}", estimate)
    lo, hi, b = estimate.low, estimate.high, rule.bound
    ci = f"[{lo:.3g}, {hi:.3g}]"
    if rule.margin is not None and b - rule.margin < lo and hi < b + rule.margin:
        return Verdict(EQUIVALENT, f"{ci} inside {b:g} +- {rule.margin:g}", estimate)
    above, below = lo > b, hi < b
    if above or below:
        claimed = above if rule.direction == "above" else below
        return Verdict(HOLDS if claimed else DOES_NOT_HOLD, f"{ci} wholly {'above' if above else 'below'} {b:g}",
                       estimate)
    return Verdict(INCONCLUSIVE, f"{ci} contains {b:g}", estimate)


def combine(parts: Mapping[str, Verdict | str]) -> Verdict:
    """One verdict over models or groups: the common outcome when every decided part agrees, 'mixed' when decided
    parts disagree (holds vs does not hold, or vs equivalent), 'inconclusive' when some are, and 'underpowered' /
    'not evaluated' only when no part decided. The reason names the parts that decided it and those that could not.
    """
    outcomes = {k: (v.outcome if isinstance(v, Verdict) else v) for k, v in parts.items()}
    bad = {k: o for k, o in outcomes.items() if o not in OUTCOMES}
    if bad:
        raise InputError(f"unknown outcomes {bad}; expected one of {OUTCOMES}")
    decided = {k: o for k, o in outcomes.items() if o in _DECIDED or o == MIXED}
    undecided = {k: o for k, o in outcomes.items() if k not in decided}
    if not decided:
        outcome = UNDERPOWERED if UNDERPOWERED in undecided.values() else NOT_EVALUATED
    else:
        kinds = set(decided.values())
        firm = kinds - {INCONCLUSIVE}
        if len(kinds) == 1:
            outcome = kinds.pop()
        elif len(firm) > 1 or MIXED in firm:
            outcome = MIXED
        else:
            outcome = INCONCLUSIVE
    by = "; ".join(f"{', '.join(k for k, v in decided.items() if v == o)} ({o})" for o in dict.fromkeys(
        decided.values()))
    rest = ", ".join(f"{k} ({o})" for k, o in undecided.items())
    reason = (f"decided by {by}" if decided else "no part decided") + (f"; not deciding: {rest}" if rest else "")
    return Verdict(outcome, reason, None, outcomes)
