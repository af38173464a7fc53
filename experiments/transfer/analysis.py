"""From the cells' per-image counts and the LST records to estimates and verdicts (`rules.RULES`), per body setting
and size, combined per setting and overall; and the learning-curve bands and the closing action table."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from blindspots import verdicts as vd

from . import rules as rl
from .config import GALAXY, TransferConfig

__all__ = ["analyse", "all_of", "BAND_RESAMPLES", "REFERENCE"]

REFERENCE = "imagenet"
BAND_RESAMPLES = 999  # the learning curves' bands (a figure, not a verdict): fewer replicates
METRICS = {  # name -> (image set, counts prefix, statistic)
    "f1": ("test", "chosen", lambda c, w: rl.f1(c, w)),
    "completeness": ("test", "chosen", lambda c, w: rl.completeness(c, w)),
    "completeness3": ("test", "chosen", lambda c, w: rl.completeness(c, w, "3")),
    "completeness8": ("test", "chosen", lambda c, w: rl.completeness(c, w, "8")),
    "purity": ("test", "chosen", lambda c, w: rl.purity(c, w)),
    "f1_paper": ("test", "paper", lambda c, w: rl.f1(c, w)),
    "completeness3_paper": ("test", "paper", lambda c, w: rl.completeness(c, w, "3")),
    "purity_paper": ("test", "paper", lambda c, w: rl.purity(c, w)),
    "real_completeness3": ("real", "chosen", lambda c, w: rl.completeness(c, w, "3")),
}


class _Cells:
    """Access to the cells' counts: counts(kind, body, size, seed, set, prefix); real counts pooled per host."""

    def __init__(self, cells: Mapping[tuple, Mapping[str, Any]], real_units: np.ndarray) -> None:
        self.cells, self.real_units = cells, real_units
        self.n_hosts = int(real_units.max()) + 1 if real_units.size else 0

    def counts(self, kind, body, size, seed, where: str, prefix: str) -> rl.Counts:
        c = rl.Counts.from_arrays(self.cells[(kind, body, size, seed)]["arrays"], f"{where}.{prefix}")
        return c.pooled(self.real_units, self.n_hosts) if where == "real" else c

    def detections(self, kind, body, size, seed) -> rl.Detections:
        return rl.Detections.from_arrays(self.cells[(kind, body, size, seed)]["arrays"], "ap")

    def n_units(self, where: str, kind, body, size, seed) -> int:
        return self.n_hosts if where == "real" else self.counts(kind, body, size, seed, where, "chosen").tp.size


def _stat(cells: _Cells, metric: str, kind: str, body: str, size: int, seeds: Sequence[int]):
    """per_seed(w) -> (R, S) of one metric for one backbone, body and size."""
    where, prefix, fn = METRICS[metric]
    counts = [cells.counts(kind, body, size, s, where, prefix) for s in seeds]
    return lambda w: np.stack([fn(c, w) for c in counts], 1)


def _ap(cells: _Cells, kind, body, size, seeds):
    dets = [cells.detections(kind, body, size, s) for s in seeds]
    return lambda w: np.stack([rl.weighted_ap(d, w) for d in dets], 1)


def _diff(a, b):
    return lambda w: a(w) - b(w)


def _estimate(per_seed, n_units: int, unit: str, resamples: int = vd.RESAMPLES) -> vd.Estimate | None:
    try:
        return rl.seed_interval(per_seed, n_units, unit, resamples=resamples)
    except vd.InputError as exc:  # e.g. no truths for a seed: reported, not hidden
        return vd.Estimate(math.nan, math.nan, math.nan, n_units, {unit: n_units}, {unit: n_units}, "none",
                           note=str(exc))


def _values(per_seed, n_units: int) -> list[float | None]:
    """Each seed's statistic on the data as observed (None where undefined, e.g. purity without detections)."""
    return [None if not math.isfinite(v) else float(v) for v in per_seed(np.ones((1, n_units)))[0]]


