"""Input checks shared by every entry point: one clear error instead of a traceback from deep inside torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

__all__ = ["check_images", "check_labels", "check_logits", "check_same_shape", "check_device", "check_count",
           "check_seed", "timm_download_blocked"]


def check_images(images: object, name: str = "images", *, channels: int | None = None) -> torch.Tensor:
    """Check that `images` is a finite float NCHW tensor with values in [0, 1]; return it unchanged."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        hint = " (add a batch dimension with .unsqueeze(0))" if images.ndim == 3 else ""
        raise InputError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {images.dtype}"
                        " (convert uint8 images with .float() / 255)")
    if images.shape[0] == 0:
        raise InputError(f"{name} is empty (batch size 0)")
    if channels is not None and images.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channels, got {images.shape[1]} (shape {tuple(images.shape)})")
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise InputError(f"{name} contains NaN or infinite values (samples {bad[:10]})")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{name} must have values in [0, 1], found range [{lo:.4g}, {hi:.4g}]"
                         " (pass un-normalised images; normalisation happens inside the Classifier)")
    return images


def check_labels(labels: object, n: int, num_classes: int | None, name: str = "labels") -> torch.Tensor:
    """Check that `labels` holds `n` integer class indices in [0, num_classes); return them as int64."""
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
            raise TypeError(f"{name} must be a sequence or tensor of class indices") from exc
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), one class index per image, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if labels.is_inference():  # made under torch.inference_mode: autograd could not save it
        labels = labels.clone()
    if n > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            have = f"the model has {num_classes} classes" if num_classes is not None else "class indices start at 0"
            raise InputError(f"{name} out of range: found [{lo}, {hi}], {have}")
    return labels


def check_logits(logits: torch.Tensor, labels: dict[str, torch.Tensor | None] | None = None, *,
                 samples: torch.Tensor | None = None, where: str = "") -> torch.Tensor:
    """Check a model's output: logits (N, C) with finite values, and every class index in `labels` (name ->
    indices or None) below the logits' width C, so a model without class names is checked too. `samples` maps
    rows to batch positions for the message; `where` says at which images (e.g. "at an attacked image")."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"the model must return logits of shape (N, C), got {shape}")
    for name, idx in (labels or {}).items():
        if idx is not None:
            check_labels(idx, idx.shape[0], logits.shape[1], name)
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad = (~finite).any(1).nonzero().flatten()
        if samples is not None:
            bad = samples[bad.to(samples.device)]
        raise InputError(f"the model returned NaN or infinite logits{' ' + where if where else ''} "
                         f"for samples {bad.tolist()[:10]}")
    return logits


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Check that two image batches pair up one to one."""
    if a.shape[0] != b.shape[0]:
        raise InputError(f"{name_a} and {name_b} must pair up one to one: got {a.shape[0]} {name_a} "
                         f"and {b.shape[0]} {name_b}")
    if a.shape != b.shape:
        raise InputError(f"{name_a} and {name_b} must have the same image shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """A torch device this machine has: refuses a malformed name, or CUDA / MPS that is not there, with one line.
    `name` is how the caller spells the option ("--device" on the command line, "device" in the API)."""
    flag = name.startswith("--")
    said = f"{name} {device}" if flag else f"{name}={str(device)!r}"
    use = f"{name} cpu" if flag else f"{name}='cpu'"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"{said} is not a device (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{said}: CUDA is not available on this machine (use {use})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{said}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{said}: MPS is not available on this machine")
    return dev


def check_count(value: object, name: str, minimum: int = 0) -> int:
    """A count (samples, directions, figures, ...) is an int >= `minimum`: a negative one is refused, not skipped."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_seed(seed: object, name: str = "seed") -> int:
    """A seed for numpy's generator: an int >= 0 (numpy refuses negative ones with a traceback of its own)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{name} must be an integer >= 0, got {seed!r}")
    return int(seed)


def timm_download_blocked(name: str, timeout: float = 3.0) -> str | None:
    """Why timm's pretrained weights for `name` cannot be fetched now, or None (cached, a host answers, or no
    pretrained config: timm then says so itself). Checked before timm's download, whose hub retries take about a
    minute offline: HF_HUB_OFFLINE is honoured, else one TCP connection to the download host with `timeout`."""
    import socket
    from urllib.parse import urlparse

    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown name: timm.create_model raises its own error
        return None
    if cfg is None:
        return None
    hosts = []
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin")):
            return None
        hosts.append(urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co"))
    elif cfg.url:  # timm downloads from the hub whenever the config names a hub repo
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file():
            return None
        hosts.append(urlparse(cfg.url))
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set and they are not in the local cache"
    hosts = [h for h in hosts if h.hostname]
    for url in hosts:
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
            return None
        except OSError:
            continue
    where = ", ".join(h.netloc for h in hosts) or "no download host"
    return f"they are not cached and {where} cannot be reached (offline?)"
