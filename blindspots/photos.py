"""Every real photo that ships with an installed package, and the largest pool of them that several ImageNet models
agree on: one photo per predicted class, each classified as the same top class by every model.

Sources (nothing is downloaded): scikit-image's bundled photos (its synthetic test images are left out), scikit-learn's
`china.jpg` and `flower.jpg` (`load_sample_images`, when scikit-learn is installed), and matplotlib's sample photos
(`grace_hopper.jpg`, `Minduka_Present_Blue_Pack.png`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import SKIMAGE_PHOTOS, bundled_photo, prepare, to_tensor
from .errors import InputError

__all__ = ["SKIMAGE_PHOTOS", "MATPLOTLIB_PHOTOS", "real_photos", "PhotoPool", "agreed_photo_pool"]

MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")


def real_photos(size: int = 224) -> tuple[torch.Tensor, list[str]]:
    """All installed real photos, ImageNet-cropped to (N, 3, size, size) in [0, 1] (grey photos repeated over
    three channels), with names like "skimage:coffee", "sklearn:china.jpg", "matplotlib:grace_hopper.jpg"."""
    from matplotlib import cbook
    from skimage import io

    arrays: list[tuple[str, np.ndarray]] = [(f"skimage:{n}", bundled_photo(n)) for n in SKIMAGE_PHOTOS]
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:  # optional: scikit-learn is in the "paper" extra only
        pass
    else:
        bunch = load_sample_images()
        arrays += [(f"sklearn:{Path(f).name}", img) for f, img in zip(bunch.filenames, bunch.images)]
    for name in MATPLOTLIB_PHOTOS:
        path = cbook.get_sample_data(name, asfileobj=False)
        if Path(path).is_file():
            arrays.append((f"matplotlib:{name}", io.imread(path)))
    images = torch.stack([prepare(to_tensor(a), size) for _, a in arrays])
    return images, [n for n, _ in arrays]


@dataclass
class PhotoPool:
    """Photos every model classifies as the same top class, one per class: images (N, 3, H, W), their names, the
    agreed ImageNet classes, and each model's confidence in it (models x N)."""

    images: torch.Tensor
    names: list[str]
    classes: torch.Tensor
    confidences: torch.Tensor
    candidates: int

    def __len__(self) -> int:
        return len(self.names)


def agreed_photo_pool(models: Sequence[torch.nn.Module], size: int = 224, min_confidence: float = 0.0
                      ) -> PhotoPool:
    """The largest pool of real photos of distinct predicted classes that every model puts in that class.

    A photo qualifies when all models give it the same top-1 class (each with confidence > `min_confidence`,
    strict as the paper's p > 0.6); each class keeps its first qualifying photo (in `real_photos` order). One photo
    per class is all a class can contribute, so this greedy pool is the largest. The size of the `imagenet-lite0` and
    `imagenet-mobilenetv2` pool is in docs/zoo.md (a test keeps it true).
    """
    if len(models) == 0:
        raise InputError("give at least one model")
    if not 0.0 <= min_confidence <= 1.0:
        raise InputError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    images, names = real_photos(size)
    preds, confs = zip(*(m.predict(images) for m in models))
    preds_t, confs_t = torch.stack(preds), torch.stack(confs)
    agree = (preds_t == preds_t[0]).all(0) & (confs_t > min_confidence).all(0)
    keep, seen = [], set()
    for i in agree.nonzero().flatten().tolist():
        c = int(preds_t[0, i])
        if c not in seen:
            seen.add(c)
            keep.append(i)
    idx = torch.tensor(keep, dtype=torch.long)
    return PhotoPool(images[idx], [names[i] for i in keep], preds_t[0, idx], confs_t[:, idx], len(names))
