"""Robust accuracy the field trusts: the AutoAttack ensemble (Croce & Hein, ICML 2020) in one call.

`evaluate_robustness(model, images, labels, eps, norm)` runs APGD-CE, APGD-T (targeted DLR), FAB-T and Square in
that order, each on the samples still standing (correct and not fooled yet), and counts a sample as robust only
when no attack fooled it: the per-sample worst case. Every claimed success is confirmed afterwards by a plain forward
of the model on the returned image (no autocast) and a check of its budget; a claim that fails stays a survivor and
is counted in `unconfirmed`. Per-sample seeds are the sample's index plus `seed`, so a sample's attacks do not depend
on the batch it ran in.

Budget: AutoAttack's standard version runs APGD-CE 100 steps, APGD-T 9 target classes x 100 steps, FAB-T 9 x 100
and Square 5,000 queries (`EnsembleBudget.autoattack()`). The default `EnsembleBudget()` keeps APGD-CE and the
steps, and tries the 3 most likely target classes and 1,000 Square queries: on the 1,000 held-out MNIST digits the
full budget costs about 4x more model evaluations on an AT model (most digits survive every attack and so pay for
every step), and the extra target classes and queries seldom change the verdict (the zoo's table in docs/zoo.md
shows what each attack adds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from blindspots.models import Classifier, model_device, probing
from blindspots.validation import check_images, check_labels

from . import apgd, apgdt, fab, square  # noqa: F401 (their classes register the members)
from .base import NORMS, Attack, compute_dtype
from .budget import check_budget, check_budget_in_norm, check_choice
from .registry import attack_entry
from blindspots.errors import InputError

__all__ = ["ATTACKS", "LABELS", "MEMBERS", "EnsembleBudget", "RobustnessResult", "evaluate_robustness",
           "make_attack", "BUDGET_RTOL"]

LABELS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}
GRADIENT_FREE = frozenset({"square"})
BUDGET_RTOL = 1e-5  # a confirmed adversarial lies within eps * (1 + BUDGET_RTOL) + 1e-7


@dataclass(frozen=True)
class EnsembleBudget:
    """How hard each attack of the ensemble tries (see the module docstring for the defaults' reasons)."""

    apgd_steps: int = 100  # APGD-CE and APGD-T steps per restart (and per target class)
    restarts: int = 1  # restarts of APGD-CE, of APGD-T and FAB-T per target class, and of Square
    target_classes: int = 3  # APGD-T and FAB-T: the most likely classes besides the label
    fab_steps: int = 100
    square_queries: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"EnsembleBudget.{f.name} must be a positive int, got {v!r}")

    @classmethod
    def autoattack(cls) -> "EnsembleBudget":
        """AutoAttack's standard version: 9 target classes, 5,000 Square queries."""
        return cls(target_classes=9, square_queries=5000)

    def describe(self) -> str:
        r = f", {self.restarts} restarts" if self.restarts > 1 else ""
        return (f"APGD-CE {self.apgd_steps} steps; APGD-T {self.target_classes} target classes x {self.apgd_steps} "
                f"steps; FAB-T {self.target_classes} x {self.fab_steps} steps; Square {self.square_queries:,} "
                f"queries{r}")


# Each member of the ensemble is a registered attack (attacks.registry) with settings drawn from the budget: the
# ensemble names its members, the registry builds them, as `blindspots attack --attack NAME` does.
MEMBERS: dict[str, tuple[str, Callable[[EnsembleBudget, nn.Module], dict[str, Any]]]] = {
    "apgd-ce": ("apgd", lambda b, model: {"steps": b.apgd_steps, "restarts": b.restarts, "loss": "ce"}),
    # the targeted DLR loss needs 4 classes; with fewer, the targeted margin (Carlini-Wagner) loss
    "apgd-t": ("apgd-t", lambda b, model: {"steps": b.apgd_steps, "target_classes": _target_classes(model, b),
                                           "restarts": b.restarts,
                                           "loss": "dlr" if (_num_classes(model) or 4) >= 4 else "margin"}),
    "fab-t": ("fab-t", lambda b, model: {"steps": b.fab_steps, "target_classes": _target_classes(model, b),
                                         "restarts": b.restarts}),
    "square": ("square", lambda b, model: {"steps": b.square_queries, "restarts": b.restarts}),
}
ATTACKS = tuple(MEMBERS)  # AutoAttack's order


