"""Gradient-masking checks beside a robust accuracy (Carlini et al. 2019, "On Evaluating Adversarial Robustness";
Athalye et al. 2018): signs that the gradient attacks of the ensemble were stopped by the model's gradients rather
than by its robustness. Each check passes or is flagged against a tolerance fixed here, before any number:

- eps sweep: APGD-CE's robust accuracy must not rise (beyond MONOTONE_SLACK, the noise of random starts) as the
  budget grows over EPS_FACTORS x eps, and must fall to at most UNBOUNDED_ACCURACY_MAX at the unbounded budget (the
  whole [0, 1] box: l-inf 1, l2 the box's diagonal), where any image is reachable.
- black box vs white box: the share of samples only the gradient-free attack (Square) fooled, after every gradient
  attack failed, must stay at most BLACK_BOX_EXTRA_MAX.
- more steps and restarts: APGD-CE with MORE_STEPS_FACTOR x the steps and MORE_RESTARTS restarts, run on the
  ensemble's survivors, may fool at most MORE_EFFORT_EXTRA_MAX of the samples.
- transfer: APGD-CE examples made on the normal twin (same architecture, normal training) may fool at most
  TRANSFER_EXTRA_MAX of the samples that every gradient attack missed on the model itself.

Shares are of the n samples checked: the whole evaluation for the black-box check, a seeded random subset of
`samples` images for the others (they rerun attacks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from blindspots.models import model_device, probing

from .ensemble import GRADIENT_FREE, EnsembleBudget, RobustnessResult, evaluate_robustness, make_attack
from blindspots.errors import InputError

__all__ = ["Check", "masking_checks", "TOLERANCES", "EPS_FACTORS", "MONOTONE_SLACK", "UNBOUNDED_ACCURACY_MAX",
           "BLACK_BOX_EXTRA_MAX", "MORE_EFFORT_EXTRA_MAX", "TRANSFER_EXTRA_MAX", "MORE_STEPS_FACTOR",
           "MORE_RESTARTS", "CHECK_SAMPLES"]

EPS_FACTORS = (0.25, 0.5, 1.0, 2.0)  # budgets of the sweep, as multiples of eps, then the unbounded one
MONOTONE_SLACK = 0.02  # largest rise of accuracy from one budget to the next larger one
UNBOUNDED_ACCURACY_MAX = 0.02  # largest robust accuracy at the unbounded budget
BLACK_BOX_EXTRA_MAX = 0.01  # largest share of samples fooled only by the black-box attack
MORE_EFFORT_EXTRA_MAX = 0.01  # largest share of samples fooled only by the longer, restarted APGD-CE
TRANSFER_EXTRA_MAX = 0.01  # largest share of samples fooled by transfer but by no gradient attack
MORE_STEPS_FACTOR = 2
MORE_RESTARTS = 2
CHECK_SAMPLES = 200  # images the sweep, effort and transfer checks rerun attacks on

TOLERANCES = {"MONOTONE_SLACK": MONOTONE_SLACK, "UNBOUNDED_ACCURACY_MAX": UNBOUNDED_ACCURACY_MAX,
              "BLACK_BOX_EXTRA_MAX": BLACK_BOX_EXTRA_MAX, "MORE_EFFORT_EXTRA_MAX": MORE_EFFORT_EXTRA_MAX,
              "TRANSFER_EXTRA_MAX": TRANSFER_EXTRA_MAX}


@dataclass
class Check:
    """One check's outcome: status "pass", "flagged" or "not run"; `value` compared with `limit` (value <= limit
    passes), over `n` samples."""

    name: str
    status: str
    value: float | None
    limit: float
    n: int
    detail: str

    def line(self) -> str:
        shown = "-" if self.value is None else f"{self.value:.3f}"
        return f"{self.name:<26} {self.status:<8} {shown:>6} <= {self.limit:<5g} n={self.n:<5} {self.detail}"


def _unbounded(norm: str, images: torch.Tensor) -> float:
    return 1.0 if norm == "linf" else math.sqrt(images[0].numel())


def masking_checks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, result: RobustnessResult, *,
                   twin: nn.Module | None = None, twin_name: str = "the normal twin", samples: int = CHECK_SAMPLES,
                   budget: EnsembleBudget | None = None, seed: int = 0, batch_size: int = 250,
                   device: str | torch.device | None = None, progress: bool = False, amp: bool = False,
                   compile: bool = False) -> list[Check]:
    """The checks above for `result` (from `evaluate_robustness` on the same images, labels and budget)."""
    eps, norm = result.eps, result.norm
    if eps is None or norm is None:
        raise InputError("masking checks need the ensemble's eps and norm")
    budget = budget or EnsembleBudget(**result.budget)
    labels = labels.cpu()
    n = len(result)
    gen = torch.Generator().manual_seed(seed + 7)
    subset = torch.randperm(n, generator=gen)[:min(samples, n)].sort().values
    x, y = images[subset], labels[subset]
    opts = {"budget": budget, "batch_size": batch_size, "seed": seed, "device": device, "progress": False,
            "amp": amp, "compile": compile}
    gradient = [k for k, a in enumerate(result.attacks) if a not in GRADIENT_FREE]
    # survivors of every gradient attack (robust, or fooled only by a gradient-free one)
    white_survivor = result.clean_correct.cpu() & ~torch.isin(result.fooled_by.cpu(), torch.tensor(gradient))
    with tqdm(total=3, disable=not progress, desc="masking checks", unit="check") as bar:
        checks = _sweep(model, x, y, subset, result, eps, norm, opts)
        bar.update(1)
        checks.append(_black_box(result, white_survivor))
        checks.append(_more_effort(model, x, y, result.robust.cpu()[subset], eps, norm, budget, opts))
        bar.update(1)
        checks.append(_transfer(model, twin, twin_name, x, y, white_survivor[subset], eps, norm, opts))
        bar.update(1)
    return checks


def _sweep(model, x, y, subset, result: RobustnessResult, eps: float, norm: str, opts: dict[str, Any]
           ) -> list[Check]:
    """APGD-CE over EPS_FACTORS x eps and the unbounded budget; at 1 x eps the ensemble's own APGD-CE figures."""
    m = x.shape[0]
    accs, budgets = [], []
    first = result.attacks.index("apgd-ce") if "apgd-ce" in result.attacks else None
    for f in (*EPS_FACTORS, None):
        e = _unbounded(norm, x) if f is None else eps * f
        if f == 1.0 and first is not None:
            fooled = result.fooled_by.cpu()[subset]  # survivors of APGD-CE: never fooled, or fooled later
            acc = float((result.clean_correct.cpu()[subset] & ((fooled < 0) | (fooled > first))).float().mean())
        else:
            acc = evaluate_robustness(model, x, y, e, norm, ["apgd-ce"], **opts).robust_accuracy
        accs.append(acc)
        budgets.append(e)
    rise = max(b - a for a, b in zip(accs, accs[1:]))
    shown = ", ".join(f"{a:.3f}@{e:.3g}" for a, e in zip(accs, budgets))
    return [Check("eps sweep: monotone", "pass" if rise <= MONOTONE_SLACK else "flagged", max(rise, 0.0),
                  MONOTONE_SLACK, m, f"APGD-CE accuracy at eps {shown}"),
            Check("eps sweep: unbounded", "pass" if accs[-1] <= UNBOUNDED_ACCURACY_MAX else "flagged", accs[-1],
                  UNBOUNDED_ACCURACY_MAX, m, f"APGD-CE accuracy at eps {budgets[-1]:.3g} (the whole box)")]


