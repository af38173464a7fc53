"""Figures (matplotlib, object-oriented API with the Agg canvas: no pyplot state, safe in scripts and threads).

Every function returns the `matplotlib.figure.Figure` and, given `path`, also saves it as a PNG. Functions are
self-contained: each takes plain tensors/arrays or a result object and depends on no other function here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from .errors import InputError

__all__ = ["plot_triangle", "plot_path_confidence", "plot_tube_width", "lst_grid", "lst_curves", "plain_text",
           "new_figure", "save_figure"]


def new_figure(width: float, height: float):
    """A matplotlib Figure (constrained layout) drawn by Agg, without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plain_text(fig) -> None:
    """Show every title, label, annotation and legend entry of `fig` as typed: names of files and classes may hold
    `$...$`, which matplotlib would parse as math text (and fail on at save time). Tick labels and axis offsets,
    which matplotlib formats with math text itself (log scales), are left alone."""
    from matplotlib.text import Text

    generated = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            generated.add(id(axis.offsetText))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                generated.update((id(tick.label1), id(tick.label2)))
    for text in fig.findobj(Text):
        if id(text) not in generated:
            text.set_parse_math(False)


def save_figure(fig, path: str | os.PathLike | None, dpi: int = 120) -> None:
    """Make `fig`'s texts plain (see `plain_text`), then save it as a PNG when `path` is given."""
    plain_text(fig)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def plot_triangle(
    weights: torch.Tensor | np.ndarray,
    confidence: torch.Tensor | np.ndarray,
    layout: tuple[float, float, float],
    *,
    p_src: float | None = None,
    vertex_names: Sequence[str] = ("source", "b_i", "b_j"),
    title: str | None = None,
    levels: int = 21,
    path: str | os.PathLike | None = None,
    ax=None,
):
    """Filled contours of the confidence over a triangle (source, b_i, b_j), drawn with its true shape; into `ax`
    (a matplotlib Axes of a figure with several panels) when given, else into a new figure.

    Args:
        weights: (M, 3) barycentric weights of the probes (column 0: the source), e.g. `HullResult.grid`.
        confidence: (M,) p at those probes, e.g. `HullResult.confidence[s, pair]`.
        layout: (|b_i - source|, |b_j - source|, angle in radians), from `blindspots.geometry.triangle_layout`;
            the source sits at the origin and b_i on the horizontal axis.
        p_src: draws the level p = p_src as a dashed line.
    """
    from matplotlib.tri import Triangulation

    w, c = _np(weights), _np(confidence)
    if w.ndim != 2 or w.shape[1] != 3 or c.shape != (w.shape[0],):
        raise InputError(f"weights must be (M, 3) and confidence (M,), got {w.shape} and {c.shape}")
    li, lj, angle = (float(v) for v in layout)
    corners = np.array([[0.0, 0.0], [li, 0.0], [lj * math.cos(angle), lj * math.sin(angle)]])
    xy = w @ corners
    if ax is None:
        fig = new_figure(5.2, 4.4)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    tri = Triangulation(xy[:, 0], xy[:, 1])
    filled = ax.tricontourf(tri, c, levels=np.linspace(0, 1, levels), cmap="viridis", vmin=0, vmax=1)
    if p_src is not None and c.min() < p_src < c.max():
        ax.tricontour(tri, c, levels=[p_src], colors="white", linestyles="--", linewidths=1.2)
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", linewidth=1)
    ax.scatter(xy[:, 0], xy[:, 1], s=3, color="black", alpha=0.35)
    centroid = corners.mean(0)
    for corner, name in zip(corners, vertex_names):
        away = corner - centroid
        away = away / (np.linalg.norm(away) or 1.0)
        ax.annotate(name, corner, textcoords="offset points", xytext=tuple(10 * away), fontsize=9,
                    ha="left" if away[0] > 0.3 else "right" if away[0] < -0.3 else "center",
                    va="bottom" if away[1] > 0.3 else "top" if away[1] < -0.3 else "center")
    span = np.ptp(corners, axis=0).max()
    ax.set_xlim(corners[:, 0].min() - 0.12 * span, corners[:, 0].max() + 0.12 * span)
    ax.set_ylim(corners[:, 1].min() - 0.12 * span, corners[:, 1].max() + 0.12 * span)
    ax.set_aspect("equal")
    ax.set_xlabel("l2 distance in [0, 1] pixel space")
    cbar = fig.colorbar(filled, ax=ax, shrink=0.85)
    cbar.set_label("source-class confidence" + (f" (p_src = {p_src:.3f}, dashed)" if p_src is not None else ""))
    head = f"angle {math.degrees(angle):.1f} deg, |b_i - x_s| = {li:.3g}, |b_j - x_s| = {lj:.3g}"
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=9)
    save_figure(fig, path)
    return fig


