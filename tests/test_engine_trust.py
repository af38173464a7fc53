"""The LST engine off its default path (issue 13): an independent loop of the published algorithm, closed forms of
the adversarial offset, bfloat16 autocast, logging with early stop and batching, and clear refusals."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import blindspots as bs
from blindspots import LSTConfig, derangement_pairs, level_set_traversal

from conftest import LinearBinary, TinyCNN


def _images(n, shape=(3, 8, 8), lo=0.3, hi=0.7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand((n, *shape), generator=gen), lo + (hi - lo) * torch.rand((n, *shape),
                                                                                                 generator=gen)


# ------------------------------------------------------- the published algorithm, written here from its description

def _published_lst(model, xs, xt, eta, steps, delta, eps, seeds, radius=2 / 255):
    """lst-reference.md's loop, one sample at a time: gradient of the summed cross-entropy at x, the component of
    (xt - x) orthogonal to it, the persistent offset updated for every sample, and a SEPARATE no-grad evaluation of
    the candidate for the test against the clean source's confidence. Returns final images and decisions (T, N)."""
    model.eval()
    finals, decisions = [], []
    for i in range(xs.shape[0]):
        src, tgt = xs[i:i + 1], xt[i:i + 1]
        with torch.no_grad():
            probs = F.softmax(model(src), dim=1)
        y = probs.argmax(1)
        p0 = probs[0, y].item()
        noise = torch.empty(src.shape[1:]).uniform_(-radius, radius,
                                                    generator=torch.Generator().manual_seed(int(seeds[i])))
        x = torch.clamp(src + noise, 0, 1)
        offset = torch.zeros_like(x)
        mine = []
        for _ in range(steps):
            xg = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            grad = torch.autograd.grad(loss, xg)[0]
            g, v = grad.reshape(-1), (tgt - x).reshape(-1)
            d = v - (torch.dot(g, v) / torch.dot(g, g)) * g
            offset = torch.clamp(offset + eps / 2 * grad, -eps, eps)
            cand = torch.clamp(x + eta * d.view_as(x) - offset, 0, 1)
            with torch.no_grad():
                p_new = F.softmax(model(cand), dim=1)[0, y].item()
            accept = p0 - p_new < delta
            mine.append(accept)
            if accept:
                x = cand
        finals.append(x)
        decisions.append(mine)
    return torch.cat(finals), torch.tensor(decisions).T


@pytest.mark.parametrize("eps", [2e-3, 0.0])
def test_engine_equals_the_published_algorithm(eps):
    model = TinyCNN()
    with torch.no_grad():
        model.head.weight.mul_(100)  # confident enough that large steps get rejected
    xs, xt = _images(5, (3, 16, 16), 0.0, 1.0, seed=3)
    cfg = LSTConfig.paper(iterations=8, step_size=0.3, threshold=0.05, adv_eps=eps, log_every=1)
    engine = level_set_traversal(model, xs, xt, config=cfg, seed=11)
    images, decisions = _published_lst(model, xs, xt, 0.3, 8, 0.05, eps, seeds=range(11, 16))
    assert bool(decisions.any()) and not bool(decisions.all()), "the setting must exercise both outcomes"
    assert torch.equal(engine.trajectory.accepted.diff(dim=0).bool(), decisions)
    torch.testing.assert_close(engine.images, images, atol=1e-5, rtol=0)
    assert float((images - xs).abs().amax()) > 0.05  # the samples moved


def _linear_closed_form_setup(scale=0.05, eps=0.01, shape=(3, 8, 8)):
    model = LinearBinary(shape=shape, scale=scale)
    xs, xt = _images(1, shape)
    return model, xs, xt, model.w.detach().flatten(), eps


def test_adversarial_offset_one_step_closed_form():
    # logits (z, 0), z = w.x + b: g = grad(-log p_0) = -(1 - p_0) w; the offset a = (eps/2) g is SUBTRACTED, so the
    # step adds (eps/2)(1 - p_0) w and raises the confidence; no clamp at this size (|eps/2 g| < eps)
    model, xs, xt, w, eps = _linear_closed_form_setup()
    eta = 0.3
    res = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=eta, iterations=1, adv_eps=eps,
                                                              init_noise=0.0), seed=0)
    x0, v = xs.flatten(), (xt - xs).flatten()
    p0 = torch.sigmoid(x0 @ w)
    expected = x0 + eta * (v - (v @ w) / (w @ w) * w) + eps / 2 * (1 - p0) * w
    torch.testing.assert_close(res.images.flatten(), expected, atol=1e-6, rtol=0)
    assert float(res.final_confidence) > float(res.initial_confidence)


