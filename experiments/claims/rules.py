"""The LST paper's claims as rules fixed before the numbers, decided per model, per group and overall with
`blindspots.verdicts` (the findings text and the tables made from the results are in `experiments.claims.report`).

Claims (delta: the run's LST threshold):
1. `outputs_look_like_target`: per model, the mean SSIM(output, target) over pairs lies above `SSIM_FLOOR`; the
   interval resamples images (a pair is tied to its source and its target, one pool of images).
2. `paths_star_like`: per model, the share of sources whose source edges stay >= p_src - delta lies above
   `STAR_FLOOR` (Wilson over sources); the minimum-n gate blocks only the outcome the data cannot reach
   (`verdicts.decide_reachable`: 2 of 10 with its interval wholly below the floor does not hold).
3. `at_hull_larger`: per architecture, the paired per-source difference AT - normal of the hull fraction with
   p >= p_src - d lies above 0, equivalent when inside +- `HULL_MARGIN`, reported at every d of `CLAIM3_DELTAS` up
   to the run's delta and decided at the unsaturated ones (`saturated`: both models' mean fractions within
   `HULL_MARGIN` of 1, or of 0, where "equivalent" would only restate the ceiling); at the paper's settings and
   (`at_hull_larger_matched`) with both models' outputs taken at the same RMS-l2 to their targets. A source's
   fraction is a mean over its triangles (source, output a, output b), each tied to three images (the source and
   the two outputs' targets, one pool): the interval resamples images in all three roles (`hull_units`).
Bootstrap replicates scale with the level asked so that each tail keeps >= `verdicts.TAIL_REPLICATES`.
"Every pair keeps p >= p0 - delta" holds by construction of LST's acceptance rule: it is a validity check of the run
(`check_threshold` raises), not part of a verdict.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from blindspots import verdicts as vd
from blindspots.errors import InputError

__all__ = ["SSIM_FLOOR", "STAR_FLOOR", "HULL_MARGIN", "THRESHOLD_TOL", "EDGE_TOL", "CLAIM3_DELTAS", "RULES",
           "TITLES", "UNITS", "CONSTANTS", "RunInvalid", "rule_text", "saturated", "hull_units",
           "check_threshold", "power_lines", "evaluate_claims"]

SSIM_FLOOR = 0.9  # claim 1: "looks like the target"
STAR_FLOOR = 0.9  # claim 2: share of star-like sources
HULL_MARGIN = 0.02  # claim 3: |AT - normal| below 2 points of the hull fraction is no difference (the paper's
#                     contrast is tens of points: "most of the hull" vs "near zero")
THRESHOLD_TOL = 1e-6  # validity: p0 - p_final may exceed delta by float32 rounding of the stored confidences
EDGE_TOL = 1e-5  # claim 2: a source edge at p_src - delta - 1e-5 still counts as within delta (float rounding)
CLAIM3_DELTAS = (0.0, 0.1, 0.2)  # claim 3 is reported at these d (up to the run's delta, and at the run's delta)

RULES = {
    "outputs_look_like_target": vd.Rule("mean SSIM(output, target) > %g" % SSIM_FLOOR, SSIM_FLOOR),
    "paths_star_like": vd.Rule("share of star-like sources > %g" % STAR_FLOOR, STAR_FLOOR, interval="proportion"),
    "at_hull_larger": vd.Rule("AT - normal hull fraction > 0", 0.0, margin=HULL_MARGIN),
    "at_hull_larger_matched": vd.Rule("AT - normal hull fraction > 0 at matched distance", 0.0, margin=HULL_MARGIN),
}
TITLES = {
    "outputs_look_like_target": "1. LST outputs look like their targets (SSIM > %g)" % SSIM_FLOOR,
    "paths_star_like": "2. straight paths from the source stay confident (star-like)",
    "at_hull_larger": "3. AT models keep more of the triangle hull confident (paper settings; decided at the "
                      "unsaturated delta(s))",
    "at_hull_larger_matched": "3'. the same, outputs at matched distance to their targets",
}
CONSTANTS = {"SSIM_FLOOR": SSIM_FLOOR, "STAR_FLOOR": STAR_FLOOR, "HULL_MARGIN": HULL_MARGIN,
             "THRESHOLD_TOL": THRESHOLD_TOL, "EDGE_TOL": EDGE_TOL, "MIN_UNITS": vd.MIN_UNITS, "LEVEL": vd.LEVEL,
             "RESAMPLES": vd.RESAMPLES, "TAIL_REPLICATES": vd.TAIL_REPLICATES}


def rule_text(claim: str) -> str:
    """What the code decides for `claim`, in words (the report's and claims.json's rule text)."""
    rule = RULES[claim]
    if claim == "outputs_look_like_target":
        return (f"{rule.claim}: holds when the 95% BCa interval (images resampled as sources and targets, one pool; "
                f"level expanded for few images) lies wholly above {rule.bound:g}, does not hold when wholly below; "
                f"underpowered below n = {rule.min_units} images (coverage is shown from there)")
    if claim == "paths_star_like":
        holds = vd.wilson_side_needs(rule.bound, rule.level, "above")
        return (f"{rule.claim}: holds when the 95% Wilson interval over sources lies wholly above {rule.bound:g}, "
                f"does not hold when wholly below, whatever n; an interval that straddles {rule.bound:g} is "
                f"underpowered while n < {holds} sources (n / n cannot reach 'holds' below that), else inconclusive")
    return (f"{rule.claim}: per architecture and d in {', '.join(f'{d:g}' for d in CLAIM3_DELTAS)} (up to the "
            "run's delta): the 95% BCa interval of the mean paired difference, images resampled as source and as "
            "the two outputs' targets of each triangle (one pool; level expanded for few images); equivalent when "
            f"inside 0 +- {rule.margin:g} (checked first), holds / does not hold when wholly above / below 0, else "
            f"inconclusive; underpowered below n = {rule.min_units} images. A d at which both models' mean fractions "
            f"lie within {HULL_MARGIN:g} of 1 (or of 0) is saturated: reported, not decided (its 'equivalent' would "
            "restate the ceiling). The architecture's verdict combines the decided d (holds only when each holds).")


class RunInvalid(ValueError):
    """The run broke an invariant the engine guarantees: its records cannot carry any verdict."""


def check_threshold(records: Sequence[Mapping[str, Any]], delta: float) -> dict[str, Any]:
    """Every LST pair whose noisy start lay inside the level set must end with p0 - p < delta (+ THRESHOLD_TOL): the
    acceptance rule guarantees it, so a violation means a broken run (e.g. a model that changed between LST and the
    record), and raises RunInvalid. Pairs whose start already lay outside (`start_outside`, kept as the published code
    keeps them) stay in every analysis; they are counted here, with how many of them ended outside, beside it."""
    lst = [r for r in records if r.get("kind") == "lst"]
    outside = [r for r in lst if r.get("start_outside")]
    bad = [r for r in lst if not r.get("start_outside")
           and r["initial_confidence"] - r["final_confidence"] >= delta + THRESHOLD_TOL]
    if bad:
        r = bad[0]
        raise RunInvalid(f"run invalid: {len(bad)} of {len(lst)} LST pairs lost more than delta = {delta:g} of the "
                         f"source confidence, e.g. {r['model']} round {r['round']} source {r['source']}: "
                         f"{r['initial_confidence']:.4f} -> {r['final_confidence']:.4f}")
    ended_outside = sum(r["initial_confidence"] - r["final_confidence"] >= delta + THRESHOLD_TOL for r in outside)
    return {"pairs": len(lst), "violations": 0, "delta": delta, "tolerance": THRESHOLD_TOL,
            "start_outside": len(outside), "start_outside_ended_outside": ended_outside}


UNITS = {"outputs_look_like_target": "images", "paths_star_like": "sources", "at_hull_larger": "sources",
         "at_hull_larger_matched": "sources"}  # what each rule resamples (claim 1: images, sources and targets alike)


def power_lines(group: str, units: Mapping[str, int], claims: Sequence[str]) -> list[str]:
    """Before running: 'group (model): claim: underpowered: needs n >= k sources (has n)' per rule that cannot
    decide at the pool's size (a Wilson rule: 'underpowered for holds: ...', the outcome it cannot reach; an
    interval wholly on the other side still decides). `units`: model (or models' label) -> pool size."""
    out = []
    for who, n in units.items():
        for claim in claims:
            rule = RULES[claim]
            if rule.interval == "proportion":
                msg = "; ".join(f"{vd.UNDERPOWERED} for {o}: needs n >= {k} {UNITS[claim]} (has {n})"
                                for o, k in vd.unreachable(rule, n).items())
            else:
                msg = rule.power_check(n, UNITS[claim])
            if msg:
                out.append(f"{group} ({who}): {claim}: {msg}")
    return out


def saturated(normal: float, at: float, margin: float = HULL_MARGIN) -> str | None:
    """Why a d cannot show a difference beyond the margin ('both within 0.02 of the ceiling: ...'), or None."""
    for end, name in ((1.0, "ceiling"), (0.0, "floor")):
        if abs(normal - end) <= margin and abs(at - end) <= margin:
            return (f"saturated: both mean fractions within {margin:g} of the {name} (normal {normal:.4g}, AT "
                    f"{at:.4g}), so a difference beyond the margin cannot show; reported, not decided")
    return None


def hull_units(sources: Sequence[int], targets: Mapping[int, Sequence[int]]) -> tuple[np.ndarray, dict[str, list]]:
    """Claim 3's crossed design: each source's triangles (source, output a, output b), one row per triangle tied to
    the source and the two outputs' targets. Returns (row -> position in `sources`, role -> image per row); the
    source's fraction (a mean over its triangles) weighs in each replicate as its triangles do."""
    rows, units = [], {"source": [], "target a": [], "target b": []}
    for k, s in enumerate(sources):
        t = list(targets[s])
        for i in range(len(t)):
            for j in range(i + 1, len(t)):
                rows.append(k)
                units["source"].append(s)
                units["target a"].append(t[i])
                units["target b"].append(t[j])
    return np.asarray(rows, dtype=np.int64), units


def _targets(lst: Sequence[Mapping[str, Any]], model: str) -> dict[int, list[int]]:
    """source -> its LST targets in round order (the hull's outputs are in that order)."""
    by: dict[int, dict[int, int]] = {}
    for r in lst:
        by.setdefault(int(r["source"]), {})[int(r["round"])] = int(r["target"])
    return {s: [t[k] for k in sorted(t)] for s, t in by.items()}


def _by_model(records, kind):
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("kind") == kind:
            out.setdefault(r["model"], []).append(r)
    return out


def _row(group, model, measure, est: vd.Estimate, verdict: vd.Verdict, **extra) -> dict[str, Any]:
    return {"group": group, "model": model, "measure": measure, "value": est.value, "ci_low": est.low,
            "ci_high": est.high, "n": est.n, "units": est.units, "method": est.method, "outcome": verdict.outcome,
            "reason": verdict.reason, **extra}


def _ssim_rows(group, records, seed):
    rows = []
    for model, recs in _by_model(records, "lst").items():
        images = len({r["source"] for r in recs} | {r["target"] for r in recs})
        est = vd.unit_interval([r["ssim_paper"] for r in recs],
                               {"source": [r["source"] for r in recs], "target": [r["target"] for r in recs]},
                               pools={"source": "image", "target": "image"}, seed=seed,
                               resamples=vd.resamples_for(vd.LEVEL, images))
        verdict = vd.decide(est, RULES["outputs_look_like_target"])
        rows.append(_row(group, model, "mean SSIM(output, target)", est, verdict))
    return rows


def _star_rows(group, records, delta):
    rows = []
    for model, recs in _by_model(records, "hull").items():
        ok = [r["edge_min"] >= -delta - EDGE_TOL for r in recs]
        est = vd.proportion_interval(sum(ok), len(ok), unit="source")
        rows.append(_row(group, model, "share of star-like sources", est,
                         vd.decide_reachable(est, RULES["paths_star_like"])))
    return rows


def _hull_rows(group, records, at_pairs, delta, seed, claim, setting):
    hull = {m: {r["source"]: r for r in recs} for m, recs in _by_model(records, "hull").items()}
    lst = _by_model(records, "lst")
    deltas = [d for d in CLAIM3_DELTAS if d <= delta + 1e-12] + ([delta] if delta not in CLAIM3_DELTAS else [])
    rows = []
    for arch, normal, at in at_pairs:
        if normal not in hull or at not in hull:
            continue
        common = sorted(set(hull[normal]) & set(hull[at]))
        targets = _targets(lst.get(normal, []), normal)
        if _targets(lst.get(at, []), at) != targets or any(s not in targets for s in common):
            raise InputError(f"claim 3 ({arch}): the LST records must give both models' targets for every source "
                             "(the triangles' images)")
        index, units = hull_units(common, targets)
        images = len(set(units["source"]) | set(units["target a"]) | set(units["target b"]))
        sizes = {f"{m}_{k}": float(np.mean([hull[m][s][k] for s in common])) for m in (normal, at)
                 for k in ("side_source", "side_outputs") if all(k in hull[m][s] for s in common)}
        left = {f"{m}_rms_to_target": float(np.mean([r["rms_l2"] for r in lst.get(m, [])])) for m in (normal, at)
                if lst.get(m)}
        for d in deltas:
            field = f"fraction@{d:g}"
            if not all(field in hull[m][s] for m in (normal, at) for s in common):
                continue
            diff = np.array([hull[at][s][field] - hull[normal][s][field] for s in common])
            est = vd.unit_interval(diff[index], units, pools={r: "image" for r in units}, seed=seed,
                                   resamples=vd.resamples_for(vd.LEVEL, images))
            means = {k: float(np.mean([hull[m][s][field] for s in common])) for k, m in (("normal", normal),
                                                                                      ("at", at))}
            why = saturated(means["normal"], means["at"])
            verdict = vd.Verdict(vd.NOT_EVALUATED, why, est) if why else vd.decide(est, RULES[claim])
            rows.append(_row(group, f"{arch}: {at} - {normal}", f"hull fraction p >= p_src - {d:g}", est, verdict,
                             setting=setting, delta=d, part=f"{arch} at d = {d:g}", sources=len(common),
                             pools=dict(est.pools),
                             **means, **sizes, **left))
    return rows


def evaluate_claims(groups: Mapping[str, Sequence[Mapping[str, Any]]],
                    at_pairs: Mapping[str, Sequence[tuple[str, str, str]]], delta: float, seed: int = 0,
                    matched: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Every claim from the records of each group (`groups`: name -> records; `matched`: name -> records of the
    matched-distance runs): rows per model (architecture for 3), a verdict per group and an overall one."""
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in RULES}
    for g, recs in groups.items():
        rows["outputs_look_like_target"] += _ssim_rows(g, recs, seed)
        rows["paths_star_like"] += _star_rows(g, recs, delta)
        rows["at_hull_larger"] += _hull_rows(g, recs, at_pairs.get(g, ()), delta, seed, "at_hull_larger",
                                             "paper settings")
        if matched and g in matched:
            rows["at_hull_larger_matched"] += _hull_rows(g, matched[g], at_pairs.get(g, ()), delta, seed,
                                                         "at_hull_larger_matched", "matched distance")
    claims = []
    for claim, rs in rows.items():
        per_group = {g: vd.combine({r.get("part", r["model"]): r["outcome"] for r in rs if r["group"] == g})
                     for g in groups}
        overall = vd.combine(per_group)
        claims.append({"claim": claim, "title": TITLES[claim], "rule": rule_text(claim), "rows": rs,
                       "groups": {g: {"outcome": v.outcome, "reason": v.reason} for g, v in per_group.items()},
                       "overall": {"outcome": overall.outcome, "reason": overall.reason}})
    return claims
