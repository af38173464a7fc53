"""FGSM and PGD (Madry et al. 2018) in l-inf and l2, with random starts, restarts and targeted mode; and
`minimal_epsilon`, the per-sample smallest flipping budget found by bisection over PGD.

PGD step (per sample, budget eps, step size alpha, clean image x0), written exactly as torchattacks does so that, from
the same start, both give the same images::

    l-inf:  x <- clamp(x0 + clamp(x + alpha * sign(g) - x0, -eps, eps), 0, 1)
    l2:     x <- clamp(x0 + d * min(1, eps / ||d||), 0, 1),  d = x + alpha * g / (||g|| + 1e-10) - x0

With `early_stop=True` (default) a sample leaves the working batch at the first iterate that fools the model and that
iterate is returned; with `early_stop=False` every sample runs all steps and the last iterate is returned (textbook
PGD). Across restarts the per-sample best is kept: a successful restart beats a failed one, then the larger loss.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .base import NORMS, AttackResult, _Run, _view, per_sample_noise
from .registry import register_attack
from .budget import (FixedEpsilonAttack, MinimizationAttack, check_budget, check_budget_in_norm, check_choice,
                     check_positive)
from blindspots.errors import InputError

__all__ = ["PGD", "FGSM", "MinimalEpsilon", "minimal_epsilon", "project", "random_start"]


def project(x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project x onto the per-sample `norm` ball of radius eps around x0, then onto [0, 1].

    Points already inside are returned bit for bit (so a start drawn by another library is kept exactly).
    """
    if norm == "linf":
        e = _view(eps)
        return torch.clamp(torch.clamp(x, min=x0 - e, max=x0 + e), 0, 1)
    d = x - x0
    dn = d.flatten(1).norm(dim=1)
    inside = _view(dn <= eps)
    factor = torch.minimum(eps / dn.clamp_min(1e-12), torch.ones_like(dn))
    return torch.clamp(torch.where(inside, x, x0 + d * _view(factor)), 0, 1)


def random_start(x0: torch.Tensor, eps: torch.Tensor, norm: str, seeds: torch.Tensor, stream: int = 0
                 ) -> torch.Tensor:
    """A random point of the budget around each x0, drawn from the sample's own seed (as torchattacks draws them:
    l-inf uniform in the box; l2 a uniform direction scaled by eps * U(0, 1)); clipped to [0, 1]."""
    shape = x0.shape[1:]
    if norm == "linf":
        noise = per_sample_noise(seeds, shape, "uniform", stream).to(device=x0.device, dtype=x0.dtype)
        return torch.clamp(x0 + noise.view_as(x0) * _view(eps), 0, 1)
    z = per_sample_noise(seeds, shape, "normal", stream).to(device=x0.device, dtype=x0.dtype)
    direction, radius = z[:, :-1], z[:, -1]
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.clamp(x0 + direction.view_as(x0) * _view(radius * eps), 0, 1)


def _step(x: torch.Tensor, g: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor,
          norm: str) -> torch.Tensor:
    if norm == "linf":
        e = _view(eps)
        adv = x + _view(alpha) * g.sign()
        return torch.clamp(x0 + torch.clamp(adv - x0, min=-e, max=e), 0, 1)
    gn = g.flatten(1).norm(dim=1) + 1e-10
    d = x + g * _view(alpha / gn) - x0
    dn = d.flatten(1).norm(dim=1)
    factor = torch.minimum(eps / dn.clamp_min(1e-12), torch.ones_like(dn))
    return torch.clamp(x0 + d * _view(factor), 0, 1)


