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
           "check_positive", "BUDGETS"]

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
        if loss is not None:
            self.loss = check_choice(loss, self.losses, "loss")
        for name, value in (counts or {}).items():
            setattr(self, name, check_positive_int(value, name))

    def eps_param(self) -> float | str:
        """The budget as results and reports show it: the number, or "per-sample"."""
        return self.eps if isinstance(self.eps, float) else "per-sample"


class MinimizationAttack(Attack):
    """An attack that searches each sample's smallest flipping perturbation in `norm` (no budget given; its result's
    norms are the budget found)."""

    budget = "minimal"
    norms: tuple[str, ...] = NORMS
