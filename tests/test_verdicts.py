"""The verdict module: interval coverage on simulated data of known truth (with the studies' dependence structure),
agreement with scipy where scipy computes the same thing, degenerate inputs, and the decision rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from blindspots import verdicts as vd

N_UNITS = (10, 20, 44)


def _derangement(n, rng):
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p


def _derangement_data(n, reps, rng, rounds=5):
    """Images that are both sources and targets: pair (s, t) = a_s + b_t + noise, a and b of one image correlated."""
    src = np.tile(np.arange(n), rounds)
    tgt = np.concatenate([_derangement(n, rng) for _ in range(rounds)])
    a = rng.standard_normal((reps, n))
    b = 0.5 * a + math.sqrt(0.75) * rng.standard_normal((reps, n))
    return a[:, src] + b[:, tgt] + rng.standard_normal((reps, src.size)), src, tgt


def _covered(estimates, truth=0.0):
    return np.array([e.low < truth < e.high for e in estimates])


@pytest.mark.parametrize("n", N_UNITS)
def test_coverage_with_images_that_are_both_sources_and_targets(n):
    """300 simulated derangement studies (5 rounds, source and target effects of an image correlated, true mean 0):
    the 95% interval, resampling images, covers >= 93% (binomial s.e. of the estimate ~1.3 points); the old
    percentile bootstrap over per-pair values misses the shared images and covers far less."""
    rng = np.random.default_rng(n)
    x, src, tgt = _derangement_data(n, 300, rng)
    units, pools = {"source": src, "target": tgt}, {"source": "image", "target": "image"}
    est = vd.unit_intervals(x, units, pools=pools, resamples=999, seed=n, batch=100)
    assert est[0].units == {"source": n, "target": n} and est[0].pools == {"image": n} and est[0].n == 5 * n
    assert _covered(est).mean() >= 0.93
    naive = vd.unit_intervals(x, None, resamples=999, seed=n, batch=100, method="percentile", expand=False)
    assert _covered(naive).mean() < 0.8


@pytest.mark.parametrize("n", N_UNITS)
def test_coverage_with_several_pairs_per_source_and_shared_targets(n):
    """n sources x 4 pairs onto n targets of another pool (each target in ~4 pairs); 300 datasets per n (binomial
    s.e. of the coverage estimate ~1.3 points)."""
    rng = np.random.default_rng(100 + n)
    src = np.repeat(np.arange(n), 4)
    tgt = np.concatenate([rng.choice(n, 4, replace=False) for _ in range(n)])
    reps = 300
    x = rng.standard_normal((reps, n))[:, src] + rng.standard_normal((reps, n))[:, tgt] + \
        rng.standard_normal((reps, src.size))
    est = vd.unit_intervals(x, {"source": src, "target": tgt}, resamples=999, seed=n, batch=100)
    assert est[0].pools == {"source": n, "target": len(set(tgt))}
    assert _covered(est).mean() >= 0.93


def test_one_unit_per_observation_is_scipys_bca_on_the_values():
    """Without expansion the interval is exactly scipy.stats.bootstrap's BCa of the mean (same draws); expanded, it
    is wider by the t / z factor of `expanded_level` and still contains it."""
    x = np.random.default_rng(3).gamma(2.0, size=15)
    ours = vd.unit_interval(x, expand=False, resamples=2000, seed=7)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7))
    assert (ours.low, ours.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    wide = vd.unit_interval(x, resamples=2000, seed=7)
    assert wide.low < ours.low and wide.high > ours.high
    g = 15
    assert vd.expanded_level(0.95, g) == pytest.approx(
        2 * stats.norm.cdf(math.sqrt(g / (g - 1)) * stats.t.ppf(0.975, g - 1)) - 1)


def test_the_mean_by_unit_sums_equals_the_general_weighted_statistic():
    rng = np.random.default_rng(5)
    x, src, tgt = _derangement_data(12, 1, rng, rounds=3)
    for units, pools in (({"source": src}, None), ({"source": src, "target": tgt}, None),
                         ({"source": src, "target": tgt}, {"source": "image", "target": "image"})):
        fast = vd.unit_interval(x[0], units, pools=pools, resamples=500)
        general = vd.unit_interval(x[0], units, pools=pools, resamples=500, statistic=vd.weighted_mean)
        assert (fast.value, fast.low, fast.high) == pytest.approx((general.value, general.low, general.high))


def test_paired_differences_resample_units_not_pairs():
    rng = np.random.default_rng(2)
    src = np.repeat(np.arange(20), 4)
    a = rng.standard_normal(20)[src] + 0.1 * rng.standard_normal(80)
    b = a - 0.5 + 0.05 * rng.standard_normal(80)
    est = vd.paired_interval(a, b, {"source": src})
    assert est.value == pytest.approx(np.mean(a - b)) and est.low > 0.4 and est.units == {"source": 20}
    with pytest.raises(ValueError, match="one shape"):
        vd.paired_interval(a, b[:-1], {"source": src})


@pytest.mark.parametrize("values, note", [([], "0 unit"), ([0.3], "1 unit"), ([0.2] * 30, "all 30 values equal")])
def test_degenerate_inputs_give_no_interval_and_underpowered(values, note):
    est = vd.unit_interval(values)
    assert math.isnan(est.low) and math.isnan(est.high) and note in est.note
    v = vd.decide(est, vd.Rule("x", 0.0, min_units=0))
    assert v.outcome == vd.UNDERPOWERED and note in v.reason


def test_replicates_without_observations_are_counted_and_too_many_give_no_interval():
    x = np.arange(10.0) % 3
    sparse = vd.unit_interval(x[:5], {"source": np.arange(5), "target": np.arange(5) + 5},
                              pools={"source": "image", "target": "image"})  # 5 pairs on 10 images: ~8% empty
    assert math.isnan(sparse.low) and "replicates drew no observation (too few units" in sparse.note
    assert vd.decide(sparse, vd.Rule("x", 0.0, min_units=2)).outcome == vd.UNDERPOWERED
    src = np.repeat(np.arange(12), 2)
    tgt = (src + np.tile([1, 5], 12)) % 12
    dense = vd.unit_interval(np.sin(np.arange(24.0)), {"source": src, "target": tgt},
                             pools={"source": "image", "target": "image"})
    assert dense.has_interval and (dense.note == "" or "count as the estimate" in dense.note)


def test_bad_inputs_are_refused_in_one_line():
    with pytest.raises(ValueError, match="1 NaN/inf of 3"):
        vd.unit_interval([0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match=r"units\['source'\] has 2 ids for 3 values"):
        vd.unit_interval([0.1, 0.2, 0.3], {"source": [0, 1]})
    with pytest.raises(ValueError, match="needs 0 <= k <= n"):
        vd.proportion_interval(4, 3)
    with pytest.raises(ValueError, match="whole numbers"):
        vd.wilson_interval(1.5, 3)


def test_wilson_is_scipys_with_float_noise_clipped():
    for k, n in ((0, 44), (44, 44), (3, 3), (0, 3), (7, 20)):
        ref = stats.binomtest(k, n).proportion_ci(method="wilson")
        est = vd.proportion_interval(k, n, unit="source")
        assert est.low == pytest.approx(ref.low, abs=1e-12) and est.high == pytest.approx(ref.high, abs=1e-12)
        assert est.units == {"source": n} and est.n == n
    assert vd.proportion_interval(0, 44).low == 0.0 and vd.proportion_interval(44, 44).high == 1.0  # exact, not 5.6e-17
    lo, hi = vd.wilson_interval(np.array([0, 5, 0]), np.array([10, 10, 0]))
    assert lo[0] == 0.0 and lo[1] == pytest.approx(stats.binomtest(5, 10).proportion_ci(method="wilson").low)
    assert math.isnan(lo[2]) and math.isnan(hi[2])
    assert math.isnan(vd.proportion_interval(0, 0).low)


def test_exact_mcnemar_and_holm():
    a = np.array([1, 1, 1, 0, 0, 1, 0], bool)  # only a: 3 pairs, only b: 1 pair, both: 1, neither: 2
    b = np.array([0, 0, 0, 1, 0, 1, 0], bool)
    res = vd.mcnemar_exact(a, b)
    assert (res.only_a, res.only_b, res.n) == (3, 1, 7)
    assert res.p_value == pytest.approx(2 * (1 + 4) / 16)  # two-sided binomial(4, 1/2) tail at 1
    assert vd.mcnemar_exact(a, a).p_value == 1.0
    assert vd.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert vd.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def _est(lo, hi, units=44):
    return vd.Estimate((lo + hi) / 2, lo, hi, units, {"source": units}, {"source": units}, "test")


def test_decisions_per_outcome_with_the_margin_checked_first():
    rule = vd.Rule("AT larger", 0.0, margin=0.01)
    assert vd.decide(_est(0.02, 0.05), rule).outcome == vd.HOLDS
    assert vd.decide(_est(-0.05, -0.02), rule).outcome == vd.DOES_NOT_HOLD
    assert vd.decide(_est(-0.02, 0.05), rule).outcome == vd.INCONCLUSIVE
    assert vd.decide(_est(-0.0022, -0.0004), rule).outcome == vd.EQUIVALENT  # the CNN case
    assert vd.decide(_est(0.02, 0.05, units=9), rule).outcome == vd.UNDERPOWERED
    assert vd.decide(None, rule).outcome == vd.NOT_EVALUATED
    below = vd.Rule("smaller", 1.0, direction="below")
    assert vd.decide(_est(0.2, 0.5), below).outcome == vd.HOLDS


def test_a_wilson_rule_says_underpowered_before_running_when_it_cannot_decide():
    rule = vd.Rule("star-like", 0.9, interval="proportion")
    z2 = stats.norm.ppf(0.975) ** 2
    assert rule.needs() == math.ceil(9 * z2)  # n / (n + z^2) >= 0.9: the all-success lower bound reaches 0.9
    assert rule.power_check(3, "sources") == f"underpowered: needs n >= {rule.needs()} sources (has 3)"
    assert rule.power_check(44) is None
    assert vd.decide(vd.proportion_interval(3, 3), rule).outcome == vd.UNDERPOWERED
    assert vd.decide(vd.proportion_interval(44, 44), rule).outcome == vd.HOLDS


def test_combine_names_the_parts_that_decided():
    v = vd.combine({"mnist": vd.DOES_NOT_HOLD, "imagenet": vd.UNDERPOWERED})
    assert v.outcome == vd.DOES_NOT_HOLD and v.reason == "decided by mnist (does not hold); not deciding: imagenet " \
                                                         "(underpowered)"
    v = vd.combine({"a": vd.HOLDS, "b": vd.INCONCLUSIVE, "c": vd.HOLDS, "d": vd.NOT_EVALUATED})
    assert v.reason == "decided by a, c (holds); b (inconclusive); not deciding: d (not evaluated)"
    assert vd.combine({"a": vd.HOLDS, "b": vd.DOES_NOT_HOLD}).outcome == vd.MIXED
    assert vd.combine({"a": vd.HOLDS, "b": vd.INCONCLUSIVE}).outcome == vd.INCONCLUSIVE
    assert vd.combine({"a": vd.UNDERPOWERED, "b": vd.NOT_EVALUATED}).outcome == vd.UNDERPOWERED
    assert vd.combine({}).outcome == vd.NOT_EVALUATED
    with pytest.raises(ValueError, match="unknown outcomes"):
        vd.combine({"a": "sort of"})


# ------------------------------------------------------------------------ seeds as a random effect


def _seed_study(units, seeds, seed_sd, rng, mean=0.0):
    """One study: S trainings measured on the SAME G units: x[s, g] = mean + b_s + u_g + e_sg, b ~ N(0, seed_sd^2)
    (the seed's random effect), u ~ N(0, 1) shared by every seed, e ~ N(0, 0.5^2)."""
    b = seed_sd * rng.standard_normal(seeds)
    x = mean + b[:, None] + rng.standard_normal(units)[None, :] + 0.5 * rng.standard_normal((seeds, units))
    return x


def _per_seed_mean(x):
    return lambda w: (w @ x.T) / w.sum(1, keepdims=True)


@pytest.mark.parametrize("seed_sd, seeds", [(0.0, 2), (0.2, 3), (0.3, 4), (0.3, 2)])
def test_seed_pooled_interval_covers_the_population_of_seeds(seed_sd, seeds):
    """300 simulated studies of 12 units shared by every seed (true mean 0): the seed-pooled interval covers >= 92.5%
    (2 binomial s.e. (1.26 points) below 95%) and <= 99% (not uselessly wide); pooling the seeds as fixed effects
    (the bootstrap variance alone, z interval) covers the population of seeds less once the seeds vary.
    `python -m benchmarks.verdict_coverage --seed-pooled` has the full table (2,000 studies per cell)."""
    rng = np.random.default_rng(int(seed_sd * 10) + 7 * seeds)
    est = [vd.seed_pooled_interval(_per_seed_mean(_seed_study(12, seeds, seed_sd, rng)), 12, resamples=499, seed=i)
           for i in range(300)]
    cover = _covered(est).mean()
    assert 0.925 <= cover <= 0.99
    assert est[0].units == {"unit": 12, "seeds": seeds} and est[0].seeds == seeds and est[0].pools == {"unit": 12}
    fixed = np.mean([abs(e.value) < 1.96 * math.sqrt(e.within) for e in est])
    if seed_sd >= 0.3:
        assert fixed < cover - 0.03


def test_seed_pooled_interval_without_unit_noise_is_the_t_interval_of_the_seed_means():
    """When the units add nothing (every seed's statistic ignores the unit weights), C = 0, df = S - 1 and the
    interval is scipy's t interval of the S seed values."""
    vals = np.array([0.3, -0.1, 0.45, 0.2])
    est = vd.seed_pooled_interval(lambda w: np.tile(vals, (w.shape[0], 1)), 20, resamples=200)
    ref = stats.t.interval(0.95, vals.size - 1, loc=vals.mean(), scale=stats.sem(vals))
    assert (est.low, est.high) == pytest.approx(ref) and est.df == pytest.approx(3) and est.within == pytest.approx(0, abs=1e-15)
    assert est.value == pytest.approx(vals.mean()) and est.seed_values == pytest.approx(tuple(vals))


def test_seed_pooled_interval_of_identical_seeds_is_the_t_interval_over_units():
    """Seeds that agree exactly (s^2 = 0): V is the bootstrap variance of the unit mean x G / (G - 1), i.e. about
    the sample variance / G, and df = G - 1: the one-sample t interval over the units, to bootstrap noise."""
    u = np.random.default_rng(4).standard_normal(25)
    est = vd.seed_pooled_interval(_per_seed_mean(np.stack([u, u, u])), 25, resamples=20000)
    ref = stats.t.interval(0.95, 24, loc=u.mean(), scale=stats.sem(u))
    assert est.df == pytest.approx(24) and est.between == pytest.approx(0, abs=1e-15)
    assert est.low == pytest.approx(ref[0], abs=0.03) and est.high == pytest.approx(ref[1], abs=0.03)


def test_seed_pooled_rows_weights_a_row_by_the_product_of_its_units_multiplicities():
    """The per-row form equals the general form with the per-seed weighted mean written out by hand (same draws):
    pairs of (source, target) images from one pool, and sources and targets from two pools."""
    rng = np.random.default_rng(8)
    seeds, n_img, rounds = 3, 10, 2
    src = np.tile(np.arange(n_img), rounds * seeds)
    tgt = np.concatenate([_derangement(n_img, rng) for _ in range(rounds * seeds)])
    sd = np.repeat(np.arange(seeds), n_img * rounds)
    x = rng.standard_normal(src.size)

    first = list(dict.fromkeys(tgt.tolist()))  # a pool's units are numbered in order of first appearance
    tcode = np.array([first.index(t) for t in tgt])

    def by_hand(w, offset=0):
        row = w[:, src] * w[:, offset + (tcode if offset else tgt)]
        return np.stack([(row[:, sd == s] * x[sd == s]).sum(1) / row[:, sd == s].sum(1) for s in range(seeds)], 1)

    one = vd.seed_pooled_rows(x, sd, {"source": src, "target": tgt}, pools={"source": "image", "target": "image"},
                              resamples=300, seed=3)
    ref = vd.seed_pooled_interval(by_hand, {"image": n_img}, resamples=300, seed=3)
    assert (one.value, one.low, one.high) == pytest.approx((ref.value, ref.low, ref.high))
    assert one.n == x.size and one.units == {"source": n_img, "target": n_img, "seeds": seeds} and one.pools == {"image": n_img}
    two = vd.seed_pooled_rows(x, sd, {"source": src, "target": tgt}, resamples=300, seed=3)
    ref2 = vd.seed_pooled_interval(lambda w: by_hand(w, n_img), {"source": n_img, "target": n_img}, resamples=300,
                                   seed=3)
    assert (two.low, two.high) == pytest.approx((ref2.low, ref2.high)) and two.pools == {"source": 10, "target": 10}
    log = vd.seed_pooled_rows(x, sd, {"image": src}, resamples=300, scale="log")
    assert log.ratio() == pytest.approx((math.exp(log.value), math.exp(log.low), math.exp(log.high)))
    assert log.describe().startswith("geometric mean ratio")


def test_seed_pooled_interval_calls_the_statistic_in_batches_and_refuses_bad_input():
    shapes = []

    def stat(w):
        shapes.append(w.shape)
        return np.stack([w[:, 0], w[:, 1]], 1)

    vd.seed_pooled_interval(stat, 1000, resamples=1200, batch=500)
    assert shapes == [(1, 1000), (500, 1000), (500, 1000), (200, 1000)]  # memory: batch x units
    with pytest.raises(ValueError, match="at least 2 seeds, got 1"):
        vd.seed_pooled_interval(lambda w: w[:, :1], 10)
    with pytest.raises(ValueError, match=r"must return \(replicates, seeds\)"):
        vd.seed_pooled_interval(lambda w: w[:, 0], 10)
    with pytest.raises(ValueError, match="seeds has 2 labels for 3 values"):
        vd.seed_pooled_rows([1.0, 2.0, 3.0], [0, 1], {"image": [0, 1, 2]})
    with pytest.raises(ValueError, match="1 NaN/inf of 3"):
        vd.seed_pooled_rows([1.0, np.nan, 3.0], [0, 1, 1], {"image": [0, 1, 2]})


def test_seed_pooled_power_matches_simulated_holds_rates():
    """The power function (noncentral t at the Satterthwaite df, from the design's variance components) against the
    rate of 'holds' in 400 simulated studies at the true components: within 3 binomial s.e. + 0.02 (the t
    approximation); power grows with units and seeds, and units alone cannot beat a seed-to-seed spread."""
    units, seeds, seed_sd, effect = 12, 3, 0.2, -0.6
    cd, co = 1.25 / units, 1.0 / units  # per-seed mean: var (1 + 0.25) / G; shared by seeds: 1 / G
    true = vd.SeedPooledEstimate(effect, -1.0, 0.0, units, {}, {"unit": units}, "truth", seed_values=(0.0,) * seeds,
                                 cov_diag=cd, cov_off=co, between=(seed_sd ** 2 + cd - co) / seeds)
    rng = np.random.default_rng(11)
    holds = np.mean([vd.seed_pooled_interval(_per_seed_mean(_seed_study(units, seeds, seed_sd, rng, effect)), units,
                                             resamples=299, seed=i).high < 0 for i in range(400)])
    power = vd.seed_pooled_power(true)
    assert abs(holds - power) < 3 * math.sqrt(power * (1 - power) / 400) + 0.02
    assert vd.seed_pooled_power(true, n_units=48) > power and vd.seed_pooled_power(true, seeds=6) > power
    assert vd.seed_pooled_power(true, 0.0) == pytest.approx(0.025, abs=0.01)  # at the bound: the one-sided level
    assert vd.seed_pooled_needs(true) is None  # 3 seeds with SD 0.2: the t_{2} of the seed spread caps the power
    assert vd.seed_pooled_needs(true, vary="seeds") is None  # nor can seeds alone beat the units' shared noise
    need = vd.seed_pooled_needs(true, vary="seeds", n_units=48)
    assert vd.seed_pooled_power(true, n_units=48, seeds=need) >= vd.POWER > \
        vd.seed_pooled_power(true, n_units=48, seeds=need - 1)
    flat = vd.SeedPooledEstimate(effect, -1.0, 0.0, units, {}, {"unit": units}, "truth", seed_values=(0.0,) * seeds,
                                 cov_diag=cd, cov_off=co, between=(cd - co) / seeds)
    g = vd.seed_pooled_needs(flat)
    assert vd.seed_pooled_power(flat, n_units=g) >= vd.POWER > vd.seed_pooled_power(flat, n_units=g - 1)
