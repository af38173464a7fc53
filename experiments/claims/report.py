"""What the paper-claims study shows: the claims table (outcome first), claim 3's triangles, the findings (one
sentence per claim, generated from the results, never written by hand), the docs' block (`render_markdown`, the
`paper-claims` block of docs/studies.md, from docs/results/claims.json), the triangle figure and report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from blindspots import load_classifier
from blindspots import studies as st
from blindspots.store import RunStore

from ..tables import TABLE1_FIELDS, table2_fields
from .groups import Group

__all__ = ["claims_table", "triangle_table", "findings", "render_markdown", "triangle_figure", "write_report"]


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3g}"


def _units(u: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in u.items())


def _outcome(r: Mapping[str, Any]) -> str:
    return r["outcome"] + (" (saturated)" if str(r.get("reason", "")).startswith("saturated") else "")


def claims_table(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One display row per (claim, group, model): outcome first, then value, 95% interval, n and distinct units."""
    return [{"outcome": _outcome(r), "claim": c["claim"], "group": r["group"], "model": r["model"],
             "measure": r["measure"], "value": _fmt(r["value"]),
             "95% interval": f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", "n (units)": _n_text(r)}
            for c in claims for r in c["rows"]]


def _n_text(r: Mapping[str, Any]) -> str:
    if "sources" in r and "pools" in r:  # claim 3, crossed: sources, their triangles, the images resampled
        return f"{r['sources']} sources ({r['n']} triangles; {_units(r['pools'])} resampled)"
    return f"{r['n']} ({_units(r['units'])})"


def triangle_table(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Claim 3's triangles per (normal, AT) pair and setting: each model's mean RMS-l2 left to the target and mean
    sides source-output and output-output (RMS-l2), beside the confident fractions compared."""
    out, seen = [], set()
    for c in claims:
        for r in c["rows"]:
            if "setting" not in r or r.get("delta", -1) < max((x.get("delta", -1) for x in c["rows"]), default=-1) \
                    or (r["model"], r["setting"]) in seen:
                continue  # the fractions at the run's delta (older files: one row per pair)
            seen.add((r["model"], r["setting"]))
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
        sat = "; ".join(f"{r.get('part', r['model'])} {r['reason'].split(', so ')[0]}" for r in c["rows"]
                        if str(r.get("reason", "")).startswith("saturated"))
        out.append(f"{c['title']}: **{c['overall']['outcome']}**, {c['overall']['reason']}. Per group: {groups}."
                   + (f" Reported, not decided: {sat}." if sat else ""))
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


def _docs_claim(c: Mapping[str, Any], delta: float | None) -> str:
    """One claim's table for the docs: outcome first, then short columns, so that it fits a 1280 px window; what the
    value measures, the pairs' models and what n counts are said once above the table, not in every row."""
    rows = c["rows"]
    if not rows:
        return f"**{c['title']}**: no rows (no group of this run has a model it applies to).\n"
    paired = any("setting" in r for r in rows)  # claim 3: a difference per (normal, AT) pair, at each d
    if paired:
        names = "; ".join(dict.fromkeys(r["model"] for r in rows))  # "CNN: mnist-cnn-at - mnist-cnn; ..."
        crossed = all("sources" in r and "pools" in r for r in rows)
        what = (f"value: AT - normal ({names}), the mean per-source fraction of the triangle hull with "
                "p >= p_src - d; n: " + ("sources, their triangles, the distinct images resampled as source and as "
                                         "both outputs' targets" if crossed else "sources"))
    else:
        counted = "pairs (the distinct images resampled as sources and targets)" \
            if any(set(r["units"]) - {"source"} for r in rows) else "sources"
        what = f"value: {' / '.join(dict.fromkeys(r['measure'] for r in rows))}; n: {counted}"
    table = []
    for r in rows:
        row = {"outcome": _outcome(r), "group": r["group"]}
        if paired:
            d = r.get("delta", delta)
            row.update({"pair": r["model"].split(":")[0], "d": "n/a" if d is None else f"{d:g}"})
        else:
            row["model"] = r["model"]
        row["value [95% interval]"] = f"{_fmt(r['value'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        if "sources" in r and "pools" in r:
            row["n"] = f"{r['sources']} sources, {r['n']} triangles, {_units(r['pools'])}"
        elif set(r.get("units", {})) - {"source"}:
            row["n"] = f"{r['n']} ({_units(r['units'])})"
        else:
            row["n"] = f"{r['n']}"
        table.append(row)
    return f"**{c['title']}** ({what}):\n\n" + st.markdown_table(table) + "\n"


def render_markdown(data: Mapping[str, Any]) -> str:
    """The docs' block (docs/studies.md's `paper-claims`, from claims.json): one table per claim (outcome first,
    short columns: it fits a 1280 px window), claim 3's triangles, the constants, the validity check and the
    findings."""
    delta = data.get("delta", data.get("validity", {}).get("delta"))
    parts = [_docs_claim(c, delta) for c in data["claims"]]
    tri = triangle_table(data["claims"])
    if tri:
        short = {"RMS-l2 to target": "to target", "side source-output": "source-output",
                 "side output-output": "output-output", "confident hull fraction": "hull fraction"}
        rows = [{short.get(k, k): v for k, v in r.items()} for r in tri]
        parts.append("Claim 3's triangles (means over sources; RMS-l2 distances: each output's to its target and the "
                     "triangle's sides source-output and output-output; the confident hull fraction at the run's "
                     "delta):\n\n" + st.markdown_table(rows) + "\n")
    consts = ", ".join(f"{k} = {v:g}" for k, v in data["constants"].items())
    power = " Said before running: " + "; ".join(data["power"]) + "." if data.get("power") else ""
    lines = ["\n".join(parts), f"Constants fixed before the numbers: {consts}.", "",
             _validity_line(data["validity"]) + power, ""]
    lines += [f"- {s}" for s in findings(data)]
    return "\n".join(lines) + "\n"


def triangle_figure(out: Path, groups: Mapping[str, Group], pools: Mapping[str, torch.Tensor],
                    models: Mapping[str, torch.nn.Module] | None) -> Path | None:
    """For the first source every (normal, AT) pair shares, its triangle (source, b_0, b_1) coloured by each
    model's confidence: one row per architecture, normal left, AT right."""
    import matplotlib.pyplot as plt

    from blindspots.geometry import hull_statistics, triangle_layout
    from blindspots.plots import plot_triangle

    rows = [(name, arch, normal, at) for name, g in groups.items() for arch, normal, at in g.at_pairs]
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 4 * len(rows)), squeeze=False, layout="constrained")
    for (name, arch, normal, at), ax_row in zip(rows, axes):
        for model_name, ax in zip((normal, at), ax_row):
            reader = RunStore.reader(out / name)
            first = next(r for r in reader.records("lst") if r["model"] == model_name and r["round"] == 0)
            outputs = reader.load(first["array"].removeprefix("stages/").removesuffix(".safetensors"))[0]["images"]
            k = sum(1 for r in reader.records("lst") if r["model"] == model_name and r["source"] == first["source"])
            model = (models or {}).get(model_name) or load_classifier(model_name)
            src_image = pools[name][first["source"]]
            outs = outputs[first["array_index"]:first["array_index"] + k][None]
            hull = hull_statistics(model, src_image[None], outs, [first["source_label"]])
            plot_triangle(hull.grid, hull.confidence[0, 0], triangle_layout(src_image, outs[0, 0], outs[0, 1]),
                          p_src=float(hull.p_src[0]), vertex_names=("source", "b0", "b1"),
                          title=f"{model_name} (p_src {float(hull.p_src[0]):.2f})", ax=ax)
    return st.figure_to_png(fig, out / "triangles.png")


