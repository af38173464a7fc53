"""The attack registry: an attack is registered where it is defined, with the norms it supports, its budget
semantics and a one-line description; `blindspots attack --attack NAME` reaches any registered attack and its help
lists them from here.

    @register_attack("pgd", "PGD (Madry et al.), within a fixed budget")
    class PGD(FixedEpsilonAttack): ...

Budget semantics (`attacks.budget`): a "minimal" attack searches each sample's smallest flipping budget (bisection
over PGD, DeepFool's minimal l2 step); a "fixed" one attacks within a given eps. `run_attack` runs either and fills
the result's budget fields the same way (`AttackResult.epsilon`, `epsilon_lower`, `at_floor`, `epsilon_text()`), so
one table shows both: a fixed-budget attack is a one-point search ("<= eps" where it flipped the model, "> eps" where
not, "0" where the clean image was already misclassified).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from blindspots.errors import InputError

from .base import Attack, AttackResult
from .budget import BUDGETS

__all__ = ["AttackEntry", "ATTACKS", "register_attack", "attack_entry", "run_attack"]


@dataclass(frozen=True)
class AttackEntry:
    """One registered attack: its class, norms, budget ("fixed" or "minimal"), description, and the name of the
    keyword that sets its iteration count (`steps`; Square's is `queries`)."""

    name: str
    cls: type[Attack]
    norms: tuple[str, ...]
    budget: str
    description: str
    steps_keyword: str = "steps"

    def make(self, model: nn.Module, *, norm: str, eps: float | None = None, steps: int | None = None,
             **options: Any) -> Attack:
        """The attack on `model` in `norm`; `eps` is required by a fixed-budget attack and refused by a minimal one
        unless it takes a bound (FAB-T within eps, as AutoAttack runs it); other options
        (None: the attack's default) must be keywords the attack takes (a setting it would ignore is refused, naming
        it), except `seed`, which a deterministic attack does not need."""
        if norm not in self.norms:
            raise InputError(f"attack {self.name!r} supports {', '.join(self.norms)}, not {norm!r}")
        if self.budget == "fixed" and eps is None:
            raise InputError(f"attack {self.name!r} has a fixed budget: give eps (--eps)")
        kwargs = {k: v for k, v in options.items() if v is not None}
        if steps is not None:
            kwargs[self.steps_keyword] = steps
        if eps is not None:
            kwargs["eps"] = eps
        takes = inspect.signature(self.cls.__init__).parameters
        if self.budget == "minimal" and eps is not None and "eps" not in takes:  # FAB-T takes eps as a bound
            raise InputError(f"attack {self.name!r} searches the smallest budget itself: eps does not apply")
        if "norm" in takes:
            kwargs["norm"] = norm
        if "seed" not in takes:  # a deterministic attack (DeepFool, FGSM) draws nothing
            kwargs.pop("seed", None)
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values())
        unknown = [] if open_ended else sorted(k for k in kwargs if k not in takes)
        if unknown:
            raise InputError(f"attack {self.name!r} does not take {', '.join(unknown)}")
        return self.cls(model, **kwargs)


ATTACKS: dict[str, AttackEntry] = {}


def register_attack(name: str, description: str, *, steps_keyword: str = "steps",
                    norms: Sequence[str] | None = None) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: register the attack class as `name`; its norms are the class's `norms` (or the `norms` given) and its budget semantics the class's `budget` (`FixedEpsilonAttack`, `MinimizationAttack`)."""

    def decorate(cls: type[Attack]) -> type[Attack]:
        if name in ATTACKS:
            raise InputError(f"attack {name!r} is registered twice (first by {ATTACKS[name].cls.__module__})")
        budget = getattr(cls, "budget", None)
        if budget not in BUDGETS:
            raise InputError(f"attack {name!r}: {cls.__name__} must derive from FixedEpsilonAttack or "
                             "MinimizationAttack (attacks.budget) to declare its budget semantics")
        ATTACKS[name] = AttackEntry(name, cls, tuple(norms or cls.norms), budget, description, steps_keyword)
        return cls

    return decorate


def attack_entry(name: str) -> AttackEntry:
    """The registered attack `name`; an unknown name is one line listing the registered ones."""
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; registered: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def run_attack(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
               norm: str = "linf", eps: float | None = None, steps: int | None = None,
               **options: Any) -> AttackResult:
    """Run registered attack `name` and fill the result's budget fields in `norm` (see the module's docstring):
    a minimal attack without its own search gets the norm of the perturbation it found (inf where it failed); a
    fixed one gets eps where it flipped the model, inf (and `epsilon_lower` = eps) where not."""
    entry = attack_entry(name)
    result = entry.make(model, norm=norm, eps=eps, steps=steps, **options)(images, labels)
    if result.epsilon is not None:  # the attack measured its budget itself (minimal_epsilon)
        return result
    zero = torch.zeros_like(result.l2)
    found = result.linf if norm == "linf" else result.l2
    if entry.budget == "minimal":
        result.epsilon = torch.where(result.success, found, torch.full_like(found, math.inf))
    else:
        result.epsilon = torch.where(result.success, torch.full_like(found, float(eps)),
                                     torch.full_like(found, math.inf))
        result.epsilon_lower = torch.where(result.success, zero, torch.full_like(found, float(eps)))
        result.at_floor = result.success & ~result.clean_success
    result.epsilon = torch.where(result.clean_success, zero, result.epsilon)
    result.params = {**result.params, "registered_as": name, "budget": entry.budget}
    return result
