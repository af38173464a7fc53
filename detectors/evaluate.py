"""Figures of merit of a clump detector, independent of the model: lists of predictions (dicts with "boxes",
"scores", "labels") against lists of targets ("boxes", "labels", optionally "flux_fraction").

Matching is one-to-one and greedy in descending score (ties keep the input order): each detection takes, among the
still unmatched truths that satisfy the rule (and have its label, when `class_aware`), the one with the highest
IoU, then the smallest centre distance, then the lowest index. Rules:
- `STRICT`: IoU >= 0.5;
- `loose_rule(fwhm_px)`: IoU >= 0.3 or centre distance <= 1 PSF FWHM (clump boxes are only 2-3 FWHM across).
Completeness = matched truths / truths (recall); purity = matched detections / detections (precision);
F1 = 2 matched / (truths + detections). Undefined ratios (no truths, no detections) are NaN.

Because greedy matching in descending score never revisits a decision, the matching of the detections above any
threshold is a prefix of the full matching: one pass gives the whole score-threshold sweep and AP50.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from blindspots.verdicts import wilson_interval

from .data import check_target
from blindspots.errors import InputError

ONE_SIGMA = 0.6826894921370859  # error bars: the Wilson interval at one standard deviation

__all__ = [
    "MatchRule",
    "STRICT",
    "loose_rule",
    "match_image",
    "DetectionScores",
    "evaluate_detections",
    "score_sweep",
    "select_threshold",
    "completeness_vs_flux",
    "average_precision",
    "ap50",
    "image_counts",
    "detection_table",
    "draw_detections",
]


@dataclass(frozen=True)
class MatchRule:
    """A detection matches a truth when IoU >= `iou`, or (if `center_distance` is set) when their box centres are
    at most `center_distance` pixels apart."""

    iou: float = 0.5
    center_distance: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.iou, (int, float)) and 0.0 < self.iou <= 1.0):
            raise InputError(f"MatchRule.iou must be in (0, 1], got {self.iou!r}")
        if self.center_distance is not None and not (
                isinstance(self.center_distance, (int, float)) and math.isfinite(self.center_distance)
                and self.center_distance >= 0):
            raise InputError(f"MatchRule.center_distance must be a non-negative number of pixels or None, "
                             f"got {self.center_distance!r}")

    def __str__(self) -> str:
        if self.center_distance is None:
            return f"IoU>={self.iou:g}"
        return f"IoU>={self.iou:g} or d<={self.center_distance:.3g}px"


STRICT = MatchRule(0.5)


def loose_rule(fwhm_px: float, iou: float = 0.3) -> MatchRule:
    """IoU >= 0.3 or centre distance <= one PSF FWHM (`fwhm_px` in pixels of the evaluated images; for simulated
    data, `SimConfig().psf_fwhm_px` times any resize factor)."""
    return MatchRule(iou, float(fwhm_px))


def _centers(boxes: torch.Tensor) -> torch.Tensor:
    return 0.5 * (boxes[:, :2] + boxes[:, 2:])


def _select(t: dict[str, torch.Tensor], label: int | None) -> dict[str, torch.Tensor]:
    if label is None:
        return t
    if "labels" not in t:
        raise InputError("label= selects a class but a target or prediction has no 'labels'")
    keep = t["labels"] == label
    return {k: (v[keep] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == keep.shape[0] else v)
            for k, v in t.items()}


def match_image(prediction: Mapping[str, Any], target: Mapping[str, Any], rule: MatchRule = STRICT, *,
                class_aware: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching for one image.

    Returns `(pred_to_true, true_to_pred)`: for each detection (input order) the index of its truth or -1, and for
    each truth the index of its detection or -1.
    """
    pred = check_target(prediction, "prediction", scores=True)
    true = check_target(target, "target")
    return _match(pred, true, rule, class_aware)


