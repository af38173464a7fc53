"""The attacks' budget semantics in one place (Foolbox 3's split): a `FixedEpsilonAttack` searches within a given
budget eps in its norm (PGD, APGD, APGD-T, Square); a `MinimizationAttack` searches for the smallest perturbation
that flips the model (`MinimalEpsilon`'s bisection over PGD, DeepFool). The checks every attack's settings share
(a budget, a norm, a loss, a positive count) live here, so a new attack states its settings and gets them checked.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from blindspots.errors import InputError

from .base import LOSSES, NORMS, Attack

__all__ = ["FixedEpsilonAttack", "MinimizationAttack", "check_budget", "check_positive_int", "check_choice",
           "check_positive", "check_budget_in_norm", "check_target_classes", "known_classes", "BUDGETS"]

BUDGETS = ("fixed", "minimal")


def check_budget(eps: float | Sequence[float] | torch.Tensor, name: str = "eps") -> float | torch.Tensor:
    """A budget is a non-negative finite float, or one per sample (1-D)."""
    if isinstance(eps, (int, float)):
        if not (math.isfinite(eps) and eps >= 0):
            raise InputError(f"{name} must be a finite number >= 0, got {eps}")
        return float(eps)
    t = torch.as_tensor(eps, dtype=torch.float32)
    if t.ndim != 1 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise InputError(f"{name} must be a number or a 1-D tensor of finite values >= 0, one per sample")
    return t


def check_budget_in_norm(eps: float | torch.Tensor | None, norm: str, image_shape: Sequence[int] | None = None,
                         name: str = "eps") -> None:
    """A budget the images can spend: l-inf at most 1 (pixels lie in [0, 1]); l2 at most the diameter of the
    image cube, sqrt(C * H * W), once the image shape is known. A larger one is no threat model, and reporting a
    result "at" it would be a figure for a budget nobody can spend."""
    if eps is None:
        return
    top = float(eps) if isinstance(eps, float) else float(torch.as_tensor(eps).max())
    if norm == "linf" and top > 1:
        raise InputError(f"{name} {top:g} is beyond the l-inf budget any image in [0, 1] can use (at most 1)")
    if norm == "l2" and image_shape is not None:
        diameter = math.sqrt(math.prod(int(v) for v in image_shape))
        if top > diameter * (1 + 1e-9):
            shape = " x ".join(str(int(v)) for v in image_shape)
            raise InputError(f"{name} {top:g} is beyond the l2 diameter of {shape} images in [0, 1] "
                             f"(sqrt({math.prod(int(v) for v in image_shape)}) = {diameter:.4g})")


def known_classes(model: nn.Module) -> int | None:
    """The model's class count when known without a forward (a `blindspots.Classifier` that states it)."""
    from blindspots.models import Classifier

    return model.num_classes if isinstance(model, Classifier) else None


def check_target_classes(k: int, num_classes: int | None, who: str) -> int:
    """Target classes are other classes than the label: at most num_classes - 1 (when the class count is known)."""
    k = check_positive_int(k, "target_classes")
    if num_classes is not None and k > num_classes - 1:
        raise InputError(f"{who}: target_classes={k}, but a model with {num_classes} classes has only "
                         f"{num_classes - 1} other classes to aim at")
    return k


def check_positive_int(value: object, name: str) -> int:
    """A count (steps, restarts, ...) is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return value


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_positive(value: object, name: str) -> float:
    """A positive finite number (a budget bound, a tolerance)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class FixedEpsilonAttack(Attack):
    """An attack within a fixed budget: `eps` (a number, or one per sample) in `norm` (one of the class's `norms`),
    checked once here with the attack's `loss` (one of `losses`) and its counts (`counts`: name -> value, each a
    positive int, set as attributes). Subclasses implement `_run` as for `Attack`."""

    budget = "fixed"
    norms: tuple[str, ...] = NORMS
    losses: tuple[str, ...] = LOSSES

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor, norm: str, *,
                 loss: str | None = None, counts: dict[str, int] | None = None, **options: Any) -> None:
        super().__init__(model, **options)
        self.eps = check_budget(eps, "eps")
        self.norm = check_choice(norm, self.norms, "norm")
        check_budget_in_norm(self.eps, self.norm)
        if loss is not None:
            self.loss = check_choice(loss, self.losses, "loss")
        for name, value in (counts or {}).items():
            setattr(self, name, check_positive_int(value, name))

    def _check_images(self, images: torch.Tensor) -> None:
        check_budget_in_norm(self.eps, self.norm, images.shape[1:])

    def eps_param(self) -> float | str:
        """The budget as results and reports show it: the number, or "per-sample"."""
        return self.eps if isinstance(self.eps, float) else "per-sample"


class MinimizationAttack(Attack):
    """An attack that searches each sample's smallest flipping perturbation in `norm` (no budget given; its result's
    norms are the budget found)."""

    budget = "minimal"
    norms: tuple[str, ...] = NORMS
