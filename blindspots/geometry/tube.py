"""Width of the confident tube around a path: confidence at l2 radii in random directions orthogonal to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import probing
from ..validation import check_images, check_labels
from .common import (_check_model, _mean_std, _num_classes, _setup)
from ..errors import InputError

# ------------------------------------------------------------------------------------------------ tube width


@dataclass
class TubeResult:
    """Confidence around P path points at several l2 radii, in random unit directions orthogonal to the path.

    Attributes:
        radii: (R,); p_center: (P,) p at the path points; confidence: (P, R, n_directions);
        quantiles: (P, R, 3) the 5%, 50% and 95% quantiles of p over the directions.
    """

    radii: torch.Tensor
    p_center: torch.Tensor
    confidence: torch.Tensor
    quantiles: torch.Tensor
    levels: tuple[float, ...] = (0.05, 0.5, 0.95)
    evaluations: int = 0

    def summary(self) -> dict[str, Any]:
        """Per radius: the quantiles averaged over path points (JSON ready)."""
        q = self.quantiles.mean(0)
        return {"radii": self.radii.tolist(), "p_center": _mean_std(self.p_center),
                **{f"q{int(round(lv * 100)):02d}": q[:, i].tolist() for i, lv in enumerate(self.levels)},
                "points": int(self.p_center.shape[0]), "directions": int(self.confidence.shape[2])}


@torch.inference_mode()
def tube_width(
    model: nn.Module,
    path_points: torch.Tensor,
    directions: torch.Tensor | None,
    labels: torch.Tensor | Sequence[int],
    radii: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    n_directions: int = 256,
    *,
    seed: int = 0,
    clamp: bool = True,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> TubeResult:
    """p_y at x + r u for each path point x, each radius r (l2 in [0, 1] pixel space) and `n_directions` random unit
    directions u: Gaussian, with the component along the path direction at x removed (`directions`: (P, C, H, W),
    e.g. the LST step or target - source; None keeps all components), then normalised.

    Point p draws its directions from seed `seed + p`. With `clamp` the probes are clamped to [0, 1] (valid images).
    """
    _check_model(model)
    check_images(path_points, "path_points")
    pts = path_points
    if directions is not None:
        if not isinstance(directions, torch.Tensor) or directions.shape != pts.shape:
            raise InputError(f"directions must be a tensor shaped like path_points {tuple(pts.shape)}, got "
                             f"{tuple(directions.shape) if isinstance(directions, torch.Tensor) else directions!r}")
        if not bool(torch.isfinite(directions).all()):
            raise InputError("directions contain NaN or infinite values")
    radii_t = torch.as_tensor(radii, dtype=torch.float32).flatten()
    if radii_t.numel() == 0 or not bool(torch.isfinite(radii_t).all()) or bool((radii_t < 0).any()):
        raise InputError(f"radii must be finite non-negative numbers, got {list(radii)}")
    if not isinstance(n_directions, int) or n_directions < 1:
        raise InputError(f"n_directions must be a positive int, got {n_directions!r}")
    labels = check_labels(labels, pts.shape[0], _num_classes(model))
    probe = _setup(model, device, batch_size)
    dev = probe.device
    n_pts, d = pts.shape[0], pts[0].numel()
    levels = (0.05, 0.5, 0.95)
    conf = torch.empty(n_pts, radii_t.numel(), n_directions)
    p_center = torch.empty(n_pts)
    with probing(model), tqdm(total=n_pts * (radii_t.numel() * n_directions + 1), disable=not progress,
                              unit="img", desc="tube") as bar:
        for p in range(n_pts):
            x = pts[p].to(dev).flatten()
            y = labels[p:p + 1].to(dev)
            p_center[p] = probe(x.view(1, *pts.shape[1:]), y).cpu()[0]
            gen = torch.Generator().manual_seed(seed + p)
            u = torch.randn(n_directions, d, generator=gen).to(device=dev, dtype=x.dtype)
            if directions is not None:
                t = directions[p].to(dev).flatten().to(x.dtype)
                tn = t.norm()
                if float(tn) > 0:
                    t = t / tn
                    u -= (u @ t)[:, None] * t[None]
            u /= u.norm(dim=1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
            flat = torch.empty(radii_t.numel() * n_directions)
            total = flat.numel()
            for lo in range(0, total, probe.batch_size):
                hi = min(total, lo + probe.batch_size)
                idx = torch.arange(lo, hi)
                r = radii_t[idx // n_directions].to(dev, x.dtype)
                xb = x[None] + r[:, None] * u[idx % n_directions]
                if clamp:
                    xb = xb.clamp_(0, 1)
                flat[lo:hi] = probe(xb.view(-1, *pts.shape[1:]), y.expand(hi - lo)).cpu()
                bar.update(hi - lo)
            bar.update(1)
            conf[p] = flat.view(radii_t.numel(), n_directions)
    quantiles = torch.quantile(conf, torch.tensor(levels), dim=2).permute(1, 2, 0).contiguous()
    return TubeResult(radii=radii_t, p_center=p_center, confidence=conf, quantiles=quantiles, levels=levels,
                      evaluations=probe.evaluations)