@register_attack("pgd", "projected gradient descent (Madry et al. 2018) within eps, from a random start")
class PGD(FixedEpsilonAttack):
    """Projected gradient descent in l-inf or l2.

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        eps: budget, a number or one value per sample (a 1-D tensor).
        norm: "linf" or "l2".
        steps: gradient steps per restart (each one forward + one backward per active sample).
        step_size: alpha per step (default 2.5 * eps / steps, Madry et al.).
        random_start: start each restart at a random point of the budget (per-sample seeds, see `seed`).
        restarts: independent runs; with early stop a restart only runs the samples not fooled yet.
        loss: "ce" (cross-entropy) or "margin" (Carlini-Wagner logit margin).
        early_stop, seed, device, progress, channels_last, amp, compile: see `attacks.base.Attack`.

    Call: ``PGD(model, eps=8/255)(images, labels, targets=None, init=None) -> AttackResult``.
    """

    name = "pgd"

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor = 8 / 255, norm: str = "linf",
                 steps: int = 10, step_size: float | None = None, *, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", early_stop: bool = True, seed: int | Sequence[int] | None = None,
                 device: str | torch.device | None = None, progress: bool = False, channels_last: bool = True,
                 amp: bool = False, compile: bool = False) -> None:
        super().__init__(model, eps, norm, loss=loss, counts={"steps": steps, "restarts": restarts},
                         early_stop=early_stop, seed=seed, device=device, progress=progress,
                         channels_last=channels_last, amp=amp, compile=compile)
        if restarts > 1 and not random_start:
            raise InputError("restarts > 1 need random_start=True (without it every restart is the same run)")
        self.random_start = bool(random_start)
        self.step_size = None if step_size is None else check_budget(step_size, "step_size")

    def params(self) -> dict[str, Any]:
        eps = self.eps_param()
        step = self.step_size if self.step_size is None or isinstance(self.step_size, float) else "per-sample"
        return {"eps": eps, "norm": self.norm, "steps": self.steps, "step_size": step,
                "random_start": self.random_start, "restarts": self.restarts, "loss": self.loss,
                "early_stop": self.early_stop}

    def _needs_clean_first(self) -> bool:
        # without a random start the first step's forward is at the clean image and serves as the clean check
        return self.early_stop and self.random_start

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        m = idx.numel()
        eps_all = run.eps(self.eps)[idx]
        alpha_all = (run.eps(self.step_size)[idx] if self.step_size is not None
                     else 2.5 * eps_all / self.steps)
        x0_all = run.x[idx]
        dev = x0_all.device
        best_x = x0_all.clone()
        best_succ = torch.zeros(m, dtype=torch.bool, device=dev)
        best_obj = torch.full((m,), float("-inf"), device=dev)
        best_pred = run.y[idx].clone()
        committed = torch.zeros(m, dtype=torch.bool, device=dev)  # returned already (fooled clean / early stop)
        with tqdm(total=self.restarts * self.steps, disable=not self.progress, desc=type(self).__name__,
                  unit="step") as bar:
            for r in range(self.restarts):
                todo = ~committed & ~best_succ if self.early_stop else ~committed
                pos = todo.nonzero().flatten()
                if pos.numel() == 0:
                    bar.update((self.restarts - r) * self.steps)
                    break
                x0, eps, alpha = x0_all[pos], eps_all[pos], alpha_all[pos]
                clean_start = False
                if r == 0 and init is not None:
                    x = project(init[idx[pos]], x0, eps, self.norm)
                elif self.random_start:
                    x = random_start(x0, eps, self.norm, run.seeds[idx[pos].cpu()], stream=r)
                else:
                    x, clean_start = x0.clone(), True
                for t in range(self.steps):
                    logits, _, g = run.logits_and_grad(x, idx[pos], self.loss)
                    bar.update(1)
                    if t == 0 and clean_start:
                        run.mark_clean(idx[pos], logits)
                        drop = run.success[idx[pos]]
                    elif self.early_stop:
                        drop = run.is_adv(logits, idx[pos])
                        if bool(drop.any()):
                            run.commit(idx[pos[drop]], x[drop], logits[drop])
                    else:
                        drop = None
                    if drop is not None and bool(drop.any()):
                        committed[pos[drop]] = True
                        keep = ~drop
                        pos, x, g, x0, eps, alpha = pos[keep], x[keep], g[keep], x0[keep], eps[keep], alpha[keep]
                        if pos.numel() == 0:
                            bar.update(self.steps - t - 1)
                            break
                    x = _step(x, g, x0, eps, alpha, self.norm)
                if pos.numel() == 0:
                    continue
                logits = run.logits(x, idx[pos])
                succ = run.is_adv(logits, idx[pos])
                obj = run.objective(logits, idx[pos], self.loss)
                better = (succ & ~best_succ[pos]) | ((succ == best_succ[pos]) & (obj > best_obj[pos]))
                b = pos[better]
                best_x[b], best_succ[b], best_obj[b], best_pred[b] = x[better], succ[better], obj[better], \
                    logits.argmax(1)[better]
        rest = (~committed).nonzero().flatten()
        if rest.numel():
            run.set(idx[rest], best_x[rest], best_succ[rest], best_pred[rest])


