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

import math
import os
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .models import probing
from .pairing import derangement_pairs
from .traversal_loop import PAPER_STEP, Chunk, refuse_non_finite, start_noise
from .traversal_probe import Probe, auto_batch_size, check_batch_independence, check_label_range, resolve_device

_start_noise = start_noise  # the name benchmarks/speed_lst.py imports
from .validation import check_images, check_labels, check_same_shape

__all__ = ["LSTConfig", "LSTResult", "Trajectory", "level_set_traversal", "derangement_pairs", "sample_seeds"]


@dataclass(frozen=True)
class LSTConfig:
    """Settings of a traversal. `LSTConfig()` is a quick fixed step; `LSTConfig.paper()` the published one;
    `LSTConfig.adaptive()` a per-sample adaptive step that needs far fewer model passes (see its docstring).

    Attributes:
        step_size: eta, the fraction of the orthogonal remaining difference taken per step, in (0, 1] (above 1 a
            step moves past the target). In adaptive mode: the starting step.
        iterations: T, the number of steps (each one forward+backward); in adaptive mode the most steps per sample.
        threshold: delta; a step is accepted iff p0 - p_y(x') < delta.
        adv_eps: eps of the persistent per-pixel adversarial offset, in [0, 0.1] (0 turns the term off; the offset is
            in [0, 1] pixel space and the paper uses 2e-3, so more than 0.1 = 25/255 cannot be meant).
        init_noise: r, half-width of the uniform start noise (2/255 in the paper).
        stop_rms: per-sample early stop once the RMS-l2 distance to the target is below this (None: no such stop).
        log_every: record a trajectory every k iterations (0: off, and then it costs nothing).
        log_snapshots: also keep the images at each logged iteration (on CPU).
        use_prediction: take the model's own prediction on the source as the source class, instead of `labels`.
        batch_size: process at most this many pairs at once (None: all at once; "auto": on CUDA the largest power
            of two that fits, found by trial; on CPU 32).
        amp: run the model under bfloat16 autocast (CPU and CUDA). bfloat16 keeps float32's range, so confident
            gradients do not underflow; the projection itself is computed in float32.
        channels_last: feed the model channels_last tensors (faster convolutions on GPU; same values up to rounding).
        compile: `torch.compile` the model's forward (and so its backward) for the call.
        mode: "fixed" (one step size for all, the paper's) or "adaptive" (per-sample step and stop, see
            `LSTConfig.adaptive`).
        offset_scale_max: apply the adversarial offset as a step of eta would over eta / 1e-2 paper steps, at most
            this many times, fading in proportion to the remaining distance (1: off, the paper's offset; see
            `LSTConfig.adaptive`).
        max_step, min_step, grow, shrink: adaptive mode's step bounds and its factors after accept / reject.
        patience, min_progress: adaptive mode stops a sample after `patience` consecutive iterations without
            progress: an accepted step of size eta that brought its RMS-l2 to the target down by less than
            `min_progress * eta` (relative), or a rejected step at `min_step`.
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
    batch_size: int | str | None = None
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    mode: str = "fixed"
    offset_scale_max: float = 1.0
    max_step: float = 1.0
    min_step: float = 1e-3
    grow: float = 2.0
    shrink: float = 0.5
    patience: int = 2
    min_progress: float = 0.02

    @classmethod
    def paper(cls, **overrides: Any) -> "LSTConfig":
        """The paper's settings: step 1e-2, 400 iterations, threshold 0.2, adversarial step 2e-3."""
        return replace(cls(step_size=PAPER_STEP, iterations=400, threshold=0.2, adv_eps=2e-3), **overrides)

    @classmethod
    def adaptive(cls, **overrides: Any) -> "LSTConfig":
        """Adaptive step mode: the paper's acceptance rule and orthogonal direction, a per-sample step and stop.

        Per sample, each iteration makes the candidate x' = clamp(x + eta_i d - s_i a, 0, 1) (d: the remaining
        difference to the target with its component along the gradient removed; a: the persistent adversarial
        offset, accumulated as a <- clamp(a + s_i (eps / 2) g, -eps, eps)) and accepts it iff
        p0 - p_y(x') < threshold, as in paper mode, so every accepted point lies in the same superlevel set. Then:

        - accepted: eta_i <- min(eta_i * grow, max_step); rejected: eta_i <- max(eta_i * shrink, min_step);
        - the sample stops when its RMS-l2 to the target falls below `stop_rms` (if set), or after `patience`
          consecutive iterations without progress, or after `iterations`. An accepted step of size eta counts as
          progress when it brought the distance down by at least `min_progress * eta` (relative): far from its
          fixed point such a step removes about a fraction eta of the distance, so small steps that still creep
          forward (where the threshold binds) keep the sample going, while full-size steps that no longer shorten
          the distance (the sample sits at the level set's projection of the target, or at the fixed point of the
          adversarial offset) stop it. A rejected step counts against progress only at `min_step`.

        The step after an accept or reject is refined by the step's own cost: it is orthogonal to the gradient, so
        the confidence it loses is second order, k eta^2; fitting k to the last step gives the step that would use
        half the slack left to the threshold, and an accept grows eta to at most that, a reject shrinks it to that
        (between eta/10 and shrink * eta).

        The offset scale s_i: one step of eta does the orthogonal work of eta / 1e-2 paper steps, and paper mode
        applies its offset (its push back up the confidence) once per paper step, so a large step with the paper's
        offset alone gets a fraction of the push paper mode gets over the same way, and the sample runs into the
        threshold early, farther from the target. s_i = 1 + (min(eta_i / 1e-2, offset_scale_max) - 1) r_i, where r_i
        is the sample's remaining RMS-l2 to the target over its starting one: the full push far from the target, the
        paper's own offset near it, where a scaled offset would leave a larger residual in the output.

        Defaults (tuned on the first 4 photo and galaxy pairs of `benchmarks/lst_passes.py` with imagenet-lite0 and
        on 8 test digits per MNIST zoo model, checked on other pairs): eta starts at 0.5, grow 1.5, shrink 0.5,
        bounds [1e-3, 1], patience 1, min_progress 0.1, stop_rms 1e-3 (a quarter of one 8-bit grey level),
        offset_scale_max 10, at most 100 iterations; threshold 0.2 and adversarial step 2e-3 as in the paper. Any
        field can be overridden.

        Where the savings end: where the threshold binds along the path (scikit-image's photos with imagenet-lite0,
        the MNIST CNN trained adversarially, the MNIST ViT) the steps it keeps stay small, so tens of steps are
        needed whatever the step rule, and adaptive mode saves 10-14x there, against 22-28x on real galaxies, the
        plain MNIST CNN and the adversarially trained ViT (`python -m benchmarks.lst_passes` prints each set).
        """
        return replace(cls(step_size=0.5, iterations=100, threshold=0.2, adv_eps=2e-3, mode="adaptive", grow=1.5,
                           patience=1, min_progress=0.1, stop_rms=1e-3, offset_scale_max=10.0), **overrides)

    def __post_init__(self) -> None:
        _check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(v)


