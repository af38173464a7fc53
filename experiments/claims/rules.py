"""The LST paper's claims as rules fixed before the numbers, decided per model, per group and overall with
`blindspots.verdicts`, and the findings text generated from the results (`claims.json`), never written by hand.

Claims (delta: the run's LST threshold):
1. `outputs_look_like_target`: per model, the mean SSIM(output, target) over pairs lies above `SSIM_FLOOR`; the
   interval resamples images (a pair is tied to its source and its target, one pool of images).
2. `paths_star_like`: per model, the share of sources whose source edges stay >= p_src - delta lies above
   `STAR_FLOOR` (Wilson over sources).
3. `at_hull_larger`: per architecture, the paired per-source difference AT - normal of the hull fraction with
   p >= p_src - delta lies above 0, equivalent when inside +- `HULL_MARGIN` (resampling sources); at the paper's
   settings and (`at_hull_larger_matched`) with both models' outputs taken at the same RMS-l2 to their targets.
"Every pair keeps p >= p0 - delta" holds by construction of LST's acceptance rule: it is a validity check of the run
(`check_threshold` raises), not part of a verdict.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from blindspots import verdicts as vd

__all__ = ["SSIM_FLOOR", "STAR_FLOOR", "HULL_MARGIN", "THRESHOLD_TOL", "EDGE_TOL", "RULES", "TITLES", "UNITS",
           "CONSTANTS", "RunInvalid", "check_threshold", "power_lines", "evaluate_claims", "claims_table",
           "triangle_table", "findings", "render_markdown"]

SSIM_FLOOR = 0.9  # claim 1: "looks like the target"
STAR_FLOOR = 0.9  # claim 2: share of star-like sources
HULL_MARGIN = 0.02  # claim 3: |AT - normal| below 2 points of the hull fraction is no difference (the paper's
#                     contrast is tens of points: "most of the hull" vs "near zero")
THRESHOLD_TOL = 1e-6  # validity: p0 - p_final may exceed delta by float32 rounding of the stored confidences
EDGE_TOL = 1e-5  # claim 2: a source edge at p_src - delta - 1e-5 still counts as within delta (float rounding)

RULES = {
    "outputs_look_like_target": vd.Rule("mean SSIM(output, target) > %g" % SSIM_FLOOR, SSIM_FLOOR),
    "paths_star_like": vd.Rule("share of star-like sources > %g" % STAR_FLOOR, STAR_FLOOR, interval="proportion"),
    "at_hull_larger": vd.Rule("AT - normal hull fraction > 0", 0.0, margin=HULL_MARGIN),
    "at_hull_larger_matched": vd.Rule("AT - normal hull fraction > 0 at matched distance", 0.0, margin=HULL_MARGIN),
}
TITLES = {
    "outputs_look_like_target": "1. LST outputs look like their targets (SSIM > %g)" % SSIM_FLOOR,
    "paths_star_like": "2. straight paths from the source stay confident (star-like)",
    "at_hull_larger": "3. AT models keep more of the triangle hull confident (paper settings)",
    "at_hull_larger_matched": "3'. the same, outputs at matched distance to their targets",
}
CONSTANTS = {"SSIM_FLOOR": SSIM_FLOOR, "STAR_FLOOR": STAR_FLOOR, "HULL_MARGIN": HULL_MARGIN,
             "THRESHOLD_TOL": THRESHOLD_TOL, "EDGE_TOL": EDGE_TOL, "MIN_UNITS": vd.MIN_UNITS, "LEVEL": vd.LEVEL,
             "RESAMPLES": vd.RESAMPLES}


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
    decide at the pool's size. `units`: model (or models' label) -> pool size."""
    out = []
    for who, n in units.items():
        for claim in claims:
            msg = RULES[claim].power_check(n, UNITS[claim])
            if msg:
                out.append(f"{group} ({who}): {claim}: {msg}")
    return out


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
        est = vd.unit_interval([r["ssim_paper"] for r in recs],
                               {"source": [r["source"] for r in recs], "target": [r["target"] for r in recs]},
                               pools={"source": "image", "target": "image"}, seed=seed)
        verdict = vd.decide(est, RULES["outputs_look_like_target"])
        rows.append(_row(group, model, "mean SSIM(output, target)", est, verdict))
    return rows


def _star_rows(group, records, delta):
    rows = []
    for model, recs in _by_model(records, "hull").items():
        ok = [r["edge_min"] >= -delta - EDGE_TOL for r in recs]
        est = vd.proportion_interval(sum(ok), len(ok), unit="source")
        rows.append(_row(group, model, "share of star-like sources", est, vd.decide(est, RULES["paths_star_like"])))
    return rows


