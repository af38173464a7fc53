"""Per-sample image distances in [0, 1] pixel space: RMS-l2 (l2 / sqrt(d)), l-inf and SSIM.

SSIM comes from scikit-image (`skimage.metrics.structural_similarity`, data range 1, colour channels averaged) rather
than a hand-written copy; `ssim_paper` is the LST paper's definition (torchmetrics' Gaussian 11 px window, sigma 1.5),
in torch so that it runs batched on the GPU, checked against torchmetrics in the tests. LPIPS comes from the `lpips`
package (optional extra) with AlexNet weights from a local file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from .errors import InputError, MissingDependency

__all__ = ["rms_l2", "l2", "linf", "ssim", "ssim_paper", "distances", "lpips", "load_lpips"]


def _flat_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape != b.shape:
        raise InputError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
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
        raise InputError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < 7:
        raise InputError(f"SSIM needs images of at least 7x7 pixels, got {tuple(a.shape[-2:])}")
    an = a.detach().float().cpu().numpy()
    bn = b.detach().float().cpu().numpy()
    values = [structural_similarity(x, y, data_range=1.0, channel_axis=0) for x, y in zip(an, bn)]
    return torch.tensor(np.asarray(values, dtype=np.float32))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype).expand(channels, 1, size, size).contiguous()


def ssim_paper(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
               data_range: float = 1.0) -> torch.Tensor:
    """Per-sample SSIM as the LST paper computes it (torchmetrics' default): Gaussian window 11, sigma 1.5, data
    range 1, K1 0.01, K2 0.03; the images are reflect-padded by half a window and the SSIM map is averaged over every
    pixel and channel (as torchmetrics does; scikit-image's Gaussian option instead drops the border).

    Pure torch, batched, on the inputs' device (float64 on CPU for exactness, float32 elsewhere); returns a float32
    tensor on that device. Differs from `ssim` (scikit-image's 7x7 uniform window).
    """
    if a.shape != b.shape:
        raise InputError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim != 4 or min(a.shape[-2:]) < window:
        raise InputError(f"SSIM needs (N, C, H, W) images of at least {window}x{window} pixels, got {tuple(a.shape)}")
    dtype = torch.float64 if a.device.type == "cpu" else torch.float32
    x, y = a.detach().to(dtype), b.detach().to(dtype)
    c = x.shape[1]
    kernel = _gaussian_window(window, sigma, c, x.device, dtype)
    pad = (window - 1) // 2
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = torch.nn.functional.pad(y, (pad, pad, pad, pad), mode="reflect")
    conv = lambda t: torch.nn.functional.conv2d(t, kernel, groups=c)  # noqa: E731
    mu_x, mu_y = conv(x), conv(y)
    var_x = (conv(x * x) - mu_x**2).clamp_min(0)
    var_y = (conv(y * y) - mu_y**2).clamp_min(0)
    cov = conv(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()


def distances(a: torch.Tensor, b: torch.Tensor, *, with_ssim: bool = True) -> dict[str, torch.Tensor]:
    """All per-sample distances at once, as CPU tensors keyed 'rms_l2', 'linf' (and 'ssim')."""
    out = {"rms_l2": rms_l2(a, b).cpu(), "linf": linf(a, b).cpu()}
    if with_ssim and min(a.shape[-2:]) >= 7:  # SSIM is undefined below its 7x7 window: left out, not NaN
        out["ssim"] = ssim(a, b)
    return out


# ----------------------------------------------------------------------------------------------------------- LPIPS

_LPIPS_CACHE: dict[tuple[str, str], "torch.nn.Module"] = {}


def load_lpips(weights: str | os.PathLike, device: str | torch.device | None = None) -> "torch.nn.Module":
    """The `lpips` package's LPIPS(net='alex') module with its AlexNet backbone read from a local file.

    `lpips` ships its learned linear layers; the ImageNet AlexNet backbone is the user's file: torchvision's
    `alexnet` checkpoint (keys `features.*`, e.g. alexnet-owt-7be5be79.pth) or a full LPIPS state dict (keys
    `net.slice*`), as .safetensors or a plain torch file. Nothing is downloaded.
    """
    try:
        import lpips as lpips_pkg
    except ImportError as exc:
        raise MissingDependency("LPIPS needs the lpips package: pip install 'blindspots[lpips]' (or pip install lpips)"
                          ) from exc
    from .models import load_state_dict_file

    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (str(Path(weights).resolve()), str(device))
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]
    state = load_state_dict_file(weights)
    net = lpips_pkg.LPIPS(net="alex", pnet_rand=True, verbose=False)  # pnet_rand: do not download AlexNet
    if any(k.startswith("net.slice") for k in state):
        backbone = {k: v for k, v in state.items() if k.startswith("net.")}
    else:  # torchvision alexnet: features.{i}.* sits in net.slice{s}.{i}.*
        backbone = {}
        for name in net.state_dict():
            if name.startswith("net.slice"):
                index_and_kind = name.split(".", 2)[2]
                if f"features.{index_and_kind}" not in state:
                    raise InputError(f"{weights} is not an AlexNet checkpoint: no tensor features.{index_and_kind} "
                                     "(LPIPS needs torchvision's ImageNet alexnet weights)")
                backbone[name] = state[f"features.{index_and_kind}"]
    wanted = {k for k in net.state_dict() if k.startswith("net.")}
    if set(backbone) != wanted:
        raise InputError(f"{weights}: LPIPS backbone tensors missing {sorted(wanted - set(backbone))[:4]}, "
                         f"unexpected {sorted(set(backbone) - wanted)[:4]}")
    net.load_state_dict(backbone, strict=False)
    net = net.eval().requires_grad_(False).to(device)
    _LPIPS_CACHE[key] = net
    return net


def lpips(a: torch.Tensor, b: torch.Tensor, weights: str | os.PathLike | None = None, *,
          device: str | torch.device | None = None, batch_size: int = 32) -> torch.Tensor:
    """Per-sample LPIPS (AlexNet, v0.1) between images in [0, 1]; `weights` is a local AlexNet file (see
    `load_lpips`). Without weights this raises a clear error instead of downloading anything."""
    if weights is None:
        raise InputError("LPIPS needs ImageNet AlexNet weights: pass weights=PATH to a local copy of torchvision's "
                         "alexnet checkpoint (nothing is downloaded)")
    if a.shape != b.shape:
        raise InputError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    from .models import model_device

    net = load_lpips(weights, device)
    dev = model_device(net)
    with torch.no_grad():
        out = [net(a[i:i + batch_size].to(dev).float(), b[i:i + batch_size].to(dev).float(), normalize=True)
               for i in range(0, a.shape[0], batch_size)]
    return torch.cat(out).flatten().cpu()