def make_attack(name: str, model: nn.Module, eps: float, norm: str, budget: EnsembleBudget, *,
                seed: int | Sequence[int] | None = 0, **options: Any) -> Attack:
    """One attack of the ensemble by name, built by the attack registry with the budget's settings (`options`:
    device, amp, compile, ...). The targeted members' class count is capped at the model's other classes."""
    if name not in MEMBERS:
        raise InputError(f"unknown attack {name!r}; the ensemble knows {', '.join(ATTACKS)}")
    registered, settings = MEMBERS[name]
    attack = attack_entry(registered).make(model, norm=norm, eps=eps, seed=seed, **settings(budget, model), **options)
    return _capped(attack) if name in ("apgd-t", "fab-t") else attack


def _capped(attack: Attack) -> Attack:
    """The ensemble's target classes are an upper bound (AutoAttack's 9 on a 2-class model: the one other class)."""
    attack.cap_target_classes = True
    return attack


def _num_classes(model: nn.Module) -> int | None:
    return model.num_classes if isinstance(model, Classifier) else getattr(model, "num_classes", None)


def _target_classes(model: nn.Module, budget: EnsembleBudget) -> int:
    classes = _num_classes(model)
    return min(budget.target_classes, classes - 1) if classes and classes >= 2 else budget.target_classes


