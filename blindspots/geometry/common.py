"""Shared by every geometry measurement: input checks, tolerances, and the one batching routine that evaluates
the source-class confidence of convex combinations of vertex images."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import Classifier, model_device
from ..validation import check_images, check_labels
from ..errors import InputError

DEFAULT_DELTAS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
ATOL = 1e-5


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
        raise InputError("deltas must hold at least one tolerance")
    if any(not (0 <= d <= 1) for d in out):
        raise InputError(f"deltas must lie in [0, 1], got {out}")
    return out


def _num_classes(model: nn.Module) -> int | None:
    return model.num_classes if isinstance(model, Classifier) else None


def _check_hull_inputs(model, sources, outputs, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_model(model)
    check_images(sources, "sources")
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor of shape (N, K, C, H, W), got {type(outputs).__name__}")
    if outputs.ndim != 5:
        raise InputError(f"outputs must have shape (N, K, C, H, W) (K LST outputs per source), got "
                         f"{tuple(outputs.shape)}")
    if outputs.shape[0] != sources.shape[0]:
        raise InputError(f"outputs must hold K outputs for each of the {sources.shape[0]} sources, got "
                         f"{outputs.shape[0]} rows")
    if outputs.shape[1] < 2:
        raise InputError(f"a hull needs K >= 2 LST outputs per source, got K = {outputs.shape[1]}")
    if outputs.shape[2:] != sources.shape[1:]:
        raise InputError(f"outputs and sources must have the same image shape: {tuple(outputs.shape[2:])} vs "
                         f"{tuple(sources.shape[1:])}")
    check_images(outputs.flatten(0, 1), "outputs")
    labels = check_labels(labels, sources.shape[0], _num_classes(model))
    return sources, outputs, labels


def _grid_size(grid_step: float) -> int:
    if not (0 < grid_step <= 1):
        raise InputError(f"grid_step must be in (0, 1], got {grid_step}")
    n = round(1 / grid_step)
    if abs(n * grid_step - 1) > 1e-9:
        raise InputError(f"grid_step must divide 1 exactly (1/n, e.g. 0.1 or 0.05), got {grid_step}")
    return n


# ------------------------------------------------------------------------------------------------ model probing


class _Confidence:
    """p_y of a model at batches of points (eval mode, inference mode), counting images and forward passes."""

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.device, self.batch_size = model, device, batch_size
        self.evaluations = 0
        self.forward_passes = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise InputError(f"the model must return logits of shape ({x.shape[0]}, C), got {tuple(logits.shape)}")
        if int(y.max()) >= logits.shape[1]:
            raise InputError(f"labels out of range: found {int(y.max())}, the model has {logits.shape[1]} classes")
        p = logits.softmax(-1).gather(1, y[:, None]).squeeze(1)
        if not bool(torch.isfinite(p).all()):
            raise InputError("the model returned NaN/inf logits on some probe points")
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
    from ..validation import check_device

    device = check_device(device) if device is not None else model_device(model)
    return _Confidence(model, device, batch_size)


def _mean_std(v: torch.Tensor) -> dict[str, float]:
    v = v.double()
    return {"mean": float(v.mean()), "std": float(v.std(correction=0)) if v.numel() > 0 else float("nan")}
