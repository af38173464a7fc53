"""The LST engine against models with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import blindspots as bs
from blindspots import LSTConfig, derangement_pairs, level_set_traversal

from conftest import LinearBinary, TinyCNN


def _pair(n=3, shape=(3, 8, 8), lo=0.3, hi=0.7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    xs = lo + (hi - lo) * torch.rand((n, *shape), generator=gen)
    xt = lo + (hi - lo) * torch.rand((n, *shape), generator=gen)
    return xs, xt


# ------------------------------------------------------------------------------------------- linear: exact answers

def test_linear_model_keeps_confidence_exactly():
    model = LinearBinary()
    xs, xt = _pair()
    cfg = LSTConfig(step_size=0.05, iterations=60, adv_eps=0.0, init_noise=0.0, threshold=1e-3)
    res = level_set_traversal(model, xs, xt, labels=torch.zeros(3, dtype=torch.long), config=cfg, seed=0)
    assert torch.allclose(res.final_confidence, res.initial_confidence, atol=2e-6)
    assert bool((res.acceptance_rate == 1.0).all())  # the tiny threshold never bites: the level set is flat
    assert bool((res.rms_l2 < res.start_rms_l2 * 0.2).all())  # it moved (only the part along w remains)


def test_linear_steps_are_orthogonal_to_gradient():
    model = LinearBinary()
    xs, xt = _pair()
    cfg = LSTConfig(step_size=0.1, iterations=8, adv_eps=0.0, log_every=1, log_snapshots=True)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=3)
    snaps = res.trajectory.snapshots  # (L, N, C, H, W), L = iterations + 1
    assert snaps.shape == (9, 3, 3, 8, 8)
    w = model.w.detach().flatten()
    steps = (snaps[1:] - snaps[:-1]).flatten(2)  # (L-1, N, d)
    norms = steps.norm(dim=2)
    assert bool((norms > 1e-3).all())  # every step moved
    cosine = (steps @ w) / (norms * w.norm())
    assert cosine.abs().max() < 1e-5
    # with the adversarial term on, the step is no longer orthogonal: the check above can fail
    res_adv = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=0.1, iterations=2, adv_eps=0.01,
                                                                  log_every=1, log_snapshots=True), seed=3)
    step = (res_adv.trajectory.snapshots[1] - res_adv.trajectory.snapshots[0]).flatten(1)
    assert ((step @ w).abs() / (step.norm(dim=1) * w.norm())).max() > 1e-3


def test_linear_reaches_projection_of_target_onto_level_set():
    model = LinearBinary()
    xs, xt = _pair()
    cfg = LSTConfig(step_size=0.2, iterations=120, adv_eps=0.0, log_every=120, log_snapshots=True)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=5)
    x0 = res.trajectory.snapshots[0]  # the noisy start fixes the level set w.x = w.x0
    w = model.w.detach().flatten()
    d0 = (xt - x0).flatten(1)
    projection = xt.flatten(1) - torch.outer(d0 @ w / (w @ w), w)
    assert torch.allclose(res.images.flatten(1), projection, atol=1e-4)


def test_zero_gradient_moves_straight_to_target_without_nan():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[2.0, 0.0]]).expand(x.shape[0], 2)

    xs, xt = _pair(n=2)
    cfg = LSTConfig(step_size=0.1, iterations=10, adv_eps=1e-3, init_noise=0.0)
    res = level_set_traversal(Constant(), xs, xt, config=cfg, seed=0)
    expected = xt + (1 - 0.1) ** 10 * (xs - xt)
    assert torch.isfinite(res.images).all()
    assert torch.allclose(res.images, expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------- tiny CNN

def _cnn_batch(n=4, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=gen), torch.rand((n, 3, size, size), generator=gen)


def test_threshold_holds_for_every_accepted_step():
    model = TinyCNN()
    with torch.no_grad():
        model.head.weight.mul_(100)  # sharp logits, so that large steps do change the confidence
    xs, xt = _cnn_batch()
    cfg = LSTConfig(step_size=0.3, iterations=30, threshold=0.02, adv_eps=0.01, log_every=1)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    tr = res.trajectory
    moved = tr.accepted > 0  # positions reached through at least one accepted step
    drop = res.initial_confidence[None, :] - tr.source_confidence
    assert bool(moved.any())
    assert bool((drop[moved] < 0.02).all())
    assert bool((res.acceptance_rate < 1).any()), "threshold never bit: the test would be vacuous"
    # accepted counts are monotone and acceptance_rate matches them
    assert bool((tr.accepted[1:] >= tr.accepted[:-1]).all())
    assert torch.allclose(res.acceptance_rate, tr.accepted[-1].float() / 30)


def test_batch_of_four_equals_four_single_runs():
    model = TinyCNN()
    xs, xt = _cnn_batch()
    cfg = LSTConfig(step_size=0.1, iterations=15, threshold=0.05)
    together = level_set_traversal(model, xs, xt, config=cfg, seed=10)
    for i in range(4):
        alone = level_set_traversal(model, xs[i:i + 1], xt[i:i + 1], config=cfg, seed=[10 + i])
        assert torch.allclose(alone.images[0], together.images[i], atol=1e-5)
        assert alone.acceptance_rate[0] == together.acceptance_rate[i]
        assert alone.labels[0] == together.labels[i]
    chunked = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=0.1, iterations=15, threshold=0.05,
                                                                  batch_size=3), seed=10)
    assert torch.allclose(chunked.images, together.images, atol=1e-5)


def test_early_stop_equals_truncated_run():
    model = LinearBinary(shape=(3, 16, 16))
    xs, xt = _pair(n=4, shape=(3, 16, 16))
    xt[0] = xs[0] + 0.01 * (xt[0] - xs[0])  # one pair starts close: it finishes first
    cfg = LSTConfig(step_size=0.1, iterations=80, adv_eps=0.0, stop_rms=0.02)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=1)
    assert res.iterations[0] < res.iterations.max()
    for i in range(4):
        k = int(res.iterations[i])
        ref = level_set_traversal(model, xs[i:i + 1], xt[i:i + 1], config=LSTConfig(
            step_size=0.1, iterations=k, adv_eps=0.0), seed=[1 + i])
        assert torch.allclose(ref.images[0], res.images[i], atol=1e-6)
        if k < 80:
            assert res.rms_l2[i] < 0.02


def test_misclassified_sources_are_reported_not_dropped():
    model = TinyCNN()
    xs, xt = _cnn_batch()
    pred, _ = bs.Classifier(model).predict(xs)
    labels = pred.clone()
    labels[1] = (labels[1] + 1) % 4
    res = level_set_traversal(model, xs, xt, labels=labels, config=LSTConfig(iterations=2), seed=0)
    assert len(res) == 4
    assert res.misclassified.tolist() == [False, True, False, False]
    assert torch.equal(res.labels, labels)
    res_pred = level_set_traversal(model, xs, xt, labels=labels, config=LSTConfig(iterations=2, use_prediction=True),
                                   seed=0)
    assert torch.equal(res_pred.labels, pred)
    assert res_pred.misclassified[1]
    res_none = level_set_traversal(model, xs, xt, config=LSTConfig(iterations=2), seed=0)
    assert torch.equal(res_none.labels, pred) and not res_none.misclassified.any()


def test_sources_at_or_below_the_threshold_are_marked_and_warned():
    model = LinearBinary(scale=0.2)
    xs, xt = _pair(n=6)
    with torch.no_grad():
        p0 = model(xs).softmax(-1).amax(1)
    threshold = float(p0.median())  # half the sources start at or below it
    cfg = LSTConfig(step_size=0.5, iterations=3, threshold=threshold, adv_eps=0.0)
    with pytest.warns(UserWarning, match=r"3 of 6 sources start with a source-class confidence at or below"):
        res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    assert res.unconstrained.tolist() == (p0 <= threshold).tolist()
    assert [r["unconstrained"] for r in res.records()] == res.unconstrained.tolist()
    assert bool((res.acceptance_rate[res.unconstrained] == 1).all())  # nothing can reject their steps


def test_model_state_restored_and_no_parameter_grads():
    model = TinyCNN().train()
    flags_before = [p.requires_grad for p in model.parameters()]
    xs, xt = _cnn_batch(n=2)
    level_set_traversal(model, xs, xt, config=LSTConfig(iterations=3), seed=0)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags_before
    assert all(p.grad is None for p in model.parameters())


def test_trajectory_off_by_default_and_shapes_when_on():
    model = TinyCNN()
    xs, xt = _cnn_batch(n=3)
    assert level_set_traversal(model, xs, xt, config=LSTConfig(iterations=2), seed=0).trajectory is None
    res = level_set_traversal(model, xs, xt, config=LSTConfig(iterations=7, log_every=3), seed=0)
    tr = res.trajectory
    assert tr.steps.tolist() == [0, 3, 6, 7]
    for t in (tr.source_confidence, tr.target_confidence, tr.rms_to_target, tr.linf_to_target, tr.rms_to_source):
        assert t.shape == (4, 3) and torch.isfinite(t).all()
    assert torch.allclose(tr.rms_to_target[-1], res.rms_l2)
    assert torch.allclose(tr.source_confidence[-1], res.final_confidence)
    assert tr.snapshots is None


def test_channels_last_gives_same_result():
    model = TinyCNN()
    xs, xt = _cnn_batch(n=2)
    a = level_set_traversal(model, xs, xt, config=LSTConfig(iterations=5), seed=0)
    b = level_set_traversal(model, xs, xt, config=LSTConfig(iterations=5, channels_last=True), seed=0)
    assert torch.allclose(a.images, b.images, atol=1e-5)


def test_records_and_ssim():
    model = TinyCNN()
    xs, xt = _cnn_batch(n=2)
    res = level_set_traversal(model, xs, xt, config=LSTConfig(iterations=3), seed=0)
    rows = res.records()
    assert len(rows) == 2 and {"rms_l2", "linf", "ssim", "final_confidence", "seed"} <= set(rows[0])
    assert all(-1 <= r["ssim"] <= 1 for r in rows)
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))


# ---------------------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("make, match", [
    (lambda xs, xt: (xs[0], xt[0]), r"shape \(N, C, H, W\)"),
    (lambda xs, xt: (xs * 2, xt), r"values in \[0, 1\]"),
    (lambda xs, xt: (xs.clone().index_fill_(0, torch.tensor([1]), float("nan")), xt), "NaN"),
    (lambda xs, xt: (xs, xt[:1]), "pair up one to one"),
    (lambda xs, xt: ((xs * 255).to(torch.uint8), xt), "float tensor"),
    (lambda xs, xt: (xs, xt[..., :8]), "same image shape"),
])
def test_bad_images_get_clear_errors(make, match):
    xs, xt = _cnn_batch(n=2)
    a, b = make(xs, xt)
    with pytest.raises((ValueError, TypeError), match=match):
        level_set_traversal(TinyCNN(), a, b, config=LSTConfig(iterations=1))


def test_bad_labels_and_models_get_clear_errors():
    xs, xt = _cnn_batch(n=2)
    with pytest.raises(ValueError, match="out of range"):
        level_set_traversal(bs.Classifier(TinyCNN(), class_names=list("abcd")), xs, xt, labels=[0, 4])
    with pytest.raises(ValueError, match="out of range"):  # found from the logits when the class count is unknown
        level_set_traversal(TinyCNN(), xs, xt, labels=[0, 7])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        level_set_traversal(TinyCNN(), xs, xt, labels=[0, 1, 2])
    with pytest.raises(TypeError, match="integer class indices"):
        level_set_traversal(TinyCNN(), xs, xt, labels=torch.tensor([0.0, 1.0]))

    class TupleModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyCNN()

        def forward(self, x):
            return self.net(x), x.mean()

    with pytest.raises(TypeError, match="tuple of 2 elements.*output="):
        level_set_traversal(bs.Classifier(TupleModel()), xs, xt)
    res = level_set_traversal(bs.Classifier(TupleModel(), output=0), xs, xt, config=LSTConfig(iterations=1))
    assert len(res) == 2
    with pytest.raises(TypeError, match="config="):
        level_set_traversal(TinyCNN(), xs, xt, LSTConfig())


@pytest.mark.parametrize("kwargs", [dict(step_size=0), dict(iterations=-1), dict(threshold=0), dict(adv_eps=-1),
                                    dict(stop_rms=0), dict(log_every=-2), dict(batch_size=0)])
def test_bad_config_rejected(kwargs):
    with pytest.raises(ValueError):
        LSTConfig(**kwargs)


def test_paper_config():
    cfg = LSTConfig.paper()
    assert (cfg.step_size, cfg.iterations, cfg.threshold, cfg.adv_eps) == (1e-2, 400, 0.2, 2e-3)
    assert LSTConfig.paper(iterations=10).iterations == 10


# ---------------------------------------------------------------------------------------------- pairing

def test_derangements_pair_other_classes():
    labels = torch.arange(10)
    pairs = derangement_pairs(labels, rounds=5, seed=0)
    assert pairs.shape == (5, 10)
    for row in pairs:
        assert sorted(row.tolist()) == list(range(10))
        assert not bool((labels[row] == labels).any())
    assert not torch.equal(pairs[0], pairs[1])
    assert torch.equal(pairs, derangement_pairs(labels, rounds=5, seed=0))


def test_derangements_never_repeat_a_pair_and_never_map_a_class_as_a_block():
    labels = torch.arange(10).repeat_interleave(6)  # 60 balanced MNIST-like sources: rejection fails in later rounds
    pairs = derangement_pairs(labels, rounds=5, seed=0)
    for row in pairs:
        assert sorted(row.tolist()) == list(range(60)) and not bool((labels[row] == labels).any())
        for c in range(10):  # the old class-sorted cyclic fallback sent a whole class onto one target class
            assert len(set(labels[row[labels == c]].tolist())) > 1
    assert all(len(set(pairs[:, i].tolist())) == 5 for i in range(60))  # no source meets a target twice
    two = torch.tensor([0] * 20 + [1] * 20)  # rejection essentially never succeeds: the Markov chain draws it
    pairs = derangement_pairs(two, rounds=3, seed=1)
    assert all(not bool((two[row] == two).any()) for row in pairs)
    assert all(len(set(pairs[:, i].tolist())) == 3 for i in range(40))
    with pytest.raises(ValueError, match="more than half"):
        derangement_pairs(torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="3 rounds need 3 distinct targets"):
        derangement_pairs(torch.tensor([0, 0, 1, 1]), rounds=3)


@pytest.mark.parametrize("tries, draws", [(None, 576), (0, 384)], ids=["rejection", "markov-chain"])
def test_derangements_are_uniform_over_valid_assignments(tries, draws):
    """Chi-square on 2 rounds of a 5-image pool (classes 0,0,1,1,2): 16 valid first rounds, each leaving 3 valid
    second rounds without a repeated pair, so the 48 valid (round 1, round 2) assignments are equally likely. The
    chain starts from a fixed assignment, so this sees its mixing (with no moves it fails, p ~ 0)."""
    from itertools import permutations

    from scipy.stats import chisquare

    labels = [0, 0, 1, 1, 2]
    valid = [p for p in permutations(range(5)) if all(labels[p[i]] != labels[i] for i in range(5))]
    cells = {(p, q): 0 for p in valid for q in valid if all(p[i] != q[i] for i in range(5))}
    assert len(cells) == 48
    kw = {} if tries is None else {"rejection_tries": tries}
    for seed in range(draws):
        pairs = derangement_pairs(labels, rounds=2, seed=seed, **kw)
        cells[tuple(pairs[0].tolist()), tuple(pairs[1].tolist())] += 1  # KeyError: an invalid assignment
    assert chisquare(list(cells.values())).pvalue > 0.001


def test_labels_from_inference_mode_are_accepted():
    model = TinyCNN()
    xs, xt = _cnn_batch(n=2)
    with torch.inference_mode():
        labels = model.eval()(xs).argmax(1)
    res = level_set_traversal(model, xs, xt, labels=labels, config=LSTConfig(iterations=2), seed=0)
    assert torch.equal(res.labels, labels.clone())
    pred, _ = bs.Classifier(model).predict(xs)
    assert not pred.is_inference()
