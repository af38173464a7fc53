"""The model registry (timm style): a named model is registered where it is defined, with its builder, where its
weights come from, its input normalisation, size and channels, its classes and a one-line description.

    @register_model("mnist-cnn", weights="shipped: blindspots/zoo/weights/mnist-cnn.safetensors", mean=(0.1307,),
                    std=(0.3081,), input_size=(1, 28, 28), num_classes=10, description="a small CNN")
    def _mnist_cnn(weights):          # a local file replacing the registered weights, or None
        return network_with_its_weights_loaded

`load_classifier`, the command line's `--model` help, the docs' model table and the zoo tests read `MODELS`. The
registry imports no model module: `blindspots.zoo` imports the modules that register the named models, and every
reader goes through it (or `blindspots.models`), so the registry is full when read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from .classifier import Classifier
from .errors import InputError

__all__ = ["ModelEntry", "MODELS", "register_model", "model_entry"]

Builder = Callable[["str | os.PathLike | None"], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One named model. `build(weights)` returns the network with its weights loaded (`weights`: a local file that
    replaces the registered ones, or None); `load` wraps it in a `Classifier` with the registered normalisation."""

    name: str
    build: Builder
    weights: str  # where the weights come from, one line
    description: str
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int, int] | None = None  # (C, H, W) when fixed; None: any size (3 channels)
    class_names: Callable[[], Sequence[str]] | None = None

    def wrap(self, net: nn.Module, class_names: Sequence[str] | None = None) -> Classifier:
        """`net` as this model's `Classifier` (normalisation, input size, name, class names)."""
        if class_names is None and self.class_names is not None:
            class_names = list(self.class_names())
        return Classifier(net, self.mean, self.std, class_names=class_names, name=self.name,
                          input_size=self.input_size, num_classes=self.num_classes)

    def load(self, weights: str | os.PathLike | None = None, num_classes: int | None = None) -> Classifier:
        """The model with its registered (or the given) weights, in eval mode. `num_classes` other than the model's
        replaces the head where the network can (timm's `reset_classifier`), and is refused otherwise."""
        net = self.build(weights)
        if num_classes is None or num_classes == self.num_classes:
            return self.wrap(net).eval()
        if not hasattr(net, "reset_classifier"):
            raise InputError(f"{self.name} has {self.num_classes} classes; num_classes={num_classes} does not apply")
        net.reset_classifier(num_classes)
        return Classifier(net, self.mean, self.std, name=self.name, input_size=self.input_size).eval()


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, weights: str, description: str, num_classes: int,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   input_size: Sequence[int] | None = None,
                   class_names: Callable[[], Sequence[str]] | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register the builder it decorates as model `name` (a second registration of a name is refused, so
    two modules cannot silently shadow each other)."""

    def decorate(build: Builder) -> Builder:
        if name in MODELS:
            raise InputError(f"model {name!r} is registered twice (first by {MODELS[name].build.__module__})")
        if ":" in name:
            raise InputError(f"model name {name!r} may not contain ':' (that is the spec grammar's family:arch)")
        MODELS[name] = ModelEntry(name, build, weights, description, int(num_classes),
                                  None if mean is None else tuple(mean), None if std is None else tuple(std),
                                  None if input_size is None else tuple(int(v) for v in input_size), class_names)
        return build

    return decorate


def model_entry(name: str) -> ModelEntry:
    """The registered model `name`; an unknown name is one line listing the registered ones."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; registered: {', '.join(MODELS)}")
    return MODELS[name]