def _match(pred: dict, true: dict, rule: MatchRule, class_aware: bool) -> tuple[np.ndarray, np.ndarray]:
    p, t = pred["boxes"].shape[0], true["boxes"].shape[0]
    pred_to_true = np.full(p, -1, dtype=np.int64)
    true_to_pred = np.full(t, -1, dtype=np.int64)
    if p == 0 or t == 0:
        return pred_to_true, true_to_pred
    iou = box_iou(pred["boxes"].double(), true["boxes"].double()).numpy()
    dist = torch.cdist(_centers(pred["boxes"].double()), _centers(true["boxes"].double())).numpy()
    ok = iou >= rule.iou - 1e-12
    if rule.center_distance is not None:
        ok |= dist <= rule.center_distance + 1e-12
    if class_aware:
        if "labels" not in pred or "labels" not in true:
            raise InputError("class_aware matching needs 'labels' in predictions and targets "
                             "(or pass class_aware=False)")
        ok &= pred["labels"].numpy()[:, None] == true["labels"].numpy()[None, :]
    order = np.argsort(-pred["scores"].double().numpy(), kind="stable")
    for i in order:
        cand = np.flatnonzero(ok[i] & (true_to_pred < 0))
        if cand.size == 0:
            continue
        # highest IoU, then smallest centre distance, then lowest index (lexsort: last key is primary)
        j = cand[np.lexsort((cand, dist[i, cand], -iou[i, cand]))[0]]
        pred_to_true[i] = j
        true_to_pred[j] = i
    return pred_to_true, true_to_pred


def _prepare(predictions: Sequence[Mapping], targets: Sequence[Mapping], label: int | None
             ) -> list[tuple[dict, dict]]:
    if len(predictions) != len(targets):
        raise InputError(f"predictions and targets must pair up one per image: got {len(predictions)} "
                         f"predictions and {len(targets)} targets")
    if len(targets) == 0:
        raise InputError("no images to evaluate (empty predictions and targets)")
    return [(_select(check_target(p, f"predictions[{i}]", scores=True), label),
             _select(check_target(t, f"targets[{i}]"), label))
            for i, (p, t) in enumerate(zip(predictions, targets))]


