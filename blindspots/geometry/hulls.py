"""Triangle hulls (the paper's Table 2) and full simplices spanned by a source and its K LST outputs: how much of
the convex hull stays confident?"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import probing
from ..verdicts import wilson_interval
from .common import (ATOL, DEFAULT_DELTAS, _check_deltas, _check_hull_inputs, _combination_confidence,
                     _grid_size, _mean_std, _setup)
from ..errors import InputError

# ------------------------------------------------------------------------------------------------ triangle hulls


def barycentric_grid(n: int, *, integer: bool = False) -> torch.Tensor:
    """All barycentric weights (a, b, c) / n with a + b + c = n over a triangle: (n+1)(n+2)/2 rows, vertices and
    edges included, built from integers (no float comparison can drop a point). Column 0 is the source's weight.

    With `integer=True` the integer counts (int64) are returned instead of the float64 weights.
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int (grid step 1/n), got {n!r}")
    rows = [(a, b, n - a - b) for a in range(n, -1, -1) for b in range(n - a + 1)]
    counts = torch.tensor(rows, dtype=torch.int64)
    if integer:
        return counts
    return counts.double() / n  # exact 0 and 1 at the vertices; rows sum to one up to float64 rounding


@dataclass
class HullResult:
    """Triangle statistics for S sources with K outputs each (P = K(K-1)/2 pairs), on CPU.

    Attributes:
        pairs: (P, 2) output indices (i, j) of each triangle (source, b_i, b_j).
        grid: (M, 3) barycentric weights of the probes (column 0: the source).
        confidence: (S, P, M) p_y at every probe of every triangle.
        p_src: (S,) confidence at the source.
        hull_mean: (S, P) mean p over the triangle's probes.
        fraction: (S, P, D) fraction of probes with p >= p_src - delta (- atol).
        edge_mean: (S, P) mean of the two source edges' mean p (each edge: n+1 probes, ends included).
        edge_min: (S, P) min over both source edges of (p - p_src) (0 when the edges stay on the level set).
        deltas: the D tolerances; evaluations: model evaluations spent.
    """

    pairs: torch.Tensor
    grid: torch.Tensor
    confidence: torch.Tensor
    p_src: torch.Tensor
    hull_mean: torch.Tensor
    fraction: torch.Tensor
    edge_mean: torch.Tensor
    edge_min: torch.Tensor
    deltas: tuple[float, ...]
    evaluations: int = 0
    forward_passes: int = 0

    def per_source(self) -> dict[str, torch.Tensor]:
        """Each statistic over the pairs of a source: name -> (S,) tensor. Means over the triangles, except
        `edge_min`, the minimum over them (the star-like check asks about the worst source edge, as the published
        `get_avg_conf` does)."""
        out = {"p_src": self.p_src, "hull_mean": self.hull_mean.mean(1), "edge_mean": self.edge_mean.mean(1),
               "edge_min": self.edge_min.amin(1)}
        for i, d in enumerate(self.deltas):
            out[f"fraction@{d:g}"] = self.fraction[:, :, i].mean(1)
        return out

    def summary(self) -> dict[str, Any]:
        """The paper's Table 2 row: mean and std over sources of the per-source statistics (JSON ready)."""
        out: dict[str, Any] = {k: _mean_std(v) for k, v in self.per_source().items()}
        out["sources"] = int(self.p_src.shape[0])
        out["pairs"] = int(self.pairs.shape[0])
        out["probes_per_triangle"] = int(self.grid.shape[0])
        out["evaluations"] = int(self.evaluations)
        return out


def _triangle_stats(conf: torch.Tensor, p_src: torch.Tensor, counts: torch.Tensor, deltas, atol):
    """Per-triangle statistics from confidences (S, P, M) at the integer grid `counts` (M, 3)."""
    thresholds = p_src[:, None, None] - torch.tensor(deltas)[None, None, :] - atol
    fraction = (conf[..., None] >= thresholds[:, None]).float().mean(2)
    edge_i, edge_j = counts[:, 2] == 0, counts[:, 1] == 0  # [source, b_i] and [source, b_j]
    edge_mean = (conf[..., edge_i].mean(-1) + conf[..., edge_j].mean(-1)) / 2
    edge_min = (conf[..., edge_i | edge_j] - p_src[:, None, None]).amin(-1)
    return conf.mean(-1), fraction, edge_mean, edge_min


