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

__all__ = ["SKIMAGE_PHOTOS", "MATPLOTLIB_PHOTOS", "real_photos", "PhotoPool", "agreed_photo_pool", "pool_figures",
           "render_pool_sentence", "main"]

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
    `imagenet-mobilenetv2` pool is generated in docs/zoo.md from docs/results/photo_pool.json (`main` writes it; a test
    recomputes it).
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


ZOO_PAIR = ("imagenet-lite0", "imagenet-mobilenetv2")  # the zoo's two ImageNet models, whose pool docs/zoo.md states


def pool_figures(models: Sequence[str] = ZOO_PAIR, size: int = 224) -> dict:
    """The agreed pool of the registered `models` as a results file holds it: its size, the candidates, the names."""
    from .models import load_classifier

    pool = agreed_photo_pool([load_classifier(m) for m in models], size=size)
    return {"models": list(models), "size": size, "kept": len(pool), "candidates": pool.candidates,
            "names": pool.names}


def render_pool_sentence(data: dict) -> str:
    """docs/zoo.md's sentence on the pool, from its results file."""
    models = " and ".join(f"`{m}`" for m in data["models"])
    return (f"{data['kept']} of {data['candidates']} photos for {models} at {data['size']} px (`{data['command']}`, "
            f"{data['measured']}; `tests/test_zoo.py` recomputes it).\n")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m blindspots.photos --results-to FILE`: measure the zoo pair's agreed pool and write its results file."""
    import argparse
    import json
    import time

    from .store import atomic_write_text

    p = argparse.ArgumentParser(prog="python -m blindspots.photos", description=main.__doc__)
    p.add_argument("--results-to", type=Path, required=True, metavar="FILE")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    figures = pool_figures(size=args.size)
    command = f"python -m blindspots.photos --results-to {args.results_to}" + (
        "" if args.size == 224 else f" --size {args.size}")
    out = {"command": command, "measured": time.strftime("%Y-%m-%d", time.gmtime()), **figures}
    atomic_write_text(args.results_to, json.dumps(out, indent=1) + "\n")
    print(render_pool_sentence(out), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
