"""Model evaluation for the LST engine: the one-time checks that the engine's assumptions hold (model on the right
device, per-sample outputs independent of batch-mates, labels within the logits' width), and the automatic batch size. The probe itself (precision, memory format, compile) is the
neutral `blindspots.engine.Probe`, shared with the attacks, and re-exported here."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..engine import Probe
from ..models import model_device
from ..validation import check_labels
from ..errors import InputError

__all__ = ["Probe", "resolve_device", "check_batch_independence", "check_label_range", "auto_batch_size"]

CPU_AUTO_BATCH = 32  # CPU: large enough to amortise per-call overhead, small enough for 224-px ResNet-50 activations


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to compute on: the model's, or `device` when the model is already there (or has no tensors).

    A model elsewhere is refused rather than moved: moving it would change the caller's object behind its back.
    """
    from ..validation import check_device

    here = model_device(model)
    if device is None:
        return here
    device = check_device(device)
    has_tensors = any(True for _ in model.parameters()) or any(True for _ in model.buffers())
    if has_tensors and not _same_device(here, device):
        raise InputError(f"device={str(device)!r} but the model is on {here}: move it first (model.to({str(device)!r}))"
                         " or leave device= out to compute where the model is")
    return device


def check_label_range(labels: torch.Tensor | None, width: int, name: str = "labels") -> None:
    """Labels must index the logits: [0, width). One clear line, instead of an error deep inside torch's gather."""
    if labels is not None:
        check_labels(labels, labels.shape[0], width, name)


def _batchnorm_without_stats(model: nn.Module) -> list[str]:
    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is None]


def check_batch_independence(model: nn.Module, batch_logits: torch.Tensor, alone_logits: torch.Tensor,
                             again: Any, user: str = "LST") -> None:
    """Refuse a model whose eval output for a sample depends on its batch-mates (the one-pass trick assumes not).

    `batch_logits` are the first k samples' logits computed in the full batch, `alone_logits` the same samples each
    computed alone; `again()` recomputes the alone logits, to tell randomness (dropout left active) from batch
    dependence (BatchNorm without running statistics). Tolerance: 1e-3 of the logits' scale (float32 kernels differ
    with the batch size by far less).
    """
    scale = max(1.0, float(batch_logits.abs().max()))
    if float((batch_logits - alone_logits).abs().max()) <= 1e-3 * scale:
        return
    if float((again() - alone_logits).abs().max()) > 1e-3 * scale:
        raise InputError(f"the model's eval-mode output is random (the same image gave different logits twice): "
                         f"dropout or another random layer is active in eval mode; {user} needs a deterministic model")
    bn = _batchnorm_without_stats(model)
    cause = (f"BatchNorm without running statistics ({', '.join(bn[:3])}) normalises with batch statistics" if bn
             else "some layer mixes samples of a batch")
    raise InputError(f"the model's eval-mode output for a sample depends on the other samples in its batch: {cause}; "
                     f"{user} evaluates many samples at once and needs per-sample outputs")


def auto_batch_size(probe: Probe, example: torch.Tensor, label: torch.Tensor, n: int,
                    device: torch.device) -> int:
    """The batch size for `batch_size="auto"`: on CUDA the largest power of two (up to n) whose forward+backward, with
    the engine's working tensors beside it, fits in memory, found by trial; elsewhere min(n, CPU_AUTO_BATCH)."""
    if device.type != "cuda":
        return max(1, min(n, CPU_AUTO_BATCH))
    best, b = 0, 1
    while True:
        size = min(b, n)
        try:
            x = example[:1].expand(size, *example.shape[1:]).contiguous()
            work = [torch.empty_like(x) for _ in range(8)]  # x, g, a, xt, candidate, its gradient, d, spare
            probe.log_probs_and_grad(x, label[:1].expand(size))
            del work, x
            best = size
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        if size >= n:
            break
        b *= 2
    if best == 0:
        raise RuntimeError(f"not even one sample of shape {tuple(example.shape[1:])} fits in {device} memory")
    return best