def _hull_keys(k: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deduplicated probes of all triangles (source, b_i, b_j): unique integer weights (Q, K+1) over the vertices
    (source, b_1..b_K), and for each pair and grid point the index of its unique probe (P, M)."""
    counts = barycentric_grid(n, integer=True)
    pairs = torch.tensor(list(itertools.combinations(range(k), 2)), dtype=torch.int64)
    keys = torch.zeros(len(pairs), counts.shape[0], k + 1, dtype=torch.int64)
    keys[:, :, 0] = counts[:, 0]
    rows = torch.arange(len(pairs))
    keys[rows, :, pairs[:, 0] + 1] = counts[None, :, 1].expand(len(pairs), -1)
    keys[rows, :, pairs[:, 1] + 1] = counts[None, :, 2].expand(len(pairs), -1)
    unique, inverse = torch.unique(keys.flatten(0, 1), dim=0, return_inverse=True)
    return pairs, unique, inverse.view(len(pairs), counts.shape[0])


@torch.inference_mode()
def hull_statistics(
    model: nn.Module,
    sources: torch.Tensor,
    outputs: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    grid_step: float = 0.1,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    *,
    atol: float = ATOL,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> HullResult:
    """Probe every triangle (source, b_i, b_j), i < j, on the exact barycentric grid of step `grid_step`.

    Args:
        sources: (S, C, H, W) in [0, 1]; outputs: (S, K, C, H, W), K >= 2 LST outputs per source;
        labels: (S,) source classes. Shared probes (source, outputs, source edges) are evaluated once and all
            probes of all sources go through the model in batches of `batch_size`.
    """
    sources, outputs, labels = _check_hull_inputs(model, sources, outputs, labels)
    deltas = _check_deltas(deltas)
    n = _grid_size(grid_step)
    probe = _setup(model, device, batch_size)
    k = outputs.shape[1]
    pairs, unique, inverse = _hull_keys(k, n)
    weights = unique.double() / n
    vertices = torch.cat([sources[:, None], outputs], 1)
    with probing(model), tqdm(total=sources.shape[0] * unique.shape[0], disable=not progress, unit="img",
                              desc="hull") as bar:
        conf_unique = _combination_confidence(probe, vertices, weights, labels.to(probe.device), bar=bar)
    source_key = int(((unique[:, 0] == n)).nonzero()[0])
    p_src = conf_unique[:, source_key].clone()
    conf = conf_unique[:, inverse]  # (S, P, M)
    counts = barycentric_grid(n, integer=True)
    hull_mean, fraction, edge_mean, edge_min = _triangle_stats(conf, p_src, counts, deltas, atol)
    return HullResult(pairs=pairs, grid=barycentric_grid(n), confidence=conf, p_src=p_src, hull_mean=hull_mean,
                      fraction=fraction, edge_mean=edge_mean, edge_min=edge_min, deltas=deltas,
                      evaluations=probe.evaluations, forward_passes=probe.forward_passes)


@torch.inference_mode()
def hull_statistics_naive(
    model: nn.Module,
    sources: torch.Tensor,
    outputs: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    grid_step: float = 0.1,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    *,
    separate_edges: bool = True,
    atol: float = ATOL,
    device: str | torch.device | None = None,
) -> HullResult:
    """The reference structure, kept as a correctness and speed baseline for `hull_statistics`: a loop over sources
    and triangles, one forward pass for the source's p_src, one per triangle grid and (with `separate_edges`, as the
    reference's star-like check does) one per source edge. Same statistics, no sharing, no cross-source batching."""
    sources, outputs, labels = _check_hull_inputs(model, sources, outputs, labels)
    deltas = _check_deltas(deltas)
    n = _grid_size(grid_step)
    k = outputs.shape[1]
    counts = barycentric_grid(n, integer=True)
    grid = counts.double() / n
    pairs = torch.tensor(list(itertools.combinations(range(k), 2)), dtype=torch.int64)
    probe = _setup(model, device, 1 << 30)
    edge_weights = torch.stack([1 - torch.arange(n + 1.0, dtype=torch.float64) / n,
                                torch.arange(n + 1.0, dtype=torch.float64) / n], 1)
    edge_i, edge_j = counts[:, 2] == 0, counts[:, 1] == 0
    conf = torch.empty(sources.shape[0], len(pairs), counts.shape[0])
    p_src = torch.empty(sources.shape[0])
    y_all = labels.to(probe.device)
    with probing(model):
        for s in range(sources.shape[0]):
            y = y_all[s:s + 1]
            p_src[s] = _combination_confidence(probe, sources[s:s + 1, None], torch.ones(1, 1), y)[0, 0]
            for p, (i, j) in enumerate(pairs.tolist()):
                tri = torch.stack([sources[s], outputs[s, i], outputs[s, j]])[None]
                c = _combination_confidence(probe, tri, grid, y)[0]
                if separate_edges:  # the two source edges probed again as straight paths, n + 1 points each
                    for col, mask in ((1, edge_i), (2, edge_j)):
                        seg = torch.stack([sources[s], tri[0, col]])[None]
                        c[mask] = _combination_confidence(probe, seg, edge_weights, y)[0]  # source first, as the grid
                conf[s, p] = c
    hull_mean, fraction, edge_mean, edge_min = _triangle_stats(conf, p_src, counts, deltas, atol)
    return HullResult(pairs=pairs, grid=grid, confidence=conf, p_src=p_src, hull_mean=hull_mean, fraction=fraction,
                      edge_mean=edge_mean, edge_min=edge_min, deltas=deltas, evaluations=probe.evaluations,
                      forward_passes=probe.forward_passes)


def triangle_layout(source: torch.Tensor, b_i: torch.Tensor, b_j: torch.Tensor) -> tuple[float, float, float]:
    """The triangle (source, b_i, b_j) drawn in 2-D: l2 lengths |b_i - source|, |b_j - source| and the angle
    (radians) between b_i - source and b_j - source."""
    u = (b_i - source).double().flatten()
    v = (b_j - source).double().flatten()
    lu, lv = float(u.norm()), float(v.norm())
    if lu == 0 or lv == 0:
        return lu, lv, 0.0
    cos = float((u @ v) / (lu * lv))
    return lu, lv, math.acos(max(-1.0, min(1.0, cos)))


# ------------------------------------------------------------------------------------------------ full simplex


@dataclass
class SimplexResult:
    """Uniform Monte Carlo over the K-simplex (source, b_1..b_K) of each source, on CPU.

    Attributes:
        p_src: (S,); mean: (S,) mean p over the samples; fraction: (S, D) estimated volume fraction with
        p >= p_src - delta (- atol); ci_low, ci_high: (S, D) 95% Wilson score intervals; samples per source.
    """

    p_src: torch.Tensor
    mean: torch.Tensor
    fraction: torch.Tensor
    ci_low: torch.Tensor
    ci_high: torch.Tensor
    deltas: tuple[float, ...]
    samples: int
    evaluations: int = 0

    def summary(self) -> dict[str, Any]:
        """Mean and std over sources; pooled fraction over all samples with its 95% Wilson interval."""
        out: dict[str, Any] = {"p_src": _mean_std(self.p_src), "mean": _mean_std(self.mean)}
        n_total = self.samples * self.p_src.shape[0]
        for i, d in enumerate(self.deltas):
            pooled = float(self.fraction[:, i].double().mean())
            lo, hi = wilson_interval(round(pooled * n_total), n_total)  # a count, through float32 means
            out[f"fraction@{d:g}"] = {**_mean_std(self.fraction[:, i]), "pooled": pooled, "ci95": [float(lo), float(hi)]}
        out["samples_per_source"] = self.samples
        out["sources"] = int(self.p_src.shape[0])
        return out


def dirichlet_weights(samples: int, vertices: int, seed: int) -> torch.Tensor:
    """`samples` uniform points of the simplex with `vertices` corners (flat Dirichlet), float64, seeded."""
    gen = torch.Generator().manual_seed(seed)
    e = -torch.rand(samples, vertices, generator=gen, dtype=torch.float64).clamp_min(1e-300).log()
    return e / e.sum(1, keepdim=True)


@torch.inference_mode()
def simplex_statistics(
    model: nn.Module,
    sources: torch.Tensor,
    outputs: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    samples: int = 1024,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    *,
    seed: int = 0,
    atol: float = ATOL,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> SimplexResult:
    """Volume fraction of the full simplex conv(source, b_1, ..., b_K) (any K >= 2) that stays at
    p >= p_src - delta, by `samples` uniform (flat Dirichlet) points per source, with 95% Wilson intervals.
    Source s uses the weights drawn from seed `seed + s`, so results do not depend on batching."""
    sources, outputs, labels = _check_hull_inputs(model, sources, outputs, labels)
    deltas = _check_deltas(deltas)
    if not isinstance(samples, int) or samples < 1:
        raise InputError(f"samples must be a positive int, got {samples!r}")
    probe = _setup(model, device, batch_size)
    k = outputs.shape[1]
    s_count = sources.shape[0]
    weights = torch.stack([torch.cat([torch.eye(1, k + 1, dtype=torch.float64),
                                      dirichlet_weights(samples, k + 1, seed + s)]) for s in range(s_count)])
    vertices = torch.cat([sources[:, None], outputs], 1)
    with probing(model), tqdm(total=s_count * (samples + 1), disable=not progress, unit="img",
                              desc="simplex") as bar:
        conf = _combination_confidence(probe, vertices, weights, labels.to(probe.device), bar=bar)
    p_src, conf = conf[:, 0].clone(), conf[:, 1:]
    thresholds = p_src[:, None, None] - torch.tensor(deltas)[None, None, :] - atol
    counts = (conf[..., None] >= thresholds).sum(1)
    fraction = counts.double() / samples
    lo, hi = (torch.from_numpy(v).float() for v in wilson_interval(counts.numpy(), samples))
    return SimplexResult(p_src=p_src, mean=conf.mean(1), fraction=fraction.float(), ci_low=lo, ci_high=hi,
                         deltas=deltas, samples=samples, evaluations=probe.evaluations)

