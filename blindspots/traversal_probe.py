"""Model evaluation for the LST engine: the probe (precision, memory format, compile), the one-time checks that the
engine's assumptions hold (model on the right device, per-sample outputs independent of batch-mates, labels within
the logits' width), and the automatic batch size."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .models import model_device
from .validation import check_labels
from .errors import InputError

__all__ = ["Probe", "resolve_device", "check_batch_independence", "check_label_range", "auto_batch_size"]

CPU_AUTO_BATCH = 32  # CPU: large enough to amortise per-call overhead, small enough for 224-px ResNet-50 activations


class Probe:
    """Forward(+backward) of the model at a batch of points, in the configured precision and memory format (the LST
    engine's model calls, and the attacks' through `float_logits`).

    `amp` runs the model under bfloat16 autocast (on CPU too): bfloat16 has float32's exponent range, so the gradient
    of -log p on a confident source does not underflow to zero as it can in float16 without loss scaling. Logits are
    cast back to float32 before the log-softmax, and the input gradient comes back in the input's dtype.
    """

    def __init__(self, model: nn.Module, *, amp: bool = False, channels_last: bool = False, compile: bool = False,
                 device: torch.device | None = None) -> None:
        self.model = model
        self.forward = torch.compile(model) if compile else model
        self.amp = amp
        self.device_type = (device or model_device(model)).type
        self.channels_last = channels_last

    def float_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits at x as float32, in the configured precision and layout; the caller's grad mode holds
        (the attacks take their gradients through this)."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(self.device_type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            logits = self.forward(x)
        return logits.float()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.float_logits(x)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.float_logits(x).log_softmax(-1)

    def log_probs_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log-softmax at x and g = grad_x(-log p_y(x)) per sample (one forward, one backward)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = self.float_logits(x).log_softmax(-1)
            loss = -logp.gather(1, y[:, None]).sum()
            if not loss.requires_grad:  # the output does not depend on the input: the gradient is zero
                return logp.detach(), torch.zeros_like(x)
            (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        return logp.detach(), torch.zeros_like(x) if g is None else g.to(x.dtype)


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
    from .validation import check_device

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
                             again: Any) -> None:
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
        raise InputError("the model's eval-mode output is random (the same image gave different logits twice): "
                         "dropout or another random layer is active in eval mode; LST needs a deterministic model")
    bn = _batchnorm_without_stats(model)
    cause = (f"BatchNorm without running statistics ({', '.join(bn[:3])}) normalises with batch statistics" if bn
             else "some layer mixes samples of a batch")
    raise InputError(f"the model's eval-mode output for a sample depends on the other samples in its batch: {cause}; "
                     "LST evaluates many samples at once and needs per-sample outputs")


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
