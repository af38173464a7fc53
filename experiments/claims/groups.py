"""The study's model groups: which models are probed on one image set, their (architecture, normal, adversarially
trained) pairs, and where each group's images come from (`GROUPS`: `mnist`, `imagenet`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from blindspots.errors import InputError

__all__ = ["Group", "GROUPS", "ImageSet"]

# (models, limit, seed, photo size, min confidence) -> (images, labels or None: the models' predictions, names)
ImageSet = Callable[[Sequence[torch.nn.Module], "int | None", int, int, float],
                    "tuple[torch.Tensor, torch.Tensor | None, list[str] | None]"]


@dataclass(frozen=True)
class Group:
    """Models probed on one image set (`name`: the group's folder and its name in the results), their
    (architecture, normal, AT) pairs, and whether each model gets its own pool (labels: its own predictions) instead
    of the pool every model classifies correctly."""

    name: str
    models: tuple[str, ...]
    at_pairs: tuple[tuple[str, str, str], ...]
    images: ImageSet
    per_model: bool = False


def _mnist_images(models, limit: int | None, seed: int, size: int, min_confidence: float):
    """Held-out MNIST digits (the 1,000 of the zoo's split), a seeded class-balanced subset of `limit`."""
    from blindspots.zoo import mnist_split

    x, y = mnist_split("test")
    if limit is not None and limit < len(y):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        per_class = -(-limit // 10)
        keep = torch.cat([order[y[order] == c][:per_class] for c in range(10)])[:limit].sort().values
        x, y = x[keep], y[keep]
    return x, y, [f"mnist-test-{i}" for i in range(len(y))]


def _photo_images(models, limit: int | None, seed: int, size: int, min_confidence: float):
    """One real photo per class the model predicts with p > min_confidence, at `size` pixels (labels: its
    predictions)."""
    from blindspots.photos import agreed_photo_pool

    pool = agreed_photo_pool(models, size=size, min_confidence=min_confidence)
    n = len(pool) if limit is None else min(limit, len(pool))
    if n < 2 or len(set(pool.classes[:n].tolist())) < 2:
        raise InputError(f"imagenet: {', '.join(getattr(m, 'name', '?') for m in models)} puts {len(pool)} of "
                         f"{pool.candidates} photos in a class with p > {min_confidence:g} at {size} px; the protocol "
                         "needs 2 of different classes (a larger --photo-size helps; default 128)")
    return pool.images[:n], None, list(pool.names[:n])


GROUPS: dict[str, Group] = {
    "mnist": Group("mnist", ("mnist-cnn", "mnist-cnn-at", "mnist-vit", "mnist-vit-at"),
                   (("CNN", "mnist-cnn", "mnist-cnn-at"), ("ViT", "mnist-vit", "mnist-vit-at")), _mnist_images),
    "imagenet": Group("imagenet", ("imagenet-lite0", "imagenet-mobilenetv2"), (), _photo_images, per_model=True),
}
