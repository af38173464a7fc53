"""FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack"),
the targeted version AutoAttack runs third: a minimal-norm attack, l-inf or l2.

Per target class t (the top k besides the label y, see `attacks.targeted`) and sample, from the clean x0 (a random
start inside half the budget for later restarts): linearise f = z_t - z_y at the current point x, project both x
and x0 onto the hyperplane {f = 0} within the [0, 1] box (`project_hyperplane`: the smallest l-inf / l2 step),
d1 and d2, and move to clip((x + eta d1) (1 - a) + (x0 + eta d2) a) with a = min(|d1| / (|d1| + |d2|), alpha_max):
a step towards the boundary biased back to the original. When the new point is misclassified it is kept if it is
the smallest so far and pulled back towards x0 (x <- x0 + beta (x - x0)). Each step costs one forward and backward
(the gradient of f) and one forward (the prediction at the new point), as in the reference implementation.

With a budget `eps` the attack succeeds when it finds a misclassified point within eps (and, with early stop, stops
there); without one it runs every step and returns the smallest misclassified point found.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .base import NORMS, _Run, _view, check_gradient
from .budget import (MinimizationAttack, check_budget, check_budget_in_norm, check_choice, check_positive_int,
                     check_target_classes, known_classes)
from .registry import register_attack
from .base import per_sample_noise
from .targeted import GuidedRun, over_targets
from blindspots.errors import InputError

__all__ = ["FAB", "project_hyperplane"]


def project_hyperplane(p: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row of p (N, D): the smallest step d (l-inf or l2 norm) with <w, p + d> = b and p + d in [0, 1].

    The minimiser moves each coordinate towards the bound in the sign of w: d_i = sign(w_i) min(tau s_i, room_i)
    with s_i = 1 (l-inf) or |w_i| (l2) and room_i the distance to that bound; <w, d> grows piecewise linearly in
    tau, so tau comes from the sorted breakpoints and cumulative sums. Where no point of the box reaches the
    hyperplane, the box corner nearest to it (every coordinate at its bound).
    """
    need = b - (w * p).sum(1)
    sign = torch.where(need < 0, -1.0, 1.0).to(w.dtype)[:, None]
    w, need = w * sign, need.abs()  # now <w, d> must grow by need >= 0
    room = torch.where(w > 0, 1 - p, p).clamp_min(0)
    aw = w.abs()
    live = aw > 0
    if norm == "linf":
        slope, bp = aw, room  # <w, d> = sum |w_i| min(tau, room_i)
    else:
        slope = aw * aw  # <w, d> = sum w_i^2 min(tau, room_i / |w_i|)
        bp = torch.where(live, room / aw.clamp_min(1e-30), torch.zeros_like(room))
    slope = torch.where(live, slope, torch.zeros_like(slope))
    bp_sorted, order = bp.sort(1)
    slope_sorted = slope.gather(1, order)
    saturated = torch.cumsum(slope_sorted * bp_sorted, 1) - slope_sorted * bp_sorted  # coordinates below the break
    tail = slope_sorted.flip(1).cumsum(1).flip(1)  # slopes of coordinates at and above it
    reach = saturated + bp_sorted * tail >= need[:, None]
    k = reach.int().argmax(1, keepdim=True)  # first breakpoint where the hyperplane is reached
    tau = (need[:, None] - saturated.gather(1, k)) / tail.gather(1, k).clamp_min(1e-30)
    tau = torch.where(reach.any(1, keepdim=True), tau, torch.full_like(tau, math.inf))
    step = tau if norm == "linf" else tau * aw
    d = torch.where(live, torch.minimum(step, room), torch.zeros_like(room))
    return d * torch.sign(w)


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


@register_attack("fab-t", "targeted FAB (Croce & Hein 2020): minimal perturbations towards the decision "
                 "boundaries of the top target classes")
