"""Square Attack (Andriushchenko et al., ECCV 2020): a score-based black-box attack, l-inf or l2, the last attack of
AutoAttack. It reads only the model's logits (no gradient, so gradient masking cannot stop it).

Random search on the margin loss (label logit minus the best other): each query changes the current best point in a
random square window (side sqrt(p * H * W), p shrinking on AutoAttack's schedule from p_init as queries are spent)
and keeps the change when the loss drops. l-inf: start from vertical stripes of +-eps, and set a window to a random
+-eps per channel. l2: start from a grid of "pseudo-Gaussian" blocks scaled to norm eps; a query moves the mass of one
window into another with a fresh pseudo-Gaussian pattern, keeping the norm at eps.

Unlike the reference code, which draws one window position and sign for the whole batch per query, each sample draws
its own from its own seed, so a sample's attack does not depend on its batch-mates (window positions also range
over all H - s + 1 rows and columns). Each query is one forward per sample still standing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from blindspots.errors import InputError

from .base import LOSSES, _Run, _view, per_sample_noise
from .budget import FixedEpsilonAttack
from .registry import register_attack

__all__ = ["Square"]

CHUNK = 100  # queries whose random draws are made at once per sample


def p_schedule(p_init: float, it: int, queries: int) -> float:
    """AutoAttack's schedule of the window's share of pixels, rescaled to a budget of `queries`."""
    it = int(it / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _rectangles(a: int, b: int) -> torch.Tensor:
    """Concentric rectangles weighted 1 / (ring + 1)^2 on an a x b grid, unit l2 norm (the reference's eta_rectangles)."""
    delta = torch.zeros(a, b)
    ca, cb = a // 2, b // 2
    for ring in range(max(ca + 1, cb + 1)):
        r0, c0 = max(ca - ring, 0), max(cb - ring, 0)
        delta[r0:min(ca - ring + 2 * ring + 1, a), c0:min(cb - ring + 2 * ring + 1, b)] += 1.0 / (ring + 1) ** 2
    return delta / delta.norm()


def pseudo_gaussian(s: int) -> torch.Tensor:
    """The s x s window pattern of l2 Square: opposite-signed rectangle blocks in the two halves, unit l2 norm."""
    delta = torch.zeros(s, s)
    delta[:s // 2] = _rectangles(s // 2, s) if s // 2 else delta[:0]
    delta[s // 2:] = -_rectangles(s - s // 2, s)
    return delta / delta.norm()


def _place(pattern: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, h: int, w: int
           ) -> torch.Tensor:
    """(n, 1, h, w) canvases holding the s x s `pattern` (transposed where `flip`) at per-sample (top, left)."""
    s = pattern.shape[0]
    rows = torch.arange(h, device=top.device)[None, :, None] - top[:, None, None]
    cols = torch.arange(w, device=top.device)[None, None, :] - left[:, None, None]
    inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
    r, c = rows.clamp(0, s - 1), cols.clamp(0, s - 1)
    index = torch.where(flip[:, None, None], c * s + r, r * s + c)
    return (pattern.to(top.device).flatten()[index] * inside)[:, None]


@register_attack("square", "Square Attack (Andriushchenko et al. 2020): score-based random search within eps, "
                 "no gradients (--steps: queries)", steps_keyword="queries")
class Square(FixedEpsilonAttack):
    """Square Attack, l-inf or l2, score-based (no gradient).

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        eps: budget, a number or one value per sample.
        norm: "linf" or "l2".
        queries: model evaluations per sample and restart, the start included (AutoAttack: 5000).
        restarts: independent runs; with early stop a restart only runs the samples not fooled yet.
        p_init: initial share of the pixels a window covers (0.8, AutoAttack's).
        loss: "margin" (AutoAttack's) or "ce"; targeted with `targets`.
        early_stop, seed, device, progress, channels_last, amp, compile: see `attacks.base.Attack`; without early stop
            a fooled sample keeps searching for a lower loss.
    """

    name = "square"
    losses = LOSSES[:2]

    def __init__(self, model: nn.Module, eps: float | Sequence[float] | torch.Tensor = 8 / 255, norm: str = "linf",
                 queries: int = 5000, *, restarts: int = 1, p_init: float = 0.8, loss: str = "margin",
                 early_stop: bool = True, seed: int | Sequence[int] | None = None,
                 device: str | torch.device | None = None, progress: bool = False, channels_last: bool = True,
                 amp: bool = False, compile: bool = False) -> None:
        super().__init__(model, eps, norm, loss=loss, counts={"queries": queries, "restarts": restarts},
                         early_stop=early_stop, seed=seed, device=device, progress=progress,
                         channels_last=channels_last, amp=amp, compile=compile)
        if not 0 < p_init <= 1:
            raise InputError(f"p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps_param(), "norm": self.norm,
                "queries": self.queries, "restarts": self.restarts, "p_init": self.p_init, "loss": self.loss,
                "early_stop": self.early_stop}

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        if init is not None:
            raise InputError("Square starts from its own stripes or blocks; init is not supported")
        if run.x.ndim != 4 or min(run.x.shape[2:]) < 2:
            raise InputError(f"Square needs images of at least 2 x 2 pixels, got shape {tuple(run.x.shape[1:])}")
        m, dev = idx.numel(), run.x.device
        best_x, best_pred = run.x[idx].clone(), run.y[idx].clone()
        best_obj = torch.full((m,), float("-inf"), device=dev)
        best_adv = torch.zeros(m, dtype=torch.bool, device=dev)
        committed = torch.zeros(m, dtype=torch.bool, device=dev)  # returned already (fooled, with early stop)
        with tqdm(total=self.restarts * self.queries, disable=not self.progress, desc="Square", unit="query") as bar:
            for r in range(self.restarts):
                pos = (~committed).nonzero().flatten()
                if pos.numel() == 0:
                    bar.update((self.restarts - r) * self.queries)
                    break
                x, obj, pred, adv = self._restart(run, idx, pos, r, committed, bar)
                better = ~committed[pos] & ((adv & ~best_adv[pos]) | ((adv == best_adv[pos]) & (obj > best_obj[pos])))
                b = pos[better]
                best_x[b], best_obj[b], best_pred[b], best_adv[b] = x[better], obj[better], pred[better], adv[better]
        rest = (~committed).nonzero().flatten()
        if rest.numel():
            run.set(idx[rest], best_x[rest], best_adv[rest], best_pred[rest])

    def _restart(self, run: _Run, idx: torch.Tensor, pos: torch.Tensor, r: int, committed: torch.Tensor, bar
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart on the samples at `pos`: each sample's final point, loss, prediction and success. With early
        stop, a sample is committed to the run (and `committed`) at its first fooling query."""
        ids = idx[pos]
        x0, eps, seeds = run.x[ids], run.eps(self.eps)[ids], run.seeds[ids.cpu()]
        n, c = x0.shape[:2]
        stream = 1_000_003 * (r + 1)
        x = self._start(x0, eps, seeds, stream)
        logits = run.logits(x, ids)
        bar.update(1)
        obj, pred, adv = run.objective(logits, ids, self.loss), logits.argmax(1), run.is_adv(logits, ids)
        act = torch.arange(n, device=x0.device)  # samples still searching
        draws = torch.empty(0)
        for i in range(self.queries - 1):
            if self.early_stop:
                done = adv[act]
                if bool(done.any()):
                    hit = act[done]
                    run.set(ids[hit], x[hit], adv[hit], pred[hit])
                    committed[pos[hit]] = True
                    act = act[~done]
            if act.numel() == 0:
                bar.update(self.queries - 1 - i)
                break
            if i % CHUNK == 0:  # per-sample draws for the next CHUNK queries: window corners, transpose, signs
                draws = per_sample_noise(seeds, (CHUNK, 5 + c), "uniform", stream + 1 + i // CHUNK)
                draws = ((draws.view(n, CHUNK, 5 + c) + 1) / 2).to(device=x0.device, dtype=x0.dtype)
            p = p_schedule(self.p_init, i, self.queries)
            x_new = self._propose(x[act], x0[act], eps[act], draws[act, i % CHUNK], p)
            logits = run.logits(x_new, ids[act])
            bar.update(1)
            o, a = run.objective(logits, ids[act], self.loss), run.is_adv(logits, ids[act])
            take = (o > obj[act]) | (a & ~adv[act])
            t = act[take]
            x[t], obj[t], pred[t], adv[t] = x_new[take], o[take], logits.argmax(1)[take], a[take]
        if self.early_stop and bool(adv[act].any()):  # fooled at the last query
            hit = act[adv[act]]
            run.set(ids[hit], x[hit], adv[hit], pred[hit])
            committed[pos[hit]] = True
        return x, obj, pred, adv

    def _start(self, x0: torch.Tensor, eps: torch.Tensor, seeds: torch.Tensor, stream: int) -> torch.Tensor:
        """l-inf: vertical stripes of +-eps per channel; l2: a grid of randomly signed and transposed
        pseudo-Gaussian blocks, scaled to norm eps."""
        n, c, h, w = x0.shape
        if self.norm == "linf":
            sign = per_sample_noise(seeds, (c * w,), "uniform", stream).sign().to(x0.device, x0.dtype)
            sign = torch.where(sign == 0, torch.ones_like(sign), sign)
            return (x0 + _view(eps) * sign.view(n, c, 1, w)).clamp(0, 1)
        s = max(min(h, w) // 5, 1)
        nh, nw = h // s, w // s
        u = (per_sample_noise(seeds, (nh * nw, 1 + c), "uniform", stream).view(n, nh * nw, 1 + c) + 1) / 2
        u = u.to(x0.device, x0.dtype)
        pattern = pseudo_gaussian(s)
        delta = torch.zeros_like(x0)
        top0, left0 = (h - nh * s) // 2, (w - nw * s) // 2
        for k in range(nh * nw):
            top = torch.full((n,), top0 + (k // nw) * s, device=x0.device)
            left = torch.full((n,), left0 + (k % nw) * s, device=x0.device)
            sign = torch.where(u[:, k, 1:] < 0.5, -1.0, 1.0).to(x0.dtype)
            delta = delta + _place(pattern, top, left, u[:, k, 0] < 0.5, h, w).to(x0.dtype) * sign[:, :, None, None]
        return (x0 + delta * _view(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))).clamp(0, 1)

    def _propose(self, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, u: torch.Tensor, p: float
                 ) -> torch.Tensor:
        """One query's candidate per sample from its draws u (n, 5 + C) in [0, 1) and the window share p."""
        n, c, h, w = x0.shape
        side = min(h, w)
        s = round(math.sqrt(p * h * w))
        s = min(max(s, 1), side) if self.norm == "linf" else min(max(s, 3) + (max(s, 3) % 2 == 0), side)

        def corner(v: torch.Tensor, size: int) -> torch.Tensor:
            return (v * (size - s + 1)).long().clamp(0, size - s)

        ones = torch.ones(s, s)
        no_flip = torch.zeros(n, dtype=torch.bool, device=x.device)
        window = _place(ones, corner(u[:, 0], h), corner(u[:, 1], w), no_flip, h, w).to(x.dtype)
        sign = torch.where(u[:, 5:5 + c] < 0.5, -1.0, 1.0).to(x.dtype)[:, :, None, None]
        e = _view(eps)
        if self.norm == "linf":
            x_new = x + window * (2 * e * sign)
            return torch.minimum(torch.maximum(x_new, x0 - e), x0 + e).clamp(0, 1)
        window2 = _place(ones, corner(u[:, 2], h), corner(u[:, 3], w), no_flip, h, w).to(x.dtype)
        delta = x - x0
        in_window = (delta * window).square().sum((-2, -1), keepdim=True).sqrt()  # (n, c, 1, 1)
        norm_image = _view(delta.flatten(1).norm(dim=1))
        norm_windows = _view((delta * torch.maximum(window, window2)).flatten(1).norm(dim=1))
        pattern = _place(pseudo_gaussian(s), corner(u[:, 0], h), corner(u[:, 1], w), u[:, 4] < 0.5, h, w)
        new = pattern.to(x.dtype) * sign + delta * window / (1e-12 + in_window)
        scale = ((e ** 2 - norm_image ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
        new = new / (1e-12 + new.square().sum((-2, -1), keepdim=True).sqrt()) * scale
        delta = torch.where(window > 0, new, delta * (1 - window2))
        return (x0 + delta * (e / (1e-12 + _view(delta.flatten(1).norm(dim=1))))).clamp(0, 1)
