"""APGD (Croce and Hein, ICML 2020): PGD with momentum and a step size that halves at checkpoints when the loss
stops improving; the schedule follows the reference implementation of AutoAttack.

Per sample: start at a random corner-scaled point of the budget, step size 2 * eps; each iteration takes a
projected sign (l-inf) or normalised (l2) gradient step z, then x <- P(x + 0.75 (z - x) + 0.25 (x - x_prev)).
Checkpoints come after 0.22 T iterations, then at intervals shrinking by 0.03 T (at least 0.06 T); at a checkpoint
the step size of a sample halves and it restarts from its best point when (a) its loss increased in at most
rho = 75 % of the iterations since the last checkpoint, or (b) its step size was not reduced at the last checkpoint and
its best loss has not improved since. Every iterate is evaluated, so no extra forward is needed for the result.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .base import (LOSSES, NORMS, Attack, _Run, _view, check_budget, check_choice, check_positive_int,
                   per_sample_noise)
from .pgd import project

__all__ = ["APGD"]


def _apgd_start(x0: torch.Tensor, eps: torch.Tensor, norm: str, seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """AutoAttack's start: l-inf, uniform noise scaled so its largest value is eps; l2, a random direction at
    distance eps. Drawn from each sample's own seed; clipped to [0, 1]."""
    if norm == "linf":
        t = per_sample_noise(seeds, x0.shape[1:], "uniform", stream).to(device=x0.device, dtype=x0.dtype)
        t = t / t.abs().amax(1, keepdim=True).clamp_min(1e-12)
    else:
        t = per_sample_noise(seeds, x0.shape[1:], "normal", stream)[:, :-1].to(device=x0.device, dtype=x0.dtype)
        t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.clamp(x0 + t.view_as(x0) * _view(eps), 0, 1)