@register_attack("fgsm", "one signed-gradient step of size eps (Goodfellow et al. 2015)", norms=("linf",))
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one l-inf step of size eps from the clean image."""

    name = "fgsm"

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor = 8 / 255, *, loss: str = "ce",
                 early_stop: bool = True, device: str | torch.device | None = None, progress: bool = False,
                 channels_last: bool = True, amp: bool = False,
                 compile: bool = False) -> None:
        super().__init__(model, eps, "linf", steps=1, step_size=eps, random_start=False, restarts=1, loss=loss,
                         early_stop=early_stop, seed=0, device=device, progress=progress, channels_last=channels_last,
                         amp=amp, compile=compile)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps_param(), "loss": self.loss}


@register_attack("minimal-epsilon", "the smallest PGD budget that flips the model, by bisection of log(eps) "
                 "(--max-eps, --rtol, --search-steps)")
class MinimalEpsilon(MinimizationAttack):
    """Per-sample smallest PGD budget that flips the model, by geometric bisection (see `minimal_epsilon`)."""

    name = "minimal_epsilon"

    def __init__(self, model: nn.Module, *, norm: str = "linf", max_eps: float | None = None,
                 min_eps: float | None = None, rtol: float = 0.05, search_steps: int | None = None, steps: int = 20,
                 restarts: int = 1, random_start: bool = True, loss: str = "ce",
                 seed: int | Sequence[int] | None = None, device: str | torch.device | None = None,
                 progress: bool = False, channels_last: bool = True, amp: bool = False,
                 compile: bool = False) -> None:
        super().__init__(model, early_stop=True, seed=seed, device=device, progress=progress,
                         channels_last=channels_last, amp=amp, compile=compile)
        self.norm = check_choice(norm, NORMS, "norm")
        self.max_eps = check_positive((0.1 if self.norm == "linf" else 10.0) if max_eps is None else max_eps, "max_eps")
        self._max_eps_given = max_eps is not None  # checked against the images' l2 diameter at the call
        check_budget_in_norm(self.max_eps, self.norm, name="max_eps")
        self.min_eps = self.max_eps * 1e-4 if min_eps is None else check_positive(min_eps, "min_eps")
        if not self.min_eps < self.max_eps:
            raise InputError(f"min_eps ({self.min_eps:g}) must be below max_eps ({self.max_eps:g})")
        self.rtol = check_positive(rtol, "rtol")
        if search_steps is not None and (isinstance(search_steps, bool) or not isinstance(search_steps, int)
                                         or search_steps < 0):
            raise InputError(f"search_steps must be a non-negative int or None, got {search_steps!r}")
        needed = math.ceil(math.log2(math.log(self.max_eps / self.min_eps) / math.log1p(self.rtol)))
        self.search_steps = max(needed, 0) if search_steps is None else min(search_steps, max(needed, 0))
        # the PGD run at each budget (validates steps/restarts/loss); its eps is set per round
        self.pgd = PGD(model, self.max_eps, self.norm, steps, random_start=random_start, restarts=restarts,
                       loss=loss, early_stop=True)

    def params(self) -> dict[str, Any]:
        return {"norm": self.norm, "max_eps": self.max_eps, "min_eps": self.min_eps, "rtol": self.rtol,
                "search_steps": self.search_steps, "steps": self.pgd.steps, "restarts": self.pgd.restarts,
                "random_start": self.pgd.random_start, "loss": self.pgd.loss}

    def _needs_clean_first(self) -> bool:
        return True  # an already-fooled sample has minimal budget 0

    def _check_images(self, images: torch.Tensor) -> None:
        if self._max_eps_given:
            check_budget_in_norm(self.max_eps, self.norm, images.shape[1:], "max_eps")

    def _pgd_round(self, run: _Run, idx: torch.Tensor, eps: torch.Tensor) -> _Run:
        sub = _Run(run.probe, run.x[idx], run.y[idx], None if run.t is None else run.t[idx], run.seeds[idx.cpu()])
        sub.clean_known[:] = True  # checked once by the caller
        self.pgd.eps = eps
        self.pgd._run(sub, torch.arange(idx.numel(), device=idx.device), None)
        run.forwards[idx] += sub.forwards
        run.backwards[idx] += sub.backwards
        return sub

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        """PGD at max_eps, then bisection of log(eps) on the fooled samples: [lo, hi] with hi flipping, lo the
        floor or a budget that did not flip, until hi / lo <= 1 + rtol (or `search_steps` rounds)."""
        m, dev, dtype = idx.numel(), run.x.device, run.x.dtype
        hi = torch.full((m,), self.max_eps, device=dev, dtype=dtype)
        lo = torch.full_like(hi, self.min_eps)
        failed = torch.zeros(m, dtype=torch.bool, device=dev)  # some budget below hi did not flip
        with tqdm(total=1 + self.search_steps, disable=not self.progress, desc="minimal_epsilon",
                  unit="round") as bar:
            first = self._pgd_round(run, idx, hi)
            bar.update(1)
            found = first.success.clone()
            best_x, best_pred = first.out.clone(), first.pred.clone()
            for _ in range(self.search_steps):
                act = (found & (hi > lo * (1 + self.rtol))).nonzero().flatten()
                if act.numel() == 0:
                    break
                mid = torch.sqrt(lo[act] * hi[act])
                sub = self._pgd_round(run, idx[act], mid)
                ok = sub.success
                a, b = act[ok], act[~ok]
                hi[a] = mid[ok]
                best_x[a], best_pred[a] = sub.out[ok], sub.pred[ok]
                lo[b], failed[b] = mid[~ok], True
                bar.update(1)
        run.set(idx, best_x, found, best_pred)
        eps, lower, at_floor = self._fields(run)
        eps[idx] = torch.where(found, hi, torch.full_like(hi, math.inf))
        lower[idx] = torch.where(found, torch.where(failed, lo, torch.zeros_like(lo)),
                                 torch.full_like(lo, self.max_eps))
        at_floor[idx] = found & ~failed

    def _verdicts_changed(self, run: _Run, idx: torch.Tensor) -> None:
        """After the plain-precision check: a budget whose image is not adversarial after all was not found (inf,
        the largest failed budget kept); an image at max_eps that is adversarial after all bounds it by max_eps."""
        eps, lower, at_floor = self._fields(run)
        ok = run.success[idx]
        lost, won = idx[~ok], idx[ok]
        eps[lost], at_floor[lost] = math.inf, False
        eps[won], lower[won], at_floor[won] = self.max_eps, 0.0, False

    def _fields(self, run: _Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-sample epsilon, epsilon_lower and at_floor of the run (0, 0, False for every sample at first:
        samples misclassified clean keep these)."""
        if "epsilon" not in run.extra:
            z = torch.zeros(run.x.shape[0], device=run.x.device, dtype=run.x.dtype)
            run.extra.update(epsilon=z, epsilon_lower=z.clone(), at_floor=torch.zeros_like(z, dtype=torch.bool))
        return run.extra["epsilon"], run.extra["epsilon_lower"], run.extra["at_floor"]

    def _result(self, images: torch.Tensor, run: _Run, **extra: Any) -> AttackResult:
        self._fields(run)  # every sample misclassified clean: _run never ran
        return super()._result(images, run, **run.extra)


