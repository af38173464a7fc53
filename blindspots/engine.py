"""The neutral engine core that both probes of a model share, Level Set Traversal (`blindspots.traversal`) and the
attacks (`attacks.base`): the model-call `Probe` (precision, memory format, compile), bfloat16 `autocast`, the
model's compute dtype and per-sample seeds. Neither side reaches into the other's modules for these."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .classifier import model_device

__all__ = ["Probe", "autocast", "compute_dtype", "sample_seeds"]


def autocast(device_type: str, amp: bool) -> Any:
    """bfloat16 autocast on `device_type` when `amp`, else a no-op context. bfloat16 has float32's exponent range, so
    the gradient of -log p on a confident source does not underflow to zero as it can in float16 without loss
    scaling."""
    return torch.autocast(device_type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model computes in: that of its first floating parameter or buffer (float32 without any)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def sample_seeds(seed: int | Sequence[int] | torch.Tensor | None, n: int) -> torch.Tensor:
    """Per-sample seeds: an int gives seed, seed+1, ...; a sequence is used as is; None draws from torch's RNG."""
    if seed is None:
        return torch.randint(0, 2**62, (n,), dtype=torch.int64)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if not -2**63 <= int(seed) <= 2**63 - max(n, 1):
            raise InputError(f"seed {seed} is out of range: seeds are 64-bit integers (use one below 2**32)")
        return torch.arange(n, dtype=torch.int64) + int(seed)
    try:
        seeds = torch.as_tensor(seed, dtype=torch.int64).flatten()
    except (RuntimeError, TypeError, ValueError, OverflowError):
        raise InputError("seed must be an int, one 64-bit integer per sample, or None") from None
    if seeds.shape[0] != n:
        raise InputError(f"seed must be an int or hold one seed per sample ({n}), got {seeds.shape[0]}")
    return seeds


class Probe:
    """Forward(+backward) of the model at a batch of points, in the configured precision and memory format: the LST
    engine's model calls, and the attacks' through `float_logits`.

    `amp` runs the model under bfloat16 autocast (on CPU too, see `autocast`). Logits are cast back to float32
    before the log-softmax, and the input gradient comes back in the input's dtype.
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
        with autocast(self.device_type, self.amp):
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