def _check_config(c: LSTConfig) -> None:
    """One clear error for a setting that cannot be meant (bools for numbers, steps past the target, ...)."""
    for name in ("step_size", "threshold", "adv_eps", "init_noise", "max_step", "min_step", "grow", "shrink",
                 "min_progress", "offset_scale_max"):
        if not _is_number(getattr(c, name)):
            raise ValueError(f"{name} must be a finite number, got {getattr(c, name)!r}")
    for name in ("iterations", "log_every", "patience"):
        if not _is_int(getattr(c, name)) or getattr(c, name) < 0:
            raise ValueError(f"{name} must be a non-negative int, got {getattr(c, name)!r}")
    if not 0 < c.step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1] (a fraction of the remaining difference; above 1 a step moves "
                         f"past the target), got {c.step_size}")
    if not 0 < c.threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {c.threshold}")
    if not 0 <= c.adv_eps <= 0.1:
        raise ValueError(f"adv_eps must be in [0, 0.1] (a per-pixel offset in [0, 1] pixel space; the paper uses "
                         f"2e-3), got {c.adv_eps}")
    if not 0 <= c.init_noise <= 1:
        raise ValueError(f"init_noise must be in [0, 1], got {c.init_noise}")
    if c.stop_rms is not None and not (_is_number(c.stop_rms) and c.stop_rms > 0):
        raise ValueError(f"stop_rms must be a positive number or None, got {c.stop_rms!r}")
    if c.batch_size is not None and c.batch_size != "auto" and not (_is_int(c.batch_size) and c.batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, 'auto' or None, got {c.batch_size!r}")
    for name in ("log_snapshots", "use_prediction", "amp", "channels_last", "compile"):
        if not isinstance(getattr(c, name), (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {getattr(c, name)!r}")
    if not 0 < c.min_step <= c.max_step <= 1:
        raise ValueError(f"need 0 < min_step <= max_step <= 1, got min_step={c.min_step}, max_step={c.max_step}")
    if not (c.grow >= 1 and 0 < c.shrink <= 1):
        raise ValueError(f"need grow >= 1 and 0 < shrink <= 1, got grow={c.grow}, shrink={c.shrink}")
    if c.mode not in ("fixed", "adaptive"):
        raise ValueError(f"mode must be 'fixed' or 'adaptive', got {c.mode!r}")
    if c.mode == "adaptive" and c.patience < 1:
        raise ValueError(f"patience must be >= 1 in adaptive mode, got {c.patience}")
    if c.offset_scale_max < 1:
        raise ValueError(f"offset_scale_max must be >= 1 (1: the paper's offset), got {c.offset_scale_max}")
    if not 0 <= c.min_progress < 1:
        raise ValueError(f"min_progress must be in [0, 1), got {c.min_progress}")


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
    model_passes: torch.Tensor | None = None  # samples of this pair through the model (forwards, with or without
    #                                           a backward): its cost in model passes

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def unconstrained(self) -> torch.Tensor:
        """(N,) bool: sources whose confidence starts at or below the threshold. For them p0 - p < threshold holds
        for every p, so no step can be rejected and the output says nothing about the source's level set."""
        return self.initial_confidence <= self.config.threshold

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
        return cls(**{k: state.get(k) for k in _RESULT_TENSORS}, config=LSTConfig(**state["config"]),
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
                "unconstrained": bool(self.unconstrained[i]),
                "final_confidence": float(self.final_confidence[i]),
                "acceptance_rate": float(self.acceptance_rate[i]),
                "iterations": int(self.iterations[i]),
                "start_rms_l2": float(self.start_rms_l2[i]),
                "rms_l2": float(self.rms_l2[i]),
                "linf": float(self.linf[i]),
            }
            if self.ssim is not None:
                row["ssim"] = float(self.ssim[i])
            if self.model_passes is not None:
                row["model_passes"] = int(self.model_passes[i])
            out.append(row)
        return out


_RESULT_TENSORS = ("images", "labels", "initial_confidence", "final_confidence", "acceptance_rate", "iterations",
                   "rms_l2", "linf", "ssim", "misclassified", "seeds", "start_rms_l2", "model_passes")


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
        config: `LSTConfig()` by default; `LSTConfig.paper()` for the published settings, `LSTConfig.adaptive()`
            for far fewer model passes.
        target_labels: classes of the targets, for the logged target confidence (default: the model's prediction).
        seed: an int (sample i uses seed + i), one seed per sample, or None (drawn from torch's global RNG).
        progress: show a tqdm progress bar.
        device: where to compute (default: the model's device; a model elsewhere is refused, not moved). Results come
            back on CPU.

    Before the traversal, a few sources go through the model alone and in a batch: a model whose eval output depends
    on its batch-mates (BatchNorm without running statistics, dropout left active) is refused, since the engine
    evaluates many samples at once. Labels are checked against the width of the model's logits.
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
    device = resolve_device(model, device)
    seeds = sample_seeds(seed, n)
    if labels is not None:
        labels = check_labels(labels, n, None)
    if target_labels is not None:
        target_labels = check_labels(target_labels, n, None, "target_labels")

    parts = []
    with probing(model):
        probe = Probe(model, amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                      device=device)
        check_passes = _check_model(model, sources, labels, target_labels, device)
        chunk = config.batch_size or n
        if chunk == "auto":
            y0 = labels[:1] if labels is not None else torch.zeros(1, dtype=torch.long)
            chunk = auto_batch_size(probe, sources[:1].to(device), y0.to(device), n, device)
        with tqdm(total=config.iterations * math.ceil(n / chunk), disable=not progress, unit="it", desc="LST") as bar:
            for lo in range(0, n, chunk):
                sl = slice(lo, lo + chunk)
                traversal = Chunk(probe, sources[sl].to(device), targets[sl].to(device),
                                   None if labels is None else labels[sl].to(device),
                                   None if target_labels is None else target_labels[sl].to(device),
                                   seeds[sl], config, lo)
                parts.append(traversal.run(bar))
    for part, lo in zip(parts, range(0, n, chunk)):
        part["model_passes"] += check_passes[lo:lo + len(part["images"])]
    result = _merge(parts, seeds, config)
    _warn_unconstrained(result)
    return result


def _warn_unconstrained(result: "LSTResult") -> None:
    """One warning when some source starts at or below the threshold (its traversal cannot reject a step)."""
    bad = result.unconstrained.nonzero().flatten().tolist()
    if bad:
        warnings.warn(f"{len(bad)} of {len(result)} sources start with a source-class confidence at or below the "
                      f"threshold {result.config.threshold:g} (samples {bad[:10]}): no step can be rejected for them, "
                      "so their outputs say nothing about a level set (LSTResult.unconstrained marks them)",
                      stacklevel=3)


def _check_model(model: nn.Module, sources: torch.Tensor, labels: torch.Tensor | None,
                 target_labels: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Once per call, in float32: the first sources alone and in a batch must agree, and the labels must index the
    logits. Returns the model passes it spent per sample."""
    plain = Probe(model, device=device)
    m = min(4, sources.shape[0])
    alone_ids = range(min(2, m))
    xs = sources[:m].to(device)
    alone = torch.cat([plain.logits(xs[i:i + 1]) for i in alone_ids])
    passes = torch.zeros(sources.shape[0], dtype=torch.long)
    passes[:len(alone_ids)] += 1
    refuse_non_finite(torch.isfinite(alone).all(1), "logits on the sources", torch.arange(len(alone_ids)))
    if alone.shape[1] < 2:
        raise ValueError(f"the model must return logits for at least 2 classes, got {alone.shape[1]}")
    check_label_range(labels, alone.shape[1])
    check_label_range(target_labels, alone.shape[1], "target_labels")
    if m > 1:
        batch = plain.logits(xs)
        passes[:m] += 1
        check_batch_independence(model, batch[:len(alone_ids)], alone,
                                 lambda: torch.cat([plain.logits(xs[i:i + 1]) for i in alone_ids]))
    return passes


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
        start_rms_l2=cat("start_rms_l2"), model_passes=cat("model_passes"),
    )
