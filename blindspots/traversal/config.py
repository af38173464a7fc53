"""`LSTConfig`: the settings of a Level Set Traversal (see `blindspots.traversal`), checked when made."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["LSTConfig", "PAPER_STEP", "START_REDRAWS"]

PAPER_STEP = 1e-2  # the paper's step; `LSTConfig.offset_scale_max` counts a step of eta as eta / PAPER_STEP of them
START_REDRAWS = 5  # LSTConfig(start="redraw"): noise of radius r/2, r/4, ..., r/32, then the clean source


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
        start: what to do with a noisy start that already breaks the acceptance rule (p0 - p_y(start) >= threshold):
            "keep" it (the published code's behaviour, the default: every step is then judged against p0 from a
            start already outside the level set, and the sample is flagged in `LSTResult.start_outside`), or
            "redraw" it: fresh noise of half the radius, up to `START_REDRAWS` times, then the clean source itself
            (each redraw costs one model pass of that sample).
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
    start: str = "keep"
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
        the adversarially trained MNIST models, the MNIST ViT) the steps it keeps stay small, so tens of steps are
        needed whatever the step rule, and adaptive mode saves less there than on real galaxies or the plain MNIST
        CNN (`python -m benchmarks.lst_passes` prints each set; its figures are in docs/engine.md).
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
            raise InputError(f"{name} must be a finite number, got {getattr(c, name)!r}")
    for name in ("iterations", "log_every", "patience"):
        if not _is_int(getattr(c, name)) or getattr(c, name) < 0:
            raise InputError(f"{name} must be a non-negative int, got {getattr(c, name)!r}")
    if not 0 < c.step_size <= 1:
        raise InputError(f"step_size must be in (0, 1] (a fraction of the remaining difference; above 1 a step moves "
                         f"past the target), got {c.step_size}")
    if not 0 < c.threshold <= 1:
        raise InputError(f"threshold must be in (0, 1], got {c.threshold}")
    if not 0 <= c.adv_eps <= 0.1:
        raise InputError(f"adv_eps must be in [0, 0.1] (a per-pixel offset in [0, 1] pixel space; the paper uses "
                         f"2e-3), got {c.adv_eps}")
    if not 0 <= c.init_noise <= 1:
        raise InputError(f"init_noise must be in [0, 1], got {c.init_noise}")
    if c.stop_rms is not None and not (_is_number(c.stop_rms) and c.stop_rms > 0):
        raise InputError(f"stop_rms must be a positive number or None, got {c.stop_rms!r}")
    if c.batch_size is not None and c.batch_size != "auto" and not (_is_int(c.batch_size) and c.batch_size >= 1):
        raise InputError(f"batch_size must be a positive int, 'auto' or None, got {c.batch_size!r}")
    for name in ("log_snapshots", "use_prediction", "amp", "channels_last", "compile"):
        if not isinstance(getattr(c, name), (bool, np.bool_)):
            raise InputError(f"{name} must be True or False, got {getattr(c, name)!r}")
    if not 0 < c.min_step <= c.max_step <= 1:
        raise InputError(f"need 0 < min_step <= max_step <= 1, got min_step={c.min_step}, max_step={c.max_step}")
    if not (c.grow >= 1 and 0 < c.shrink <= 1):
        raise InputError(f"need grow >= 1 and 0 < shrink <= 1, got grow={c.grow}, shrink={c.shrink}")
    if c.mode not in ("fixed", "adaptive"):
        raise InputError(f"mode must be 'fixed' or 'adaptive', got {c.mode!r}")
    if c.start not in ("keep", "redraw"):
        raise InputError(f"start must be 'keep' (the published code's) or 'redraw', got {c.start!r}")
    if c.mode == "adaptive" and c.patience < 1:
        raise InputError(f"patience must be >= 1 in adaptive mode, got {c.patience}")
    if c.offset_scale_max < 1:
        raise InputError(f"offset_scale_max must be >= 1 (1: the paper's offset), got {c.offset_scale_max}")
    if not 0 <= c.min_progress < 1:
        raise InputError(f"min_progress must be in [0, 1), got {c.min_progress}")
