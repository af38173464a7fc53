"""Untargeted attacks guided by target classes, as AutoAttack runs APGD-T and FAB-T: the attack runs once per target
class (the k classes with the highest clean logits besides the label, best first) on the samples not fooled yet, its
loss aiming at that class; success is any misclassification, not only the target.
"""

from __future__ import annotations

from typing import Callable

import torch

from .base import _mix, _Run
from .budget import check_target_classes

__all__ = ["GuidedRun", "over_targets"]


class GuidedRun(_Run):
    """A run whose losses aim at `targets` while success is any misclassification (AutoAttack's convention)."""

    def is_adv(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) != self.y[idx]


def over_targets(run: _Run, idx: torch.Tensor, k: int, attack: Callable[[GuidedRun, torch.Tensor, int], None], *,
                 smallest: str | None = None, at_most: bool = False, who: str = "attack") -> None:
    """Run `attack(sub_run, ids, rank)` for target ranks 0..k-1 on the samples `idx` of `run` still standing (`ids`:
    their positions in `run`; the sub-run holds them in that order).

    One forward per sample on the clean images picks the targets (and serves as the clean check). Each rank gets its
    own per-sample seeds (mixed from the sample's seed and the rank), so a sample's random starts depend on nothing
    else. Passes are added to `run`'s counters; a sample fooled at some rank keeps that image, one never fooled keeps
    the last rank's returned image. With `smallest` ("linf" or "l2": a minimal-norm attack without budget) every rank
    runs on every sample and the smallest fooling perturbation in that norm is kept. A k beyond the model's other
    classes is refused, or with `at_most` (an upper bound, as the ensemble's budget is) capped at them.
    """
    logits = run.logits(run.x[idx], idx)
    run.mark_clean(idx, logits)
    if not at_most:
        check_target_classes(k, logits.shape[1], who)
    k = min(k, logits.shape[1] - 1)
    targets = logits.scatter(1, run.y[idx][:, None], float("-inf")).topk(k, dim=1).indices
    done = run.success[idx].clone()
    clean = done.clone()
    size = torch.full((idx.numel(),), float("inf"), device=idx.device)
    last = None
    for rank in range(k):
        pos = (~clean if smallest else ~done).nonzero().flatten()
        if pos.numel() == 0:
            return
        ids = idx[pos]
        seeds = torch.tensor([_mix(int(s), 7919 + rank) for s in run.seeds[ids.cpu()].tolist()], dtype=torch.long)
        sub = GuidedRun(run.probe, run.x[ids], run.y[ids], targets[pos, rank], seeds)
        sub.clean_known[:] = True  # checked above
        attack(sub, ids, rank)
        run.forwards[ids] += sub.forwards
        run.backwards[ids] += sub.backwards
        hit = sub.success
        if smallest:
            d = (sub.out - sub.x).flatten(1)
            d = d.abs().amax(1) if smallest == "linf" else d.norm(dim=1)
            hit = hit & (d < size[pos])
            size[pos[hit]] = d[hit]
        if bool(hit.any()):
            run.set(ids[hit], sub.out[hit], hit[hit], sub.pred[hit])
            done[pos[hit]] = True
        last = (ids[~done[pos]], sub.out[~done[pos]], sub.pred[~done[pos]])
    if last is not None and last[0].numel():
        ids, images, pred = last
        run.set(ids, images, torch.zeros_like(pred, dtype=torch.bool), pred)
