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

from blindspots.errors import InputError

from .base import _Run, _view, per_sample_noise
from .budget import FixedEpsilonAttack
from .registry import register_attack
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


@register_attack("apgd", "APGD (Croce & Hein 2020): PGD with momentum and an adaptive step, within eps "
                 "(cross-entropy loss)")
class APGD(FixedEpsilonAttack):
    """APGD-CE (or APGD with the margin loss) in l-inf or l2.

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        eps: budget, a number or one value per sample.
        norm: "linf" or "l2".
        steps: iterations per restart (each one forward + one backward; plus one for the start point).
        restarts: independent random starts; with early stop a restart only runs the samples not fooled yet.
        rho: the oscillation threshold of the step-size schedule (0.75 in the paper).
        loss: "ce" (APGD-CE), "margin" or "dlr" (Croce & Hein's difference-of-logits ratio, `attacks.base.dlr_loss`;
            with `targets`, the targeted DLR; `attacks.APGDT` runs it over the top-k target classes).
        early_stop, seed, device, progress, channels_last, amp, compile: see `attacks.base.Attack`.

    Returns the first (early stop) or the last adversarial iterate of a sample; for a sample never fooled, its
    highest-loss iterate.
    """

    name = "apgd"

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor = 8 / 255, norm: str = "linf",
                 steps: int = 100, *, restarts: int = 1, rho: float = 0.75, loss: str = "ce",
                 early_stop: bool = True, seed: int | Sequence[int] | None = None,
                 device: str | torch.device | None = None, progress: bool = False, channels_last: bool = True,
                 amp: bool = False, compile: bool = False) -> None:
        super().__init__(model, eps, norm, loss=loss, counts={"steps": steps, "restarts": restarts},
                         early_stop=early_stop, seed=seed, device=device, progress=progress,
                         channels_last=channels_last, amp=amp, compile=compile)
        if not 0 < rho <= 1:
            raise InputError(f"rho must be in (0, 1], got {rho}")
        self.rho = float(rho)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps_param(), "norm": self.norm,
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
        outcome = _Outcome(run, idx, self.early_stop)
        eps_all = run.eps(self.eps)[idx]
        with tqdm(total=self.restarts * (self.steps + 1), disable=not self.progress, desc="APGD", unit="step") as bar:
            for r in range(self.restarts):
                pos = (~outcome.committed).nonzero().flatten()  # with early stop, fooled samples are committed
                if pos.numel() == 0:
                    bar.update((self.restarts - r) * (self.steps + 1))
                    break
                self._restart(run, idx, init, r, pos, eps_all[pos], outcome, bar)
        outcome.finish()

    def _restart(self, run: _Run, idx, init, r: int, pos, eps, outcome: "_Outcome", bar) -> None:
        """One restart of APGD on the samples at positions `pos`, with the step-size schedule of Croce & Hein
        (checkpoints after 22% of the steps, then shorter by 3% down to 6%)."""
        T = self.steps
        first_k, min_k, decr = max(int(0.22 * T), 1), max(int(0.06 * T), 1), max(int(0.03 * T), 1)
        x0 = outcome.x0[pos]
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
             "reduced_last": torch.zeros(pos.numel(), dtype=torch.bool, device=x0.device)}
        _shrink(s, outcome.observe(s, logits))
        k, since = first_k, 0
        for i in range(T):
            if s["pos"].numel() == 0:
                bar.update(T - i)
                break
            logits = self._iterate(run, idx, s, 1.0 if i == 0 else 0.75)
            bar.update(1)
            _shrink(s, outcome.observe(s, logits))
            since += 1
            if since == k:
                _checkpoint(s, k, self.rho)
                k, since = max(k - decr, min_k), 0
        if s["pos"].numel():
            outcome.keep_top(s)

    def _iterate(self, run: _Run, idx, s: dict[str, torch.Tensor], momentum: float) -> torch.Tensor:
        """One APGD step for the samples in `s`; keeps each one's best point so far. Returns the new logits."""
        x_new = self._candidate(s, momentum)
        s["x_old"], s["x"] = s["x"], x_new
        logits, loss, grad = run.logits_and_grad(x_new, idx[s["pos"]], self.loss)
        s["grad"] = grad
        improved = loss > s["loss_best"]
        s["x_best"] = torch.where(_view(improved), x_new, s["x_best"])
        s["grad_best"] = torch.where(_view(improved), grad, s["grad_best"])
        s["pred_best"] = torch.where(improved, logits.argmax(1), s["pred_best"])
        s["loss_best"] = torch.where(improved, loss, s["loss_best"])
        s["n_incr"] = s["n_incr"] + (loss > s["loss_prev"]).to(loss.dtype)
        s["loss_prev"] = loss
        return logits