def minimal_epsilon(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None, *,
                    norm: str = "linf", max_eps: float | None = None, min_eps: float | None = None,
                    rtol: float = 0.05, search_steps: int | None = None, steps: int = 20, restarts: int = 1,
                    random_start: bool = True, loss: str = "ce", targets: torch.Tensor | Sequence[int] | None = None,
                    seed: int | Sequence[int] | None = None, device: str | torch.device | None = None,
                    progress: bool = False, channels_last: bool = True, amp: bool = False,
                    compile: bool = False) -> AttackResult:
    """Per-sample smallest flipping budget: PGD (early stop) at `max_eps`, then bisection of log(eps) on the
    samples it fooled, between the floor `min_eps` (default max_eps / 1e4) and the smallest budget known to flip,
    until the two are within a factor 1 + `rtol` (about log2(log(max_eps / min_eps) / log(1 + rtol)) rounds: 8 with
    the defaults; `search_steps` caps them).

    The over-sensitivity counterpart of LST distances. Per sample: `result.epsilon` is a budget at which PGD flipped
    the model (an upper bound of the minimal one; 0 for samples already misclassified, inf where `max_eps` did not
    flip the model: not found), `result.epsilon_lower` the largest budget at which it failed (so epsilon /
    epsilon_lower <= 1 + rtol unless `search_steps` stopped the search), `result.at_floor` marks samples flipped at
    every budget tried down to the floor (their budget is only known to be <= epsilon); `result.epsilon_text()`
    prints each as a table should ("0", "<= x", "> max_eps", "x"). `result.images` are the adversarial images found
    at `epsilon`, `result.l2` / `result.linf` their actual perturbation norms. Default max_eps: 0.1 (l-inf) or 10
    (l2) in [0, 1] pixel units.
    """
    attack = MinimalEpsilon(model, norm=norm, max_eps=max_eps, min_eps=min_eps, rtol=rtol, search_steps=search_steps,
                            steps=steps, restarts=restarts, random_start=random_start, loss=loss, seed=seed,
                            device=device, progress=progress, channels_last=channels_last, amp=amp, compile=compile)
    return attack(images, labels, targets=targets)
