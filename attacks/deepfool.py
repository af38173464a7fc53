"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016): a small l2 perturbation by repeated linearisation.

Per sample, at the current point x (starting at the clean x0), for each candidate class k (the `candidates` classes
with the highest clean logits besides the label y): f_k = z_k - z_y and w_k = grad f_k. The closest linearised
boundary is l = argmin |f_k| / ||w_k||; the step r = (|f_l| / ||w_l|| + 1e-4) w_l / ||w_l|| is added to the total
r_tot and x = clip(x0 + (1 + overshoot) r_tot, 0, 1). A sample stops as soon as it is misclassified.

Cost per iteration: one forward and `candidates` backwards per active sample. On a two-class linear model the first
step lands (1 + overshoot) times the exact minimal distance |margin| / ||w|| away.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .base import _Run, _view, check_gradient
from .budget import MinimizationAttack, check_positive_int
from .registry import register_attack
from blindspots.errors import InputError

__all__ = ["DeepFool"]


@register_attack("deepfool", "DeepFool (Moosavi-Dezfooli et al. 2016): the minimal l2 step to the linearised "
                 "decision boundary, iterated")
class DeepFool(MinimizationAttack):
    """Untargeted minimal-l2 attack by iterative linearisation.

    Args:
        model: a `blindspots.Classifier` (images in [0, 1]).
        steps: at most this many linearisation steps per sample.
        overshoot: the final perturbation is (1 + overshoot) times the accumulated one.
        candidates: number of other classes considered (the highest clean logits), each costing one backward.
        device, progress, channels_last, amp, compile: see `attacks.base.Attack`. No budget: read `result.l2` for the
            distance.
    """

    name = "deepfool"
    norm = "l2"
    norms = ("l2",)
    supports_targeted = False

    def __init__(self, model: nn.Module, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, *,
                 device: str | torch.device | None = None, progress: bool = False, channels_last: bool = True,
                 amp: bool = False, compile: bool = False) -> None:
        super().__init__(model, early_stop=True, seed=0, device=device, progress=progress,
                         channels_last=channels_last, amp=amp, compile=compile)
        check_positive_int(steps, "steps")
        if isinstance(overshoot, bool) or not isinstance(overshoot, (int, float)) or not (
                math.isfinite(overshoot) and overshoot >= 0):
            raise InputError(f"overshoot must be a finite number >= 0, got {overshoot!r}")
        check_positive_int(candidates, "candidates")
        self.steps, self.overshoot, self.candidates = steps, float(overshoot), candidates

    def params(self) -> dict[str, Any]:
        return {"steps": self.steps, "overshoot": self.overshoot, "candidates": self.candidates}

    def _needs_clean_first(self) -> bool:
        return False  # the first iteration's forward is at the clean image

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:
        if init is not None:
            raise InputError("DeepFool starts from the clean images; init is not supported")
        pos = torch.arange(idx.numel(), device=idx.device)
        x0 = run.x[idx]
        x, r_tot = x0.clone(), torch.zeros_like(x0)
        cand = None
        with tqdm(total=self.steps, disable=not self.progress, desc="DeepFool", unit="step") as bar:
            for it in range(self.steps + 1):
                ids = idx[pos]
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    logits = run.forward(xg, ids)
                run.forwards[ids] += 1
                out = logits.detach()
                if it == 0:
                    run.mark_clean(ids, out)
                    drop = run.success[ids]
                    k = min(self.candidates, out.shape[1] - 1)
                    cand = out.scatter(1, run.y[ids][:, None], float("-inf")).topk(k, dim=1).indices
                else:
                    drop = run.is_adv(out, ids)
                    if bool(drop.any()):
                        run.commit(ids[drop], x[drop], out[drop])
                if it == self.steps:  # out of steps: return the last point, not adversarial
                    rest = ~drop
                    if bool(rest.any()):
                        run.commit(ids[rest], x[rest], out[rest])
                    break
                keep = ~drop
                if not bool(keep.any()):
                    break
                y = run.y[ids][keep]
                kc = cand[keep]
                z = logits[keep]
                f = z.gather(1, kc) - z.gather(1, y[:, None])
                grads = []
                with torch.enable_grad():
                    for j in range(kc.shape[1]):
                        (g,) = torch.autograd.grad(f[:, j].sum(), xg, retain_graph=j < kc.shape[1] - 1)
                        grads.append(g[keep])
                run.backwards[ids[keep]] += kc.shape[1]
                w = torch.stack(grads, 1)  # (n, K, C, H, W)
                check_gradient(w, ids[keep])
                wn = w.flatten(2).norm(dim=2)  # (n, K)
                dist = f.detach().abs() / (wn + 1e-8)
                best = dist.argmin(1)
                rows = torch.arange(best.numel(), device=best.device)
                w_l, wn_l = w[rows, best], wn[rows, best]
                r_i = w_l * _view((dist[rows, best] + 1e-4) / (wn_l + 1e-8))
                pos, cand, x0k = pos[keep], kc, x0[keep]
                r_tot = r_tot[keep] + r_i.to(x0.dtype)
                x0 = x0k
                x = torch.clamp(x0 + (1 + self.overshoot) * r_tot, 0, 1)
                bar.update(1)
