"""Level-set geometry around LST outputs: straight paths (is the level set star-like around the source?), the convex
hull of a source and its K LST outputs (how much of it stays confident?), and the width of the confident tube
around a path.

Every probe is a convex combination of a few vertex images, ``x = sum_k w_k v_k``; all of them go through one
batching routine (`_combination_confidence`) that builds each batch with a small matrix product and evaluates the
model under `torch.inference_mode`, across sources, in batches of `batch_size`.

Triangle statistics (the paper's Table 2) deduplicate shared probes: for K outputs the K(K-1)/2 triangles
(source, b_i, b_j) share the source, every b_i and every source edge [source, b_i]. Each grid point is keyed by its
integer barycentric weights over the K+1 vertices, so shared points are evaluated once (501 instead of 660
evaluations per source at K = 5 and grid step 0.1).

A probe counts as "confident" at tolerance delta when ``p >= p_src - delta - atol``; `atol` (1e-5) only absorbs
float rounding, so that points exactly on the source's level set count as on it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .models import Classifier, model_device, probing
from .traversal import LSTResult, Trajectory
from .validation import check_images, check_labels, check_same_shape

__all__ = [
    "DEFAULT_DELTAS",
    "PathResult",
    "HullResult",
    "SimplexResult",
    "TubeResult",
    "barycentric_grid",
    "path_confidence",
    "trajectory_confidence",
    "hull_statistics",
    "hull_statistics_naive",
    "simplex_statistics",
    "tube_width",
    "triangle_layout",
    "save_lst_results",
    "load_lst_results",
    "geometry_report",
]

DEFAULT_DELTAS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
ATOL = 1e-5
_Z95 = 1.959963984540054


# ------------------------------------------------------------------------------------------------ input checks


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (ideally a blindspots.Classifier), got {type(model).__name__}")
    return model


def _check_deltas(deltas: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(d) for d in deltas)
    except TypeError as exc:
        raise TypeError(f"deltas must be a sequence of numbers, got {deltas!r}") from exc
    if not out:
        raise ValueError("deltas must hold at least one tolerance")
    if any(not (0 <= d <= 1) for d in out):
        raise ValueError(f"deltas must lie in [0, 1], got {out}")
    return out


def _num_classes(model: nn.Module) -> int | None:
    return model.num_classes if isinstance(model, Classifier) else None


def _check_hull_inputs(model, sources, outputs, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_model(model)
    check_images(sources, "sources")
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor of shape (N, K, C, H, W), got {type(outputs).__name__}")
    if outputs.ndim != 5:
        raise ValueError(f"outputs must have shape (N, K, C, H, W) (K LST outputs per source), got "
                         f"{tuple(outputs.shape)}")
    if outputs.shape[0] != sources.shape[0]:
        raise ValueError(f"outputs must hold K outputs for each of the {sources.shape[0]} sources, got "
                         f"{outputs.shape[0]} rows")
    if outputs.shape[1] < 2:
        raise ValueError(f"a hull needs K >= 2 LST outputs per source, got K = {outputs.shape[1]}")
    if outputs.shape[2:] != sources.shape[1:]:
        raise ValueError(f"outputs and sources must have the same image shape: {tuple(outputs.shape[2:])} vs "
                         f"{tuple(sources.shape[1:])}")
    check_images(outputs.flatten(0, 1), "outputs")
    labels = check_labels(labels, sources.shape[0], _num_classes(model))
    return sources, outputs, labels


def _grid_size(grid_step: float) -> int:
    if not (0 < grid_step <= 1):
        raise ValueError(f"grid_step must be in (0, 1], got {grid_step}")
    n = round(1 / grid_step)
    if abs(n * grid_step - 1) > 1e-9:
        raise ValueError(f"grid_step must divide 1 exactly (1/n, e.g. 0.1 or 0.05), got {grid_step}")
    return n


# ------------------------------------------------------------------------------------------------ model probing


class _Confidence:
    """p_y of a model at batches of points (eval mode, inference mode), counting images and forward passes."""

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.device, self.batch_size = model, device, batch_size
        self.evaluations = 0
        self.forward_passes = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model must return logits of shape ({x.shape[0]}, C), got {tuple(logits.shape)}")
        if int(y.max()) >= logits.shape[1]:
            raise ValueError(f"labels out of range: found {int(y.max())}, the model has {logits.shape[1]} classes")
        p = logits.softmax(-1).gather(1, y[:, None]).squeeze(1)
        if not bool(torch.isfinite(p).all()):
            raise ValueError("the model returned NaN/inf logits on some probe points")
        self.evaluations += x.shape[0]
        self.forward_passes += 1
        return p


def _combination_confidence(
    probe: _Confidence,
    vertices: torch.Tensor,
    weights: torch.Tensor,
    labels: torch.Tensor,
    *,
    bar: tqdm | None = None,
) -> torch.Tensor:
    """p_y at the convex combinations ``weights[q] @ vertices[s]`` for every source s and row q.

    vertices: (S, V, C, H, W); weights: (Q, V) shared by all sources or (S, Q, V); labels (S,). Returns (S, Q) on
    CPU. Batches of `probe.batch_size` points span several sources; each batch is built by one matrix product per
    source it touches, on the probe's device, and clamped to [0, 1] (float rounding only).
    """
    s_count, v_count = vertices.shape[:2]
    img_shape = vertices.shape[2:]
    per_source = weights.ndim == 3
    q_count = weights.shape[-2]
    total = s_count * q_count
    out = torch.empty(total, dtype=torch.float32)
    device = probe.device
    flat_vertices = vertices.flatten(2)
    cached: dict[int, torch.Tensor] = {}
    for lo in range(0, total, probe.batch_size):
        hi = min(total, lo + probe.batch_size)
        pieces, ys = [], []
        for s in range(lo // q_count, (hi - 1) // q_count + 1):
            q_lo, q_hi = max(lo - s * q_count, 0), min(hi - s * q_count, q_count)
            if s not in cached:
                cached.clear()
                cached[s] = flat_vertices[s].to(device)
            w = (weights[s] if per_source else weights)[q_lo:q_hi].to(device=device, dtype=cached[s].dtype)
            pieces.append(w @ cached[s])
            ys.append(labels[s].expand(q_hi - q_lo))
        x = torch.cat(pieces).clamp_(0, 1).view(-1, *img_shape)
        out[lo:hi] = probe(x, torch.cat(ys).to(device)).cpu()
        if bar is not None:
            bar.update(hi - lo)
    return out.view(s_count, q_count)


def _setup(model: nn.Module, device, batch_size: int) -> _Confidence:
    device = torch.device(device) if device is not None else model_device(model)
    return _Confidence(model, device, batch_size)


# ------------------------------------------------------------------------------------------------ straight paths


@dataclass
class PathResult:
    """Source-class confidence along N paths of P points each (CPU tensors).

    Attributes:
        t: (P,) position along the path (fraction in [0, 1] for segments; LST step for trajectories).
        confidence: (N, P) p_y at each point.
        p_start: (N,) the reference confidence (the path's start, or the clean source for an LST trajectory).
        mean, min: (N,) mean and min of p along the path.
        min_drop: (N,) min of (p - p_start) (<= 0 when the path dips below its start).
        fraction: (N, D) fraction of points with p >= p_start - delta (- atol), one column per delta.
        deltas: the D tolerances.
        evaluations: model evaluations spent (0 for a recorded trajectory).
    """

    t: torch.Tensor
    confidence: torch.Tensor
    p_start: torch.Tensor
    mean: torch.Tensor
    min: torch.Tensor
    min_drop: torch.Tensor
    fraction: torch.Tensor
    deltas: tuple[float, ...]
    evaluations: int = 0

    def summary(self) -> dict[str, Any]:
        """Mean and std over paths of each statistic (JSON ready)."""
        out = {k: _mean_std(getattr(self, k)) for k in ("p_start", "mean", "min", "min_drop")}
        for i, d in enumerate(self.deltas):
            out[f"fraction@{d:g}"] = _mean_std(self.fraction[:, i])
        out["paths"] = int(self.confidence.shape[0])
        out["points"] = int(self.confidence.shape[1])
        return out


def _path_stats(t, conf, p_start, deltas, atol, evaluations=0) -> PathResult:
    thresholds = p_start[:, None, None] - torch.tensor(deltas)[None, None, :] - atol
    frac = (conf[:, :, None] >= thresholds).float().mean(1)
    return PathResult(t=t, confidence=conf, p_start=p_start, mean=conf.mean(1), min=conf.amin(1),
                      min_drop=(conf - p_start[:, None]).amin(1), fraction=frac, deltas=deltas,
                      evaluations=evaluations)


def _segment_weights(steps: int) -> torch.Tensor:
    i = torch.arange(steps, dtype=torch.float64)
    return torch.stack([(steps - 1 - i) / (steps - 1), i / (steps - 1)], dim=1)


@torch.inference_mode()
def path_confidence(
    model: nn.Module,
    starts: torch.Tensor,
    ends: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    steps: int = 11,
    *,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    atol: float = ATOL,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> PathResult:
    """Source-class confidence at `steps` evenly spaced points of each segment starts[i] -> ends[i] (both ends
    included): the star-like check of the paper (11 points, t = 0, 0.1, ..., 1). Stats are relative to p at t = 0."""
    _check_model(model)
    check_images(starts, "starts")
    check_images(ends, "ends")
    check_same_shape(starts, ends, "starts", "ends")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 (both ends are included), got {steps!r}")
    deltas = _check_deltas(deltas)
    labels = check_labels(labels, starts.shape[0], _num_classes(model))
    probe = _setup(model, device, batch_size)
    weights = _segment_weights(steps)
    with probing(model):
        conf = _combination_confidence(probe, torch.stack([starts, ends], 1), weights, labels)
    return _path_stats(weights[:, 1].float(), conf, conf[:, 0].clone(), deltas, atol, probe.evaluations)


def trajectory_confidence(
    trajectory: Trajectory | LSTResult | torch.Tensor,
    p_start: torch.Tensor | None = None,
    *,
    steps: torch.Tensor | None = None,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    atol: float = ATOL,
) -> PathResult:
    """The path statistics along a recorded LST trajectory (no model evaluation).

    `trajectory` is an `LSTResult` run with `log_every > 0` (reference: the clean source's confidence, as in LST's
    acceptance test), a `Trajectory`, or an (L, N) tensor of logged source confidences (reference: `p_start`, by
    default the first logged row).
    """
    deltas = _check_deltas(deltas)
    if isinstance(trajectory, LSTResult):
        if trajectory.trajectory is None:
            raise ValueError("this LSTResult has no trajectory: run level_set_traversal with "
                             "LSTConfig(log_every=k) to record one")
        if p_start is None:
            p_start = trajectory.initial_confidence
        trajectory = trajectory.trajectory
    if isinstance(trajectory, Trajectory):
        steps = trajectory.steps if steps is None else steps
        conf = trajectory.source_confidence
    elif isinstance(trajectory, torch.Tensor):
        conf = trajectory
    else:
        raise TypeError(f"trajectory must be an LSTResult, a Trajectory or an (L, N) tensor, got "
                        f"{type(trajectory).__name__}")
    if conf.ndim != 2 or conf.shape[0] < 1:
        raise ValueError(f"trajectory confidences must have shape (L, N), got {tuple(conf.shape)}")
    conf = conf.detach().float().cpu().T.contiguous()  # (N, L)
    if not bool(torch.isfinite(conf).all()):
        raise ValueError("trajectory confidences contain NaN or infinite values")
    p_start = conf[:, 0].clone() if p_start is None else torch.as_tensor(p_start).detach().float().cpu().flatten()
    if p_start.shape[0] != conf.shape[0]:
        raise ValueError(f"p_start must hold one value per trajectory ({conf.shape[0]}), got {p_start.shape[0]}")
    t = torch.arange(conf.shape[1], dtype=torch.float32) if steps is None else torch.as_tensor(steps).float()
    if t.shape != (conf.shape[1],):
        raise ValueError(f"steps must have shape ({conf.shape[1]},), got {tuple(t.shape)}")
    return _path_stats(t, conf, p_start, deltas, atol)


# ------------------------------------------------------------------------------------------------ triangle hulls


def barycentric_grid(n: int, *, integer: bool = False) -> torch.Tensor:
    """All barycentric weights (a, b, c) / n with a + b + c = n over a triangle: (n+1)(n+2)/2 rows, vertices and
    edges included, built from integers (no float comparison can drop a point). Column 0 is the source's weight.

    With `integer=True` the integer counts (int64) are returned instead of the float64 weights.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (grid step 1/n), got {n!r}")
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
        """Each statistic averaged over the pairs of a source: name -> (S,) tensor."""
        out = {"p_src": self.p_src, "hull_mean": self.hull_mean.mean(1), "edge_mean": self.edge_mean.mean(1),
               "edge_min": self.edge_min.mean(1)}
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


def _mean_std(v: torch.Tensor) -> dict[str, float]:
    v = v.double()
    return {"mean": float(v.mean()), "std": float(v.std(correction=0)) if v.numel() > 0 else float("nan")}


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
            lo, hi = _wilson(torch.tensor([pooled]), n_total)
            out[f"fraction@{d:g}"] = {**_mean_std(self.fraction[:, i]), "pooled": pooled,
                                      "ci95": [float(lo[0]), float(hi[0])]}
        out["samples_per_source"] = self.samples
        out["sources"] = int(self.p_src.shape[0])
        return out


def _wilson(p: torch.Tensor, n: int, z: float = _Z95) -> tuple[torch.Tensor, torch.Tensor]:
    p = p.double()
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half).clamp(0, 1).float(), (centre + half).clamp(0, 1).float()


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
        raise ValueError(f"samples must be a positive int, got {samples!r}")
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
    fraction = (conf[..., None] >= thresholds).double().mean(1)
    lo, hi = _wilson(fraction, samples)
    return SimplexResult(p_src=p_src, mean=conf.mean(1), fraction=fraction.float(), ci_low=lo, ci_high=hi,
                         deltas=deltas, samples=samples, evaluations=probe.evaluations)


