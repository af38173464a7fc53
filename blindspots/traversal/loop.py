"""The LST loop over one batch of pairs (the algorithm is described in `blindspots.traversal`): start noise, the
orthogonal step with the adversarial offset, the one-pass acceptance test, early stop, adaptive steps, trajectory
logging. Split from `traversal` to keep each file short; `level_set_traversal` is the entry point."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..engine import Probe
from ..errors import InputError
from ..metrics import distances
from .config import PAPER_STEP, START_REDRAWS, LSTConfig

__all__ = ["Chunk", "start_noise", "refuse_non_finite", "PAPER_STEP", "START_REDRAWS"]


def start_noise(seeds: torch.Tensor, shape: torch.Size, radius: float) -> torch.Tensor:
    """U(-radius, radius) noise, each sample from its own generator, so batching does not change it."""
    out = torch.empty((len(seeds), *shape))
    gen = torch.Generator()
    for i, s in enumerate(seeds.tolist()):
        gen.manual_seed(s)
        out[i].uniform_(-radius, radius, generator=gen)
    return out


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector to broadcast over images."""
    return t.view(-1, 1, 1, 1)


def _rms_to(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS-l2 distance (l2 / sqrt(d))."""
    return (target - x).flatten(1).norm(dim=1) / math.sqrt(x[0].numel())


def refuse_non_finite(finite: torch.Tensor, where: str, index: torch.Tensor) -> None:
    """One clear error instead of NaN confidences in the result."""
    if not bool(finite.all()):
        bad = index[~finite].tolist()
        raise InputError(f"the model returned NaN/inf {where} for samples {bad[:10]}")


class Chunk:
    """One batch of pairs through the traversal loop. Output buffers cover the whole chunk; the working tensors hold
    only the samples still active (early stop drops the finished ones)."""

    def __init__(self, probe: Probe, xs: torch.Tensor, xt: torch.Tensor, labels: torch.Tensor | None,
                 target_labels: torch.Tensor | None, seeds: torch.Tensor, config: LSTConfig, offset: int) -> None:
        self.probe, self.config, self.xs, self.xt = probe, config, xs, xt
        n, device = xs.shape[0], xs.device
        self.index = torch.arange(offset, offset + n, device=device)  # global sample numbers, for messages
        clean = probe.log_probs(xs)
        self.overhead = torch.ones(n, dtype=torch.long)  # model passes outside the loop, per sample
        refuse_non_finite(torch.isfinite(clean).all(1), "logits on the sources", self.index)
        pred = clean.argmax(1)
        self.y = pred if (labels is None or config.use_prediction) else labels
        self.misclassified = (pred != labels) if labels is not None else torch.zeros(n, dtype=torch.bool,
                                                                                      device=device)
        self.p0 = clean.gather(1, self.y[:, None]).squeeze(1).exp()
        self.tcls = None
        if config.log_every > 0:
            self.tcls = target_labels if target_labels is not None else probe.log_probs(xt).argmax(1)
            self.overhead += int(target_labels is None)
        x, logp, g = self.noisy_start(seeds)
        self.out_x, self.out_logp = x.clone(), logp.clone()
        self.out_acc = torch.zeros(n, dtype=torch.long, device=device)
        self.out_used = torch.zeros(n, dtype=torch.long, device=device)
        self.active = torch.arange(n, device=device)
        self.x, self.g, self.a, self.logp = x, g, torch.zeros_like(x), logp
        self.acc, self.used = self.out_acc.clone(), self.out_used.clone()
        self.wxt, self.wy, self.wp0 = xt, self.y, self.p0
        self.eta = torch.full((n,), config.step_size, device=device)
        self.ref_dist, self.stalled = _rms_to(x, xt), torch.zeros(n, dtype=torch.long, device=device)
        self.start_dist = self.ref_dist.clone()
        self.log: dict[str, list[torch.Tensor]] = {k: [] for k in ("steps", "src", "tgt", "rms_t", "linf_t", "rms_s",
                                                                    "acc", "snap")}

    def noisy_start(self, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_s + U(-r, r) per sample, its log-probabilities and gradient, and whether it already breaks the
        acceptance rule (p0 - p_y(start) >= threshold: `start_outside`). With `start="redraw"` such starts are drawn
        again with half the radius (a fresh seed each time), up to START_REDRAWS times, then set to the source."""
        c, xs, y = self.config, self.xs, self.y
        x = (xs + start_noise(seeds, xs.shape[1:], c.init_noise).to(device=xs.device, dtype=xs.dtype)).clamp_(0, 1)
        logp, g = self.probe.log_probs_and_grad(x, y)
        self.overhead += 1
        outside = self._check_start(logp, g, torch.arange(xs.shape[0], device=xs.device))
        for k in range(1, START_REDRAWS + 2 if c.start == "redraw" else 1):
            bad = outside.nonzero().flatten()
            if bad.numel() == 0:
                break
            radius = c.init_noise / 2**k if k <= START_REDRAWS else 0.0
            fresh = torch.tensor([(s * 0x9E3779B97F4A7C15 + k) % (1 << 62) for s in seeds[bad.cpu()].tolist()])
            x[bad] = (xs[bad] + start_noise(fresh, xs.shape[1:], radius).to(device=xs.device, dtype=xs.dtype)
                      ).clamp_(0, 1)
            logp[bad], g[bad] = self.probe.log_probs_and_grad(x[bad], y[bad])
            self.overhead[bad.cpu()] += 1
            outside[bad] = self._check_start(logp[bad], g[bad], bad)
        self.start_outside = outside
        self.start_p = logp.gather(1, y[:, None]).squeeze(1).exp()
        return x, logp, g

    def _check_start(self, logp: torch.Tensor, g: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        refuse_non_finite(torch.isfinite(logp).all(1) & torch.isfinite(g.flatten(1).sum(1)),
                           "logits or gradients at the noisy start (finite at the sources)", self.index[rows])
        p = logp.gather(1, self.y[rows][:, None]).squeeze(1).exp()
        return (self.p0[rows] - p) >= self.config.threshold

    def run(self, bar: Any) -> dict[str, Any]:
        """All iterations (or until every sample stopped); returns the chunk's per-sample results."""
        c = self.config
        schedule = sorted({*range(0, c.iterations + 1, c.log_every), c.iterations}) if c.log_every > 0 else []
        if schedule:
            self.record(0)
        for it in range(1, c.iterations + 1):
            if not self.drop_finished():
                bar.update(c.iterations - it + 1)
                break
            self.step(it)
            bar.update(1)
            if it in schedule:
                self.record(it)
        self.write_back()
        for s in schedule:  # samples that all stopped early keep their final values in the remaining rows
            if s > int(self.log["steps"][-1]):
                self.record(s)
        return self.result()

    def write_back(self) -> None:
        self.out_x[self.active], self.out_logp[self.active] = self.x, self.logp
        self.out_acc[self.active], self.out_used[self.active] = self.acc, self.used

    def drop_finished(self) -> bool:
        """Remove samples that met a stop rule from the working tensors; False once none is left."""
        c = self.config
        keep = None
        if c.stop_rms is not None:
            keep = _rms_to(self.x, self.wxt) >= c.stop_rms
        if c.mode == "adaptive":
            keep = (self.stalled < c.patience) if keep is None else keep & (self.stalled < c.patience)
        if keep is None or bool(keep.all()):
            return True
        self.write_back()
        for name in ("x", "g", "a", "logp", "acc", "used", "active", "wxt", "wy", "wp0", "eta", "ref_dist",
                     "stalled", "start_dist"):
            setattr(self, name, getattr(self, name)[keep])
        return self.active.numel() > 0

    def step(self, it: int) -> None:
        """One iteration: the orthogonal step (plus the adversarial offset), the candidate's single model pass, the
        acceptance test, and in adaptive mode the step-size and stall updates."""
        c, x, g = self.config, self.x, self.g
        v = self.wxt - x
        gg = (g * g).flatten(1).sum(1)
        gv = (g * v).flatten(1).sum(1)
        coef = torch.where(gg > 0, gv / gg.clamp_min(torch.finfo(gg.dtype).tiny), torch.zeros_like(gg))
        d = v - _per_sample(coef) * g
        eta = _per_sample(self.eta) if c.mode == "adaptive" else c.step_size
        if c.adv_eps > 0:
            s = self.offset_scale(eta)  # 1.0 (exact: the paper's offset) unless offset_scale_max > 1
            self.a = (self.a + s * (c.adv_eps / 2) * g).clamp_(-c.adv_eps, c.adv_eps)
            candidate = (x + eta * d - s * self.a).clamp_(0, 1)
        else:
            candidate = (x + eta * d).clamp_(0, 1)
        if it < c.iterations:
            logp_c, g_c = self.probe.log_probs_and_grad(candidate, self.wy)
        else:  # the last candidate's gradient would never be used: its forward alone decides
            logp_c, g_c = self.probe.log_probs(candidate), g
        refuse_non_finite(torch.isfinite(logp_c).all(1) & torch.isfinite(g_c.flatten(1).sum(1)),
                           f"logits or gradients at iteration {it} (finite at the sources: the model is numerically "
                           "unstable at the images LST visits)", self.index[self.active])
        p_c = logp_c.gather(1, self.wy[:, None]).squeeze(1).exp()
        ok = (self.wp0 - p_c) < c.threshold
        eta_used = self.eta
        if c.mode == "adaptive":
            self.adapt(ok, self.logp.gather(1, self.wy[:, None]).squeeze(1).exp(), p_c)
        self.x = torch.where(_per_sample(ok), candidate, x)
        self.g = torch.where(_per_sample(ok), g_c, g)
        self.logp = torch.where(ok[:, None], logp_c, self.logp)
        self.acc += ok.long()
        self.used += 1
        if c.mode == "adaptive":
            self.count_stalls(ok, eta_used)

    def offset_scale(self, eta: torch.Tensor | float) -> torch.Tensor | float:
        """Per sample, how many paper steps' worth of adversarial offset this step applies (see
        `LSTConfig.adaptive`): min(eta / PAPER_STEP, offset_scale_max), faded towards 1 in proportion to the remaining
        distance to the target over the starting one; the float 1.0 when the scale is off (offset_scale_max 1)."""
        c = self.config
        if c.offset_scale_max <= 1:
            return 1.0
        x = self.x
        full = (torch.as_tensor(eta, dtype=x.dtype, device=x.device) / PAPER_STEP).clamp(1, c.offset_scale_max)
        remaining = (_rms_to(x, self.wxt) / self.start_dist.clamp_min(torch.finfo(x.dtype).tiny)).clamp(0, 1)
        return 1 + (full - 1) * _per_sample(remaining)

    def adapt(self, ok: torch.Tensor, p_x: torch.Tensor, p_c: torch.Tensor) -> None:
        """Adaptive mode's next step size (before x moves). The step is orthogonal to the gradient, so the confidence
        it costs is second order: fit cost(eta) = k eta^2 to this step, and aim at half the slack left to the
        threshold, slack = delta - (p0 - p). Accepted: eta <- min(grow eta, fitted step); rejected: eta <- the
        fitted step, between eta/10 and shrink * eta. Always within [min_step, max_step]."""
        c, eta = self.config, self.eta
        self.at_floor = eta <= c.min_step
        k = (p_x - p_c).clamp_min(0) / (eta * eta)
        slack = c.threshold - (self.wp0 - torch.where(ok, p_c, p_x))
        fitted = torch.where(k > 0, (0.5 * slack.clamp_min(0) / k.clamp_min(1e-30)).sqrt(),
                             torch.full_like(eta, math.inf))
        grown = torch.minimum(eta * c.grow, fitted)
        shrunk = torch.minimum(torch.maximum(fitted, eta * 0.1), eta * c.shrink)
        self.eta = torch.where(ok, grown, shrunk).clamp(c.min_step, c.max_step)

    def count_stalls(self, ok: torch.Tensor, eta: torch.Tensor) -> None:
        """Iterations without progress: an accepted step of size eta that did not bring the distance to the target
        down by at least min_progress * eta (relative; far from its fixed point a step of size eta removes about a
        fraction eta of it), or a rejected step at the smallest step. Small accepted steps that still make progress
        in proportion to their size are progress; any progress resets the count."""
        c = self.config
        dist = _rms_to(self.x, self.wxt)
        improved = ok & (dist < self.ref_dist * (1 - c.min_progress * eta))
        no_progress = (ok & ~improved) | (~ok & self.at_floor)
        self.ref_dist = dist
        self.stalled = torch.where(improved, torch.zeros_like(self.stalled), self.stalled + no_progress.long())

    def record(self, step: int) -> None:
        """One trajectory row (all samples of the chunk; stopped ones at their final values)."""
        self.write_back()
        log, out_x, out_logp = self.log, self.out_x, self.out_logp
        log["steps"].append(torch.tensor(step))
        log["src"].append(out_logp.gather(1, self.y[:, None]).squeeze(1).exp().cpu())
        log["tgt"].append(out_logp.gather(1, self.tcls[:, None]).squeeze(1).exp().cpu())
        dist = distances(out_x, self.xt, with_ssim=False)
        log["rms_t"].append(dist["rms_l2"])
        log["linf_t"].append(dist["linf"])
        log["rms_s"].append(distances(out_x, self.xs, with_ssim=False)["rms_l2"])
        log["acc"].append(self.out_acc.to("cpu", copy=True))
        if self.config.log_snapshots:
            log["snap"].append(self.out_x.to("cpu", copy=True))

    def result(self) -> dict[str, Any]:
        y, out_used = self.y, self.out_used
        result = {
            "images": self.out_x.detach().cpu(),
            "labels": y.cpu(),
            "initial_confidence": self.p0.cpu(),
            "final_confidence": self.out_logp.gather(1, y[:, None]).squeeze(1).exp().cpu(),
            "acceptance_rate": (self.out_acc.double() / out_used.clamp_min(1)).float().cpu(),
            "iterations": out_used.cpu(),
            "model_passes": self.overhead + out_used.cpu(),
            "misclassified": self.misclassified.cpu(),
            "start_rms_l2": distances(self.xs, self.xt, with_ssim=False)["rms_l2"],
            "start_confidence": self.start_p.cpu(),
            "start_outside": self.start_outside.cpu(),
        }
        result.update(distances(self.out_x, self.xt))
        if self.log["steps"]:
            result["trajectory"] = {k: torch.stack(v) for k, v in self.log.items() if v}
        return result
