"""Adaptive step mode: the level-set projection on a linear model, the threshold on a CNN, per-sample behaviour, and
the model-pass counts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from blindspots import LSTConfig, level_set_traversal

from conftest import LinearBinary, TinyCNN


def _pair(n=3, shape=(3, 8, 8), seed=1):
    gen = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand((n, *shape), generator=gen), 0.3 + 0.4 * torch.rand((n, *shape), generator=gen)


def _projection(model: LinearBinary, xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """The target projected onto the source's level set {x: w.x = w.xs} (closed form)."""
    w = model.w.detach().flatten()
    diff = (xt - xs).flatten(1)
    return (xt.flatten(1) - torch.outer(diff @ w / (w @ w), w)).view_as(xt)


def test_linear_adaptive_reaches_projection_in_few_iterations():
    model = LinearBinary()
    xs, xt = _pair()
    proj = _projection(model, xs, xt)
    assert float(proj.min()) > 0 and float(proj.max()) < 1  # the pixel clamp plays no part
    ad = level_set_traversal(model, xs, xt, config=LSTConfig.adaptive(adv_eps=0.0, init_noise=0.0), seed=0)
    torch.testing.assert_close(ad.images, proj, atol=2e-6, rtol=0)
    assert int(ad.iterations.max()) <= 8
    # a fixed step of the same starting size is still far from the projection after as many iterations ...
    same = LSTConfig(step_size=0.25, iterations=int(ad.iterations.max()), adv_eps=0.0, init_noise=0.0)
    fixed = level_set_traversal(model, xs, xt, config=same, seed=0)
    assert float((fixed.images - proj).abs().max()) > 100 * float((ad.images - proj).abs().max())
    # ... and needs over 5x the iterations to reach the same precision
    slow = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=0.25, iterations=5 * int(ad.iterations.max()),
                                                               adv_eps=0.0, init_noise=0.0), seed=0)
    assert float((slow.images - proj).abs().max()) > 2e-6
    assert bool((ad.model_passes < fixed.model_passes + 1).all())


def _sharp_cnn():
    model = TinyCNN()
    with torch.no_grad():
        model.head.weight.mul_(100)  # sharp logits: large steps change the confidence, so the threshold binds
    return model


def _cnn_batch(n=4, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=gen), torch.rand((n, 3, size, size), generator=gen)


@pytest.mark.parametrize("adv_eps, offset_scale_max", [(0.01, 1.0), (1e-3, 10.0)])
def test_adaptive_threshold_holds_at_every_accepted_point(adv_eps, offset_scale_max):
    model = _sharp_cnn()
    xs, xt = _cnn_batch()
    cfg = LSTConfig.adaptive(threshold=0.02, adv_eps=adv_eps, offset_scale_max=offset_scale_max, iterations=40,
                             log_every=1)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    tr = res.trajectory
    moved = tr.accepted > 0
    assert bool(moved.any())
    drop = res.initial_confidence[None, :] - tr.source_confidence
    assert bool((drop[moved] < 0.02).all())
    assert bool((res.acceptance_rate < 1).any()), "threshold never bit: the test would be vacuous"
    # independent check: the model's confidence at the returned images
    with torch.no_grad():
        p = model.eval()(res.images).softmax(-1).gather(1, res.labels[:, None]).squeeze(1)
    assert bool((res.initial_confidence - p)[res.acceptance_rate > 0].lt(0.02).all())


def test_adaptive_is_per_sample_and_stops_each_sample_on_its_own():
    model = _sharp_cnn()
    xs, xt = _cnn_batch(n=3)
    cfg = LSTConfig.adaptive(threshold=0.05, iterations=20)
    together = level_set_traversal(model, xs, xt, config=cfg, seed=4)
    assert len(set(together.iterations.tolist())) > 1  # samples stopped at different iterations
    for i in range(3):
        alone = level_set_traversal(model, xs[i:i + 1], xt[i:i + 1], config=cfg, seed=[4 + i])
        torch.testing.assert_close(alone.images[0], together.images[i], atol=1e-5, rtol=0)
        assert alone.iterations[0] == together.iterations[i]


