"""The paper's claims as rules fixed before the numbers, and the statistics they rest on.

Every figure of merit is a function of per-image counts, so a bootstrap replicate over the test images is a vector of
image weights (multiplicities) w: completeness = sum w tp / sum w n_true, purity = sum w tp / sum w n_pred, F1 =
2 sum w tp / (sum w n_true + sum w n_pred), and AP50 pools every detection weighted by its image's w. The training
seed is a random effect: each claim's statistic is computed per seed, and `blindspots.verdicts.seed_pooled_interval`
puts the seeds' spread and the test images' noise (one weight vector shared by every seed, so a seed pair is
paired by test image) into one t interval. Real hosts: the unit is the host (its injected copies share its weight).

Claims (`RULES`), each per body setting and size, then combined (`blindspots.verdicts.combine`):
1. better: F1 (and AP50) of the galaxy backbone minus ImageNet's, seed by seed on the same test images, > 0.
2. less data: the area under the F1 learning curve (mean F1 over the sizes, trapezoids on log size), galaxy minus
   ImageNet, > 0; beside it, the smallest size at which each backbone's mean completeness and purity reach 0.8
   (a lower bound "> largest" when none does).
3. reaches 0.8: completeness and purity >= 0.8 at the largest size on the simulated test images, and completeness
   >= 0.8 on the real hosts with injected clumps.
Bridge (LST): d = log(RMS-l2 left by the galaxy backbone's detector / by ImageNet's), same pair and start noise;
the mean d per seed, with the pair's source and target images as units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from blindspots import verdicts as vd

__all__ = ["TARGET", "F1_MARGIN", "AUC_MARGIN", "LST_MARGIN", "FAMILY", "RULES", "Counts", "Detections", "f1",
           "completeness", "purity", "weighted_ap", "auc", "seed_interval", "reach_size", "RULE_TEXT"]

TARGET = 0.8  # the paper's completeness and purity
F1_MARGIN = 0.02  # |F1 difference| below 0.02: no practical difference (equivalent)
AUC_MARGIN = 0.02  # the same margin for the mean F1 over the learning curve
LST_MARGIN = math.log(1.10)  # RMS-l2 ratios within 1/1.1 - 1.1: no practical gap in under-sensitivity
FAMILY = 0.95  # each interval's level (the claims are reported per cell; no cell is picked after the numbers)

RULES = {
    "better_f1": vd.Rule("the galaxy backbone's F1 exceeds ImageNet's", bound=0.0, margin=F1_MARGIN),
    "better_ap50": vd.Rule("the galaxy backbone's AP50 exceeds ImageNet's", bound=0.0, margin=F1_MARGIN),
    "less_data": vd.Rule("the galaxy backbone's mean F1 over the learning curve exceeds ImageNet's", bound=0.0,
                         margin=AUC_MARGIN),
    "completeness": vd.Rule(f"completeness >= {TARGET}", bound=TARGET),
    "purity": vd.Rule(f"purity >= {TARGET}", bound=TARGET),
    "real_completeness": vd.Rule(f"completeness on injected real hosts >= {TARGET}", bound=TARGET),
    "lst": vd.Rule("the galaxy backbone's detector is more under-sensitive than ImageNet's (mean d < 0)", bound=0.0,
                   direction="below", margin=LST_MARGIN),
}
RULE_TEXT = (
    "Rules (fixed before the numbers, experiments/transfer/rules.py): every statistic is computed per training seed "
    "from per-image counts and combined over the seeds with the seed as a random effect and the test images "
    "(real hosts: the hosts) resampled once for all seeds (blindspots.verdicts.seed_pooled_interval, a "
    f"{FAMILY:.0%} t interval with Satterthwaite df). (1) Better: galaxy minus ImageNet F1 and AP50 per body "
    f"setting and size; holds when the interval lies above 0, equivalent inside +-{F1_MARGIN}. (2) Less data: "
    f"galaxy minus ImageNet mean F1 over the learning curve (trapezoids on log size), same rule (margin "
    f"{AUC_MARGIN}); the smallest size at which each backbone's mean completeness and purity reach {TARGET} is "
    f"shown beside it. (3) Reaches {TARGET}: completeness and purity at the largest size on the simulated test "
    f"images, completeness on the real hosts with injected clumps; holds when the interval lies above {TARGET}, "
    f"does not hold when below. A cell needs {vd.MIN_UNITS} distinct units (images, hosts) and 2 seeds. Bridge: "
    "log(RMS-l2 left by the galaxy detector / by ImageNet's) on the same LST pairs and start noise; more "
    f"under-sensitive when the interval lies below 0, equivalent inside +-log 1.1.")


# ------------------------------------------------------------------------------------------ per-image counts


@dataclass
class Counts:
    """Per-image counts of one detector on one image set at one score threshold: matched truths `tp`, truths
    `n_true`, detections `n_pred` (clumps, all fluxes); and matched / all truths of flux >= 3% and >= 8%."""

    tp: np.ndarray
    n_true: np.ndarray
    n_pred: np.ndarray
    tp3: np.ndarray
    n3: np.ndarray
    tp8: np.ndarray
    n8: np.ndarray

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": v for k, v in self.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], prefix: str) -> "Counts":
        return cls(**{k: np.asarray(arrays[f"{prefix}.{k}"], dtype=np.float64) for k in cls.__dataclass_fields__})

    def pooled(self, units: np.ndarray | None = None, n_units: int | None = None) -> "Counts":
        """The counts summed per unit (e.g. the injected copies of one host), units numbered 0..n_units-1."""
        if units is None:
            return self
        n_units = int(units.max()) + 1 if n_units is None else n_units
        return Counts(**{k: np.bincount(units, weights=v, minlength=n_units) for k, v in self.__dict__.items()})


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def completeness(c: Counts, w: np.ndarray, bright: str = "") -> np.ndarray:
    """Weighted completeness for weights (R, G): all truths, or flux >= 3% / 8% with bright='3' / '8'."""
    tp, n = (c.tp, c.n_true) if not bright else (getattr(c, f"tp{bright}"), getattr(c, f"n{bright}"))
    return _ratio(w @ tp, w @ n)


def purity(c: Counts, w: np.ndarray) -> np.ndarray:
    return _ratio(w @ c.tp, w @ c.n_pred)


def f1(c: Counts, w: np.ndarray) -> np.ndarray:
    """2 TP / (truths + detections): one-to-one matching makes matched detections = matched truths."""
    return _ratio(2 * (w @ c.tp), w @ c.n_true + w @ c.n_pred)


@dataclass
class Detections:
    """Every detection of one detector on the test images (scores down to 0): its image, score and whether it
    matches a clump at IoU >= 0.5; with the truths per image. The input of a weighted AP50."""

    image: np.ndarray
    score: np.ndarray
    matched: np.ndarray
    n_true: np.ndarray

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": v for k, v in self.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], prefix: str) -> "Detections":
        return cls(np.asarray(arrays[f"{prefix}.image"], dtype=np.int64),
                   np.asarray(arrays[f"{prefix}.score"], dtype=np.float64),
                   np.asarray(arrays[f"{prefix}.matched"], dtype=bool),
                   np.asarray(arrays[f"{prefix}.n_true"], dtype=np.float64))


def weighted_ap(d: Detections, w: np.ndarray) -> np.ndarray:
    """All-point interpolated average precision with every detection weighted by its image's weight, for each row
    of w (R, G): detections pooled in descending score (ties in their stored order, as
    `detectors.evaluate.average_precision` orders them), precision made monotone from the right, recall steps at the
    matched detections. With unit weights it is `average_precision` of the same detections."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    total = w @ d.n_true
    if d.score.size == 0:
        return np.where(total > 0, 0.0, np.nan)
    order = np.argsort(-d.score, kind="stable")
    wd = w[:, d.image[order]]  # (R, D)
    m = d.matched[order]
    tp = np.cumsum(wd * m, axis=1)
    fp = np.cumsum(wd * ~m, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    gain = (wd * m) * envelope
    return _ratio(gain.sum(1), total)


def auc(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Mean over the learning curve: trapezoids of `values` (..., K) over log(size), divided by the log range (a
    single size: the value itself)."""
    x = np.log(np.asarray(sizes, dtype=np.float64))
    if x.size == 1:
        return values[..., 0]
    dx = np.diff(x)
    return ((values[..., 1:] + values[..., :-1]) / 2 * dx).sum(-1) / (x[-1] - x[0])


# ------------------------------------------------------------------------------------------------- intervals


def seed_interval(per_seed: Callable[[np.ndarray], np.ndarray], n_units: int, unit: str, *,
                  resamples: int = vd.RESAMPLES, seed: int = 0) -> vd.Estimate:
    """`blindspots.verdicts.seed_pooled_interval` at the study's level, units named `unit`."""
    return vd.seed_pooled_interval(per_seed, n_units, level=FAMILY, resamples=resamples, seed=seed, unit=unit,
                                   seeds_label="seed")


def reach_size(comp: np.ndarray, pur: np.ndarray, sizes: Sequence[int]) -> int | None:
    """The smallest size at which the mean over seeds of completeness and purity both reach TARGET (None: none)."""
    for k, n in enumerate(sizes):
        if np.nanmean(comp[..., k]) >= TARGET and np.nanmean(pur[..., k]) >= TARGET:
            return int(n)
    return None
