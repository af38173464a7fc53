"""Straight paths and LST trajectories: is the level set star-like around the source?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..models import probing
from ..traversal import LSTResult, Trajectory
from ..validation import check_images, check_labels, check_same_shape
from .common import (ATOL, DEFAULT_DELTAS, _check_deltas, _check_model, _combination_confidence,
                     _mean_std, _num_classes, _setup)
from ..errors import InputError

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
        raise InputError(f"steps must be an int >= 2 (both ends are included), got {steps!r}")
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
            raise InputError("this LSTResult has no trajectory: run level_set_traversal with "
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
        raise InputError(f"trajectory confidences must have shape (L, N), got {tuple(conf.shape)}")
    conf = conf.detach().float().cpu().T.contiguous()  # (N, L)
    if not bool(torch.isfinite(conf).all()):
        raise InputError("trajectory confidences contain NaN or infinite values")
    p_start = conf[:, 0].clone() if p_start is None else torch.as_tensor(p_start).detach().float().cpu().flatten()
    if p_start.shape[0] != conf.shape[0]:
        raise InputError(f"p_start must hold one value per trajectory ({conf.shape[0]}), got {p_start.shape[0]}")
    t = torch.arange(conf.shape[1], dtype=torch.float32) if steps is None else torch.as_tensor(steps).float()
    if t.shape != (conf.shape[1],):
        raise InputError(f"steps must have shape ({conf.shape[1]},), got {tuple(t.shape)}")
    return _path_stats(t, conf, p_start, deltas, atol)

