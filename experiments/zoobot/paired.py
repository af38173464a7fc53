"""The paired comparison and its verdict rule, on `blindspots.verdicts`. Every backbone walks the same (round, source,
target) pairs from the same start noise, so each pair gives one number per comparison:
d = log(RMS-l2 left to the target by A / by B). d < 0: A lets the image get closer to the other galaxy while keeping
its class, i.e. A is more under-sensitive.

Every pair is in the analysis: a traversal that stalls (the model refuses to let the image move) has a distance
left, and that distance is the effect under study. Stall rates are reported beside d, per backbone, with an exact
McNemar test of the paired stall flags (Holm-adjusted over the backbones compared with ImageNet). Intervals
resample the independent unit with every pair that involves it (`verdicts.unit_interval`: sources and targets
drawn from one pool): simulated images, real hosts (a host's plain and clumpy versions are one unit) or real
cutouts. See `RULE` for the verdict rule; `MIN_PROGRESS`, `EQUIVALENCE_MARGIN`, `FAMILY_LEVEL` and
`verdicts.MIN_UNITS` are fixed before the numbers and printed in the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from blindspots import verdicts as vd

__all__ = ["RULE", "MIN_PROGRESS", "EQUIVALENCE_MARGIN", "FAMILY_LEVEL", "VERDICT_ARMS", "UNITS", "stalled",
           "pair_category", "Comparison", "compare", "verdict", "interval_level", "stall_tests", "index_records",
           "OUTCOME_WORDS", "CELL_WORDS", "CLAIM", "unit_estimate"]

MIN_PROGRESS = 0.05  # a traversal that covers less than 5% of its start distance to its target has stalled
EQUIVALENCE_MARGIN = math.log(1.10)  # |mean d| below log 1.1 (RMS-l2 ratios within 1/1.1 - 1.1): no practical gap
FAMILY_LEVEL = 0.95  # family-wise level over the backbones compared with ImageNet (Bonferroni-adjusted intervals)
VERDICT_ARMS = ("sim", "real injected")  # the pair categories that enter the verdict, at every fine-tuning seed
UNITS = {"sim": "image", "real injected": "host"}  # the independent unit per category (others: the real cutout)
CLAIM = "the backbone is more under-sensitive than ImageNet (mean d < 0)"
RULE_OBJ = vd.Rule(CLAIM, bound=0.0, direction="below", margin=EQUIVALENCE_MARGIN)
RULE = ("Verdict rule (fixed before the numbers): for every pair d = log(RMS-l2 left to the target by the backbone "
        "/ by ImageNet), same pair, same start noise; every pair counts, stalled ones too (a traversal has stalled "
        f"when it covers less than {MIN_PROGRESS:.0%} of its start distance or loses the source class; stall rates "
        "are reported beside, with an exact McNemar test). Per pair category and fine-tuning seed, the mean d gets a "
        "BCa bootstrap interval that resamples the independent unit with every pair involving it (simulated "
        "images; real hosts, a host's plain and clumpy versions being one unit; a draw in which a replicate holds "
        "no pair is redrawn), at the level that keeps the "
        f"family of backbones compared with ImageNet at {FAMILY_LEVEL:.0%} (Bonferroni). A cell is underpowered "
        f"below {vd.MIN_UNITS} distinct units, equivalent when its interval lies inside +-log 1.1, and otherwise "
        "says more / less under-sensitive when its interval lies wholly below / above 0, or inconclusive. The "
        "verdict needs the simulated pairs AND the real hosts with injected clumps at EVERY seed, with both "
        "backbones at or above the accuracy floor on the simulated test set and on the injected real hosts: a cell "
        "not evaluated or underpowered makes the verdict so; else it is the cells' common outcome, 'mixed' when "
        "they contradict each other and 'inconclusive' otherwise. Real cutouts paired by predicted class are "
        "reported apart and do not enter it.")
OUTCOME_WORDS = {vd.HOLDS: "more under-sensitive than ImageNet", vd.DOES_NOT_HOLD: "less under-sensitive than ImageNet",
                 vd.EQUIVALENT: "equivalent to ImageNet (within the margin)", vd.INCONCLUSIVE: "inconclusive",
                 vd.MIXED: "mixed (the cells contradict each other)", vd.UNDERPOWERED: "underpowered",
                 vd.NOT_EVALUATED: "not evaluated"}
CELL_WORDS = {vd.HOLDS: "more under-sensitive", vd.DOES_NOT_HOLD: "less under-sensitive",
              vd.EQUIVALENT: "equivalent", vd.INCONCLUSIVE: "inconclusive", vd.UNDERPOWERED: "underpowered",
              vd.NOT_EVALUATED: "not evaluated"}  # one cell's outcome for the backbone, in words


def stalled(rec: Mapping[str, Any], min_progress: float = MIN_PROGRESS) -> bool:
    """No progress (RMS-l2 left > (1 - min_progress) x the start distance) or the source class lost at the end."""
    return (rec["rms_l2"] > (1 - min_progress) * rec["start_rms_l2"]) or not rec.get("kept_class", True)


def pair_category(domain: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """'sim', 'real injected', 'real cross-class' (both backbones predict source and target in different classes),
    'real within-class' (both predict one class) or 'real mixed' (the two backbones disagree)."""
    if domain != "real":
        return {"injected": "real injected"}.get(domain, domain)
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


def interval_level(family: int) -> float:
    """The level of each backbone's intervals so that `family` backbones keep the family-wise FAMILY_LEVEL."""
    return 1 - (1 - FAMILY_LEVEL) / max(1, family)