def _shrink(s: dict[str, torch.Tensor], drop: torch.Tensor) -> None:
    """Remove the dropped samples from every per-sample quantity of a restart."""
    if bool(drop.any()):
        keep = ~drop
        for key in s:
            s[key] = s[key][keep]


def _checkpoint(s: dict[str, torch.Tensor], k: int, rho: float) -> None:
    """APGD's checkpoint rule: halve the step (and restart from the best point) where the loss oscillated (rose
    in at most rho * k of the last k steps) or stalled (no new best since the last checkpoint, without a cut)."""
    oscillating = s["n_incr"] <= k * rho
    stalled = ~s["reduced_last"] & (s["loss_best_last"] >= s["loss_best"])
    reduce = oscillating | stalled
    s["reduced_last"], s["loss_best_last"] = reduce, s["loss_best"].clone()
    s["step"] = torch.where(reduce, s["step"] / 2, s["step"])
    s["x"] = torch.where(_view(reduce), s["x_best"], s["x"])
    s["grad"] = torch.where(_view(reduce), s["grad_best"], s["grad"])
    s["n_incr"] = torch.zeros_like(s["n_incr"])


class _Outcome:
    """Per-position results of one APGD call across its restarts: committed (fooled, with early stop), found (a
    fooling point, without early stop) and otherwise the highest-loss point seen."""

    def __init__(self, run: _Run, idx: torch.Tensor, early_stop: bool) -> None:
        self.run, self.idx, self.early_stop = run, idx, early_stop
        self.x0 = run.x[idx]
        m, dev = idx.numel(), self.x0.device
        self.found = torch.zeros(m, dtype=torch.bool, device=dev)
        self.committed = torch.zeros(m, dtype=torch.bool, device=dev)
        self.adv_x, self.adv_pred = self.x0.clone(), run.y[idx].clone()
        self.top_x, self.top_pred = self.x0.clone(), run.y[idx].clone()
        self.top_loss = torch.full((m,), float("-inf"), device=dev)

    def observe(self, s: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Record the new iterate; return the mask of samples to drop (fooled, with early stop)."""
        pos = s["pos"]
        adv = self.run.is_adv(logits, self.idx[pos])
        if self.early_stop:
            if bool(adv.any()):
                self.run.commit(self.idx[pos[adv]], s["x"][adv], logits[adv])
                self.committed[pos[adv]] = True
            return adv
        a = pos[adv]
        self.found[a], self.adv_x[a], self.adv_pred[a] = True, s["x"][adv], logits.argmax(1)[adv]
        return torch.zeros_like(adv)

    def keep_top(self, s: dict[str, torch.Tensor]) -> None:
        p = s["pos"]
        better = s["loss_best"] > self.top_loss[p]
        b = p[better]
        self.top_loss[b], self.top_x[b], self.top_pred[b] = s["loss_best"][better], s["x_best"][better], \
            s["pred_best"][better]

    def finish(self) -> None:
        """Write every uncommitted sample's result: its fooling point if found, else its highest-loss point."""
        rest = (~self.committed).nonzero().flatten()
        if rest.numel():
            ok = self.found[rest]
            images = torch.where(_view(ok), self.adv_x[rest], self.top_x[rest])
            self.run.set(self.idx[rest], images, ok, torch.where(ok, self.adv_pred[rest], self.top_pred[rest]))