def plot_path_confidence(
    straight: Any,
    trajectory: Any | None = None,
    *,
    max_curves: int = 50,
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Source-class confidence along straight segments (`PathResult` of `path_confidence`) and, when given, along
    the LST trajectory (`PathResult` of `trajectory_confidence`): thin lines per path, the mean in bold."""
    panels = [("straight path source -> LST output", "t", straight)]
    if trajectory is not None:
        panels.append(("LST trajectory", "LST iteration", trajectory))
    fig = new_figure(5.0 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, xlabel, res) in zip(axes, panels):
        t, conf = _np(res.t), _np(res.confidence)
        for row in conf[:max_curves]:
            ax.plot(t, row, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(t, conf.mean(0), color="black", linewidth=2, label="mean")
        ax.axhline(float(_np(res.p_start).mean()), color="tab:red", linestyle="--", linewidth=1,
                   label="mean start confidence")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("source-class confidence")
        ax.set_title(f"{name} ({conf.shape[0]} paths)", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


def plot_tube_width(
    tube: Any,
    positions: Sequence[float] | None = None,
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Confidence against radius around points of a path (`TubeResult` of `tube_width`): the median per point
    (coloured by position along the path) with its 5%-95% band."""
    from matplotlib import colormaps

    radii, q, centre = _np(tube.radii), _np(tube.quantiles), _np(tube.p_center)
    order = np.argsort(radii)
    r = np.concatenate([[0.0], radii[order]])
    n = q.shape[0]
    pos = list(positions) if positions is not None else list(range(n))
    cmap = colormaps["viridis"]
    fig = new_figure(5.4, 3.8)
    ax = fig.add_subplot()
    for p in range(n):
        color = cmap(p / max(n - 1, 1))
        lo = np.concatenate([[centre[p]], q[p, order, 0]])
        med = np.concatenate([[centre[p]], q[p, order, 1]])
        hi = np.concatenate([[centre[p]], q[p, order, -1]])
        ax.fill_between(r, lo, hi, color=color, alpha=0.15)
        ax.plot(r, med, color=color, marker="o", markersize=3, label=f"{pos[p]:.2g}" if isinstance(
            pos[p], float) else str(pos[p]))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("radius (l2 in [0, 1] pixel space)")
    ax.set_ylabel("source-class confidence")
    ax.legend(title="position on path", fontsize=7, title_fontsize=8, loc="lower left")
    ax.set_title(title or f"tube width: median and 5-95% over {tube.confidence.shape[-1]} orthogonal directions",
                 fontsize=9)
    save_figure(fig, path)
    return fig


def _image(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def lst_grid(
    sources: torch.Tensor,
    outputs: torch.Tensor,
    confidence: torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    unconstrained: torch.Tensor | None = None,
    path: str | os.PathLike | None = None,
):
    """The paper's Fig. 1 layout: an N x N grid whose first row holds the targets and first column the sources;
    cell (i, j) shows the LST output from source i towards target j with its final source-class confidence.

    Args:
        sources: (N, C, H, W) images (each serves as source and as target).
        outputs: (N, N, C, H, W) LST outputs; cells with NaN (the diagonal, same-class pairs) are left blank.
        confidence: (N, N) final source-class confidence of each output.
        unconstrained: (N,) bool, sources whose confidence started at or below the threshold
            (`LSTResult.unconstrained`): their cells say so in red, as nothing held them to a level set.
    """
    n = sources.shape[0]
    if outputs.shape[:2] != (n, n) or confidence.shape != (n, n):
        raise InputError(f"outputs must be ({n}, {n}, C, H, W) and confidence ({n}, {n}), got "
                         f"{tuple(outputs.shape)} and {tuple(confidence.shape)}")
    names = list(names) if names is not None else [str(i) for i in range(n)]
    labels = [f"{nm}\n{cn[:18]}" for nm, cn in zip(names, class_names)] if class_names else names
    fig = new_figure(1.7 * (n + 1), 1.8 * (n + 1))
    axes = fig.subplots(n + 1, n + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    axes[0, 0].text(0.5, 0.5, "source \u2193 / target \u2192", ha="center", va="center", fontsize=8)
    for j in range(n):
        axes[0, j + 1].imshow(_image(sources[j]))
        axes[0, j + 1].set_title(f"target: {labels[j]}", fontsize=7)
    for i in range(n):
        axes[i + 1, 0].imshow(_image(sources[i]))
        axes[i + 1, 0].set_ylabel(f"source: {labels[i]}", fontsize=7)
        for j in range(n):
            if bool(torch.isnan(outputs[i, j]).any()):
                continue
            ax = axes[i + 1, j + 1]
            ax.imshow(_image(outputs[i, j]))
            if unconstrained is not None and bool(unconstrained[i]):
                ax.set_title(f"p(src) = {float(confidence[i, j]):.3f}\nunconstrained: p0 <= threshold", fontsize=6,
                             color="tab:red")
            else:
                ax.set_title(f"p(src) = {float(confidence[i, j]):.3f}", fontsize=7)
    save_figure(fig, path)
    return fig


def lst_curves(results: Sequence[Any], *, path: str | os.PathLike | None = None):
    """Source-class confidence, target-class confidence and RMS-l2 distance to the target over the iterations of
    one or more `LSTResult`s recorded with `log_every > 0` (one thin line per pair, the median in bold)."""
    trajectories = [r.trajectory for r in results if r.trajectory is not None]
    if not trajectories:
        raise InputError("no trajectory recorded: run level_set_traversal with LSTConfig(log_every=k)")
    fig = new_figure(12, 3.6)
    axes = fig.subplots(1, 3)
    panels = [("source_confidence", "source-class confidence"), ("target_confidence", "target-class confidence"),
              ("rms_to_target", "RMS-l2 distance to target")]
    for ax, (field_name, title) in zip(axes, panels):
        columns = []
        for tr in trajectories:
            values = _np(getattr(tr, field_name))
            steps = _np(tr.steps)
            ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8)
            columns.append(values)
        steps = _np(trajectories[0].steps)
        if all(c.shape[0] == steps.shape[0] for c in columns):
            ax.plot(steps, np.median(np.concatenate(columns, axis=1), axis=1), color="tab:red", linewidth=2,
                    label="median")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        if field_name != "rms_to_target":
            ax.set_ylim(-0.02, 1.02)
    save_figure(fig, path)
    return fig