@dataclass
class Comparison:
    """One paired comparison (backbone a vs b, one seed, one pair category): every pair's d, its units and the
    stall flags of both backbones."""

    a: str
    b: str
    seed: int | str
    category: str
    d: np.ndarray
    pairs: list = field(default_factory=list)
    source_units: list = field(default_factory=list)
    target_units: list = field(default_factory=list)
    stalled_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    stalled_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    level: float = FAMILY_LEVEL

    @property
    def n(self) -> int:
        return int(self.d.size)

    @property
    def unit(self) -> str:
        return UNITS.get(self.category, "cutout")

    @cached_property
    def estimate(self) -> vd.Estimate:
        """Mean d with its interval over units (sources and targets from one pool of units)."""
        return unit_estimate(self.d, self.source_units, self.target_units, self.unit, self.level)

    @cached_property
    def stalls(self) -> vd.McNemar:
        return vd.mcnemar_exact(self.stalled_a, self.stalled_b)

    def decide(self) -> vd.Verdict:
        return vd.decide(self.estimate, RULE_OBJ)

    def units(self) -> int:
        return self.estimate.pools.get(self.unit, 0)

    def row(self) -> dict[str, Any]:
        e, m = self.estimate, self.stalls
        ok = e.has_interval
        return {"backbone": self.a, "vs": self.b, "pairs": self.category, "seed": self.seed, "n": self.n,
                "unit": self.unit, "units": self.units(), "sources": e.units.get("source", 0),
                "targets": e.units.get("target", 0), "level": self.level,
                "ratio": math.exp(e.value) if self.n else None, "ratio_lo": math.exp(e.low) if ok else None,
                "ratio_hi": math.exp(e.high) if ok else None, "mean_log_ratio": e.value if self.n else None,
                "interval_note": e.note, "cell": self.decide().outcome,
                "cell_words": CELL_WORDS[self.decide().outcome],
                "stalled_a": int(self.stalled_a.sum()), "stalled_b": int(self.stalled_b.sum()),
                "stall_only_a": m.only_a, "stall_only_b": m.only_b, "stall_p": m.p_value}


def unit_estimate(d: np.ndarray, source_units: Sequence[Any], target_units: Sequence[Any], unit: str,
                  level: float) -> vd.Estimate:
    """`verdicts.unit_interval` of the mean d over units, sources and targets drawn from one pool of units. A
    replicate that draws no pair with both its units (possible with ~12 hosts) counts as the estimate and is noted;
    above `verdicts.MAX_EMPTY` of them (a design with two or three targets) there is no interval."""
    return vd.unit_interval(d, {"source": list(source_units), "target": list(target_units)},
                            pools={"source": unit, "target": unit}, level=level)


def compare(index: Mapping[tuple[str, int, str], Mapping[tuple, Mapping]], a: str, b: str, seed: int,
            domain: str, units: Sequence[Any] | None = None, level: float = FAMILY_LEVEL) -> list[Comparison]:
    """The paired comparisons of a vs b at one seed on one domain, one per pair category, every pair kept.
    `units[i]`: the independent unit of image i of the domain (default: the image itself)."""
    ra, rb = index.get((a, seed, domain), {}), index.get((b, seed, domain), {})
    out: dict[str, Comparison] = {}
    for key in sorted(set(ra) & set(rb)):
        x, y = ra[key], rb[key]
        cat = pair_category(domain, x, y)
        c = out.setdefault(cat, Comparison(a, b, seed, cat, np.empty(0), level=level))
        c.d = np.append(c.d, math.log(x["rms_l2"] / y["rms_l2"]))
        c.pairs.append(key)
        c.source_units.append(key[1] if units is None else units[key[1]])
        c.target_units.append(key[2] if units is None else units[key[2]])
        c.stalled_a = np.append(c.stalled_a, stalled(x))
        c.stalled_b = np.append(c.stalled_b, stalled(y))
    return [out[k] for k in sorted(out)]


