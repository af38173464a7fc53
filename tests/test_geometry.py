"""Level-set geometry: exact answers on analytic models (linear, ball, non-convex max), deduplication against the
naive per-triangle loop, saved results, the report and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import blindspots
from blindspots.store import RunChanged
from blindspots import Classifier, LSTConfig, level_set_traversal
from blindspots.geometry import (
    barycentric_grid,
    geometry_report,
    hull_statistics,
    hull_statistics_naive,
    load_lst_results,
    path_confidence,
    save_lst_results,
    simplex_statistics,
    trajectory_confidence,
    triangle_layout,
    tube_width,
)

torch.set_num_threads(2)


class Linear2(nn.Module):
    """Two-class linear classifier: logits = W x + b, so every p_y level set is a hyperplane."""

    def __init__(self, d: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(2, d, generator=gen) * 0.3)
        self.b = nn.Parameter(torch.tensor([0.7, 0.0]))
        self.num_classes = 2

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


class Ball(nn.Module):
    """logit_0 = -||x - c||^2, logit_1 = -r0^2: the superlevel sets of p_0 are balls around c."""

    def __init__(self, c: torch.Tensor, r0: float) -> None:
        super().__init__()
        self.register_buffer("c", c.flatten())
        self.r0 = r0
        self.num_classes = 2

    def forward(self, x):
        d2 = ((x.flatten(1) - self.c) ** 2).sum(1)
        return torch.stack([-d2, torch.full_like(d2, -self.r0 ** 2)], 1)


class MaxModel(nn.Module):
    """On (1, 1, 2) images (u, v): logit_0 = alpha * max(u, v) + beta, logit_1 = 0. Superlevel sets
    {max(u, v) >= m} are the complement of a square: not convex."""

    def __init__(self, alpha: float, beta: float) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.num_classes = 2

    def forward(self, x):
        z = self.alpha * x.flatten(1).amax(1) + self.beta
        return torch.stack([z, torch.zeros_like(z)], 1)


def tiny_cnn(seed: int = 0, classes: int = 3) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(24, classes))
    net.num_classes = classes
    return Classifier(net, name="tiny")


def rand_images(*shape, seed=0, lo=0.0, hi=1.0):
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=gen)


# ---------------------------------------------------------------------------------------------- barycentric grid


@pytest.mark.parametrize("n", [1, 2, 7, 10, 20])
def test_barycentric_grid_is_exact(n):
    w = barycentric_grid(n)
    counts = barycentric_grid(n, integer=True)
    assert w.shape == ((n + 1) * (n + 2) // 2, 3)
    assert float((w.sum(1) - 1).abs().max()) <= 4e-16
    assert torch.equal(w == 0, counts == 0) and torch.equal(w == 1, counts == n)  # exact vertices and edges
    assert bool((w >= 0).all())
    assert (counts.sum(1) == n).all()
    assert len({tuple(r) for r in counts.tolist()}) == counts.shape[0]  # all distinct
    # vertices and every edge point are present
    for vertex in range(3):
        assert (counts[:, vertex] == n).sum() == 1
    assert int((counts[:, 2] == 0).sum()) == n + 1


def test_grid_step_must_divide_one():
    model = Linear2(12)
    src = rand_images(2, 3, 2, 2, seed=1)
    outs = rand_images(2, 3, 3, 2, 2, seed=2)
    with pytest.raises(ValueError, match="divide 1"):
        hull_statistics(model, src, outs, [0, 0], grid_step=0.3)
    assert hull_statistics(model, src, outs, [0, 0], grid_step=0.1).grid.shape[0] == 66


# ---------------------------------------------------------------------------------------------- exact answers


def test_linear_lst_outputs_stay_on_level_set_so_hull_is_exact():
    model = Classifier(Linear2(3 * 4 * 4, seed=3))
    gen = torch.Generator().manual_seed(0)
    n, k = 3, 4
    sources = 0.35 + 0.3 * torch.rand(n, 3, 4, 4, generator=gen)
    targets = 0.35 + 0.3 * torch.rand(k, n, 3, 4, 4, generator=gen)
    labels = model.predict(sources)[0].clone()  # predict returns inference-mode tensors
    cfg = LSTConfig(step_size=0.05, iterations=30, threshold=0.2, adv_eps=0.0, init_noise=0.0)
    outs = torch.stack([level_set_traversal(model, sources, targets[r], labels, cfg, seed=r).images
                        for r in range(k)], 1)
    assert float((outs - sources[:, None]).abs().amax()) > 0.05  # the traversal really moved
    hull = hull_statistics(model, sources, outs, labels, grid_step=0.1)
    p_outs = model.predict(outs.flatten(0, 1))[1].view(n, k)
    assert torch.allclose(p_outs, hull.p_src[:, None], atol=1e-5)
    assert torch.allclose(hull.confidence, hull.p_src[:, None, None].expand_as(hull.confidence), atol=1e-5)
    assert bool((hull.fraction == 1.0).all())  # every delta, including 0
    assert float(hull.edge_min.abs().max()) < 1e-5
    assert torch.allclose(hull.hull_mean, hull.p_src[:, None].expand_as(hull.hull_mean), atol=1e-5)
    summary = hull.summary()
    assert summary["fraction@0"]["mean"] == 1.0 and summary["fraction@0"]["std"] == 0.0
    assert summary["pairs"] == k * (k - 1) // 2


def test_linear_hull_fraction_counts_grid_points_exactly():
    """b_i one logit unit below the source's level set, b_j one above: on the grid the logit gap is (v - u)/n, so
    the points with v >= u (36 of 66 at n = 10) keep p >= p_src."""
    d = 8
    w = torch.zeros(2, d)
    w[0, 0] = 4.0  # logit gap z = 4 * x_0 + 0.7
    model = Linear2(d)
    model.w.data = w
    src = torch.full((1, 1, 2, 4), 0.5)
    bi, bj = src.clone(), src.clone()
    bi[0, 0, 0, 0] -= 0.25
    bj[0, 0, 0, 0] += 0.25
    outs = torch.stack([bi, bj], 1)
    hull = hull_statistics(model, src, outs, [0], grid_step=0.1, deltas=(0.0, 1.0))
    assert hull.fraction[0, 0, 0].item() == pytest.approx(36 / 66, abs=1e-7)
    assert hull.fraction[0, 0, 1].item() == 1.0
    # edge [source, b_i] drops to p(b_i) at its end; edge [source, b_j] rises
    p = torch.sigmoid(torch.tensor([2.7, 1.7, 3.7]))
    assert hull.p_src[0].item() == pytest.approx(p[0].item(), abs=1e-6)
    assert hull.edge_min[0, 0].item() == pytest.approx((p[1] - p[0]).item(), abs=1e-6)


@pytest.mark.parametrize("k", [5, 8])
def test_ball_superlevel_set_contains_the_hull(k):
    d = 3 * 3 * 3
    c = torch.full((d,), 0.5)
    model = Ball(c, r0=0.4)
    n = 3
    gen = torch.Generator().manual_seed(k)
    radius = 0.3
    dirs = torch.randn(n, k + 1, d, generator=gen)
    pts = c + radius * dirs / dirs.norm(dim=-1, keepdim=True)  # all vertices on one sphere: equal p
    sources = pts[:, 0].view(n, 3, 3, 3)
    outs = pts[:, 1:].reshape(n, k, 3, 3, 3)
    hull = hull_statistics(model, sources, outs, [0] * n, grid_step=0.1)
    assert bool((hull.fraction[..., 0] == 1.0).all())
    assert float(hull.edge_min.abs().max()) < 1e-5  # the edges' minimum is at the vertices
    assert bool((hull.hull_mean > hull.p_src[:, None]).all())  # interior strictly inside the ball
    simplex = simplex_statistics(model, sources, outs, [0] * n, samples=200)
    assert bool((simplex.fraction[:, 0] == 1.0).all())
    assert bool((simplex.mean > simplex.p_src).all())
    # the same vertices pushed outwards (b_k farther from c than the source) leave most of the hull outside
    far = (c + 0.45 * dirs[:, 1:] / dirs[:, 1:].norm(dim=-1, keepdim=True)).reshape(n, k, 3, 3, 3)
    assert float(hull_statistics(model, sources, far, [0] * n).fraction[..., 0].mean()) < 0.9


def _max_model_area_fraction(m: float) -> float:
    """Area fraction of the triangle (0,0), (1,0), (0,1) with max(u, v) >= m."""
    if m <= 0:
        return 1.0
    inside = m * m if m <= 0.5 else m * m - (2 * m - 1) ** 2 / 2
    return 1 - inside / 0.5


def test_nonconvex_superlevel_set_matches_analytic_area_within_interval():
    alpha, beta = 4.0, -1.0
    model = MaxModel(alpha, beta)
    src = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    outs = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 1, 2)
    deltas = (0.0, 0.1, 0.2, 0.3, 0.5)
    res = simplex_statistics(model, src, outs, [0], samples=4000, deltas=deltas, seed=1)
    p_src = torch.sigmoid(torch.tensor(alpha + beta)).item()
    assert res.p_src[0].item() == pytest.approx(p_src, abs=1e-6)
    hits = 0
    for i, d in enumerate(deltas):
        level = p_src - d
        m = (math.log(level / (1 - level)) - beta) / alpha
        exact = _max_model_area_fraction(m)
        assert res.ci_low[0, i] <= res.ci_high[0, i]
        hits += int(res.ci_low[0, i].item() <= exact <= res.ci_high[0, i].item())
        assert abs(res.fraction[0, i].item() - exact) < 0.04
    assert hits >= len(deltas) - 1  # 95% intervals: at most one miss expected among 5
    # fractions are not all trivial: the set is genuinely cut
    assert res.fraction[0, 0].item() == 0.0  # p_src is the maximum: only a null set keeps it
    assert 0.3 < res.fraction[0, 2].item() < 0.7 and 0.6 < res.fraction[0, 3].item() < 0.8


# ---------------------------------------------------------------------------------------------- dedup vs naive


def test_dedup_matches_naive_loop_and_saves_evaluations():
    model = tiny_cnn(seed=0)
    s, k = 3, 4
    sources = rand_images(s, 3, 6, 6, seed=1)
    outs = rand_images(s, k, 3, 6, 6, seed=2)
    labels = torch.tensor([0, 1, 2])
    fast = hull_statistics(model, sources, outs, labels, grid_step=0.1, batch_size=97)
    for separate in (True, False):
        naive = hull_statistics_naive(model, sources, outs, labels, grid_step=0.1, separate_edges=separate)
        assert torch.equal(fast.pairs, naive.pairs)
        assert torch.allclose(fast.confidence, naive.confidence, atol=1e-6)
        for name in ("p_src", "hull_mean", "edge_mean", "edge_min"):
            assert torch.allclose(getattr(fast, name), getattr(naive, name), atol=1e-6), name
        assert torch.equal(fast.fraction, naive.fraction)
    # unique probes per source: source, K outputs, K source edges of n-1 inner points, pairs x n(n-1)/2 others
    per_source = 1 + k + k * 9 + (k * (k - 1) // 2) * 45
    assert fast.evaluations == s * per_source
    assert naive.evaluations == s * (1 + (k * (k - 1) // 2) * 66)  # separate_edges=False, the last loop
    # batch size does not change the answer
    other = hull_statistics(model, sources, outs, labels, grid_step=0.1, batch_size=1000)
    assert torch.allclose(other.confidence, fast.confidence, atol=1e-6)


def test_naive_per_triangle_statistics_by_hand():
    """One triangle recomputed point by point with plain tensor arithmetic."""
    model = tiny_cnn(seed=4)
    src = rand_images(1, 3, 5, 5, seed=5)
    outs = rand_images(1, 3, 3, 5, 5, seed=6)
    hull = hull_statistics(model, src, outs, [1], grid_step=0.25, deltas=(0.0, 0.05))
    counts = barycentric_grid(4, integer=True)
    p = hull.pairs.tolist().index([0, 2])
    pts = torch.stack([(a * src[0] + b * outs[0, 0] + c * outs[0, 2]) / 4 for a, b, c in counts.tolist()])
    conf = model(pts).softmax(-1)[:, 1].detach()
    p_src = model(src).softmax(-1)[0, 1].item()
    assert torch.allclose(hull.confidence[0, p], conf, atol=1e-5)
    assert hull.hull_mean[0, p].item() == pytest.approx(conf.mean().item(), abs=1e-5)
    assert hull.fraction[0, p, 1].item() == pytest.approx((conf >= p_src - 0.05 - 1e-5).float().mean().item())
    e1, e2 = conf[counts[:, 2] == 0], conf[counts[:, 1] == 0]
    assert hull.edge_mean[0, p].item() == pytest.approx(((e1.mean() + e2.mean()) / 2).item(), abs=1e-5)
    assert hull.edge_min[0, p].item() == pytest.approx((torch.cat([e1, e2]).min() - p_src).item(), abs=1e-5)
    per = hull.per_source()
    assert per["hull_mean"][0].item() == pytest.approx(hull.hull_mean[0].mean().item())
    # the per-source edge minimum is the worst point on any of the source's K edges [source, b_k] (the published
    # get_avg_conf), recomputed here edge by edge, not a mean over triangles
    t = torch.linspace(0, 1, 5)
    edges = torch.cat([model(torch.stack([(1 - a) * src[0] + a * outs[0, k] for a in t])).softmax(-1)[:, 1]
                       for k in range(3)]).detach()
    assert per["edge_min"][0].item() == pytest.approx((edges.min() - p_src).item(), abs=1e-5)


# ---------------------------------------------------------------------------------------------- paths and tubes


def test_path_confidence_linear_closed_form():
    d = 6
    model = Linear2(d)
    model.w.data = torch.zeros(2, d)
    model.w.data[0, 0] = 2.0
    starts = torch.full((2, 1, 2, 3), 0.5)
    ends = starts.clone()
    ends[0, 0, 0, 0] = 0.0  # logit gap falls 1.0 along the path
    ends[1, 0, 1, 2] = 1.0  # orthogonal to w: stays on the level set
    res = path_confidence(model, starts, ends, [0, 0], steps=11, deltas=(0.0, 0.1))
    t = torch.linspace(0, 1, 11)
    expected = torch.sigmoid(1.7 - t)
    assert torch.allclose(res.t, t)
    assert torch.allclose(res.confidence[0], expected, atol=1e-6)
    assert torch.allclose(res.confidence[1], torch.full((11,), torch.sigmoid(torch.tensor(1.7)).item()), atol=1e-6)
    assert res.min_drop[0].item() == pytest.approx((expected[-1] - expected[0]).item(), abs=1e-6)
    assert res.min_drop[1].item() == pytest.approx(0.0, abs=1e-6)
    drop = expected[0] - expected
    assert res.fraction[0, 1].item() == pytest.approx((drop <= 0.1 + 1e-5).float().mean().item())
    assert res.fraction[1].tolist() == [1.0, 1.0]
    assert res.evaluations == 22


def test_trajectory_confidence_from_lst_result(tmp_path):
    model = tiny_cnn(seed=1)
    src = rand_images(2, 3, 8, 8, seed=3)
    tgt = rand_images(2, 3, 8, 8, seed=4)
    cfg = LSTConfig(iterations=6, log_every=2, threshold=0.2)
    result = level_set_traversal(model, src, tgt, None, cfg, seed=0)
    traj = trajectory_confidence(result, deltas=(0.0, 0.2))
    assert traj.confidence.shape == (2, 4)
    assert torch.equal(traj.t, result.trajectory.steps.float())
    assert torch.equal(traj.p_start, result.initial_confidence)
    assert bool((traj.fraction[:, 1] == 1.0).all())  # LST only accepts p0 - p < 0.2
    with pytest.raises(ValueError, match="log_every"):
        trajectory_confidence(level_set_traversal(model, src, tgt, None, LSTConfig(iterations=1), seed=0))
    # the report measures the tube at logged points of the LST path when snapshots are recorded
    cfg = LSTConfig(iterations=6, log_every=2, log_snapshots=True)
    result = level_set_traversal(model, src, tgt, None, cfg, seed=0)
    report = geometry_report(model, src, result.images, result.labels, tmp_path, tube_points=3, tube_directions=4,
                             tube_radii=(0.1,), triangle_figures=0, trajectory=result)
    assert report["hull"] is None and "K >= 2" in report["notes"][0]
    assert report["tube"]["path"].startswith("LST path") and report["tube"]["positions"] == [0, 4, 6]
    assert report["trajectory"]["points"] == 4


def test_tube_width_ball_centre_and_linear_tangent():
    d = 2 * 4 * 4
    c = torch.full((d,), 0.5)
    model = Ball(c, r0=0.4)
    centre = c.view(1, 2, 4, 4)
    tube = tube_width(model, centre, None, [0], radii=(0.0, 0.1, 0.3), n_directions=32)
    expected = torch.sigmoid(0.16 - torch.tensor([0.0, 0.01, 0.09]))  # every direction alike around the centre
    assert torch.allclose(tube.quantiles[0], expected[:, None].expand(3, 3), atol=1e-6)
    assert tube.p_center[0].item() == pytest.approx(expected[0].item(), abs=1e-6)
    # linear model, path along w: orthogonal directions keep p exactly; path orthogonal to w: p spreads with r
    lin = Linear2(d, seed=2)
    x = torch.full((2, 2, 4, 4), 0.5)
    gdir = (lin.w[0] - lin.w[1]).detach().view(1, 2, 4, 4)
    ortho = torch.zeros(1, d)
    ortho[0, 0], ortho[0, 1] = gdir.flatten()[1], -gdir.flatten()[0]
    dirs = torch.cat([gdir, ortho.view(1, 2, 4, 4)])
    tube = tube_width(lin, x, dirs, [0, 0], radii=(0.05, 0.2), n_directions=64, seed=3)
    assert torch.allclose(tube.confidence[0], tube.p_center[0].expand(2, 64), atol=2e-6)
    spread = tube.quantiles[1, :, 2] - tube.quantiles[1, :, 0]
    assert float(spread[0]) > 1e-3 and float(spread[1]) > float(spread[0])
    assert bool((tube.quantiles[..., 0] <= tube.quantiles[..., 1]).all())


# ---------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_get_clear_errors():
    model = tiny_cnn()
    src = rand_images(2, 3, 6, 6, seed=1)
    outs = rand_images(2, 3, 3, 6, 6, seed=2)
    with pytest.raises(ValueError, match="K >= 2"):
        hull_statistics(model, src, outs[:, :1], [0, 1])
    with pytest.raises(ValueError, match="K >= 2"):
        simplex_statistics(model, src, outs[:, :1], [0, 1])
    with pytest.raises(ValueError, match=r"\(N, K, C, H, W\)"):
        hull_statistics(model, src, outs[:, 0], [0, 1])
    with pytest.raises(ValueError, match="same image shape"):
        hull_statistics(model, src, outs[..., :5], [0, 1])
    with pytest.raises(ValueError, match="2 sources"):
        hull_statistics(model, src, outs[:1], [0, 1])
    bad = outs.clone()
    bad[1, 2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hull_statistics(model, src, bad, [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        path_confidence(model, src, bad[:, 0].nan_to_num(0).masked_fill(torch.ones(1, dtype=torch.bool), float("nan")),
                        [0, 1])
    with pytest.raises(ValueError, match="labels"):
        hull_statistics(model, src, outs, [0, 7])
    with pytest.raises(ValueError, match="labels"):
        hull_statistics(model, src, outs, [0])
    with pytest.raises(ValueError, match="deltas"):
        hull_statistics(model, src, outs, [0, 1], deltas=(0.0, 2.0))
    with pytest.raises(ValueError, match="steps"):
        path_confidence(model, src, outs[:, 0], [0, 1], steps=1)
    with pytest.raises(ValueError, match="pair up"):
        path_confidence(model, src, outs[:1, 0], [0, 1])
    with pytest.raises(ValueError, match="directions"):
        tube_width(model, src, outs[:1, 0], [0, 1])
    with pytest.raises(TypeError, match="nn.Module"):
        hull_statistics(lambda x: x, src, outs, [0, 1])


# ---------------------------------------------------------------------------------------------- files, report, CLI


def test_save_and_load_results_roundtrip(tmp_path):
    src = rand_images(3, 3, 8, 8, seed=1)
    tgt = rand_images(3, 3, 8, 8, seed=2)
    rounds = [rand_images(3, 3, 8, 8, seed=3 + r) for r in range(2)]
    path = save_lst_results(tmp_path / "r" / "lst_results.pt", src, tgt, rounds, [0, 1, 2], model="spec:x",
                            weights="w.pt")
    data = load_lst_results(path)
    assert data["outputs"].shape == (3, 2, 3, 8, 8)
    assert torch.equal(data["outputs"][:, 1], rounds[1])
    assert data["model"] == "spec:x" and data["weights"] == "w.pt"
    assert data["labels"].dtype == torch.int64
    # one round saved as (N, C, H, W) comes back as K = 1
    one = load_lst_results(save_lst_results(tmp_path / "one.pt", src, tgt, rounds[0], [0, 1, 2]))
    assert one["outputs"].shape == (3, 1, 3, 8, 8) and "model" not in one
    torch.save({"sources": src}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lacks the keys"):
        load_lst_results(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_lst_results(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="do not match"):
        save_lst_results(tmp_path / "x.pt", src, tgt, rand_images(2, 3, 8, 8), [0, 1, 2])


def test_geometry_report_writes_figures_and_json_and_resumes(tmp_path):
    model = tiny_cnn(seed=2)
    src = rand_images(2, 3, 8, 8, seed=1)
    outs = rand_images(2, 3, 3, 8, 8, seed=2)
    report = geometry_report(model, src, outs, [0, 1], tmp_path, simplex_samples=50, tube_directions=8,
                             tube_points=3, triangle_figures=2, tube_radii=(0.2, 0.5))
    saved = json.loads((tmp_path / "geometry.json").read_text())
    assert saved["hull"]["pairs"] == 3 and saved["hull"]["sources"] == 2
    assert set(saved["figures"]) == {"path_confidence.png", "triangle_0_0_1.png", "triangle_0_0_2.png",
                                     "tube_width.png"}
    for name in saved["figures"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    direct = hull_statistics(model, src, outs, [0, 1])
    assert saved["hull"]["hull_mean"]["mean"] == pytest.approx(float(direct.hull_mean.mean(1).mean()), abs=1e-6)
    assert saved["simplex"]["samples_per_source"] == 50
    # a rerun reuses the cached stages: a model that would fail proves nothing is recomputed
    def broken(x):
        raise RuntimeError("recomputed")

    model.forward = broken
    again = geometry_report(model, src, outs, [0, 1], tmp_path, simplex_samples=50, tube_directions=8,
                            tube_points=3, triangle_figures=2, tube_radii=(0.2, 0.5))
    assert again["hull"] == report["hull"] and again["tube"] == report["tube"]
    # other weights, inputs or settings are never served from the saved stages: refused, naming the cause
    del model.forward
    with torch.no_grad():
        model.model[0].weight.add_(0.1)
    kw = dict(simplex_samples=50, tube_directions=8, tube_points=3, triangle_figures=2, tube_radii=(0.2, 0.5))
    with pytest.raises(RunChanged, match="model weights"):
        geometry_report(model, src, outs, [0, 1], tmp_path, **kw)
    with pytest.raises(RunChanged, match="input outputs"):
        geometry_report(model, src, outs.flip(1), [0, 1], tmp_path, **kw)
    with pytest.raises(RunChanged, match="settings.tube_directions 8 -> 4"):
        geometry_report(model, src, outs, [0, 1], tmp_path, **{**kw, "tube_directions": 4})
    changed = geometry_report(model, src, outs, [0, 1], tmp_path, restart=True, **kw)
    assert changed["hull"]["hull_mean"] != report["hull"]["hull_mean"]
    # chunks of sources merge into the same statistics as one pass
    chunked = geometry_report(model, src, outs, [0, 1], tmp_path / "chunks", tube_points=0, chunk_sources=1,
                              simplex_samples=50)
    assert chunked["hull"] == changed["hull"]
    assert chunked["simplex"] == changed["simplex"]


def test_plot_triangle_uses_true_shape(tmp_path):
    from blindspots.plots import plot_triangle

    src = torch.zeros(1, 1, 2)
    bi = torch.tensor([[[3.0, 0.0]]])
    bj = torch.tensor([[[0.0, 4.0]]])
    li, lj, angle = triangle_layout(src, bi, bj)
    assert (li, lj) == (3.0, 4.0) and angle == pytest.approx(math.pi / 2)
    grid = barycentric_grid(4)
    fig = plot_triangle(grid, grid[:, 1], (li, lj, angle), p_src=0.5, path=tmp_path / "t.png")
    ax = fig.axes[0]
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    assert 3.0 <= xlim[1] < 3.7 and 4.0 <= ylim[1] < 4.7  # true side lengths, small margins
    assert (tmp_path / "t.png").is_file()


def test_cli_geometry_runs_on_saved_results(tmp_path, capsys):
    import timm

    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), weights)
    src = rand_images(2, 3, 32, 32, seed=1)
    outs = rand_images(2, 2, 3, 32, 32, seed=2)
    results = save_lst_results(tmp_path / "lst_results.pt", src, src.flip(0), outs, [0, 1],
                               model="timm:test_resnet")
    from blindspots.cli import main

    args = ["geometry", str(results), "--out", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu",
            "--tube-directions", "4", "--tube-points", "2", "--tube-radii", "0.5,1"]
    assert main(args) == 0  # the model spec comes from the results file
    assert "triangle hulls (2 sources x 1 pairs" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "geometry.json").read_text())
    assert saved["hull"]["pairs"] == 1 and saved["tube"]["directions"] == 4
    assert saved["model"] == "timm:test_resnet"
    assert (tmp_path / "out" / "triangle_0_0_1.png").is_file()
    # an unknown spec or a missing file: a clear error and exit code 2, no traceback
    assert main(args[:4] + ["--model", "nosuch:model"]) == 2
    assert "unknown model spec" in capsys.readouterr().err
    assert main(["geometry", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_public_api_is_reexported():
    for name in ("hull_statistics", "path_confidence", "simplex_statistics", "tube_width", "geometry_report",
                 "save_lst_results", "load_lst_results", "HullResult"):
        assert getattr(blindspots, name) is getattr(blindspots.geometry, name)
