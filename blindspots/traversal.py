"""Level Set Traversal (Balasubramanian et al., NeurIPS 2023): walk from a source image towards a target image with
steps orthogonal to the gradient of the source class's confidence, accepting a step only while the model stays
confident in the source class.

Per sample, in [0, 1] pixel space (y = source class, p0 = p_y(x_s) on the clean source)::

    x = clamp(x_s + U(-r, r), 0, 1);  a = 0
    repeat T times:
        g  = grad_x(-log p_y(x));  v = x_t - x;  d = v - (<g, v> / <g, g>) g
        a  = clamp(a + (eps / 2) g, -eps, eps)
        x' = clamp(x + eta d - a, 0, 1)
        x  = x' if p0 - p_y(x') < delta else x

The engine spends ONE forward+backward per iteration: the candidate's forward (with input gradients on) serves both
the acceptance test and, when accepted, the next step's gradient; a rejected sample keeps the gradient it already
has, which is the gradient at its unchanged position. All quantities are per sample, so a sample's result does not
depend on its batch-mates (each sample draws its start noise from its own seed).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .metrics import distances
from .models import Classifier, model_device, probing
from .validation import check_images, check_labels, check_same_shape

__all__ = ["LSTConfig", "LSTResult", "Trajectory", "level_set_traversal", "derangement_pairs", "sample_seeds"]


@dataclass(frozen=True)
class LSTConfig:
    """Settings of a traversal. `LSTConfig()` is a quick default for demos; `LSTConfig.paper()` the published one.

    Attributes:
        step_size: eta, the fraction of the orthogonal remaining difference taken per step.
        iterations: T, the number of steps (each one forward+backward).
        threshold: delta; a step is accepted iff p0 - p_y(x') < delta.
        adv_eps: eps of the persistent per-pixel adversarial offset (0 turns the term off).
        init_noise: r, half-width of the uniform start noise (2/255 in the paper).
        stop_rms: per-sample early stop once the RMS-l2 distance to the target is below this (None: run all T).
        log_every: record a trajectory every k iterations (0: off, and then it costs nothing).
        log_snapshots: also keep the images at each logged iteration (on CPU).
        use_prediction: take the model's own prediction on the source as the source class, instead of `labels`.
        batch_size: process at most this many pairs at once (None: all at once).
        amp: mixed precision (autocast float16) on CUDA; ignored elsewhere.
        channels_last: feed the model channels_last tensors (faster convolutions on GPU).
    """

    step_size: float = 2.5e-2
    iterations: int = 160
    threshold: float = 0.2
    adv_eps: float = 2e-3
    init_noise: float = 2 / 255
    stop_rms: float | None = None
    log_every: int = 0
    log_snapshots: bool = False
    use_prediction: bool = False
    batch_size: int | None = None
    amp: bool = False
    channels_last: bool = False

    @classmethod
    def paper(cls, **overrides: Any) -> "LSTConfig":
        """The paper's settings: step 1e-2, 400 iterations, threshold 0.2, adversarial step 2e-3."""
        return replace(cls(step_size=1e-2, iterations=400, threshold=0.2, adv_eps=2e-3), **overrides)

    def __post_init__(self) -> None:
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be a positive number, got {self.step_size}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"iterations must be a non-negative int, got {self.iterations!r}")
        if not (0 < self.threshold <= 1):
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not (self.adv_eps >= 0 and math.isfinite(self.adv_eps)):
            raise ValueError(f"adv_eps must be >= 0, got {self.adv_eps}")
        if not (0 <= self.init_noise <= 1):
            raise ValueError(f"init_noise must be in [0, 1], got {self.init_noise}")
        if self.stop_rms is not None and not self.stop_rms > 0:
            raise ValueError(f"stop_rms must be positive or None, got {self.stop_rms}")
        if not isinstance(self.log_every, int) or self.log_every < 0:
            raise ValueError(f"log_every must be a non-negative int, got {self.log_every!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {self.batch_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trajectory:
    """Quantities logged every `log_every` iterations, each of shape (L, N) (snapshots: (L, N, C, H, W)).

    A sample that stopped early keeps its final values in later rows.
    """

    steps: torch.Tensor
    source_confidence: torch.Tensor
    target_confidence: torch.Tensor
    rms_to_target: torch.Tensor
    linf_to_target: torch.Tensor
    rms_to_source: torch.Tensor
    accepted: torch.Tensor
    snapshots: torch.Tensor | None = None


@dataclass
class LSTResult:
    """Per-sample outcome of a traversal; every tensor has the batch as its first dimension (on CPU)."""

    images: torch.Tensor
    labels: torch.Tensor
    initial_confidence: torch.Tensor
    final_confidence: torch.Tensor
    acceptance_rate: torch.Tensor
    iterations: torch.Tensor
    rms_l2: torch.Tensor
    linf: torch.Tensor
    ssim: torch.Tensor | None
    misclassified: torch.Tensor
    seeds: torch.Tensor
    start_rms_l2: torch.Tensor
    config: LSTConfig
    trajectory: Trajectory | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as plain tensors and numbers (readable with `weights_only=True`, no pickled code)."""
        state = {k: getattr(self, k) for k in _RESULT_TENSORS}
        state["config"] = self.config.to_dict()
        if self.trajectory is not None:
            state["trajectory"] = {k: v for k, v in asdict(self.trajectory).items() if v is not None}
        torch.save(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LSTResult":
        """Read a result written by `save`, without executing pickled code."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        trajectory = Trajectory(**state["trajectory"]) if "trajectory" in state else None
        return cls(**{k: state[k] for k in _RESULT_TENSORS}, config=LSTConfig(**state["config"]),
                   trajectory=trajectory)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per sample (JSON/CSV ready)."""
        out = []
        for i in range(len(self)):
            row = {
                "index": i,
                "label": int(self.labels[i]),
                "seed": int(self.seeds[i]),
                "misclassified": bool(self.misclassified[i]),
                "initial_confidence": float(self.initial_confidence[i]),
                "final_confidence": float(self.final_confidence[i]),
                "acceptance_rate": float(self.acceptance_rate[i]),
                "iterations": int(self.iterations[i]),
                "start_rms_l2": float(self.start_rms_l2[i]),
                "rms_l2": float(self.rms_l2[i]),
                "linf": float(self.linf[i]),
            }
            if self.ssim is not None:
                row["ssim"] = float(self.ssim[i])
            out.append(row)
        return out


_RESULT_TENSORS = ("images", "labels", "initial_confidence", "final_confidence", "acceptance_rate", "iterations",
                   "rms_l2", "linf", "ssim", "misclassified", "seeds", "start_rms_l2")


def sample_seeds(seed: int | Sequence[int] | torch.Tensor | None, n: int) -> torch.Tensor:
    """Per-sample seeds: an int gives seed, seed+1, ...; a sequence is used as is; None draws from torch's RNG."""
    if seed is None:
        return torch.randint(0, 2**62, (n,), dtype=torch.int64)
    if isinstance(seed, (int, np.integer)):
        return torch.arange(n, dtype=torch.int64) + int(seed)
    seeds = torch.as_tensor(seed, dtype=torch.int64).flatten()
    if seeds.shape[0] != n:
        raise ValueError(f"seed must be an int or hold one seed per sample ({n}), got {seeds.shape[0]}")
    return seeds


def _start_noise(seeds: torch.Tensor, shape: torch.Size, radius: float) -> torch.Tensor:
    """U(-radius, radius) noise, each sample from its own generator, so batching does not change it."""
    out = torch.empty((len(seeds), *shape))
    gen = torch.Generator()
    for i, s in enumerate(seeds.tolist()):
        gen.manual_seed(s)
        out[i].uniform_(-radius, radius, generator=gen)
    return out


class _Probe:
    """Forward(+backward) of the model at a batch of points, in the configured precision and memory format."""

    def __init__(self, model: nn.Module, config: LSTConfig, device: torch.device) -> None:
        self.model = model
        self.amp = config.amp and device.type == "cuda"
        self.channels_last = config.channels_last

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with ctx:
            logits = self.model(self._prep(x))
        return logits.float()

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._logits(x).log_softmax(-1)

    def log_probs_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log-softmax at x and g = grad_x(-log p_y(x)) per sample (one forward, one backward)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = self._logits(x).log_softmax(-1)
            loss = -logp.gather(1, y[:, None]).sum()
            if not loss.requires_grad:  # the output does not depend on the input: the gradient is zero
                return logp.detach(), torch.zeros_like(x)
            (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        return logp.detach(), torch.zeros_like(x) if g is None else g.to(x.dtype)


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector to broadcast over images."""
    return t.view(-1, 1, 1, 1)


def level_set_traversal(
    model: nn.Module,
    sources: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    config: LSTConfig | None = None,
    *,
    target_labels: torch.Tensor | Sequence[int] | None = None,
    seed: int | Sequence[int] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> LSTResult:
    """Run Level Set Traversal from each source towards its target (one target per source).

    Args:
        model: a `Classifier` (or any module mapping [0, 1] images to logits).
        sources, targets: float (N, C, H, W) tensors in [0, 1].
        labels: source classes (N,). None, or `config.use_prediction`, uses the model's prediction on each source.
            Sources the model misclassifies are kept and flagged in `result.misclassified`.
        config: `LSTConfig()` by default; `LSTConfig.paper()` for the published settings.
        target_labels: classes of the targets, for the logged target confidence (default: the model's prediction).
        seed: an int (sample i uses seed + i), one seed per sample, or None (drawn from torch's global RNG).
        progress: show a tqdm progress bar.
        device: where to compute (default: the model's device). Results come back on CPU.
    """
    if isinstance(labels, LSTConfig):
        raise TypeError("the 4th argument is labels; pass the settings as config=LSTConfig(...)")
    config = config or LSTConfig()
    if not isinstance(config, LSTConfig):
        raise TypeError(f"config must be an LSTConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (ideally a blindspots.Classifier), got {type(model).__name__}")
    check_images(sources, "sources")
    check_images(targets, "targets")
    check_same_shape(sources, targets, "sources", "targets")
    n = sources.shape[0]
    device = torch.device(device) if device is not None else model_device(model)
    seeds = sample_seeds(seed, n)
    num_classes = model.num_classes if isinstance(model, Classifier) else None
    if labels is not None:
        labels = check_labels(labels, n, num_classes)
    if target_labels is not None:
        target_labels = check_labels(target_labels, n, num_classes, "target_labels")

    chunk = config.batch_size or n
    parts = []
    n_chunks = math.ceil(n / chunk)
    with probing(model), tqdm(total=config.iterations * n_chunks, disable=not progress, unit="it",
                              desc="LST") as bar:
        for lo in range(0, n, chunk):
            sl = slice(lo, lo + chunk)
            parts.append(_traverse_chunk(
                model, sources[sl].to(device), targets[sl].to(device),
                None if labels is None else labels[sl].to(device),
                None if target_labels is None else target_labels[sl].to(device),
                seeds[sl], config, device, bar))
    return _merge(parts, seeds, config)


def _traverse_chunk(model, xs, xt, labels, target_labels, seeds, config: LSTConfig, device, bar) -> dict[str, Any]:
    probe = _Probe(model, config, device)
    n = xs.shape[0]
    clean = probe.log_probs(xs)
    if not bool(torch.isfinite(clean).all()):
        bad = (~torch.isfinite(clean)).any(1).nonzero().flatten().tolist()
        raise ValueError(f"the model returned NaN/inf logits on sources {bad[:10]}")
    if clean.shape[1] < 2:
        raise ValueError(f"the model must return logits for at least 2 classes, got {clean.shape[1]}")
    if labels is not None and int(labels.max()) >= clean.shape[1]:
        raise ValueError(f"labels out of range: found {int(labels.max())}, the model has {clean.shape[1]} classes")
    pred = clean.argmax(1)
    y = pred if (labels is None or config.use_prediction) else labels
    misclassified = (pred != labels) if labels is not None else torch.zeros(n, dtype=torch.bool, device=device)
    p0 = clean.gather(1, y[:, None]).squeeze(1).exp()

    logging = config.log_every > 0
    if logging:
        tcls = target_labels if target_labels is not None else probe.log_probs(xt).argmax(1)

    noise = _start_noise(seeds, xs.shape[1:], config.init_noise).to(device=device, dtype=xs.dtype)
    x = (xs + noise).clamp_(0, 1)
    logp, g = probe.log_probs_and_grad(x, y)
    a = torch.zeros_like(x)
    accepted = torch.zeros(n, dtype=torch.long, device=device)
    used = torch.zeros(n, dtype=torch.long, device=device)
    eta, eps, delta = config.step_size, config.adv_eps, config.threshold

    # Output buffers for the whole chunk; the working tensors hold only the active samples.
    out_x, out_logp = x.clone(), logp.clone()
    out_acc, out_used = accepted.clone(), used.clone()
    active = torch.arange(n, device=device)
    work_xt, work_y, work_p0 = xt, y, p0
    log: dict[str, list[torch.Tensor]] = {k: [] for k in ("steps", "src", "tgt", "rms_t", "linf_t", "rms_s", "acc",
                                                           "snap")}

    def write_back() -> None:
        out_x[active], out_logp[active] = x, logp
        out_acc[active], out_used[active] = accepted, used

    def record(step: int) -> None:
        write_back()
        log["steps"].append(torch.tensor(step))
        log["src"].append(out_logp.gather(1, y[:, None]).squeeze(1).exp().cpu())
        log["tgt"].append(out_logp.gather(1, tcls[:, None]).squeeze(1).exp().cpu())
        dist = distances(out_x, xt, with_ssim=False)
        log["rms_t"].append(dist["rms_l2"])
        log["linf_t"].append(dist["linf"])
        log["rms_s"].append(distances(out_x, xs, with_ssim=False)["rms_l2"])
        log["acc"].append(out_acc.to("cpu", copy=True))
        if config.log_snapshots:
            log["snap"].append(out_x.to("cpu", copy=True))

    if logging:
        record(0)
    for it in range(1, config.iterations + 1):
        if config.stop_rms is not None:
            remaining = (work_xt - x).flatten(1).norm(dim=1) / math.sqrt(x[0].numel())
            keep = remaining >= config.stop_rms
            if not bool(keep.all()):
                write_back()
                x, g, a, logp = x[keep], g[keep], a[keep], logp[keep]
                accepted, used, active = accepted[keep], used[keep], active[keep]
                work_xt, work_y, work_p0 = work_xt[keep], work_y[keep], work_p0[keep]
                if active.numel() == 0:
                    bar.update(config.iterations - it + 1)
                    break
        v = work_xt - x
        gg = (g * g).flatten(1).sum(1)
        gv = (g * v).flatten(1).sum(1)
        coef = torch.where(gg > 0, gv / gg.clamp_min(torch.finfo(gg.dtype).tiny), torch.zeros_like(gg))
        d = v - _per_sample(coef) * g
        if eps > 0:
            a = (a + (eps / 2) * g).clamp_(-eps, eps)
            candidate = (x + eta * d - a).clamp_(0, 1)
        else:
            candidate = (x + eta * d).clamp_(0, 1)
        if it < config.iterations:
            logp_c, g_c = probe.log_probs_and_grad(candidate, work_y)
        else:  # the last candidate's gradient would never be used: its forward alone decides
            logp_c, g_c = probe.log_probs(candidate), g
        p_c = logp_c.gather(1, work_y[:, None]).squeeze(1).exp()
        ok = (work_p0 - p_c) < delta  # NaN confidences compare False: such candidates are rejected
        okb = _per_sample(ok)
        x = torch.where(okb, candidate, x)
        g = torch.where(okb, g_c, g)
        logp = torch.where(ok[:, None], logp_c, logp)
        accepted += ok.long()
        used += 1
        bar.update(1)
        if logging and (it % config.log_every == 0 or it == config.iterations):
            record(it)
    write_back()

    result = {
        "images": out_x.detach().cpu(),
        "labels": y.cpu(),
        "initial_confidence": p0.cpu(),
        "final_confidence": out_logp.gather(1, y[:, None]).squeeze(1).exp().cpu(),
        "acceptance_rate": (out_acc.double() / out_used.clamp_min(1)).float().cpu(),
        "iterations": out_used.cpu(),
        "misclassified": misclassified.cpu(),
        "start_rms_l2": distances(xs, xt, with_ssim=False)["rms_l2"],
    }
    result.update(distances(out_x, xt))
    if logging:
        result["trajectory"] = {k: torch.stack(v) for k, v in log.items() if v}
    return result


def _merge(parts: list[dict[str, Any]], seeds: torch.Tensor, config: LSTConfig) -> LSTResult:
    def cat(key):
        return torch.cat([p[key] for p in parts]) if key in parts[0] else None

    trajectory = None
    if "trajectory" in parts[0]:
        tr = {k: torch.cat([p["trajectory"][k] for p in parts], dim=1) if k != "steps" else parts[0]["trajectory"][k]
              for k in parts[0]["trajectory"]}
        trajectory = Trajectory(steps=tr["steps"], source_confidence=tr["src"], target_confidence=tr["tgt"],
                                rms_to_target=tr["rms_t"], linf_to_target=tr["linf_t"], rms_to_source=tr["rms_s"],
                                accepted=tr["acc"], snapshots=tr.get("snap"))
    return LSTResult(
        images=cat("images"), labels=cat("labels"), initial_confidence=cat("initial_confidence"),
        final_confidence=cat("final_confidence"), acceptance_rate=cat("acceptance_rate"),
        iterations=cat("iterations"), rms_l2=cat("rms_l2"), linf=cat("linf"), ssim=cat("ssim"),
        misclassified=cat("misclassified"), seeds=seeds, config=config, trajectory=trajectory,
        start_rms_l2=cat("start_rms_l2"),
    )


def derangement_pairs(labels: torch.Tensor | Sequence[int], rounds: int = 5, seed: int = 0) -> torch.Tensor:
    """Target indices for the paper's protocol: `rounds` permutations of the pool, each sending every image to an
    image of another class. Returns a (rounds, N) int64 tensor; row r, column i is the target of source i.

    Uniformly random derangements are drawn by rejection; when classes repeat so much that rejection fails, a
    class-sorted cyclic shift (valid whenever no class holds more than half the pool) is used instead.
    """
    labels_t = torch.as_tensor(labels).long().flatten()
    n = labels_t.numel()
    if n < 2:
        raise ValueError("derangements need at least 2 images")
    counts = torch.unique(labels_t, return_counts=True)[1]
    if int(counts.max()) * 2 > n:
        raise ValueError(f"no pairing sends every image to another class: one class holds {int(counts.max())} of "
                         f"{n} images (more than half)")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rng = np.random.default_rng(seed)
    lab = labels_t.numpy()
    out = np.empty((rounds, n), dtype=np.int64)
    for r in range(rounds):
        for _ in range(200):
            perm = rng.permutation(n)
            if not np.any(lab[perm] == lab):
                break
        else:
            shuffled = rng.permutation(n)
            dense = np.unique(lab, return_inverse=True)[1]
            class_order = rng.permutation(int(dense.max()) + 1)
            order = shuffled[np.argsort(class_order[dense[shuffled]], kind="stable")]
            m = int(counts.max())
            perm = np.empty(n, dtype=np.int64)
            perm[order] = order[(np.arange(n) + m) % n]
        out[r] = perm
    return torch.from_numpy(out)