def _ratio(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


@dataclass
class DetectionScores:
    """Completeness (recall), purity (precision) and F1 at one score threshold, with the counts behind them."""

    completeness: float
    purity: float
    f1: float
    n_true: int
    n_pred: int
    n_matched: int
    rule: str
    score_threshold: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pooled(pairs: list[tuple[dict, dict]], rule: MatchRule, class_aware: bool
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and matched flags of every detection (all images), and the number of truths."""
    scores, matched, n_true = [], [], 0
    for pred, true in pairs:
        p2t, _ = _match(pred, true, rule, class_aware)
        scores.append(pred["scores"].double().numpy())
        matched.append(p2t >= 0)
        n_true += true["boxes"].shape[0]
    return np.concatenate(scores), np.concatenate(matched), n_true


def score_sweep(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                thresholds: Sequence[float] | np.ndarray | None = None, rule: MatchRule = STRICT, *,
                label: int | None = None, class_aware: bool = True) -> dict[str, np.ndarray]:
    """Completeness, purity and F1 of the detections with score >= t, for each threshold t.

    `thresholds` default to 0, 0.05, ..., 0.95. `label` restricts both sides to one class. Returns arrays
    "threshold", "completeness", "purity", "f1", "n_pred", "n_matched" and the scalar "n_true".
    """
    th = np.linspace(0.0, 0.95, 20) if thresholds is None else np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if th.size == 0 or not np.isfinite(th).all():
        raise InputError(f"thresholds must be finite numbers, got {thresholds!r}")
    scores, matched, n_true = _pooled(_prepare(predictions, targets, label), rule, class_aware)
    above = scores[None, :] >= th[:, None]
    n_pred = above.sum(1)
    n_matched = (above & matched[None, :]).sum(1)
    return {
        "threshold": th,
        "completeness": _ratio(n_matched, n_true),
        "purity": _ratio(n_matched, n_pred),
        "f1": _ratio(2 * n_matched, n_true + n_pred),
        "n_pred": n_pred,
        "n_matched": n_matched,
        "n_true": np.asarray(n_true),
    }


def select_threshold(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                     thresholds: Sequence[float] | np.ndarray | None = None, rule: MatchRule = STRICT, *,
                     label: int | None = None, class_aware: bool = True) -> tuple[float, dict[str, np.ndarray]]:
    """The score threshold with the highest F1 (the lowest such threshold on ties), and the sweep behind it.

    Meant for a validation set held out from both training and test, so that the operating point of a detector is
    chosen without looking at the data it is scored on. Arguments as in `score_sweep`.
    """
    sweep = score_sweep(predictions, targets, thresholds, rule, label=label, class_aware=class_aware)
    f1 = np.nan_to_num(sweep["f1"], nan=-1.0)
    return float(sweep["threshold"][f1 == f1.max()].min()), sweep


def evaluate_detections(predictions: Sequence[Mapping], targets: Sequence[Mapping], rule: MatchRule = STRICT, *,
                        score_threshold: float = 0.0, label: int | None = None,
                        class_aware: bool = True) -> DetectionScores:
    """Completeness, purity and F1 of the detections with score >= `score_threshold` (see the module docstring)."""
    s = score_sweep(predictions, targets, [score_threshold], rule, label=label, class_aware=class_aware)
    return DetectionScores(float(s["completeness"][0]), float(s["purity"][0]), float(s["f1"][0]),
                           int(s["n_true"]), int(s["n_pred"][0]), int(s["n_matched"][0]), str(rule),
                           float(score_threshold))


def completeness_vs_flux(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                         bins: Sequence[float] | np.ndarray | None = None, rule: MatchRule = STRICT, *,
                         score_threshold: float = 0.0, label: int | None = 1,
                         class_aware: bool = True) -> dict[str, np.ndarray]:
    """Completeness of the truths binned by their "flux_fraction" (clump / host flux), at one score threshold.

    `bins` are edges (default: 8 log-spaced bins over 0.25-16%); truths outside them are left out. `label`
    (default 1, clumps) restricts both sides to one class. Returns "bin_edges", "bin_centers" (geometric),
    "completeness", "n_true", "n_matched", and the 68% (one-sigma) Wilson interval "lower", "upper" for error bars.
    """
    edges = np.geomspace(0.0025, 0.16, 9) if bins is None else np.asarray(bins, dtype=np.float64).reshape(-1)
    if edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise InputError(f"bins must be at least two increasing edges, got {bins!r}")
    pairs = _prepare(predictions, targets, label)
    fractions, found = [], []
    for i, (pred, true) in enumerate(pairs):
        if "flux_fraction" not in true:
            raise InputError(f"targets[{i}] has no 'flux_fraction' (simulated or injected targets carry it)")
        keep = pred["scores"] >= score_threshold
        pred = {k: (v[keep] if isinstance(v, torch.Tensor) and v.ndim >= 1 else v) for k, v in pred.items()}
        _, t2p = _match(pred, true, rule, class_aware)
        fractions.append(true["flux_fraction"].double().numpy())
        found.append(t2p >= 0)
    f, m = np.concatenate(fractions), np.concatenate(found)
    idx = np.searchsorted(edges, f, side="right") - 1
    inside = (idx >= 0) & ((idx < edges.size - 1) | (f == edges[-1]))  # the last bin includes its right edge
    idx = np.minimum(idx, edges.size - 2)
    n_true = np.bincount(idx[inside], minlength=edges.size - 1)
    n_matched = np.bincount(idx[inside], weights=m[inside].astype(np.float64), minlength=edges.size - 1)
    n_matched = n_matched.astype(np.int64)
    lower, upper = wilson_interval(n_matched, n_true, level=ONE_SIGMA)
    return {
        "bin_edges": edges,
        "bin_centers": np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else 0.5 * (edges[:-1] + edges[1:]),
        "completeness": _ratio(n_matched, n_true),
        "n_true": n_true,
        "n_matched": n_matched,
        "lower": lower,
        "upper": upper,
    }


def image_counts(predictions: Sequence[Mapping], targets: Sequence[Mapping], rule: MatchRule = STRICT,
                 thresholds: Sequence[float] = (0.3,), *, label: int | None = 1, flux_cuts: Sequence[float] = (),
                 class_aware: bool = True) -> dict[str, np.ndarray]:
    """Per-image counts at each score threshold, the input of intervals that resample images: "tp" (T, G) matched
    truths, "n_pred" (T, G) detections with score >= t, "n_true" (G,) truths, and for each flux cut f "tp>=f"
    (T, G) and "n>=f" (G,): matched / all truths with flux_fraction >= f. One matching of every detection serves all
    thresholds (a greedy matching's prefix property, see the module docstring). Sums over images give
    `evaluate_detections`' counts."""
    th = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    pairs = _prepare(predictions, targets, label)
    g = len(pairs)
    out = {"tp": np.zeros((th.size, g)), "n_pred": np.zeros((th.size, g)), "n_true": np.zeros(g)}
    for f in flux_cuts:
        out[f"tp>={f:g}"], out[f"n>={f:g}"] = np.zeros((th.size, g)), np.zeros(g)
    for i, (pred, true) in enumerate(pairs):
        _, t2p = _match(pred, true, rule, class_aware)
        scores = pred["scores"].double().numpy()
        found = np.where(t2p >= 0, scores[np.maximum(t2p, 0)] if scores.size else -np.inf, -np.inf)  # its score
        out["n_pred"][:, i] = (scores[None, :] >= th[:, None]).sum(1)
        out["tp"][:, i] = (found[None, :] >= th[:, None]).sum(1)
        out["n_true"][i] = t2p.size
        for f in flux_cuts:
            if "flux_fraction" not in true:
                raise InputError(f"targets[{i}] has no 'flux_fraction' (simulated or injected targets carry it)")
            bright = true["flux_fraction"].double().numpy() >= f
            out[f"n>={f:g}"][i] = bright.sum()
            out[f"tp>={f:g}"][:, i] = ((found[None, :] >= th[:, None]) & bright[None, :]).sum(1)
    return out


def detection_table(predictions: Sequence[Mapping], targets: Sequence[Mapping], rule: MatchRule = STRICT, *,
                    label: int | None = 1, class_aware: bool = True) -> dict[str, np.ndarray]:
    """Every detection pooled over the images in input order: "image" (its index), "score", "matched" (to a truth
    under `rule`), and "n_true" per image: what `average_precision` computes from, for a per-image weighted AP."""
    pairs = _prepare(predictions, targets, label)
    image, scores, matched, n_true = [], [], [], []
    for i, (pred, true) in enumerate(pairs):
        p2t, _ = _match(pred, true, rule, class_aware)
        image.append(np.full(p2t.size, i, dtype=np.int64))
        scores.append(pred["scores"].double().numpy())
        matched.append(p2t >= 0)
        n_true.append(true["boxes"].shape[0])
    return {"image": np.concatenate(image), "score": np.concatenate(scores), "matched": np.concatenate(matched),
            "n_true": np.asarray(n_true, dtype=np.float64)}


def average_precision(predictions: Sequence[Mapping], targets: Sequence[Mapping], rule: MatchRule = STRICT, *,
                      label: int | None = None, class_aware: bool = True) -> float:
    """Average precision with all-point interpolation (the area under the monotone precision envelope of the
    precision-recall curve, PASCAL VOC 2010+), detections pooled over images in descending score. With the
    default rule this is AP50. `label` restricts to one class; NaN when there are no truths. Of the detections
    given: predictions already cut at a score threshold give a truncated AP, a lower bound (see `ap50`)."""
    scores, matched, n_true = _pooled(_prepare(predictions, targets, label), rule, class_aware)
    if n_true == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / n_true
    precision = tp / (tp + fp)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def ap50(predictions: Sequence[Mapping], targets: Sequence[Mapping], classes: Sequence[int] = (1, 2), *,
         score_floor: float | None = None) -> dict[str, float]:
    """AP at IoU >= 0.5 per class ("clump", "odd_clump" for labels 1 and 2, else "class_<k>"), their mean over the
    classes that have truths ("mAP50"), the class-agnostic AP ("agnostic"), and "score_floor".

    `score_floor` (required) is the score below which the detector already dropped its detections (its box score
    threshold): 0 when the predictions hold every detection, which gives the detector's AP. Predictions cut at a
    threshold give a truncated AP: the precision-recall curve stops at that threshold's recall, so the figure is a
    lower bound of the detector's AP and must be reported as "AP50 (scores >= floor)". For the detector's AP, run it
    with its score threshold at 0 and filter by score afterwards for completeness and purity.
    """
    if score_floor is None:
        raise InputError("ap50 needs score_floor=: the score threshold the predictions were cut at (0 when they hold "
                         "every detection); AP of thresholded detections is only a lower bound of the detector's AP")
    if not (isinstance(score_floor, (int, float)) and not isinstance(score_floor, bool)
            and 0.0 <= score_floor <= 1.0):
        raise InputError(f"score_floor must be a score in [0, 1], got {score_floor!r}")
    low = [i for i, p in enumerate(predictions) if isinstance(p, Mapping) and "scores" in p and len(p["scores"])
           and float(torch.as_tensor(p["scores"]).min()) < score_floor - 1e-6]
    if low:
        raise InputError(f"score_floor={score_floor:g} but predictions of images {low[:5]} hold lower scores; pass the "
                         "threshold the detections were actually cut at")
    names = {1: "clump", 2: "odd_clump"}
    out: dict[str, float] = {}
    for k in classes:
        out[names.get(int(k), f"class_{int(k)}")] = average_precision(predictions, targets, STRICT, label=int(k))
    vals = [v for v in out.values() if not math.isnan(v)]
    out["mAP50"] = float(np.mean(vals)) if vals else float("nan")
    out["agnostic"] = average_precision(predictions, targets, STRICT, class_aware=False)
    out["score_floor"] = float(score_floor)
    return out


# --------------------------------------------------------------------------------------------------- figure


def draw_detections(image: torch.Tensor, target: Mapping[str, Any] | None = None,
                    prediction: Mapping[str, Any] | None = None, path: str | Path | None = None, *,
                    score_threshold: float = 0.0, title: str | None = None, ax: Any = None):
    """Show an image (3, H, W) in [0, 1] with its true boxes (solid: green clumps, cyan odd clumps) and detected
    boxes above `score_threshold` (dashed: orange clumps, magenta odd clumps, with scores). Returns the Figure (or
    draws into `ax`) and saves a PNG to `path` if given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise InputError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    from blindspots.validation import check_images

    check_images(image[None], "image")
    if ax is None:  # object-oriented API on the Agg canvas: no pyplot state
        fig = Figure(figsize=(5, 5))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
    else:
        fig = ax.figure
    ax.imshow(image.detach().cpu().permute(1, 2, 0).numpy(), extent=(0, image.shape[2], image.shape[1], 0),
              interpolation="nearest")
    true_colors = {1: "lime", 2: "cyan"}
    pred_colors = {1: "orange", 2: "magenta"}

    def boxes_of(t: Mapping[str, Any], name: str, scores: bool) -> tuple:
        t = check_target(t, name, scores=scores)
        labels = t.get("labels", torch.ones(t["boxes"].shape[0], dtype=torch.int64))
        return t["boxes"], labels, t.get("scores")

    n_true = n_pred = 0
    if target is not None:
        boxes, labels, _ = boxes_of(target, "target", False)
        for b, lab in zip(boxes.tolist(), labels.tolist()):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1.2,
                                   ec=true_colors.get(lab, "white")))
            n_true += 1
    if prediction is not None:
        boxes, labels, scores = boxes_of(prediction, "prediction", True)
        for b, lab, s in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            if s < score_threshold:
                continue
            c = pred_colors.get(lab, "red")
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1.2, ls="--", ec=c))
            ax.text(b[0], b[1] - 0.5, f"{s:.2f}", color=c, fontsize=7, va="bottom")
            n_pred += 1
    ax.set_xlim(0, image.shape[2])
    ax.set_ylim(image.shape[1], 0)
    ax.set_axis_off()
    ax.set_title(title if title is not None else f"{n_true} true (solid), {n_pred} detected (dashed)", fontsize=9)
    from blindspots.plots import plain_text

    plain_text(fig)  # a title holding a file name with $...$ is not math
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
