"""Per-sample image distances in [0, 1] pixel space: RMS-l2 (l2 / sqrt(d)), l-inf and SSIM.

SSIM comes from scikit-image (`skimage.metrics.structural_similarity`, data range 1, colour channels averaged) rather
than a hand-written copy.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["rms_l2", "l2", "linf", "ssim", "distances"]


def _flat_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return (a.detach().float() - b.detach().float()).flatten(1)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean distance."""
    return _flat_diff(a, b).norm(dim=1)


def rms_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 / sqrt(number of values): the paper's dimension-free 'RMS' distance."""
    diff = _flat_diff(a, b)
    return diff.norm(dim=1) / diff.shape[1] ** 0.5


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample largest absolute pixel difference."""
    return _flat_diff(a, b).abs().amax(dim=1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample structural similarity (scikit-image, data range 1, 7x7 window, averaged over channels)."""
    from skimage.metrics import structural_similarity

    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {tuple(a.shape[-2:])}")
    an = a.detach().float().cpu().numpy()
    bn = b.detach().float().cpu().numpy()
    values = [structural_similarity(x, y, data_range=1.0, channel_axis=0) for x, y in zip(an, bn)]
    return torch.tensor(np.asarray(values, dtype=np.float32))


def distances(a: torch.Tensor, b: torch.Tensor, *, with_ssim: bool = True) -> dict[str, torch.Tensor]:
    """All per-sample distances at once, as CPU tensors keyed 'rms_l2', 'linf' (and 'ssim')."""
    out = {"rms_l2": rms_l2(a, b).cpu(), "linf": linf(a, b).cpu()}
    if with_ssim and min(a.shape[-2:]) >= 7:  # SSIM is undefined below its 7x7 window: left out, not NaN
        out["ssim"] = ssim(a, b)
    return out