# ------------------------------------------------------------------------------------------------ tube width


@dataclass
class TubeResult:
    """Confidence around P path points at several l2 radii, in random unit directions orthogonal to the path.

    Attributes:
        radii: (R,); p_center: (P,) p at the path points; confidence: (P, R, n_directions);
        quantiles: (P, R, 3) the 5%, 50% and 95% quantiles of p over the directions.
    """

    radii: torch.Tensor
    p_center: torch.Tensor
    confidence: torch.Tensor
    quantiles: torch.Tensor
    levels: tuple[float, ...] = (0.05, 0.5, 0.95)
    evaluations: int = 0

    def summary(self) -> dict[str, Any]:
        """Per radius: the quantiles averaged over path points (JSON ready)."""
        q = self.quantiles.mean(0)
        return {"radii": self.radii.tolist(), "p_center": _mean_std(self.p_center),
                **{f"q{int(round(lv * 100)):02d}": q[:, i].tolist() for i, lv in enumerate(self.levels)},
                "points": int(self.p_center.shape[0]), "directions": int(self.confidence.shape[2])}


@torch.inference_mode()
def tube_width(
    model: nn.Module,
    path_points: torch.Tensor,
    directions: torch.Tensor | None,
    labels: torch.Tensor | Sequence[int],
    radii: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    n_directions: int = 256,
    *,
    seed: int = 0,
    clamp: bool = True,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> TubeResult:
    """p_y at x + r u for each path point x, each radius r (l2 in [0, 1] pixel space) and `n_directions` random unit
    directions u: Gaussian, with the component along the path direction at x removed (`directions`: (P, C, H, W),
    e.g. the LST step or target - source; None keeps all components), then normalised.

    Point p draws its directions from seed `seed + p`. With `clamp` the probes are clamped to [0, 1] (valid images).
    """
    _check_model(model)
    check_images(path_points, "path_points")
    pts = path_points
    if directions is not None:
        if not isinstance(directions, torch.Tensor) or directions.shape != pts.shape:
            raise ValueError(f"directions must be a tensor shaped like path_points {tuple(pts.shape)}, got "
                             f"{tuple(directions.shape) if isinstance(directions, torch.Tensor) else directions!r}")
        if not bool(torch.isfinite(directions).all()):
            raise ValueError("directions contain NaN or infinite values")
    radii_t = torch.as_tensor(radii, dtype=torch.float32).flatten()
    if radii_t.numel() == 0 or not bool(torch.isfinite(radii_t).all()) or bool((radii_t < 0).any()):
        raise ValueError(f"radii must be finite non-negative numbers, got {list(radii)}")
    if not isinstance(n_directions, int) or n_directions < 1:
        raise ValueError(f"n_directions must be a positive int, got {n_directions!r}")
    labels = check_labels(labels, pts.shape[0], _num_classes(model))
    probe = _setup(model, device, batch_size)
    dev = probe.device
    n_pts, d = pts.shape[0], pts[0].numel()
    levels = (0.05, 0.5, 0.95)
    conf = torch.empty(n_pts, radii_t.numel(), n_directions)
    p_center = torch.empty(n_pts)
    with probing(model), tqdm(total=n_pts * (radii_t.numel() * n_directions + 1), disable=not progress,
                              unit="img", desc="tube") as bar:
        for p in range(n_pts):
            x = pts[p].to(dev).flatten()
            y = labels[p:p + 1].to(dev)
            p_center[p] = probe(x.view(1, *pts.shape[1:]), y).cpu()[0]
            gen = torch.Generator().manual_seed(seed + p)
            u = torch.randn(n_directions, d, generator=gen).to(device=dev, dtype=x.dtype)
            if directions is not None:
                t = directions[p].to(dev).flatten().to(x.dtype)
                tn = t.norm()
                if float(tn) > 0:
                    t = t / tn
                    u -= (u @ t)[:, None] * t[None]
            u /= u.norm(dim=1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
            flat = torch.empty(radii_t.numel() * n_directions)
            total = flat.numel()
            for lo in range(0, total, probe.batch_size):
                hi = min(total, lo + probe.batch_size)
                idx = torch.arange(lo, hi)
                r = radii_t[idx // n_directions].to(dev, x.dtype)
                xb = x[None] + r[:, None] * u[idx % n_directions]
                if clamp:
                    xb = xb.clamp_(0, 1)
                flat[lo:hi] = probe(xb.view(-1, *pts.shape[1:]), y.expand(hi - lo)).cpu()
                bar.update(hi - lo)
            bar.update(1)
            conf[p] = flat.view(radii_t.numel(), n_directions)
    quantiles = torch.quantile(conf, torch.tensor(levels), dim=2).permute(1, 2, 0).contiguous()
    return TubeResult(radii=radii_t, p_center=p_center, confidence=conf, quantiles=quantiles, levels=levels,
                      evaluations=probe.evaluations)


# ------------------------------------------------------------------------------------------------ saved results

_RESULT_KEYS = ("sources", "targets", "outputs", "labels")


def save_lst_results(
    path: str | os.PathLike,
    sources: torch.Tensor,
    targets: torch.Tensor,
    outputs: torch.Tensor | Sequence[torch.Tensor],
    labels: torch.Tensor | Sequence[int],
    model: str | None = None,
    **extra: Any,
) -> Path:
    """Save LST results for `blindspots geometry` (a plain `torch.save` dict, readable with weights_only=True).

    Args:
        sources: (N, C, H, W); targets: (N, C, H, W) or (N, K, C, H, W) (the target of each round);
        outputs: (N, C, H, W) for one round, (N, K, C, H, W) for K rounds, or a list of K (N, C, H, W) tensors
            (e.g. `[r.images for r in lst_results]`); labels: (N,) source classes; model: the model spec string.
        extra: further tensors, numbers or strings to keep (e.g. weights="path", trajectory_confidence=(L, N)).
    """
    if not isinstance(outputs, torch.Tensor):
        outputs = torch.stack(list(outputs), 1)
    data = {"sources": sources, "targets": targets, "outputs": outputs,
            "labels": torch.as_tensor(labels)}
    data = {k: v.detach().cpu() for k, v in data.items()}
    data["sources"], data["targets"], data["outputs"] = (data[k].float() for k in ("sources", "targets", "outputs"))
    _validate_results(data)
    if model is not None:
        if not isinstance(model, str):
            raise TypeError(f"model must be a spec string (e.g. 'imagenet-lite0'), got {type(model).__name__}")
        data["model"] = model
    for k, v in extra.items():
        data[k] = v.detach().cpu() if isinstance(v, torch.Tensor) else v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_lst_results(path: str | os.PathLike) -> dict[str, Any]:
    """Load a file written by `save_lst_results` (torch.load with weights_only=True, never unpickling code).

    Returns the dict with `outputs` always shaped (N, K, C, H, W) (K = 1 for a single round) and labels int64.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LST results file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
        raise ValueError(f"{path} could not be loaded safely with weights_only=True: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} must hold a dict with keys {list(_RESULT_KEYS)}, got {type(data).__name__}")
    data = dict(data)
    missing = [k for k in _RESULT_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing} (expected {list(_RESULT_KEYS)} and optionally 'model')")
    _validate_results(data, str(path))
    if data["outputs"].ndim == 4:
        data["outputs"] = data["outputs"][:, None]
    data["labels"] = data["labels"].long()
    return data


def _validate_results(data: Mapping[str, Any], where: str = "LST results") -> None:
    for k in _RESULT_KEYS:
        if not isinstance(data[k], torch.Tensor):
            raise TypeError(f"{where}: '{k}' must be a tensor, got {type(data[k]).__name__}")
    src, tgt, out = data["sources"], data["targets"], data["outputs"]
    check_images(src, "sources")
    if tgt.ndim == 5:
        check_images(tgt.flatten(0, 1), "targets")
        if tgt.shape[0] != src.shape[0] or tgt.shape[2:] != src.shape[1:]:
            raise ValueError(f"{where}: targets {tuple(tgt.shape)} do not match sources {tuple(src.shape)}")
    else:
        check_images(tgt, "targets")
        check_same_shape(src, tgt, "sources", "targets")
    if out.ndim not in (4, 5):
        raise ValueError(f"{where}: outputs must be (N, C, H, W) or (N, K, C, H, W), got {tuple(out.shape)}")
    flat = out if out.ndim == 4 else out.flatten(0, 1)
    check_images(flat, "outputs")
    if out.shape[0] != src.shape[0] or out.shape[-3:] != src.shape[1:]:
        raise ValueError(f"{where}: outputs {tuple(out.shape)} do not match sources {tuple(src.shape)}")
    check_labels(data["labels"], src.shape[0], None)


# ------------------------------------------------------------------------------------------------ the report


def geometry_report(
    model: nn.Module,
    sources: torch.Tensor,
    outputs: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    out_dir: str | os.PathLike,
    *,
    grid_step: float = 0.1,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    path_steps: int = 11,
    simplex_samples: int = 0,
    tube_radii: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    tube_directions: int = 64,
    tube_points: int = 5,
    triangle_figures: int = 3,
    trajectory: Trajectory | LSTResult | None = None,
    batch_size: int = 64,
    chunk_sources: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Compute the level-set geometry of saved LST results and write figures and `geometry.json` to `out_dir`.

    outputs: (N, C, H, W) or (N, K, C, H, W). Writes: `path_confidence.png` (straight segments source -> output,
    and the LST trajectory when given), `triangle_<s>_<i>_<j>.png` (the first `triangle_figures` triangles,
    needs K >= 2), `tube_width.png` (at `tube_points` points of the LST path of source 0 when `trajectory` holds
    snapshots (`LSTConfig(log_every=k, log_snapshots=True)`), else of the straight path source 0 -> output 0, with
    `tube_directions` directions), and `geometry.json` with every statistic (hull: the paper's Table 2).
    `trajectory` (an LSTResult or Trajectory of the traversal from `sources`) adds the confidence along the LST
    path to `path_confidence.png`.
    Each finished stage (hull and simplex: per chunk of `chunk_sources` sources) is cached in
    `out_dir/geometry_cache.pt`, keyed by the inputs, the model's weights and the settings, so an interrupted run
    resumes where it stopped.
    Returns the JSON content.
    """
    from . import plots

    _check_model(model)
    check_images(sources, "sources")
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 4:
        outputs = outputs[:, None]
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 5 or outputs.shape[0] != sources.shape[0]:
        raise ValueError(f"outputs must be (N, C, H, W) or (N, K, C, H, W) matching {sources.shape[0]} sources, got "
                         f"{tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__}")
    labels = check_labels(labels, sources.shape[0], _num_classes(model))
    deltas = _check_deltas(deltas)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, k = sources.shape[0], outputs.shape[1]
    common = dict(batch_size=batch_size, device=device)
    settings = {"grid_step": grid_step, "deltas": list(deltas), "path_steps": path_steps,
                "simplex_samples": simplex_samples, "tube_radii": [float(r) for r in tube_radii],
                "tube_directions": tube_directions, "tube_points": tube_points, "seed": seed,
                "chunk_sources": chunk_sources, "sources": n, "rounds": k}
    snaps = _trajectory_snapshots(trajectory)
    if snaps is not None:
        settings["trajectory_snapshots"] = _fingerprint(snaps)
    cache = _StageCache(out / "geometry_cache.pt", settings, model, sources, outputs, labels)
    report: dict[str, Any] = {"settings": settings, "model": getattr(model, "name", type(model).__name__)}
    figures: list[str] = []

    # Star-like check: straight segments source -> every output.
    paths = cache.get("paths", lambda: path_confidence(
        model, sources.repeat_interleave(k, 0), outputs.flatten(0, 1), labels.repeat_interleave(k), path_steps,
        deltas=deltas, **common))
    report["paths"] = paths.summary()
    traj = None
    if trajectory is not None:
        traj = trajectory_confidence(trajectory, deltas=deltas)
        report["trajectory"] = traj.summary()
    plots.plot_path_confidence(paths, traj, path=out / "path_confidence.png")
    figures.append("path_confidence.png")

    if k >= 2:
        hull = _merge_sources([cache.get(f"hull:{lo}", lambda sl=sl: hull_statistics(
            model, sources[sl], outputs[sl], labels[sl], grid_step, deltas, progress=progress, **common))
            for lo, sl in _source_chunks(n, chunk_sources)])
        report["hull"] = hull.summary()
        report["hull_per_source"] = {key: v.tolist() for key, v in hull.per_source().items()}
        for s, p in itertools.islice(itertools.product(range(n), range(hull.pairs.shape[0])), triangle_figures):
            i, j = hull.pairs[p].tolist()
            name = f"triangle_{s}_{i}_{j}.png"
            plots.plot_triangle(hull.grid, hull.confidence[s, p], triangle_layout(sources[s], outputs[s, i],
                                                                                  outputs[s, j]),
                                p_src=float(hull.p_src[s]), vertex_names=("source", f"b{i}", f"b{j}"),
                                title=f"source {s}, outputs {i} and {j}", path=out / name)
            figures.append(name)
        if simplex_samples > 0:
            simplex = _merge_sources([cache.get(f"simplex:{lo}", lambda lo=lo, sl=sl: simplex_statistics(
                model, sources[sl], outputs[sl], labels[sl], simplex_samples, deltas, seed=seed + lo,
                progress=progress, **common)) for lo, sl in _source_chunks(n, chunk_sources)])
            report["simplex"] = simplex.summary()
    else:
        report["hull"] = None
        report["notes"] = ["one LST output per source: the hull statistics need K >= 2 rounds"]

    if tube_points > 0 and tube_directions > 0:
        if snaps is not None:  # the paper's way: logged points of the LST path of sample 0, step direction removed
            rows = torch.linspace(0, snaps.shape[0] - 1, tube_points).round().long().unique()
            pts = snaps[rows, 0].contiguous()
            nxt, prev = snaps[(rows + 1).clamp(max=snaps.shape[0] - 1), 0], snaps[(rows - 1).clamp(min=0), 0]
            dirs = (nxt - prev).contiguous()
            steps = _trajectory_steps(trajectory)
            positions, where = steps[rows].tolist(), "LST path of source 0 (logged iterations)"
        else:  # straight path source 0 -> its first output, direction removed
            t = torch.linspace(0, 1, tube_points, dtype=torch.float64)
            seg = torch.stack([sources[0], outputs[0, 0]]).flatten(1)
            pts = (torch.stack([1 - t, t], 1).to(seg.dtype) @ seg).view(-1, *sources.shape[1:]).clamp(0, 1)
            dirs = (outputs[0, 0] - sources[0]).expand_as(pts).contiguous()
            positions, where = t.tolist(), "straight path source 0 -> output 0 (t)"
        tube = cache.get("tube", lambda: tube_width(model, pts, dirs, labels[:1].expand(pts.shape[0]), tube_radii,
                                                    tube_directions, seed=seed, progress=progress, **common))
        report["tube"] = {**tube.summary(), "positions": positions, "path": where}
        plots.plot_tube_width(tube, positions=positions, path=out / "tube_width.png")
        figures.append("tube_width.png")

    report["figures"] = figures
    with open(out / "geometry.json", "w") as fh:
        json.dump(report, fh, indent=2)
    return report


def _trajectory_snapshots(trajectory: Trajectory | LSTResult | None) -> torch.Tensor | None:
    if isinstance(trajectory, LSTResult):
        trajectory = trajectory.trajectory
    if isinstance(trajectory, Trajectory) and trajectory.snapshots is not None and trajectory.snapshots.shape[0] > 1:
        return trajectory.snapshots
    return None


def _trajectory_steps(trajectory: Trajectory | LSTResult) -> torch.Tensor:
    return (trajectory.trajectory if isinstance(trajectory, LSTResult) else trajectory).steps


class _StageCache:
    """Finished stages of `geometry_report`, saved as plain tensors (weights_only-safe) and reused on a rerun
    with the same inputs and settings."""

    def __init__(self, path: Path, settings: dict, model: nn.Module, *tensors: torch.Tensor) -> None:
        self.path = path
        self.key = "|".join([json.dumps(settings, sort_keys=True), _model_fingerprint(model),
                             *(_fingerprint(t) for t in tensors)])
        self.data: dict[str, Any] = {}
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(saved, dict) and saved.get("key") == self.key:
                    self.data = saved["stages"]
            except Exception:  # noqa: BLE001 - a damaged cache is recomputed
                self.data = {}

    def get(self, name: str, compute: Callable[[], Any]) -> Any:
        classes = {"paths": PathResult, "hull": HullResult, "simplex": SimplexResult, "tube": TubeResult}
        cls = classes[name.split(":")[0]]
        if name in self.data:
            fields = dict(self.data[name])
            if "deltas" in fields:
                fields["deltas"] = tuple(fields["deltas"])
            if "levels" in fields:
                fields["levels"] = tuple(fields["levels"])
            return cls(**fields)
        result = compute()
        self.data[name] = {f: getattr(result, f) for f in result.__dataclass_fields__}
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({"key": self.key, "stages": self.data}, tmp)
        os.replace(tmp, self.path)
        return result


def _model_fingerprint(model: nn.Module) -> str:
    parts = [type(model).__name__, str(getattr(model, "name", ""))]
    for k, v in model.state_dict().items():
        v = v.detach()
        parts.append(f"{k}:{tuple(v.shape)}:{float(v.double().sum()) if v.is_floating_point() else int(v.sum())}")
    return ";".join(parts)


def _source_chunks(n: int, chunk: int) -> list[tuple[int, slice]]:
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_sources must be a positive int, got {chunk!r}")
    return [(lo, slice(lo, min(n, lo + chunk))) for lo in range(0, n, chunk)]


def _merge_sources(parts: list[Any]) -> Any:
    """Concatenate per-source results (HullResult / SimplexResult) computed on consecutive chunks of sources."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    fields: dict[str, Any] = {}
    for f in first.__dataclass_fields__:
        values = [getattr(p, f) for p in parts]
        if f in ("evaluations", "forward_passes"):
            fields[f] = sum(values)
        elif f in ("pairs", "grid", "deltas", "samples"):
            fields[f] = values[0]
        else:
            fields[f] = torch.cat(values)
    return type(first)(**fields)


def _fingerprint(t: torch.Tensor) -> str:
    t = t.detach().double().cpu()
    return f"{tuple(t.shape)}:{float(t.sum()):.10e}:{float((t * t).sum()):.10e}"