class FAB(MinimizationAttack):
    """FAB-T: targeted fast adaptive boundary attack over the top-k target classes (untargeted success).

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        eps: budget (a number or one per sample); None: minimal-norm mode (every step runs for every target class,
            the smallest fooling perturbation is returned; read `result.l2` or `result.linf`). Restarts after the
            first start at random points within eps / 2.
        norm: "linf" or "l2".
        steps: iterations per target class and restart (AutoAttack: 100).
        target_classes: k target classes tried (AutoAttack's standard version: 9).
        restarts: starts per target class (the first from the clean image); more than one needs eps.
        alpha_max, eta, beta: the step's bias cap towards the original, overshoot and backward step (0.1, 1.05, 0.9).
        early_stop, seed, device, progress, channels_last, amp, compile: see `attacks.base.Attack`.
    """

    name = "fab-t"
    supports_targeted = False
    cap_target_classes = False  # True: target_classes is an upper bound, capped at the classes - 1 (the ensemble)

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor | None = None,
                 norm: str = "linf", steps: int = 100, *, target_classes: int = 9, restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, early_stop: bool = True,
                 seed: int | Sequence[int] | None = None, device: str | torch.device | None = None,
                 progress: bool = False, channels_last: bool = True, amp: bool = False,
                 compile: bool = False) -> None:
        super().__init__(model, early_stop=early_stop, seed=seed, device=device, progress=progress,
                         channels_last=channels_last, amp=amp, compile=compile)
        self.eps = None if eps is None else check_budget(eps, "eps")
        self.norm = check_choice(norm, NORMS, "norm")
        check_budget_in_norm(self.eps, self.norm)
        self.steps = check_positive_int(steps, "steps")
        self.target_classes = check_target_classes(target_classes, known_classes(model), type(self).__name__)
        self.restarts = check_positive_int(restarts, "restarts")
        if restarts > 1 and eps is None:
            raise InputError("restarts > 1 need eps (the random starts lie within eps / 2)")
        if not (0 <= alpha_max <= 1 and eta >= 1 and 0 < beta <= 1):
            raise InputError(f"need 0 <= alpha_max <= 1, eta >= 1 and 0 < beta <= 1, got alpha_max={alpha_max}, "
                             f"eta={eta}, beta={beta}")
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def params(self) -> dict[str, Any]:
        eps = self.eps if self.eps is None or isinstance(self.eps, float) else "per-sample"
        return {"eps": eps, "norm": self.norm, "steps": self.steps, "target_classes": self.target_classes,
                "restarts": self.restarts, "alpha_max": self.alpha_max, "eta": self.eta, "beta": self.beta,
                "early_stop": self.early_stop}

    def _needs_clean_first(self) -> bool:
        return False  # the forward that picks the targets is the clean check

    def _check_images(self, images: torch.Tensor) -> None:
        check_budget_in_norm(self.eps, self.norm, images.shape[1:])

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        eps_all = run.eps(self.eps) if self.eps is not None else None
        with tqdm(total=self.target_classes * self.restarts * self.steps, disable=not self.progress, desc="FAB-T",
                  unit="step") as bar:
            def attack(sub: GuidedRun, ids: torch.Tensor, rank: int) -> None:
                eps = eps_all[ids] if eps_all is not None else None
                start = init[ids] if init is not None and rank == 0 else None
                self._attack_target(sub, eps, start, bar)

            over_targets(run, idx, self.target_classes, attack, smallest=self.norm if self.eps is None else None,
                         at_most=self.cap_target_classes, who=type(self).__name__)

    def _attack_target(self, sub: GuidedRun, eps: torch.Tensor | None, start: torch.Tensor | None, bar) -> None:
        """Every restart of FAB against the sub-run's target class; commits each sample's result."""
        x0_all, m = sub.x, sub.x.shape[0]
        dev = x0_all.device
        best = torch.full((m,), math.inf, device=dev)
        best_x, best_pred = x0_all.clone(), sub.y.clone()
        stopped = torch.zeros(m, dtype=torch.bool, device=dev)  # found within eps, with early stop
        for r in range(self.restarts):
            pos = (~stopped).nonzero().flatten()
            if pos.numel() == 0:
                break
            x0 = x0_all[pos]
            if r == 0:
                x = x0.clone() if start is None else start[pos].clamp(0, 1)
            else:
                x = self._random_start(x0, eps[pos], sub.seeds[pos.cpu()], r)
            for _ in range(self.steps):
                if pos.numel() == 0:
                    break
                x = self._step(sub, pos, x, x0)
                logits = sub.logits(x, pos)
                bar.update(1)
                adv = sub.is_adv(logits, pos)
                if not bool(adv.any()):
                    continue
                dist = _norm(x - x0, self.norm)
                better = adv & (dist < best[pos])
                b = pos[better]
                best[b], best_x[b], best_pred[b] = dist[better], x[better], logits.argmax(1)[better]
                x = torch.where(_view(adv), x0 + self.beta * (x - x0), x)
                if self.early_stop and eps is not None:
                    hit = best[pos] <= eps[pos]
                    if bool(hit.any()):
                        stopped[pos[hit]] = True
                        keep = ~hit
                        pos, x, x0 = pos[keep], x[keep], x0[keep]
        found = torch.isfinite(best) & (best <= eps if eps is not None else torch.ones_like(stopped))
        images = torch.where(_view(found), best_x, x0_all)
        sub.set(torch.arange(m, device=dev), images, found, torch.where(found, best_pred, sub.y))

    def _step(self, sub: GuidedRun, pos: torch.Tensor, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """One FAB step for the samples `pos` of the sub-run at points x (clean images x0)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = sub.forward(xg, pos)
            f = logits.gather(1, sub.t[pos][:, None]) - logits.gather(1, sub.y[pos][:, None])
            (g,) = torch.autograd.grad(f.sum(), xg)
        sub.forwards[pos] += 1
        sub.backwards[pos] += 1
        check_gradient(g, pos)
        n = x.shape[0]
        w = g.reshape(n, -1).to(x.dtype)
        b = -f.detach().squeeze(1).to(x.dtype) + (w * x.reshape(n, -1)).sum(1)
        d = project_hyperplane(torch.cat((x.reshape(n, -1), x0.reshape(n, -1))), torch.cat((w, w)),
                               torch.cat((b, b)), self.norm)
        size = _norm(d, self.norm).clamp_min(1e-8)
        a1, a2 = size[:n], size[n:]
        alpha = (a1 / (a1 + a2)).clamp(0, self.alpha_max)
        d1, d2 = d[:n].view_as(x), d[n:].view_as(x)
        return ((x + self.eta * d1) * _view(1 - alpha) + (x0 + self.eta * d2) * _view(alpha)).clamp(0, 1)

    def _random_start(self, x0: torch.Tensor, eps: torch.Tensor, seeds: torch.Tensor, stream: int) -> torch.Tensor:
        """AutoAttack's FAB restart: a random direction scaled to eps / 2 in the attack's norm, clipped."""
        kind = "uniform" if self.norm == "linf" else "normal"
        t = per_sample_noise(seeds, x0.shape[1:], kind, stream)[:, :x0[0].numel()].to(x0.device, x0.dtype)
        t = t / _norm(t, self.norm).clamp_min(1e-12)[:, None]
        return (x0 + t.view_as(x0) * _view(0.5 * eps)).clamp(0, 1)