def _needs(est: vd.Estimate, v: vd.Verdict) -> dict[str, Any]:
    """For an inconclusive cell: the test images (at these seeds) and the seeds (at these images) at which the
    observed effect would be decided with 80% power (None: not within 100,000), from the estimate's variance
    components (`verdicts.seed_pooled_needs`)."""
    if v.outcome != vd.INCONCLUSIVE or not isinstance(est, vd.SeedPooledEstimate):
        return {}
    try:
        return {"needs_units": vd.seed_pooled_needs(est, vary="units"),
                "needs_seeds": vd.seed_pooled_needs(est, vary="seeds")}
    except (vd.InputError, ValueError, ZeroDivisionError, OverflowError):
        return {}


def _row(est: vd.Estimate | None, v: vd.Verdict | None = None, seed_values: list | None = None,
         **extra: Any) -> dict[str, Any]:
    if est is None:
        return {**extra, "value": None, "low": None, "high": None, "outcome": v.outcome if v else None}
    ok = est.has_interval
    values = seed_values if seed_values is not None else [float(x) for x in getattr(est, "seed_values", ())]
    return {**extra, "value": est.value if math.isfinite(est.value) else None, "low": est.low if ok else None,
            "high": est.high if ok else None, "n_units": min(est.pools.values(), default=0),
            "units": dict(est.units), "seed_values": values,
            "df": getattr(est, "df", None), "note": est.note,
            **({"outcome": v.outcome, "reason": v.reason, **_needs(est, v)} if v is not None else {})}


def analyse(config: TransferConfig, cells: Mapping[tuple, Mapping[str, Any]], lst: Sequence[Mapping[str, Any]],
            data: Mapping[str, Any]) -> dict[str, Any]:
    """Curves (every metric per backbone, body, size: seed values, mean and band), the three claims per galaxy
    backbone (cells, per-setting and overall verdicts), the LST bridge and the action table."""
    seeds, sizes = list(config.seeds), list(config.sizes)
    c = _Cells(cells, np.asarray(data["real_units"]))
    kinds = list(config.backbones)
    curves = []
    for kind in kinds:
        for body in config.bodies:
            for size in sizes:
                row = {"backbone": kind, "body": body, "size": size}
                for metric, (where, _, _) in METRICS.items():
                    per_seed = _stat(c, metric, kind, body, size, seeds)
                    g = c.n_units(where, kind, body, size, seeds[0])
                    row[metric] = _row(_estimate(per_seed, g, "host" if where == "real" else "image",
                                                 BAND_RESAMPLES), seed_values=_values(per_seed, g))
                ap = _ap(c, kind, body, size, seeds)
                g = c.n_units("test", kind, body, size, seeds[0])
                row["ap50"] = _row(_estimate(ap, g, "image", BAND_RESAMPLES), seed_values=_values(ap, g))
                row["threshold"] = [cells[(kind, body, size, s)]["meta"]["threshold"] for s in seeds]
                curves.append(row)
    galaxy = [k for k in GALAXY if k in kinds]
    claims: dict[str, Any] = {}
    n_test = c.n_units("test", kinds[0], config.bodies[0], sizes[0], seeds[0])
    for g in galaxy if REFERENCE in kinds else []:
        claims[g] = _claims_vs_reference(config, c, g, n_test)
    reach = {}
    for kind in kinds:
        reach[kind] = {}
        for body in config.bodies:
            rows = [r for r in curves if r["backbone"] == kind and r["body"] == body]
            comp = np.array([[np.nan if v is None else v for v in r["completeness3"]["seed_values"]]
                             for r in rows], dtype=float).T
            pur = np.array([[np.nan if v is None else v for v in r["purity"]["seed_values"]] for r in rows],
                           dtype=float).T
            reach[kind][body] = rl.reach_size(comp, pur, sizes) if comp.size else None
    final = {kind: _reaches(config, c, kind, n_test) for kind in kinds}
    bridge = _bridge(config, lst, galaxy if REFERENCE in kinds else [])
    verdicts = {g: _verdict(claims[g], final[g], bridge.get(g)) for g in claims}
    return {"curves": curves, "claims": claims, "reach": reach, "final": final, "bridge": bridge,
            "verdicts": verdicts, "action": _action(config, curves, final, bridge),
            "rules": {k: r.to_dict() for k, r in rl.RULES.items()}, "rule_text": rl.RULE_TEXT,
            "seeds": seeds, "sizes": sizes, "n_test": n_test, "n_hosts": c.n_hosts}


