"""The paired comparison and its verdict rule, on `blindspots.verdicts`. Every backbone walks the same (round, source,
target) pairs from the same start noise, so each pair gives one number per comparison:
d = log(RMS-l2 left to the target by A / by B). d < 0: A lets the image get closer to the other galaxy while keeping
its class, i.e. A is more under-sensitive.

Every pair is in the analysis: a traversal that stalls (the model refuses to let the image move) has a distance
left, and that distance is the effect under study. Stall rates are reported beside d, per backbone, with an exact
McNemar test of the paired stall flags (Holm-adjusted over the backbones compared with ImageNet). Intervals
resample the independent unit with every pair that involves it (`verdicts.unit_interval`: sources and targets
drawn from one pool): simulated images, real hosts (a host's plain and clumpy versions are one unit) or real
cutouts. Each arm's verdict pools the fine-tuning seeds as a random effect (`Arm`, on
`verdicts.seed_pooled_rows`); each seed's own interval (`Comparison`) is description. See `RULE` for the verdict
rule; `MIN_PROGRESS`, `EQUIVALENCE_MARGIN`, `FAMILY_LEVEL`, `MIN_SEEDS` and `verdicts.MIN_UNITS` are fixed before the
numbers and printed in the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from blindspots import verdicts as vd

__all__ = ["RULE", "MIN_SEEDS", "Arm", "arms", "verdict_of", "power_text",
           "MIN_PROGRESS", "EQUIVALENCE_MARGIN", "FAMILY_LEVEL", "VERDICT_ARMS", "UNITS", "stalled",
           "pair_category", "Comparison", "compare", "verdict", "interval_level", "stall_tests", "index_records",
           "OUTCOME_WORDS", "CELL_WORDS", "CLAIM", "unit_estimate"]

MIN_PROGRESS = 0.05  # a traversal that covers less than 5% of its start distance to its target has stalled
EQUIVALENCE_MARGIN = math.log(1.10)  # |mean d| below log 1.1 (RMS-l2 ratios within 1/1.1 - 1.1): no practical gap
FAMILY_LEVEL = 0.95  # family-wise level over the backbones compared with ImageNet (Bonferroni-adjusted intervals)
VERDICT_ARMS = ("sim", "real injected")  # the pair categories that enter the verdict, at every fine-tuning seed
UNITS = {"sim": "image", "real injected": "host"}  # the independent unit per category (others: the real cutout)
CLAIM = "the backbone is more under-sensitive than ImageNet (mean d < 0)"
RULE_OBJ = vd.Rule(CLAIM, bound=0.0, direction="below", margin=EQUIVALENCE_MARGIN)
MIN_SEEDS = 2  # the seed-pooled interval needs at least two fine-tuning seeds per arm
RULE = ("Verdict rule (fixed before the numbers): for every pair d = log(RMS-l2 left to the target by the backbone "
        "/ by ImageNet), same pair, same start noise, same fine-tuning seed; every pair counts, stalled ones too (a "
        f"traversal has stalled when it covers less than {MIN_PROGRESS:.0%} of its start distance or loses the "
        "source class; stall rates are reported beside, with an exact McNemar test). One rule per arm (simulated "
        "images; real hosts with injected clumps, a host's plain and clumpy versions being one unit), the "
        "fine-tuning seed a random effect: D = the mean over the seeds of each seed's mean d; one bootstrap "
        "multiplicity vector over the arm's units per replicate, applied to every seed (the seeds share the "
        "units; a pair weighs the product of its two units' multiplicities; a replicate that leaves a seed no "
        "pair is redrawn), gives the covariance C of the per-seed means (x G/(G-1) for G units); V = 1'C1/S^2 + "
        "s^2/S with s^2 the spread of the S per-seed means; a t interval with Satterthwaite degrees of freedom, "
        f"at the level that keeps the family of backbones compared with ImageNet at {FAMILY_LEVEL:.0%} "
        "(Bonferroni). The reported ratio is exp(D), the geometric mean of the per-pair ratios. A seed enters an "
        "arm only when both backbones reach the accuracy floor at that seed (simulated test set; for the real arm "
        "the injected real hosts too); a seed below it is dropped from that arm alone and reported. An arm is "
        f"underpowered below {vd.MIN_UNITS} distinct units or {MIN_SEEDS} seeds, equivalent when its interval "
        "lies inside +-log 1.1, and otherwise says more / less under-sensitive when its interval lies wholly "
        "below / above 0, or inconclusive (then with its power at the observed effect and the units that 80% "
        "power needs). The verdict needs both arms: an arm not evaluated or underpowered makes the verdict so; "
        "else it is the arms' common outcome, 'mixed' when they contradict each other and 'inconclusive' "
        "otherwise. Each seed's own interval is reported as description and decides nothing; real cutouts paired "
        "by predicted class are reported apart and do not enter the verdict.")
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
    """`verdicts.unit_interval` of the mean d over units, sources and targets drawn from one pool of units, with
    enough replicates that each tail keeps `verdicts.TAIL_REPLICATES` at the family level expanded for the units.
    A replicate that draws no pair with both its units (possible with ~12 hosts) counts as the estimate and is
    noted; above `verdicts.MAX_EMPTY` of them (a design with two or three targets) there is no interval."""
    units = len(set(source_units) | set(target_units))
    return vd.unit_interval(d, {"source": list(source_units), "target": list(target_units)},
                            pools={"source": unit, "target": unit}, level=level,
                            resamples=vd.resamples_for(level, units))


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


@dataclass
class Arm:
    """One arm of a verdict: backbone a vs b on one pair category, pooled over the fine-tuning seeds that pass the
    accuracy floors (`comparisons`, one per seed); `dropped`: seed -> why it is left out; `gate`: why the whole arm
    cannot be evaluated (None: it can)."""

    a: str
    b: str
    category: str
    comparisons: list[Comparison]
    dropped: dict[str, str] = field(default_factory=dict)
    gate: str | None = None
    level: float = FAMILY_LEVEL

    @property
    def seeds(self) -> list:
        return [c.seed for c in self.comparisons]

    @property
    def unit(self) -> str:
        return UNITS.get(self.category, "cutout")

    @property
    def n(self) -> int:
        return sum(c.n for c in self.comparisons)

    @cached_property
    def estimate(self) -> vd.SeedPooledEstimate | None:
        """Mean over seeds of each seed's mean d, seeds as a random effect, units shared by the seeds (None below
        `MIN_SEEDS` seeds or without pairs)."""
        if self.gate or len(self.comparisons) < MIN_SEEDS or not all(c.n for c in self.comparisons):
            return None
        d = np.concatenate([c.d for c in self.comparisons])
        seeds = [c.seed for c in self.comparisons for _ in range(c.n)]
        src = [u for c in self.comparisons for u in c.source_units]
        tgt = [u for c in self.comparisons for u in c.target_units]
        return vd.seed_pooled_rows(d, seeds, {"source": src, "target": tgt},
                                   pools={"source": self.unit, "target": self.unit}, level=self.level, scale="log")

    def units(self) -> int:
        e = self.estimate
        if e is not None:
            return e.pools.get(self.unit, 0)
        return len({u for c in self.comparisons for u in c.source_units + c.target_units})

    def decide(self) -> vd.Verdict:
        if self.gate:
            return vd.Verdict(vd.NOT_EVALUATED, self.gate)
        if not self.comparisons:
            return vd.Verdict(vd.NOT_EVALUATED, "no seed with pairs")
        if len(self.comparisons) < MIN_SEEDS:
            return vd.Verdict(vd.UNDERPOWERED, f"{vd.UNDERPOWERED}: needs >= {MIN_SEEDS} fine-tuning seeds (has "
                                               f"{len(self.comparisons)})")
        return vd.decide(self.estimate, RULE_OBJ)

    def _dropped_text(self) -> str:
        return "; ".join(f"seed {s} dropped: {why}" for s, why in self.dropped.items())

    @cached_property
    def power(self) -> dict[str, Any]:
        """At the observed effect: the chance that the rule decides its side of 0 at these units and seeds (0
        below the rule's fewest units), the units (at least the rule's fewest) and, when units alone cannot, the
        seeds that `verdicts.POWER` needs."""
        e = self.estimate
        if e is None or not e.has_interval:
            return {"power": None, "units_needed": None, "seeds_needed": None}
        units = vd.seed_pooled_needs(e)
        floor = RULE_OBJ.min_units
        return {"power": vd.seed_pooled_power(e) if self.units() >= floor else 0.0,
                "units_needed": None if units is None else max(units, floor),
                "seeds_needed": None if units is not None else vd.seed_pooled_needs(e, vary="seeds", most=1000)}

    def row(self) -> dict[str, Any]:
        e, v = self.estimate, self.decide()
        ok = e is not None and e.has_interval
        ratio, lo, hi = e.ratio() if ok else (math.exp(e.value) if e is not None else None, None, None)
        return {"backbone": self.a, "vs": self.b, "pairs": self.category, "seeds": list(self.seeds),
                "dropped": dict(self.dropped), "n": self.n, "unit": self.unit, "units": self.units(),
                "level": self.level, "ratio": ratio, "ratio_lo": lo, "ratio_hi": hi,
                "statistic": "geometric mean of the per-pair ratios (exp of the mean over seeds of the mean d)",
                "mean_log_ratio": e.value if e is not None else None, "se": e.se if ok else None,
                "df": e.df if ok else None, "seed_ratios": {str(s): math.exp(x) for s, x in
                                                            zip(self.seeds, e.seed_values)} if e else {},
                "interval_note": e.note if e is not None else "", "outcome": v.outcome,
                "words": CELL_WORDS[v.outcome], "reason": v.reason, "power_level": vd.POWER, **self.power}

    def text(self) -> str:
        """'sim (96 images, 3 seeds, 576 pairs): geometric mean ratio 0.74x [0.6, 0.9], more under-sensitive'."""
        v, r = self.decide(), self.row()
        size = f"{r['units']} {self.unit}s, {len(self.seeds)} seed{'s' * (len(self.seeds) != 1)}, {self.n} pairs"
        why = f" ({v.reason})" if v.outcome in (vd.UNDERPOWERED, vd.NOT_EVALUATED) else ""
        if r["ratio_lo"] is None:
            head = f"{self.category} ({size}): {CELL_WORDS[v.outcome]}{why}"
        else:
            head = (f"{self.category} ({size}): geometric mean ratio {r['ratio']:.3g}x [{r['ratio_lo']:.3g}, "
                    f"{r['ratio_hi']:.3g}], {CELL_WORDS[v.outcome]}{why}")
        if v.outcome in (vd.INCONCLUSIVE, vd.UNDERPOWERED) and r["power"] is not None:
            head += f"; {power_text(r, self.unit)}"
        if self.dropped:
            head += f"; {self._dropped_text()}"
        return head


def power_text(row: Mapping[str, Any], unit: str) -> str:
    """'power 0.31 at the observed 0.86x; 80% power needs 120 hosts at 3 seeds' (from an `Arm.row`)."""
    seeds = len(row["seeds"])
    text = f"power {row['power']:.2f} at the observed {row['ratio']:.3g}x; {row['power_level']:.0%} power needs "
    if row["units_needed"] is not None:
        return text + f"{row['units_needed']} {unit}s at {seeds} seeds"
    if row["seeds_needed"] is not None:
        return text + f"{row['seeds_needed']} seeds at {row['units']} {unit}s (more {unit}s alone cannot)"
    return text + f"more {unit}s and more seeds together (neither alone reaches it)"


def arms(comparisons: Sequence[Comparison], a: str, b: str, seeds: Sequence[int],
         not_evaluated: Mapping[str, str] | None = None, categories: Sequence[str] = VERDICT_ARMS) -> list[Arm]:
    """a vs b per arm. `not_evaluated`: '<arm> seed <s>' -> why that seed is dropped from the arm (an accuracy
    floor), '<arm>' or 'all' -> why the arm cannot be evaluated at all."""
    gates = dict(not_evaluated or {})
    found = {(c.category, c.seed): c for c in comparisons if c.a == a and c.b == b}
    out = []
    for cat in categories:
        level = next((c.level for c in comparisons if c.a == a and c.category == cat), FAMILY_LEVEL)
        kept, dropped = [], {}
        for s in seeds:
            why = gates.get(f"{cat} seed {s}") or gates.get(f"all seed {s}")
            if why:
                dropped[str(s)] = why
            elif (cat, s) in found and found[(cat, s)].n:
                kept.append(found[(cat, s)])
            else:
                dropped[str(s)] = "no pairs"
        out.append(Arm(a, b, cat, kept, dropped, gates.get(cat) or gates.get("all"), level))
    return out


def verdict(comparisons: Sequence[Comparison], a: str, b: str, seeds: Sequence[int],
            not_evaluated: Mapping[str, str] | None = None, arms_: Sequence[str] = VERDICT_ARMS) -> vd.Verdict:
    """a vs b under RULE, one seed-pooled rule per arm (`arms`). The Verdict's `parts` hold each arm's outcome;
    its reason is the sentence, arm by arm."""
    return verdict_of(arms(comparisons, a, b, seeds, not_evaluated, arms_))


def verdict_of(found: Sequence[Arm]) -> vd.Verdict:
    """The verdict over arms already built (see `verdict`)."""
    a, b = found[0].a, found[0].b
    cells = {arm.category: arm.decide() for arm in found}
    outcomes = {k: v.outcome for k, v in cells.items()}
    blocked = [o for o in (vd.NOT_EVALUATED, vd.UNDERPOWERED) if o in outcomes.values()]
    outcome = blocked[0] if blocked else vd.combine(cells).outcome
    if outcome == vd.HOLDS:
        head = f"{a} is more under-sensitive than {b} in every arm"
    elif outcome == vd.DOES_NOT_HOLD:
        head = f"{b} is more under-sensitive than {a} in every arm"
    elif outcome == vd.EQUIVALENT:
        head = f"{a} and {b} are equivalent within the margin in every arm"
    else:
        head = f"{a} vs {b}: {OUTCOME_WORDS[outcome]}"
    detail = "; ".join(arm.text() for arm in found)
    return vd.Verdict(outcome, f"{head}. RMS-l2 left, {a} / {b}, seeds pooled: {detail}.", None, outcomes)


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