def write_report(out: Path, data: Mapping[str, Any], tables, figure: Path | None) -> Path:
    """report.html: the findings and the claims table (outcome first) first, then each run's tables and the figure,
    settings last; text as paragraphs that wrap, so that the page fits a 1280 px window."""
    sections: list[dict[str, Any]] = [
        {"heading": "Claims of the paper, checked", "text": "\n\n".join(findings(data)),
         "table": claims_table(data["claims"])},
        {"heading": "Claim 3's triangles: paper settings and matched distance",
         "table": triangle_table(data["claims"])},
        {"heading": "Rules and constants (fixed before the numbers)",
         "text": "\n\n".join([f"{k}: {r['text']}" for k, r in data["rules"].items()] +
                              [", ".join(f"{k} = {v:g}" for k, v in data["constants"].items())] +
                              list(data["power"]))},
    ]
    if figure is not None:
        sections.append({"figure": figure, "caption": "One source's triangle (source, b0, b1): the source-class "
                                                      "confidence of the normal (left) and the AT model (right)."})
    for name, t in tables.items():
        sections.append({"heading": f"{name}: Table 1", "table": st.display_rows(t["table1"], ["model"],
                                                                                  TABLE1_FIELDS, digits=3)})
        if t["table2"]:
            sections.append({"heading": f"{name}: Table 2", "table": st.display_rows(
                t["table2"], ["model"], table2_fields(t["table2"]), digits=3)})
    sections.append({"heading": "Settings", "pre": json.dumps(data["settings"], indent=1)})
    return st.write_html_report(out / "report.html", "LST paper claims on real models", sections)
