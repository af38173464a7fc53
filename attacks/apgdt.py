"""APGD-T (Croce & Hein, ICML 2020): APGD with the targeted DLR loss, run once per target class among the top k
(AutoAttack's second attack). Success is any misclassification, as in AutoAttack; see `attacks.targeted`."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from .apgd import APGD
from .base import _Run
from .budget import check_target_classes, known_classes
from .registry import register_attack
from .targeted import GuidedRun, over_targets

__all__ = ["APGDT"]


@register_attack("apgd-t", "targeted APGD with the DLR loss over the top target classes, within eps")
class APGDT(APGD):
    """Targeted APGD over the top-k target classes, l-inf or l2 (untargeted success).

    Args:
        model, eps, norm, steps, restarts, rho, early_stop, seed, device, progress, channels_last, amp, compile: as
            `attacks.APGD` (steps and restarts per target class).
        target_classes: k, the number of target classes tried (the highest clean logits besides the label; at most
            the number of classes - 1, the ensemble's budget is capped there). AutoAttack's standard version uses 9.
        loss: "dlr" (the targeted DLR loss, AutoAttack's; needs 4 classes), "ce" (minus CE of the target) or
            "margin" (target logit minus the best other).

    Cost: one clean forward per sample, then per target class at most restarts * (steps + 1) forwards and backwards
    per sample still standing. A sample never fooled returns the last target's highest-loss point.
    """

    name = "apgd-t"
    supports_targeted = False
    cap_target_classes = False  # True: target_classes is an upper bound, capped at the classes - 1 (the ensemble)

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor = 8 / 255, norm: str = "linf",
                 steps: int = 100, *, target_classes: int = 9, restarts: int = 1, rho: float = 0.75,
                 loss: str = "dlr", early_stop: bool = True, seed: int | Sequence[int] | None = None,
                 device: str | torch.device | None = None, progress: bool = False, channels_last: bool = True,
                 amp: bool = False, compile: bool = False) -> None:
        super().__init__(model, eps, norm, steps, restarts=restarts, rho=rho, loss=loss, early_stop=early_stop,
                         seed=seed, device=device, progress=progress, channels_last=channels_last, amp=amp,
                         compile=compile)
        self.target_classes = check_target_classes(target_classes, known_classes(model), type(self).__name__)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "target_classes": self.target_classes}

    def _needs_clean_first(self) -> bool:
        return False  # the forward that picks the targets is the clean check

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        eps = run.eps(self.eps)

        def attack(sub: GuidedRun, ids: torch.Tensor, rank: int) -> None:
            start = init[ids] if init is not None and rank == 0 else None  # a given start: first target only
            one = copy.copy(self)  # the sub-run holds samples `ids` only: so do its budgets
            one.eps = eps[ids]
            APGD._run(one, sub, torch.arange(ids.numel(), device=ids.device), start)

        over_targets(run, idx, self.target_classes, attack, at_most=self.cap_target_classes, who=type(self).__name__)
