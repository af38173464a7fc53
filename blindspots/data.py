"""Images in the toolkit's convention: float NCHW tensors in [0, 1], cropped and resized like ImageNet evaluation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_tensor", "prepare", "demo_photos", "load_image_folder", "DEMO_PHOTOS", "IMAGE_SUFFIXES"]

# scikit-image's bundled colour photos (public domain / CC0): all ship with the package, none is downloaded.
DEMO_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxW, HxWx3 or HxWx4 uint8/float array -> float (3, H, W) tensor in [0, 1]."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == bool:
        arr = arr.astype(np.float32)
    else:
        arr = arr.astype(np.float32)
        if arr.max() > 1.0:
            arr = arr / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).clamp(0, 1)


def prepare(images: torch.Tensor, size: int = 224, crop_fraction: float = 224 / 256) -> torch.Tensor:
    """Resize the shorter side to size/crop_fraction (antialiased) and centre-crop to size x size.

    With the defaults this is the standard ImageNet evaluation transform (Resize 256, CenterCrop 224).
    """
    single = images.ndim == 3
    x = images[None] if single else images
    h, w = x.shape[-2:]
    short = max(size, int(round(size / crop_fraction)))
    scale = short / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size].contiguous()
    return x[0] if single else x


def demo_photos(names: Sequence[str] = DEMO_PHOTOS, size: int = 224) -> tuple[torch.Tensor, list[str]]:
    """scikit-image's bundled photos as a (N, 3, size, size) batch, with their names."""
    from skimage import data as skdata

    images = []
    for name in names:
        loader = getattr(skdata, name, None)
        if loader is None:
            raise ValueError(f"scikit-image has no bundled image {name!r}")
        images.append(prepare(to_tensor(loader()), size))
    return torch.stack(images), list(names)


def load_image_folder(folder: str | os.PathLike, size: int = 224, limit: int | None = None
                      ) -> tuple[torch.Tensor, list[str]]:
    """All images in a folder (sorted by name) as a (N, 3, size, size) batch, with their file names."""
    from skimage import io

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return torch.stack([prepare(to_tensor(io.imread(p)), size) for p in files]), [p.name for p in files]