def _hull_rows(group, records, at_pairs, delta, seed, claim, setting):
    field = f"fraction@{delta:g}"
    hull = {m: {r["source"]: r for r in recs} for m, recs in _by_model(records, "hull").items()}
    lst = _by_model(records, "lst")
    rows = []
    for arch, normal, at in at_pairs:
        if normal not in hull or at not in hull:
            continue
        common = sorted(set(hull[normal]) & set(hull[at]))
        est = vd.paired_interval([hull[at][s][field] for s in common], [hull[normal][s][field] for s in common],
                                 {"source": common}, seed=seed)
        sizes = {f"{m}_{k}": float(np.mean([hull[m][s][k] for s in common])) for m in (normal, at)
                 for k in ("side_source", "side_outputs") if all(k in hull[m][s] for s in common)}
        left = {f"{m}_rms_to_target": float(np.mean([r["rms_l2"] for r in lst.get(m, [])])) for m in (normal, at)
                if lst.get(m)}
        rows.append(_row(group, f"{arch}: {at} - {normal}", f"hull fraction p >= p_src - {delta:g}", est,
                         vd.decide(est, RULES[claim]), setting=setting,
                         normal=float(np.mean([hull[normal][s][field] for s in common])),
                         at=float(np.mean([hull[at][s][field] for s in common])), **sizes, **left))
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
        per_group = {g: vd.combine({r["model"]: r["outcome"] for r in rs if r["group"] == g}) for g in groups}
        overall = vd.combine(per_group)
        claims.append({"claim": claim, "title": TITLES[claim], "rule": RULES[claim].describe(), "rows": rs,
                       "groups": {g: {"outcome": v.outcome, "reason": v.reason} for g, v in per_group.items()},
                       "overall": {"outcome": overall.outcome, "reason": overall.reason}})
    return claims


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3g}"


def _units(u: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in u.items())


def claims_table(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One display row per (claim, group, model): value, 95% interval, n and distinct units, outcome."""
    return [{"claim": c["claim"], "group": r["group"], "model": r["model"], "measure": r["measure"],
             "value": _fmt(r["value"]), "95% interval": f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
             "n (units)": f"{r['n']} ({_units(r['units'])})", "outcome": r["outcome"]}
            for c in claims for r in c["rows"]]


def triangle_table(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Claim 3's triangles per (normal, AT) pair and setting: each model's mean RMS-l2 left to the target and mean
    sides source-output and output-output (RMS-l2), beside the confident fractions compared."""
    out = []
    for c in claims:
        for r in c["rows"]:
            if "setting" not in r:
                continue
            at, normal = r["model"].split(": ", 1)[1].split(" - ")
            for m, frac in ((normal, r["normal"]), (at, r["at"])):
                out.append({"pair": r["model"].split(":")[0], "setting": r["setting"], "model": m,
                            "RMS-l2 to target": _fmt(r.get(f"{m}_rms_to_target")),
                            "side source-output": _fmt(r.get(f"{m}_side_source")),
                            "side output-output": _fmt(r.get(f"{m}_side_outputs")),
                            "confident hull fraction": _fmt(frac)})
    return out


def findings(data: Mapping[str, Any]) -> list[str]:
    """One sentence per claim, saying exactly what its rule decided (overall, per group, and why)."""
    out = []
    for c in data["claims"]:
        groups = " | ".join(f"{g}: {v['outcome']}, {v['reason']}" for g, v in c["groups"].items())
        out.append(f"{c['title']}: **{c['overall']['outcome']}**, {c['overall']['reason']}. Per group: {groups}.")
    return out


def _validity_line(valid: Mapping[str, Any]) -> str:
    """The threshold check, with the pairs whose noisy start already lay outside the level set counted beside it
    (kept in every analysis)."""
    n, out = valid["pairs"], valid.get("start_outside", 0)
    line = (f"Validity: all {n - out} of {n} LST outputs (paper settings and matched distance) whose noisy start lay "
            f"inside the level set kept p0 - p < delta = {valid['delta']:g} (checked, not a verdict).")
    if out:
        line += (f" {out} noisy starts already lay outside it (kept in every analysis, as the published code keeps "
                 f"them; {valid['start_outside_ended_outside']} of them ended outside).")
    return line


def render_markdown(data: Mapping[str, Any]) -> str:
    """The docs' block (docs/studies.md): the table of `claims_table`, the constants, the validity check and the
    findings."""
    head = "| claim | group | model | measure | value | 95% interval | n (units) | outcome |\n|" + "---|" * 8 + "\n"
    body = "".join("| " + " | ".join(r.values()) + " |\n" for r in claims_table(data["claims"]))
    consts = ", ".join(f"{k} = {v:g}" for k, v in data["constants"].items())
    valid = data["validity"]
    power = " Said before running: " + "; ".join(data["power"]) + "." if data.get("power") else ""
    tri = triangle_table(data["claims"])
    tri_md = ("Claim 3's triangles (means over sources; RMS-l2):\n\n| " + " | ".join(tri[0]) + " |\n|" +
              "---|" * len(tri[0]) + "\n" + "".join("| " + " | ".join(r.values()) + " |\n" for r in tri)) if tri else ""
    lines = [head + body, tri_md, f"Constants fixed before the numbers: {consts}.", "",
             _validity_line(valid) + power, ""]
    lines += [f"- {s}" for s in findings(data)]
    return "\n".join(lines) + "\n"