def _claims_vs_reference(config: TransferConfig, c: _Cells, g: str, n_test: int) -> dict[str, Any]:
    seeds, sizes = list(config.seeds), list(config.sizes)
    better, less = {}, {}
    for body in config.bodies:
        for size in sizes:
            f1_diff = _diff(_stat(c, "f1", g, body, size, seeds), _stat(c, "f1", REFERENCE, body, size, seeds))
            ap_diff = _diff(_ap(c, g, body, size, seeds), _ap(c, REFERENCE, body, size, seeds))
            e_f1, e_ap = _estimate(f1_diff, n_test, "image"), _estimate(ap_diff, n_test, "image")
            better[f"{body} n={size}"] = {
                "f1": _row(e_f1, vd.decide(e_f1, rl.RULES["better_f1"]), _values(f1_diff, n_test), body=body,
                           size=size),
                "ap50": _row(e_ap, vd.decide(e_ap, rl.RULES["better_ap50"]), _values(ap_diff, n_test), body=body,
                             size=size)}
        curve_g = [_stat(c, "f1", g, body, n, seeds) for n in sizes]
        curve_r = [_stat(c, "f1", REFERENCE, body, n, seeds) for n in sizes]

        def area(w, curve_g=curve_g, curve_r=curve_r):
            diff = np.stack([a(w) - b(w) for a, b in zip(curve_g, curve_r)], -1)  # (R, S, K)
            return rl.auc(diff, sizes)

        e = _estimate(area, n_test, "image")
        less[body] = _row(e, vd.decide(e, rl.RULES["less_data"]), _values(area, n_test), body=body)
    per_body = {}
    for body in config.bodies:
        parts = {f"F1 n={k.split('n=')[1]}": v["f1"]["outcome"] for k, v in better.items() if k.startswith(body)}
        parts.update({f"AP50 n={k.split('n=')[1]}": v["ap50"]["outcome"] for k, v in better.items()
                      if k.startswith(body)})
        per_body[body] = vd.combine(parts).to_dict()
    overall = vd.combine({b: v["outcome"] for b, v in per_body.items()}).to_dict()
    less_overall = vd.combine({b: v["outcome"] for b, v in less.items()}).to_dict()
    return {"better": better, "better_by_body": per_body, "better_overall": overall, "less_data": less,
            "less_data_overall": less_overall}


def _reaches(config: TransferConfig, c: _Cells, kind: str, n_test: int) -> dict[str, Any]:
    """Claim 3 for one backbone: at the largest size, completeness (clumps >= 3%) and purity on the simulated test
    images and completeness on the injected real hosts, each >= TARGET."""
    seeds, n = list(config.seeds), config.largest
    out = {}
    for body in config.bodies:
        parts = {}
        for name, metric, rule in (("completeness", "completeness3", "completeness"), ("purity", "purity", "purity"),
                                   ("real completeness", "real_completeness3", "real_completeness")):
            where = METRICS[metric][0]
            per_seed, g = _stat(c, metric, kind, body, n, seeds), c.n_units(where, kind, body, n, seeds[0])
            e = _estimate(per_seed, g, "host" if where == "real" else "image")
            parts[name] = _row(e, vd.decide(e, rl.RULES[rule]), _values(per_seed, g), body=body, size=n)
        outcome, reason = all_of({k: v["outcome"] for k, v in parts.items()})
        out[body] = {"parts": parts, "outcome": outcome, "reason": reason}
    out["overall"] = vd.combine({b: out[b]["outcome"] for b in config.bodies}).to_dict()
    return out


