"""The saved-results file of `blindspots geometry`: sources, targets, LST outputs and labels (weights_only-safe)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..store import temporary_path
from ..validation import check_images, check_labels, check_same_shape
from ..errors import InputError

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
    tmp = temporary_path(path)
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_lst_results(path: str | os.PathLike) -> dict[str, Any]:
    """Load a file written by `save_lst_results` (torch.load with weights_only=True, never unpickling code).

    Returns the dict with `outputs` always shaped (N, K, C, H, W) (K = 1 for a single round) and labels int64.
    """
    from ..weights import load_torch_file

    path = Path(path)
    data = load_torch_file(path, "LST results file")
    if not isinstance(data, Mapping):
        raise InputError(f"{path} must hold a dict with keys {list(_RESULT_KEYS)}, got {type(data).__name__}")
    data = dict(data)
    missing = [k for k in _RESULT_KEYS if k not in data]
    if missing:
        raise InputError(f"{path} lacks the keys {missing} (expected {list(_RESULT_KEYS)} and optionally 'model')")
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
            raise InputError(f"{where}: targets {tuple(tgt.shape)} do not match sources {tuple(src.shape)}")
    else:
        check_images(tgt, "targets")
        check_same_shape(src, tgt, "sources", "targets")
    if out.ndim not in (4, 5):
        raise InputError(f"{where}: outputs must be (N, C, H, W) or (N, K, C, H, W), got {tuple(out.shape)}")
    flat = out if out.ndim == 4 else out.flatten(0, 1)
    check_images(flat, "outputs")
    if out.shape[0] != src.shape[0] or out.shape[-3:] != src.shape[1:]:
        raise InputError(f"{where}: outputs {tuple(out.shape)} do not match sources {tuple(src.shape)}")
    check_labels(data["labels"], src.shape[0], None)