class APGD(Attack):
    """APGD-CE (or APGD with the margin loss) in l-inf or l2.

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        eps: budget, a number or one value per sample.
        norm: "linf" or "l2".
        steps: iterations per restart (each one forward + one backward; plus one for the start point).
        restarts: independent random starts; with early stop a restart only runs the samples not fooled yet.
        rho: the oscillation threshold of the step-size schedule (0.75 in the paper).
        loss: "ce" (APGD-CE) or "margin".
        early_stop, seed, device, progress, channels_last: see `attacks.base.Attack`.

    Returns the first (early stop) or the last adversarial iterate of a sample; for a sample never fooled, its
    highest-loss iterate.
    """

    name = "apgd"

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor = 8 / 255, norm: str = "linf",
                 steps: int = 100, *, restarts: int = 1, rho: float = 0.75, loss: str = "ce",
                 early_stop: bool = True, seed: int | Sequence[int] | None = None,
                 device: str | torch.device | None = None, progress: bool = False, channels_last: bool = True) -> None:
        super().__init__(model, early_stop=early_stop, seed=seed, device=device, progress=progress,
                         channels_last=channels_last)
        self.eps = check_budget(eps, "eps")
        self.norm = check_choice(norm, NORMS, "norm")
        self.loss = check_choice(loss, LOSSES, "loss")
        check_positive_int(steps, "steps")
        check_positive_int(restarts, "restarts")
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        self.steps, self.restarts, self.rho = steps, restarts, float(rho)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps if isinstance(self.eps, float) else "per-sample", "norm": self.norm,
                "steps": self.steps, "restarts": self.restarts, "rho": self.rho, "loss": self.loss,
                "early_stop": self.early_stop}

    def _candidate(self, s: dict[str, torch.Tensor], momentum: float) -> torch.Tensor:
        x, x0, eps = s["x"], s["x0"], s["eps"]
        g = s["grad"]
        if self.norm == "linf":
            z = project(x + _view(s["step"]) * g.sign(), x0, eps, "linf")
        else:
            gn = g.flatten(1).norm(dim=1).clamp_min(1e-12)
            z = project(x + g * _view(s["step"] / gn), x0, eps, "l2")
        return project(x + (z - x) * momentum + (x - s["x_old"]) * (1 - momentum), x0, eps, self.norm)

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        m = idx.numel()
        eps_all = run.eps(self.eps)[idx]
        x0_all = run.x[idx]
        dev = x0_all.device
        T = self.steps
        first_k, min_k, decr = max(int(0.22 * T), 1), max(int(0.06 * T), 1), max(int(0.03 * T), 1)
        # per-position outcome over restarts
        found = torch.zeros(m, dtype=torch.bool, device=dev)
        adv_x, adv_pred = x0_all.clone(), run.y[idx].clone()
        top_x, top_pred = x0_all.clone(), run.y[idx].clone()
        top_loss = torch.full((m,), float("-inf"), device=dev)
        committed = torch.zeros(m, dtype=torch.bool, device=dev)

        def observe(s: dict[str, torch.Tensor], logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
            """Record the new iterate; return the mask of samples to drop (fooled, with early stop)."""
            pos = s["pos"]
            adv = run.is_adv(logits, idx[pos])
            if self.early_stop:
                if bool(adv.any()):
                    run.commit(idx[pos[adv]], s["x"][adv], logits[adv])
                    committed[pos[adv]] = True
                return adv
            a = pos[adv]
            found[a], adv_x[a], adv_pred[a] = True, s["x"][adv], logits.argmax(1)[adv]
            return torch.zeros_like(adv)

        with tqdm(total=self.restarts * (T + 1), disable=not self.progress, desc="APGD", unit="step") as bar:
            for r in range(self.restarts):
                pos = (~committed).nonzero().flatten()  # with early stop, fooled samples are committed
                if pos.numel() == 0:
                    bar.update((self.restarts - r) * (T + 1))
                    break
                x0, eps = x0_all[pos], eps_all[pos]
                if r == 0 and init is not None:
                    x = project(init[idx[pos]], x0, eps, self.norm)
                else:
                    x = _apgd_start(x0, eps, self.norm, run.seeds[idx[pos].cpu()], stream=r)
                logits, loss, grad = run.logits_and_grad(x, idx[pos], self.loss)
                bar.update(1)
                s = {"pos": pos, "x0": x0, "eps": eps, "x": x, "x_old": x.clone(), "grad": grad,
                     "x_best": x.clone(), "grad_best": grad.clone(), "loss_best": loss.clone(),
                     "pred_best": logits.argmax(1), "loss_prev": loss.clone(), "step": 2.0 * eps,
                     "n_incr": torch.zeros_like(loss), "loss_best_last": loss.clone(),
                     "reduced_last": torch.zeros(pos.numel(), dtype=torch.bool, device=dev)}

                def shrink(drop: torch.Tensor) -> None:
                    keep = ~drop
                    for key in s:
                        s[key] = s[key][keep]

                def keep_top() -> None:
                    p = s["pos"]
                    better = s["loss_best"] > top_loss[p]
                    b = p[better]
                    top_loss[b], top_x[b], top_pred[b] = s["loss_best"][better], s["x_best"][better], \
                        s["pred_best"][better]

                drop = observe(s, logits, loss)
                if bool(drop.any()):
                    shrink(drop)
                k, since = first_k, 0
                for i in range(T):
                    if s["pos"].numel() == 0:
                        bar.update(T - i)
                        break
                    x_new = self._candidate(s, 1.0 if i == 0 else 0.75)
                    s["x_old"], s["x"] = s["x"], x_new
                    logits, loss, grad = run.logits_and_grad(x_new, idx[s["pos"]], self.loss)
                    s["grad"] = grad
                    bar.update(1)
                    improved = loss > s["loss_best"]
                    s["x_best"] = torch.where(_view(improved), x_new, s["x_best"])
                    s["grad_best"] = torch.where(_view(improved), grad, s["grad_best"])
                    s["pred_best"] = torch.where(improved, logits.argmax(1), s["pred_best"])
                    s["loss_best"] = torch.where(improved, loss, s["loss_best"])
                    s["n_incr"] = s["n_incr"] + (loss > s["loss_prev"]).to(loss.dtype)
                    s["loss_prev"] = loss
                    drop = observe(s, logits, loss)
                    if bool(drop.any()):
                        shrink(drop)
                    since += 1
                    if since == k:
                        oscillating = s["n_incr"] <= k * self.rho
                        stalled = ~s["reduced_last"] & (s["loss_best_last"] >= s["loss_best"])
                        reduce = oscillating | stalled
                        s["reduced_last"], s["loss_best_last"] = reduce, s["loss_best"].clone()
                        s["step"] = torch.where(reduce, s["step"] / 2, s["step"])
                        s["x"] = torch.where(_view(reduce), s["x_best"], s["x"])
                        s["grad"] = torch.where(_view(reduce), s["grad_best"], s["grad"])
                        s["n_incr"] = torch.zeros_like(s["n_incr"])
                        k, since = max(k - decr, min_k), 0
                if s["pos"].numel():
                    keep_top()
        rest = (~committed).nonzero().flatten()
        if rest.numel():
            ok = found[rest]
            images = torch.where(_view(ok), adv_x[rest], top_x[rest])
            run.set(idx[rest], images, ok, torch.where(ok, adv_pred[rest], top_pred[rest]))
