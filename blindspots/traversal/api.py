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
import warnings
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..engine import Probe, sample_seeds
from ..errors import InputError
from ..models import probing
from ..pairing import derangement_pairs
from .config import LSTConfig
from .loop import Chunk, refuse_non_finite
from .result import LSTResult, Trajectory
from .probe import auto_batch_size, check_batch_independence, check_label_range, resolve_device
from ..validation import check_images, check_labels, check_same_shape

__all__ = ["LSTConfig", "LSTResult", "Trajectory", "level_set_traversal", "derangement_pairs", "sample_seeds"]


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
    _warn_flagged(result)
    return result


def _warn_flagged(result: "LSTResult") -> None:
    """One warning per kind of flagged sample: sources at or below the threshold (their traversal cannot reject a
    step), and noisy starts that already broke the acceptance rule (kept, as the published code keeps them)."""
    bad = result.unconstrained.nonzero().flatten().tolist()
    if bad:
        warnings.warn(f"{len(bad)} of {len(result)} sources start with a source-class confidence at or below the "
                      f"threshold {result.config.threshold:g} (samples {bad[:10]}): no step can be rejected for them, "
                      "so their outputs say nothing about a level set (LSTResult.unconstrained marks them)",
                      stacklevel=3)
    outside = result.start_outside.nonzero().flatten().tolist() if result.start_outside is not None else []
    if outside:
        warnings.warn(f"{len(outside)} of {len(result)} noisy starts already break the acceptance rule p0 - p < "
                      f"{result.config.threshold:g} (samples {outside[:10]}): their traversals began outside the level set "
                      "(LSTResult.start_outside marks them; LSTConfig(start='redraw') draws a start that does not)",
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
        raise InputError(f"the model must return logits for at least 2 classes, got {alone.shape[1]}")
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
        start_confidence=cat("start_confidence"), start_outside=cat("start_outside"),
    )