def verdict(comparisons: Sequence[Comparison], a: str, b: str, seeds: Sequence[int],
            not_evaluated: Mapping[str, str] | None = None, arms: Sequence[str] = VERDICT_ARMS) -> vd.Verdict:
    """a vs b under RULE. `not_evaluated`: cell name ('sim seed 0', or 'all') -> why it cannot be evaluated (an
    accuracy gate). The Verdict's `parts` hold every cell's outcome; its reason is the sentence."""
    gates = dict(not_evaluated or {})
    found = {(c.category, c.seed): c for c in comparisons if c.a == a and c.b == b}
    cells: dict[str, vd.Verdict] = {}
    for arm in arms:
        for s in seeds:
            name = f"{arm} seed {s}"
            why = gates.get(name) or gates.get(arm) or gates.get("all")
            c = found.get((arm, s))
            if why or c is None:
                cells[name] = vd.Verdict(vd.NOT_EVALUATED, why or "no pairs")
            else:
                cells[name] = c.decide()
    outcomes = {k: v.outcome for k, v in cells.items()}
    blocked = [o for o in (vd.NOT_EVALUATED, vd.UNDERPOWERED) if o in outcomes.values()]
    if blocked:
        outcome = blocked[0]
        reasons = [v.reason for v in cells.values() if v.outcome == outcome]
        why = "; ".join(f"{', '.join(k for k, v in cells.items() if v.outcome == outcome and v.reason == r)}: {r}"
                        for r in dict.fromkeys(reasons))
    else:
        outcome = vd.combine(cells).outcome
        why = "; ".join(f"{CELL_WORDS[o]} at {', '.join(k for k, v in outcomes.items() if v == o)}"
                        for o in dict.fromkeys(outcomes.values()))
    detail = "; ".join(_cell_text(k, found.get(_key(k)), v) for k, v in cells.items()
                       if v.outcome != vd.NOT_EVALUATED)
    if outcome == vd.HOLDS:
        head = f"{a} is more under-sensitive than {b} at every cell"
    elif outcome == vd.DOES_NOT_HOLD:
        head = f"{b} is more under-sensitive than {a} at every cell"
    elif outcome == vd.EQUIVALENT:
        head = f"{a} and {b} are equivalent within the margin at every cell"
    else:
        head = f"{a} vs {b}: {OUTCOME_WORDS[outcome]} ({why})"
    tail = f". RMS-l2 left, {a} / {b}: {detail}" if detail else ""
    return vd.Verdict(outcome, f"{head}{tail}.", None, outcomes)


def _key(cell: str) -> tuple[str, int]:
    arm, _, seed = cell.rpartition(" seed ")
    return arm, int(seed)


def _cell_text(name: str, c: Comparison | None, v: vd.Verdict) -> str:
    if c is None or v.outcome == vd.NOT_EVALUATED:
        return f"{name}: {v.outcome} ({v.reason})"
    e = c.estimate
    ci = f"[{math.exp(e.low):.3g}, {math.exp(e.high):.3g}]" if e.has_interval else "[no interval]"
    return f"{name}: {math.exp(e.value):.3g}x {ci} ({c.n} pairs, {c.units()} {c.unit}s), {CELL_WORDS[v.outcome]}"


def stall_tests(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """Per pair category and seed: each backbone's stall rate beside ImageNet's on the same pairs, the exact
    McNemar p-value and its Holm adjustment over the backbones compared with ImageNet (the family)."""
    rows = []
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault((c.category, str(c.seed)), []).append(c)
    for (cat, seed), comps in groups.items():
        adjusted = vd.holm([c.stalls.p_value for c in comps])
        for c, p_adj in zip(comps, adjusted):
            m = c.stalls
            rows.append({"backbone": c.a, "vs": c.b, "pairs": cat, "seed": c.seed, "n": m.n,
                         "stall_rate": m.rate_a, "stall_rate_vs": m.rate_b, "only_backbone": m.only_a,
                         "only_vs": m.only_b, "mcnemar_p": m.p_value, "holm_p": float(p_adj),
                         "family": len(comps)})
    return rows