def test_adversarial_offset_saturates_at_eps_closed_form():
    # w = 8 s (s = +-1 per pixel) and b set so that p_0 = 1/2 at the start: (eps/2)|g| = 2 eps, so the offset clamps
    # to -eps s at the first step and stays there (g keeps its sign). Then x_T = xs + T eps s + (1 - (1-eta)^T) P(xt
    # - xs), P the projection orthogonal to s, as long as no pixel reaches 0 or 1 (and p_0 stays far enough from 1
    # that float32 does not round its gradient to zero: z grows by eps * 8 * 48 = 0.38 per step).
    model, xs, xt, _, eps = _linear_closed_form_setup(eps=1e-3, shape=(3, 4, 4))
    s = torch.sign(torch.randn(model.w.shape, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        model.w.copy_(8 * s)
        model.b.copy_(-(xs[0] * model.w).sum())
    eta, steps = 0.2, 5
    res = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=eta, iterations=steps, adv_eps=eps,
                                                              init_noise=0.0), seed=0)
    s_hat = s.flatten() / s.flatten().norm()
    v = (xt - xs).flatten()
    v_perp = v - (v @ s_hat) * s_hat
    expected = xs.flatten() + steps * eps * s.flatten() + (1 - (1 - eta) ** steps) * v_perp
    assert 0 < float(expected.min()) and float(expected.max()) < 1
    torch.testing.assert_close(res.images.flatten(), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ bfloat16 autocast on CPU

class LinearLayer(nn.Module):
    """Logits W x + b through nn.Linear (autocast runs it in bfloat16), biased to a confident source class."""

    def __init__(self, shape=(3, 8, 8), bias=12.0):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(math.prod(shape), 2)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([bias, 0.0]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_bfloat16_autocast_keeps_steps_orthogonal_and_confidence():
    model = LinearLayer()
    xs, xt = _images(3)
    cfg = LSTConfig(step_size=0.2, iterations=6, adv_eps=0.0, amp=True, log_every=1, log_snapshots=True)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    full = level_set_traversal(model, xs, xt, config=LSTConfig(**{**cfg.to_dict(), "amp": False}), seed=0)
    assert not torch.equal(res.images, full.images)  # bfloat16 did run
    assert float(res.initial_confidence.min()) > 1 - 1e-4  # confident: float16 gradients would underflow here
    normal = (model.fc.weight[0] - model.fc.weight[1]).detach()
    steps = (res.trajectory.snapshots[1:] - res.trajectory.snapshots[:-1]).flatten(2)
    assert bool((steps.norm(dim=2) > 1e-3).all())
    cosine = (steps @ normal).abs() / (steps.norm(dim=2) * normal.norm())
    assert float(cosine.max()) < 1e-2  # bfloat16 keeps 8 bits: the gradient's direction is right to ~0.4%
    torch.testing.assert_close(res.final_confidence, res.initial_confidence, atol=1e-4, rtol=0)
    assert bool((res.rms_l2 < 0.5 * res.start_rms_l2).all())


# ------------------------------------------------------------------------------- logging, early stop and batching

def test_logging_with_early_stop_and_batches_matches_one_batch():
    model = LinearBinary(shape=(3, 16, 16))
    xs, xt = _images(5, (3, 16, 16))
    xt[:2] = xs[:2] + 0.01 * (xt[:2] - xs[:2])  # the whole first batch of two finishes early
    cfg = LSTConfig(step_size=0.1, iterations=20, adv_eps=0.0, stop_rms=0.02, log_every=3, log_snapshots=True)
    whole = level_set_traversal(model, xs, xt, config=cfg, seed=1)
    chunked = level_set_traversal(model, xs, xt, config=LSTConfig(**{**cfg.to_dict(), "batch_size": 2}), seed=1)
    assert whole.trajectory.steps.tolist() == [0, 3, 6, 9, 12, 15, 18, 20]
    assert int(whole.iterations[:2].max()) < 3 < int(whole.iterations[2:].min())
    for name in ("source_confidence", "rms_to_target", "accepted", "snapshots"):
        torch.testing.assert_close(getattr(chunked.trajectory, name), getattr(whole.trajectory, name),
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(whole.trajectory.rms_to_target[-1], whole.rms_l2)


# ------------------------------------------------------------------------------------------------ clear refusals

def test_model_on_another_device_is_refused():
    xs, xt = _images(2)
    with pytest.raises(ValueError, match="move it first"):
        level_set_traversal(LinearBinary(), xs, xt, config=LSTConfig(iterations=1), device="meta")


class _Stateless(nn.Module):
    def __init__(self, dropout=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=dropout)
        self.fc = nn.Linear(4, 3)
        self.dropout = dropout

    def forward(self, x):
        h = self.bn(self.conv(x)).mean((2, 3))
        return self.fc(F.dropout(h, 0.5, training=True) if self.dropout else h)


@pytest.mark.parametrize("dropout, match", [(False, "BatchNorm without running statistics"),
                                            (True, "dropout or another random layer")])
def test_batch_dependent_or_random_models_are_refused(dropout, match):
    xs, xt = _images(4)
    with pytest.raises(ValueError, match=match):
        level_set_traversal(_Stateless(dropout), xs, xt, config=LSTConfig(iterations=1))


class _NanAway(nn.Module):
    """Finite near the sources (mean < 0.45), NaN once a step takes the image mean past 0.55."""

    def __init__(self):
        super().__init__()
        self.lin = LinearBinary()

    def forward(self, x):
        return self.lin(x) + torch.sqrt(0.55 - x.mean((1, 2, 3)))[:, None]


def test_model_nan_after_a_step_raises():
    xs, _ = _images(2, lo=0.3, hi=0.5)
    _, xt = _images(2, lo=0.7, hi=0.9)
    with pytest.raises(ValueError, match="NaN/inf logits or gradients at iteration"):
        level_set_traversal(_NanAway(), xs, xt, config=LSTConfig(step_size=0.2, iterations=10))


@pytest.mark.parametrize("kwargs", [dict(iterations=True), dict(step_size=50), dict(step_size=1.5),
                                    dict(adv_eps=5), dict(adv_eps=0.2), dict(batch_size=True), dict(log_every=True),
                                    dict(amp="yes"), dict(mode="fast"), dict(step_size=float("nan")),
                                    dict(threshold=True)])
def test_config_refuses_what_cannot_be_meant(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LSTConfig(**kwargs)
    assert LSTConfig(step_size=1.0, adv_eps=0.1, batch_size="auto").batch_size == "auto"


def test_derangements_refuse_fractional_and_2d_labels():
    with pytest.raises(ValueError, match="non-integral"):
        derangement_pairs([0.2, 0.7, 1.4, 1.9])
    with pytest.raises(ValueError, match="1-D"):
        derangement_pairs(torch.arange(8).view(4, 2))
    assert torch.equal(derangement_pairs(torch.tensor([0.0, 1.0, 2.0, 3.0]), rounds=2),
                       derangement_pairs(torch.arange(4), rounds=2))


@pytest.mark.parametrize("labels", [[0, -1], [0, 4], [5, 0]])
def test_labels_are_checked_against_the_logits_width(labels):
    xs, xt = _images(2, (3, 16, 16))
    model = bs.Classifier(TinyCNN(), class_names=list("abcdef"))  # six names, four logits
    expected = r"out of range.*(4 classes|start at 0)"  # a negative index is refused before the width is known
    with pytest.raises(ValueError, match=r"^labels " + expected):
        level_set_traversal(model, xs, xt, labels=labels, config=LSTConfig(iterations=1))
    with pytest.raises(ValueError, match=r"^target_labels " + expected):
        level_set_traversal(model, xs, xt, target_labels=labels, config=LSTConfig(iterations=1))
    if min(labels) >= 0:  # the width, not the six class names, decides
        with pytest.raises(ValueError, match=r"4 classes"):
            level_set_traversal(model, xs, xt, labels=labels, config=LSTConfig(iterations=1))


def test_compiled_model_gives_the_eager_results_for_lst_and_attacks():
    # torch.compile on CPU (inductor, a C++ compiler): the same traversal and the same PGD run as eager, to float
    # tolerance. One model for both, so the second call reuses the compiled graph.
    import attacks

    model = TinyCNN().eval()
    xs, xt = _images(3, (3, 16, 16))
    cfg = LSTConfig(step_size=0.1, iterations=4, log_every=0)
    eager = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    compiled = level_set_traversal(model, xs, xt, config=replace(cfg, compile=True), seed=0)
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-5, rtol=0)
    assert torch.equal(compiled.acceptance_rate, eager.acceptance_rate)
    pgd_eager = attacks.PGD(model, 4 / 255, steps=3, seed=0, early_stop=False)(xs)
    pgd_compiled = attacks.PGD(model, 4 / 255, steps=3, seed=0, early_stop=False, compile=True)(xs)
    torch.testing.assert_close(pgd_compiled.images, pgd_eager.images, atol=1e-5, rtol=0)