def test_adaptive_without_growth_or_stop_equals_fixed_mode():
    model = TinyCNN()
    xs, xt = _cnn_batch(n=3)
    fixed = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=0.1, iterations=12, threshold=0.05), seed=2)
    frozen = LSTConfig.adaptive(step_size=0.1, iterations=12, threshold=0.05, grow=1.0, shrink=1.0, patience=100,
                                adv_eps=2e-3, offset_scale_max=1.0)
    ad = level_set_traversal(model, xs, xt, config=frozen, seed=2)
    torch.testing.assert_close(ad.images, fixed.images, atol=1e-6, rtol=0)
    assert torch.equal(ad.acceptance_rate, fixed.acceptance_rate)


def _reference_scaled_offset(model, xs, xt, eta, eps, smax, delta, iterations):
    """The traversal with the scaled offset written out plainly (no noise, one sample at a time, two passes per step)."""
    out = []
    for x0, tgt in zip(xs, xt):
        x0, tgt = x0[None], tgt[None]
        with torch.no_grad():
            probs = model(x0).softmax(-1)[0]
        y = int(probs.argmax())
        p0 = float(probs[y])
        x, a = x0.clone(), torch.zeros_like(x0)
        start = float((tgt - x).pow(2).mean().sqrt())
        for _ in range(iterations):
            xg = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(-model(xg).log_softmax(-1)[0, y], xg)
            v = tgt - x
            d = v - (g * v).sum() / (g * g).sum() * g
            s = 1 + (min(eta / 1e-2, smax) - 1) * min(float((tgt - x).pow(2).mean().sqrt()) / start, 1.0)
            a = (a + s * eps / 2 * g).clamp(-eps, eps)
            candidate = (x + eta * d - s * a).clamp(0, 1)
            with torch.no_grad():
                if p0 - float(model(candidate).softmax(-1)[0, y]) < delta:
                    x = candidate
        out.append(x)
    return torch.cat(out)


def test_scaled_offset_matches_a_plain_reference_loop():
    model = _sharp_cnn().eval()
    xs, xt = _cnn_batch(n=3)
    cfg = LSTConfig(step_size=0.3, iterations=10, threshold=0.02, adv_eps=2e-3, offset_scale_max=5.0, init_noise=0.0)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    assert bool((res.acceptance_rate < 1).any()) and bool((res.acceptance_rate > 0).any())
    ref = _reference_scaled_offset(model, xs, xt, eta=0.3, eps=2e-3, smax=5.0, delta=0.02, iterations=10)
    torch.testing.assert_close(res.images, ref, atol=1e-5, rtol=0)
    plain = level_set_traversal(model, xs, xt, config=replace(cfg, offset_scale_max=1.0), seed=0)
    assert float((plain.images - res.images).abs().max()) > 1e-3  # the scale is not a no-op here


def test_model_passes_count_every_sample_through_the_model():
    model = TinyCNN()
    seen = []
    model.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    xs, xt = _cnn_batch(n=5)
    for cfg in (LSTConfig(iterations=6), LSTConfig.adaptive(iterations=20, threshold=0.05),
                LSTConfig(iterations=4, log_every=2, batch_size=2, stop_rms=0.3)):
        seen.clear()
        res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
        assert int(res.model_passes.sum()) == sum(seen)
        assert bool((res.model_passes >= res.iterations + 2).all())  # clean forward + start gradient + iterations


def test_small_steps_that_still_progress_do_not_stop_a_sample():
    # grow=1 keeps the step at 1%: each accepted step shortens the distance by about 1%, below any absolute tolerance
    # but in proportion to its size, so the sample keeps going to the iteration cap (stall is judged per step size)
    model = LinearBinary()
    xs, xt = _pair()
    cfg = LSTConfig.adaptive(step_size=0.01, grow=1.0, iterations=15, adv_eps=0.0, init_noise=0.0)
    creep = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    assert bool((creep.iterations == 15).all())
    fixed = level_set_traversal(model, xs, xt, config=LSTConfig(step_size=0.01, iterations=15, adv_eps=0.0,
                                                                init_noise=0.0), seed=0)
    torch.testing.assert_close(creep.images, fixed.images, atol=1e-6, rtol=0)