def _black_box(result: RobustnessResult, white_survivor: torch.Tensor) -> Check:
    black = [k for k, a in enumerate(result.attacks) if a in GRADIENT_FREE]
    white = [a for a in result.attacks if a not in GRADIENT_FREE]
    n = len(result)
    if not black or not white:
        return Check("black box vs white box", "not run", None, BLACK_BOX_EXTRA_MAX, n,
                     "needs a gradient-free and a gradient attack in the ensemble")
    only = int(torch.isin(result.fooled_by.cpu(), torch.tensor(black)).sum())
    share = only / n
    return Check("black box vs white box", "pass" if share <= BLACK_BOX_EXTRA_MAX else "flagged", share,
                 BLACK_BOX_EXTRA_MAX, n, f"{only} samples fooled by {'/'.join(result.attacks[k] for k in black)} "
                 f"after {', '.join(white)} failed ({int(white_survivor.sum())} survived them)")


def _more_effort(model, x, y, robust: torch.Tensor, eps: float, norm: str, budget: EnsembleBudget,
                 opts: dict[str, Any]) -> Check:
    m = x.shape[0]
    longer = replace(budget, apgd_steps=budget.apgd_steps * MORE_STEPS_FACTOR, restarts=MORE_RESTARTS)
    name = "more steps and restarts"
    what = f"APGD-CE {longer.apgd_steps} steps x {MORE_RESTARTS} restarts on the {int(robust.sum())} survivors"
    if not bool(robust.any()):
        return Check(name, "pass", 0.0, MORE_EFFORT_EXTRA_MAX, m, what)
    # other random starts than the ensemble's (whose seeds are seed + index)
    attack = make_attack("apgd-ce", model, eps, norm, longer, seed=opts["seed"] + 1_000_003, device=opts["device"],
                         amp=opts["amp"], compile=opts["compile"])
    keep = robust.nonzero().flatten()
    res = evaluate_robustness(model, x[keep], y[keep], eps, norm, [attack], **{**opts, "budget": longer})
    extra = int((~res.robust).sum())
    share = extra / m
    return Check(name, "pass" if share <= MORE_EFFORT_EXTRA_MAX else "flagged", share, MORE_EFFORT_EXTRA_MAX, m,
                 f"{what}: {extra} more fooled")


def _transfer(model, twin, twin_name: str, x, y, white_survivor: torch.Tensor, eps: float, norm: str,
              opts: dict[str, Any]) -> Check:
    m = x.shape[0]
    name = "transfer from normal twin"
    if twin is None:
        return Check(name, "not run", None, TRANSFER_EXTRA_MAX, m, "no normal twin given (--twin)")
    made = evaluate_robustness(twin, x, y, eps, norm, ["apgd-ce"], **opts)
    with torch.no_grad(), probing(model):
        pred = model(made.images.to(model_device(model))).argmax(1).cpu()
    fooled = pred != y
    extra = int((fooled & white_survivor).sum())
    share = extra / m
    return Check(name, "pass" if share <= TRANSFER_EXTRA_MAX else "flagged", share, TRANSFER_EXTRA_MAX, m,
                 f"APGD-CE examples of {twin_name} fooled {int(fooled.sum())} samples, {extra} of them missed by "
                 "every gradient attack")
