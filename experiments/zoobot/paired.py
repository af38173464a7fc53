"""The paired comparison and its verdict rule. Every backbone walks the same (round, source, target) pairs from the
same start noise, so each pair gives one number per comparison: d = log(RMS-l2 left to the target by A / by B).
d < 0: A lets the image get closer to the other galaxy while keeping its class, i.e. A is more under-sensitive.

The rule, fixed before any number is seen (RULE): traversals that stall are counted apart and left out of d; A is
more (less) under-sensitive than B only when the 95% bootstrap interval (over pairs) of the mean d lies wholly below
(above) 0 on the simulated pairs AND on the real cross-class pairs, for EVERY fine-tuning seed; otherwise the
answer is "inconclusive"."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from blindspots.stats import bootstrap_interval

__all__ = ["RULE", "MIN_PROGRESS", "MIN_PAIRS", "VERDICT_DOMAINS", "stalled", "pair_category", "Comparison",
           "compare", "verdict", "index_records"]

MIN_PROGRESS = 0.05  # a traversal that covers less than 5% of the start distance to its target has stalled
MIN_PAIRS = 5  # fewer usable pairs in a verdict domain: inconclusive
VERDICT_DOMAINS = ("sim", "real cross-class")
RULE = ("Verdict rule (fixed before the numbers): for every pair d = log(RMS-l2 left to the target by the backbone "
        "/ by ImageNet), same pair, same start noise. A traversal has stalled when it covers less than "
        f"{MIN_PROGRESS:.0%} of its start distance or the source class is lost at the end; stalled pairs are counted "
        "apart and left out of d. A backbone is called more (less) under-sensitive than ImageNet only when the 95% "
        "bootstrap interval (over pairs) of the mean d lies wholly below (above) 0 on simulated pairs AND on real "
        f"cross-class pairs, for EVERY fine-tuning seed, with at least {MIN_PAIRS} usable pairs each; otherwise the "
        "answer is inconclusive. Real pairs within one predicted class are reported apart and do not enter it.")


def stalled(rec: Mapping[str, Any], min_progress: float = MIN_PROGRESS) -> bool:
    """No progress (RMS-l2 left > (1 - min_progress) x the start distance) or the source class lost at the end."""
    return (rec["rms_l2"] > (1 - min_progress) * rec["start_rms_l2"]) or not rec.get("kept_class", True)


def pair_category(domain: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """'sim', 'real cross-class' (both backbones predict source and target in different classes), 'real
    within-class' (both predict one class) or 'real mixed' (the two backbones disagree)."""
    if domain != "real":
        return domain
    ca, cb = a["source_label"] != a["target_label"], b["source_label"] != b["target_label"]
    return "real cross-class" if ca and cb else "real within-class" if not (ca or cb) else "real mixed"


def index_records(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, str], dict[tuple, Mapping]]:
    """LST records by (backbone, seed, domain) -> {(round, source, target): record}."""
    out: dict[tuple[str, int, str], dict[tuple, Mapping]] = {}
    for r in records:
        if r.get("kind") == "lst":
            key = (r["backbone"], int(r["ft_seed"]), r["domain"])
            out.setdefault(key, {})[(r["round"], r["source"], r["target"])] = r
    return out


@dataclass
class Comparison:
    """One paired comparison (backbone a vs b, one seed, one pair category)."""

    a: str
    b: str
    seed: int | str
    category: str
    d: np.ndarray  # per usable pair, log(rms_a / rms_b)
    pairs: list = field(default_factory=list)
    stalled_a: int = 0
    stalled_b: int = 0
    total: int = 0

    @property
    def n(self) -> int:
        return int(self.d.size)

    def interval(self) -> tuple[float, float]:
        return bootstrap_interval(self.d, np.mean, seed=0) if self.n >= 2 else (math.nan, math.nan)

    def mean(self) -> float:
        return float(self.d.mean()) if self.n else math.nan

    def sign(self) -> int:
        """-1 / +1 when the interval lies wholly below / above 0, else 0."""
        lo, hi = self.interval()
        return -1 if hi < 0 else 1 if lo > 0 else 0

    def row(self) -> dict[str, Any]:
        lo, hi = self.interval()
        return {"backbone": self.a, "vs": self.b, "pairs": self.category, "seed": self.seed, "n": self.n,
                "stalled_a": self.stalled_a, "stalled_b": self.stalled_b, "of_pairs": self.total,
                "sources": len({k[1] for k in self.pairs}), "targets": len({k[2] for k in self.pairs}),
                "ratio": math.exp(self.mean()) if self.n else None, "ratio_lo": math.exp(lo) if self.n >= 2 else None,
                "ratio_hi": math.exp(hi) if self.n >= 2 else None, "mean_log_ratio": self.mean() if self.n else None}


def compare(index: Mapping[tuple[str, int, str], Mapping[tuple, Mapping]], a: str, b: str, seed: int,
            domain: str) -> list[Comparison]:
    """The paired comparisons of a vs b at one seed on one domain, one per pair category."""
    ra, rb = index.get((a, seed, domain), {}), index.get((b, seed, domain), {})
    out: dict[str, Comparison] = {}
    for key in sorted(set(ra) & set(rb)):
        x, y = ra[key], rb[key]
        cat = pair_category(domain, x, y)
        c = out.setdefault(cat, Comparison(a, b, seed, cat, np.empty(0)))
        c.total += 1
        sa, sb = stalled(x), stalled(y)
        c.stalled_a += sa
        c.stalled_b += sb
        if not (sa or sb):
            c.d = np.append(c.d, math.log(x["rms_l2"] / y["rms_l2"]))
            c.pairs.append(key)
    return [out[k] for k in sorted(out)]


def verdict(comparisons: Sequence[Comparison], a: str, b: str, seeds: Sequence[int],
            domains: Sequence[str] = VERDICT_DOMAINS, min_pairs: int = MIN_PAIRS) -> tuple[str, str]:
    """(outcome, sentence) for a vs b under RULE: outcome is a, b or 'inconclusive'."""
    found = {(c.category, c.seed): c for c in comparisons if c.a == a and c.b == b}
    parts, signs, missing = [], [], []
    for dom in domains:
        for s in seeds:
            c = found.get((dom, s))
            if c is None or c.n < min_pairs:
                missing.append(f"{dom} seed {s}: {0 if c is None else c.n} usable pairs")
                continue
            lo, hi = c.interval()
            parts.append(f"{dom} seed {s}: {math.exp(c.mean()):.3g}x [{math.exp(lo):.3g}, {math.exp(hi):.3g}]")
            signs.append(c.sign())
    detail = "; ".join(parts + [f"too few ({m})" for m in missing])
    if not missing and signs and all(s == -1 for s in signs):
        return a, f"{a} is more under-sensitive than {b} (RMS-l2 left, {a} / {b}: {detail})."
    if not missing and signs and all(s == 1 for s in signs):
        return b, f"{b} is more under-sensitive than {a} (RMS-l2 left, {a} / {b}: {detail})."
    why = "too few usable pairs" if missing else "the intervals do not all exclude 1 on the same side"
    return "inconclusive", f"{a} vs {b}: inconclusive ({why}; RMS-l2 left, {a} / {b}: {detail})."