@dataclass
class RobustnessResult:
    """Per-sample outcome of the ensemble; tensors have the batch as first dimension (on the inputs' device).

    Attributes:
        attacks: names of the attacks in the order they ran.
        clean_correct: (N,) bool, the model classifies the clean image correctly.
        fooled_by: (N,) int64, index into `attacks` of the attack that fooled the sample first; -1 where none did.
        images: (N, ...) the worst case per sample: the adversarial image where one was found, else the clean one.
        l2, linf: (N,) norms of `images - clean`.
        forwards, backwards: (N,) model passes spent on each sample (the clean pass and confirmations included).
        attack_forwards, attack_backwards, seconds: per attack, totals over samples and wall time.
        unconfirmed: per attack, claimed successes that the confirming forward or the budget check rejected.
    """

    attacks: list[str]
    eps: float | None
    norm: str | None
    labels: torch.Tensor
    clean_correct: torch.Tensor
    fooled_by: torch.Tensor
    images: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    forwards: torch.Tensor
    backwards: torch.Tensor
    attack_forwards: list[int]
    attack_backwards: list[int]
    seconds: list[float]
    unconfirmed: list[int]
    params: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def robust(self) -> torch.Tensor:
        """(N,) bool: correct on the clean image and not fooled by any attack (the per-sample worst case)."""
        return self.clean_correct & (self.fooled_by < 0)

    @property
    def clean_accuracy(self) -> float:
        return int(self.clean_correct.sum()) / max(len(self), 1)

    @property
    def robust_accuracy(self) -> float:
        return int(self.robust.sum()) / max(len(self), 1)

    @property
    def fooled(self) -> list[int]:
        """Samples each attack fooled first (that every earlier attack had missed)."""
        return [int((self.fooled_by == k).sum()) for k in range(len(self.attacks))]

    @property
    def accuracy_after(self) -> list[float]:
        """Robust accuracy after each attack of the cascade (the last one is `robust_accuracy`)."""
        n, correct, out = len(self), int(self.clean_correct.sum()), []
        for k in self.fooled:
            correct -= k
            out.append(correct / n)
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: accuracies, what each attack added, passes and seconds."""
        n = len(self)
        return {
            "n": n, "eps": self.eps, "norm": self.norm, "budget": self.budget,
            "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
            "attacks": [{"name": a, "accuracy_after": acc, "fooled": f, "unconfirmed": u, "seconds": round(s, 2),
                         "forwards_per_sample": fw / n, "backwards_per_sample": bw / n, "params": p}
                        for a, acc, f, u, s, fw, bw, p in zip(self.attacks, self.accuracy_after, self.fooled,
                                                              self.unconfirmed, self.seconds, self.attack_forwards,
                                                              self.attack_backwards, self.params)],
            "forwards_per_sample": float(self.forwards.double().mean()),
            "backwards_per_sample": float(self.backwards.double().mean()),
        }


def _resolve(attacks: str | Sequence[str | Attack], model: nn.Module, eps: float | None, norm: str,
             budget: EnsembleBudget, options: dict[str, Any]) -> list[tuple[str, Callable[[list[int]], Attack]]]:
    """(name, factory from per-sample seeds) per attack; Attack instances are used as they are."""
    if isinstance(attacks, str):
        if attacks != "standard":
            raise InputError(f"attacks must be 'standard' or a list of names ({', '.join(ATTACKS)}) or Attack "
                             f"instances, got {attacks!r}")
        attacks = ATTACKS
    out = []
    for a in attacks:
        if isinstance(a, Attack):
            out.append((type(a).__name__, lambda seeds, a=a: a))
        elif isinstance(a, str):
            if a not in ATTACKS:
                raise InputError(f"unknown attack {a!r}; the ensemble knows {', '.join(ATTACKS)}")
            if eps is None:
                raise InputError(f"attack {a!r} needs eps")
            out.append((a, lambda seeds, a=a: make_attack(a, model, eps, norm, budget, seed=seeds, **options)))
        else:
            raise TypeError(f"attacks must hold names or Attack instances, got {type(a).__name__}")
    if len({name for name, _ in out}) != len(out):
        raise InputError(f"each attack may appear once, got {[name for name, _ in out]}")
    return out


def evaluate_robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None,
                        eps: float | None = None, norm: str = "linf",
                        attacks: str | Sequence[str | Attack] = "standard", *, budget: EnsembleBudget | None = None,
                        batch_size: int = 250, seed: int = 0, device: str | torch.device | None = None,
                        progress: bool = False, amp: bool = False, compile: bool = False,
                        done: Mapping[str, dict[str, Any]] | None = None,
                        on_attack: Callable[[str, dict[str, Any]], None] | None = None) -> RobustnessResult:
    """Clean accuracy and the per-sample worst case over an ensemble of attacks run in cascade.

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        images, labels: (N, C, H, W) in [0, 1] and (N,) int64 true classes (None: the model's predictions, so clean
            accuracy is 1).
        eps, norm: the threat model ("linf" or "l2").
        attacks: "standard" (APGD-CE, APGD-T, FAB-T, Square), a subset of those names in any order, or `Attack`
            instances (their own budgets and seeds; an empty list measures clean accuracy only).
        budget: steps, target classes, queries and restarts (default `EnsembleBudget()`; AutoAttack's is
            `EnsembleBudget.autoattack()`).
        batch_size: samples per attack call. seed: sample i's attacks use seed + i.
        device, amp, compile: passed to the attacks (the confirming forwards run without autocast).
        on_attack, done: resuming attack by attack. After each attack, `on_attack(name, step)` gets what it changed
            (`step`: "hit", the samples it fooled first, "images", their adversarial images, "forwards" and
            "backwards", (N,) passes it spent per sample, and "stats", its totals and settings); `done` maps names
            to such steps saved by an earlier call on the same inputs and settings, applied instead of running
            those attacks again (the cascade's state after an attack decides the rest, so the result is the same).
    """
    check_images(images, "images")
    n = images.shape[0]
    labels = check_labels(labels, n, _num_classes(model)) if labels is not None else None
    if eps is not None:
        eps = check_budget(eps, "eps")
        if not isinstance(eps, float):
            raise InputError("eps must be one number for the ensemble")
    norm = check_choice(norm, NORMS, "norm")
    check_budget_in_norm(eps, norm, images.shape[1:])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    budget = budget or EnsembleBudget()
    options = {"device": device, "amp": amp, "compile": compile}
    plan = _resolve(attacks, model, eps, norm, budget, options)
    dev = torch.device(device) if device is not None else model_device(model)
    dtype = compute_dtype(model)
    forwards = torch.zeros(n, dtype=torch.long)
    backwards = torch.zeros(n, dtype=torch.long)
    with torch.no_grad(), probing(model):
        pred = torch.cat([model(images[i:i + batch_size].to(dev, dtype)).argmax(1).cpu()
                          for i in range(0, n, batch_size)])
    forwards += 1
    labels = pred.clone() if labels is None else labels.cpu()
    correct = pred == labels
    fooled_by = torch.full((n,), -1, dtype=torch.long)
    adv = images.detach().clone()
    stats = {"forwards": [], "backwards": [], "seconds": [], "unconfirmed": [], "params": []}
    with tqdm(total=len(plan), disable=not progress, desc="ensemble", unit="attack",
              bar_format="{l_bar}{bar}| {n:.2f}/{total} attacks [{elapsed}<{remaining}]{postfix}") as bar:
        for k, (name, factory) in enumerate(plan):
            bar.set_description(LABELS.get(name, name))
            if done is not None and name in done:  # measured by an earlier call: apply what it changed
                step = done[name]
                fooled_by[step["hit"]] = k
                adv[step["hit"].to(images.device)] = step["images"].to(adv.device, adv.dtype)
                forwards += step["forwards"]
                backwards += step["backwards"]
                for key in stats:
                    stats[key].append(step["stats"][key])
                bar.update(1)
                continue
            t0 = time.perf_counter()
            fw0, bw0, fooled0 = forwards.clone(), backwards.clone(), fooled_by.clone()
            standing = (correct & (fooled_by < 0)).nonzero().flatten()
            nb = max(math.ceil(standing.numel() / batch_size), 1)
            fw = bw = bad = 0
            params: dict[str, Any] = {}
            for j in range(0, standing.numel(), batch_size):
                idx = standing[j:j + batch_size]
                attack = factory([seed + int(i) for i in idx])
                params = attack.params()
                res = attack(images[idx], labels[idx].to(images.device))
                ok = res.success.cpu() & _confirm(model, images[idx], res.images, labels[idx], dev, dtype,
                                                  *_ball(attack, eps, norm))
                forwards[idx] += res.forwards.cpu() + 1
                backwards[idx] += res.backwards.cpu()
                fw += int(res.forwards.sum()) + idx.numel()
                bw += int(res.backwards.sum())
                bad += int((res.success.cpu() & ~ok).sum())
                hit = idx[ok]
                fooled_by[hit] = k
                adv[hit.to(images.device)] = res.images[ok.to(res.images.device)].to(adv.dtype)
                bar.update(1 / nb)
                bar.set_postfix(robust=f"{float((correct & (fooled_by < 0)).float().mean()):.3f}")
            if standing.numel() == 0:
                bar.update(1)
            for key, v in zip(stats, (fw, bw, time.perf_counter() - t0, bad, params)):
                stats[key].append(v)
            if on_attack is not None:
                hit = (fooled_by != fooled0).nonzero().flatten()
                on_attack(name, {"hit": hit, "images": adv[hit.to(images.device)].detach().cpu(),
                                 "forwards": forwards - fw0, "backwards": backwards - bw0,
                                 "stats": {key: v[-1] for key, v in stats.items()}})
    diff = (adv - images.detach()).flatten(1).to(torch.float64)
    dev_in = images.device
    return RobustnessResult(
        attacks=[name for name, _ in plan], eps=eps, norm=norm, labels=labels.to(dev_in),
        clean_correct=correct.to(dev_in), fooled_by=fooled_by.to(dev_in), images=adv,
        l2=diff.norm(dim=1).to(images.dtype), linf=diff.abs().amax(1).to(images.dtype),
        forwards=forwards.to(dev_in), backwards=backwards.to(dev_in), attack_forwards=stats["forwards"],
        attack_backwards=stats["backwards"], seconds=stats["seconds"], unconfirmed=stats["unconfirmed"],
        params=stats["params"], budget={f.name: getattr(budget, f.name) for f in fields(budget)})


def _ball(attack: Attack, eps: float | None, norm: str) -> tuple[Any, str | None]:
    """The budget a returned image must respect: the attack's own (instances) or the ensemble's."""
    a_eps, a_norm = getattr(attack, "eps", None), getattr(attack, "norm", None)
    return (a_eps, a_norm) if a_eps is not None and a_norm is not None else (eps, norm if eps is not None else None)


def _confirm(model: nn.Module, clean: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, dev: torch.device,
             dtype: torch.dtype, eps: Any, norm: str | None) -> torch.Tensor:
    """(n,) bool: the model (plain forward, eval mode) misclassifies each returned image, and the image lies in the
    budget (when one is known)."""
    with torch.no_grad(), probing(model):
        pred = model(adv.to(dev, dtype)).argmax(1).cpu()
    ok = pred != labels.cpu()
    if eps is not None and norm is not None:
        d = (adv.detach() - clean.detach().to(adv.dtype)).flatten(1).cpu().double()
        dist = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        limit = torch.as_tensor(eps, dtype=torch.float64).cpu()
        ok &= dist <= limit * (1 + BUDGET_RTOL) + 1e-7
    return ok