def all_of(parts: Mapping[str, str]) -> tuple[str, str]:
    """A claim that needs every part: holds when every part holds; does not hold when any part does not hold;
    else not evaluated / underpowered when a part is; else inconclusive. The reason names the deciding parts."""
    values = set(parts.values())
    if values == {vd.HOLDS}:
        return vd.HOLDS, "every part holds"
    for outcome in (vd.DOES_NOT_HOLD, vd.NOT_EVALUATED, vd.UNDERPOWERED):
        if outcome in values:
            return outcome, f"{outcome}: " + ", ".join(k for k, o in parts.items() if o == outcome)
    return vd.INCONCLUSIVE, "inconclusive: " + ", ".join(k for k, o in parts.items() if o != vd.HOLDS)


def _bridge(config: TransferConfig, lst: Sequence[Mapping[str, Any]], galaxy: Sequence[str]) -> dict[str, Any]:
    """Per galaxy backbone and body: mean d = log(RMS-l2 left, galaxy / ImageNet) over the same pairs, seeds as a
    random effect, source and target images drawn from one pool."""
    index: dict[tuple, dict[tuple, Mapping[str, Any]]] = {}
    for r in lst:
        index.setdefault((r["backbone"], r["body"], int(r["seed"])), {})[(r["round"], r["source"], r["target"])] = r
    out: dict[str, Any] = {}
    for g in galaxy:
        out[g] = {}
        for body in config.bodies:
            d, seeds, src, tgt = [], [], [], []
            for s in config.seeds:
                a, b = index.get((g, body, s), {}), index.get((REFERENCE, body, s), {})
                for key in sorted(set(a) & set(b)):
                    d.append(math.log(max(a[key]["rms_l2"], 1e-12) / max(b[key]["rms_l2"], 1e-12)))
                    seeds.append(s)
                    src.append(key[1])
                    tgt.append(key[2])
            if len(set(seeds)) < 2:
                out[g][body] = {"outcome": vd.NOT_EVALUATED, "reason": "fewer than 2 seeds with LST pairs",
                                "pairs": len(d)}
                continue
            e = vd.seed_pooled_rows(np.asarray(d), seeds, {"source": src, "target": tgt},
                                    pools={"source": "image", "target": "image"}, level=rl.FAMILY, scale="log")
            v = vd.decide(e, rl.RULES["lst"])
            row = _row(e, v, body=body)
            row.update(pairs=len(d), pairs_per_seed=len(d) // len(set(seeds)), ratio=math.exp(e.value),
                       ratio_low=math.exp(e.low) if e.has_interval else None,
                       ratio_high=math.exp(e.high) if e.has_interval else None)
            out[g][body] = row
    return out


def _verdict(claims: Mapping[str, Any], final: Mapping[str, Any], bridge: Mapping[str, Any] | None
             ) -> dict[str, Any]:
    return {"better": claims["better_overall"]["outcome"], "less_data": claims["less_data_overall"]["outcome"],
            "reaches": final["overall"]["outcome"],
            "more_blind_spots": vd.combine({b: v["outcome"] for b, v in (bridge or {}).items()}).outcome
            if bridge else vd.NOT_EVALUATED}


def _action(config: TransferConfig, curves, final, bridge) -> list[dict[str, Any]]:
    """Per backbone and body at the largest size: F1, AP50, real-host completeness (means over seeds with their
    intervals) beside the LST ratio of RMS-l2 left vs ImageNet."""
    rows = []
    for r in curves:
        if r["size"] != config.largest:
            continue
        b = (bridge.get(r["backbone"]) or {}).get(r["body"]) if r["backbone"] != REFERENCE else None
        rows.append({"backbone": r["backbone"], "body": r["body"], "f1": r["f1"], "ap50": r["ap50"],
                     "real_completeness3": r["real_completeness3"], "reaches": final[r["backbone"]][r["body"]]["outcome"],
                     "lst": b})
    return rows
