"""`geometry_report`: every geometry measurement of saved LST results, with its figures, resumable through the run
store (a rerun with the same model, settings and inputs reuses finished stages; with any of them changed it
refuses, naming what changed, unless `restart=True`)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..store import RunStore
from ..traversal import LSTResult, Trajectory
from ..validation import check_count, check_images, check_labels
from .common import DEFAULT_DELTAS, _check_deltas, _check_model, _num_classes
from .hulls import HullResult, SimplexResult, hull_statistics, simplex_statistics, triangle_layout
from .paths import PathResult, path_confidence, trajectory_confidence
from .tube import TubeResult, tube_width
from ..errors import InputError


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
    restart: bool = False,
) -> dict[str, Any]:
    """Compute the level-set geometry of saved LST results and write figures and `geometry.json` to `out_dir`.

    outputs: (N, C, H, W) or (N, K, C, H, W). Writes: `path_confidence.png` (straight segments source -> output,
    and the LST trajectory when given), `triangle_<s>_<i>_<j>.png` (the first `triangle_figures` triangles,
    needs K >= 2), `tube_width.png` (at `tube_points` points of the LST path of source 0 when `trajectory` holds
    snapshots (`LSTConfig(log_every=k, log_snapshots=True)`), else of the straight path source 0 -> output 0, with
    `tube_directions` directions), and `geometry.json` with every statistic (hull: the paper's Table 2).
    Each finished stage (hull and simplex: per chunk of `chunk_sources` sources) is kept in the folder's run store.
    Returns the JSON content.
    """
    _check_model(model)
    for name, value in (("simplex_samples", simplex_samples), ("tube_directions", tube_directions),
                        ("tube_points", tube_points), ("triangle_figures", triangle_figures)):
        check_count(value, name)  # a negative count is refused, not silently skipped
    check_images(sources, "sources")
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 4:
        outputs = outputs[:, None]
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 5 or outputs.shape[0] != sources.shape[0]:
        raise InputError(f"outputs must be (N, C, H, W) or (N, K, C, H, W) matching {sources.shape[0]} sources, got "
                         f"{tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__}")
    labels = check_labels(labels, sources.shape[0], _num_classes(model))
    deltas = _check_deltas(deltas)
    k = outputs.shape[1]
    settings = {"grid_step": grid_step, "deltas": list(deltas), "path_steps": path_steps,
                "simplex_samples": simplex_samples, "tube_radii": [float(r) for r in tube_radii],
                "tube_directions": tube_directions, "tube_points": tube_points, "seed": seed,
                "chunk_sources": chunk_sources}
    inputs = {"sources": sources, "outputs": outputs, "labels": labels}
    snaps = _trajectory_snapshots(trajectory)
    if snaps is not None:
        inputs["trajectory_snapshots"] = snaps
    out = Path(out_dir)
    with RunStore(out, "geometry", model=model, settings=settings, inputs=inputs, restart=restart) as store:
        job = _Job(model, store, dict(batch_size=batch_size, device=device), deltas, progress)
        report: dict[str, Any] = {"settings": settings, "model": getattr(model, "name", type(model).__name__)}
        figures = job.paths(report, sources, outputs, labels, path_steps, trajectory, out)
        if k >= 2:
            figures += job.hulls(report, sources, outputs, labels, grid_step, triangle_figures, chunk_sources, out)
            if simplex_samples > 0:
                job.simplex(report, sources, outputs, labels, simplex_samples, seed, chunk_sources)
        else:
            report["hull"] = None
            report["notes"] = ["one LST output per source: the hull statistics need K >= 2 rounds"]
        if tube_points > 0 and tube_directions > 0:
            figures += job.tube(report, sources, outputs, labels, trajectory, snaps, tube_radii, tube_directions,
                                tube_points, seed, out)
        report["figures"] = figures
        with open(out / "geometry.json", "w") as fh:
            json.dump(report, fh, indent=2)
    return report


class _Job:
    """The stages of one report, each computed once and kept in the run store."""

    def __init__(self, model, store: RunStore, common: dict, deltas, progress: bool) -> None:
        self.model, self.store, self.common, self.deltas, self.progress = model, store, common, deltas, progress

    def paths(self, report, sources, outputs, labels, path_steps, trajectory, out: Path) -> list[str]:
        """Star-like check: straight segments source -> every output (and the LST trajectory when given)."""
        from .. import plots

        k = outputs.shape[1]
        paths = self.store.dataclass_stage("paths", PathResult, lambda: path_confidence(
            self.model, sources.repeat_interleave(k, 0), outputs.flatten(0, 1), labels.repeat_interleave(k),
            path_steps, deltas=self.deltas, **self.common))
        report["paths"] = paths.summary()
        traj = None
        if trajectory is not None:
            traj = trajectory_confidence(trajectory, deltas=self.deltas)
            report["trajectory"] = traj.summary()
        plots.plot_path_confidence(paths, traj, path=out / "path_confidence.png")
        return ["path_confidence.png"]

    def hulls(self, report, sources, outputs, labels, grid_step, triangle_figures, chunk, out: Path) -> list[str]:
        """Triangle hulls (Table 2) per chunk of sources, and the first `triangle_figures` confidence maps."""
        from .. import plots

        hull = _merge_sources([self.store.dataclass_stage(f"hull-{lo}", HullResult, lambda sl=sl: hull_statistics(
            self.model, sources[sl], outputs[sl], labels[sl], grid_step, self.deltas, progress=self.progress,
            **self.common)) for lo, sl in _source_chunks(sources.shape[0], chunk)])
        report["hull"] = hull.summary()
        report["hull_per_source"] = {key: v.tolist() for key, v in hull.per_source().items()}
        figures = []
        for s, p in itertools.islice(itertools.product(range(sources.shape[0]), range(hull.pairs.shape[0])),
                                     triangle_figures):
            i, j = hull.pairs[p].tolist()
            name = f"triangle_{s}_{i}_{j}.png"
            layout = triangle_layout(sources[s], outputs[s, i], outputs[s, j])
            plots.plot_triangle(hull.grid, hull.confidence[s, p], layout, p_src=float(hull.p_src[s]),
                                vertex_names=("source", f"b{i}", f"b{j}"), title=f"source {s}, outputs {i} and {j}",
                                path=out / name)
            figures.append(name)
        return figures

    def simplex(self, report, sources, outputs, labels, samples, seed, chunk) -> None:
        simplex = _merge_sources([self.store.dataclass_stage(
            f"simplex-{lo}", SimplexResult, lambda lo=lo, sl=sl: simplex_statistics(
                self.model, sources[sl], outputs[sl], labels[sl], samples, self.deltas, seed=seed + lo,
                progress=self.progress, **self.common)) for lo, sl in _source_chunks(sources.shape[0], chunk)])
        report["simplex"] = simplex.summary()

    def tube(self, report, sources, outputs, labels, trajectory, snaps, radii, directions, points, seed,
             out: Path) -> list[str]:
        """Tube width at points of the LST path of source 0 (the paper's way, when snapshots were logged), else of
        the straight path source 0 -> output 0; the path's own direction is removed from the probes."""
        from .. import plots

        if snaps is not None:
            rows = torch.linspace(0, snaps.shape[0] - 1, points).round().long().unique()
            pts = snaps[rows, 0].contiguous()
            nxt, prev = snaps[(rows + 1).clamp(max=snaps.shape[0] - 1), 0], snaps[(rows - 1).clamp(min=0), 0]
            dirs = (nxt - prev).contiguous()
            positions, where = _trajectory_steps(trajectory)[rows].tolist(), "LST path of source 0 (logged iterations)"
        else:
            t = torch.linspace(0, 1, points, dtype=torch.float64)
            seg = torch.stack([sources[0], outputs[0, 0]]).flatten(1)
            pts = (torch.stack([1 - t, t], 1).to(seg.dtype) @ seg).view(-1, *sources.shape[1:]).clamp(0, 1)
            dirs = (outputs[0, 0] - sources[0]).expand_as(pts).contiguous()
            positions, where = t.tolist(), "straight path source 0 -> output 0 (t)"
        tube = self.store.dataclass_stage("tube", TubeResult, lambda: tube_width(
            self.model, pts, dirs, labels[:1].expand(pts.shape[0]), radii, directions, seed=seed,
            progress=self.progress, **self.common))
        report["tube"] = {**tube.summary(), "positions": positions, "path": where}
        plots.plot_tube_width(tube, positions=positions, path=out / "tube_width.png")
        return ["tube_width.png"]


def _trajectory_snapshots(trajectory: Trajectory | LSTResult | None) -> torch.Tensor | None:
    if isinstance(trajectory, LSTResult):
        trajectory = trajectory.trajectory
    if isinstance(trajectory, Trajectory) and trajectory.snapshots is not None and trajectory.snapshots.shape[0] > 1:
        return trajectory.snapshots
    return None


def _trajectory_steps(trajectory: Trajectory | LSTResult) -> torch.Tensor:
    return (trajectory.trajectory if isinstance(trajectory, LSTResult) else trajectory).steps


def _source_chunks(n: int, chunk: int) -> list[tuple[int, slice]]:
    if not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"chunk_sources must be a positive int, got {chunk!r}")
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
