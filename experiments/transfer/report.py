"""The study's outputs: the rules and verdicts first, then the learning curves (seeds as points, intervals as
bands), each claim's table, example detections per backbone on simulated and real hosts, the LST grid against the
detectors, and the closing action table; report.html (self-contained), tables.json and cells.csv beside it.
`summary` / `record_summary` / `render_docs` / `render_table`: the docs' generated blocks, from the results file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from blindspots import studies as st
from blindspots import verdicts as vd

from . import rules as rl
from .config import BACKBONES

__all__ = ["write_report", "summary", "record_summary", "render_docs", "render_table", "TITLE"]

TITLE = "Transfer learning for clump detection: the clump paper's claims, checked"
WRAP = "td,th,p,figcaption{overflow-wrap:anywhere}"
COLOURS = {"imagenet": "C0", "galaxy-proxy": "C1", "random": "C7", "zoobot": "C2"}
WORDS = {"better": "detects clumps better than ImageNet (F1 and AP50)",
         "less_data": "needs less data (mean F1 over the learning curve above ImageNet's)",
         "reaches": f"reaches completeness and purity >= {rl.TARGET} at the largest size",
         "more_blind_spots": "leaves its detector more under-sensitive than ImageNet's (LST)"}


def sig(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:#.{digits}g}".rstrip(".") if isinstance(x, float) else str(x)


def _ci(row: Mapping[str, Any] | None) -> str:
    if not row or row.get("value") is None:
        return "n/a"
    inner = f"[{sig(row['low'])}, {sig(row['high'])}]" if row.get("low") is not None else "[no interval]"
    return f"{sig(row['value'])} {inner}"


def label(kind: str) -> str:
    return kind + (" (proxy for Zoobot)" if kind == "galaxy-proxy" else "")


# -------------------------------------------------------------------------------------------------- figures


def learning_curves(analysis: Mapping[str, Any], bodies: Sequence[str], path: Path) -> Path:
    """F1, completeness (clumps >= 3%) and purity against training-set size per body setting: each seed a point,
    the mean over seeds a line, its seed-pooled interval a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("f1", "F1"), ("completeness3", "completeness (>= 3%)"), ("purity", "purity"))
    fig, axes = plt.subplots(len(bodies), 3, figsize=(10.5, 3.1 * len(bodies)), squeeze=False, sharex=True)
    curves = analysis["curves"]
    for i, body in enumerate(bodies):
        for j, (metric, name) in enumerate(metrics):
            ax = axes[i][j]
            for kind in dict.fromkeys(r["backbone"] for r in curves):
                rows = [r for r in curves if r["backbone"] == kind and r["body"] == body]
                n = np.array([r["size"] for r in rows], dtype=float)
                mean = np.array([np.nan if r[metric]["value"] is None else r[metric]["value"] for r in rows])
                lo = np.array([np.nan if r[metric]["low"] is None else r[metric]["low"] for r in rows])
                hi = np.array([np.nan if r[metric]["high"] is None else r[metric]["high"] for r in rows])
                col = COLOURS.get(kind, "k")
                ax.fill_between(n, np.clip(lo, 0, 1), np.clip(hi, 0, 1), color=col, alpha=0.15, lw=0)
                ax.plot(n, mean, "-", color=col, label=kind)
                for x, r in zip(n, rows):
                    vals = [np.nan if v is None else v for v in r[metric]["seed_values"]]
                    ax.scatter(np.full(len(vals), x) * np.exp(np.linspace(-0.04, 0.04, len(vals))), vals, s=10,
                               color=col, alpha=0.7)
            ax.axhline(rl.TARGET, color="k", lw=0.7, ls=":")
            ax.set_xscale("log")
            sizes = sorted({r["size"] for r in curves})
            ax.set_xticks(sizes)
            ax.set_xticklabels([str(n) for n in sizes])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{name}, body {body}", fontsize=10)
            if i == len(bodies) - 1:
                ax.set_xlabel("training images")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Learning curves on the simulated test set: seeds (points), mean (line), seed-pooled 95% interval "
                 "(band); dotted: 0.8", fontsize=10)
    fig.tight_layout()
    return st.figure_to_png(fig, path)


def example_detections(result, data, proxy_file, device, path: Path) -> Path:
    """One simulated test image and one injected real host per backbone (largest size, first seed and body)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detectors.evaluate import draw_detections
    from detectors.frcnn import detect

    from .cells import load_cell_detector

    config = result.config
    kinds = list(config.backbones)
    body, seed = config.bodies[-1], config.seeds[0]
    test_i = int(np.argmax([int((t["labels"] == 1).sum()) for t in data["test"].targets[:16]]))
    images = torch.stack([data["test"].images[test_i], data["real_images"][0]])
    targets = [data["test"].targets[test_i], data["real_targets"][0]]
    fig, axes = plt.subplots(2, len(kinds), figsize=(3.2 * len(kinds), 6.6), squeeze=False)
    for j, kind in enumerate(kinds):
        cell = (kind, body, config.largest, seed)
        det = load_cell_detector(cell, config, result.out, proxy_file, device)
        thr = next(c["threshold"] for c in result.cells if (c["backbone"], c["body"], c["size"], c["seed"]) == cell)
        preds = detect(det, images, device=device, score_floor=0.0)
        for i, where in enumerate(("simulated", "real host + injected")):
            draw_detections(images[i], targets[i], preds[i], score_threshold=thr, ax=axes[i][j],
                            title=f"{kind}, {where}\n(threshold {thr:.2f})")
    fig.suptitle(f"Detections (dashed, with scores) and truths (solid): body {body}, {config.largest} training images, "
                 f"seed {seed}", fontsize=10)
    fig.tight_layout()
    return st.figure_to_png(fig, path)


def lst_grid(result, data, proxy_file, device, path: Path, n_pairs: int = 2) -> Path | None:
    """LST pairs against the detectors: per pair and backbone, source, LST output and target, each with the
    detector's boxes (first seed, last body setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detectors.evaluate import draw_detections
    from detectors.frcnn import detect

    from .cells import load_cell_detector

    config = result.config
    body, seed = config.bodies[-1], config.seeds[0]
    recs = {}
    for r in result.lst:
        if r["body"] == body and int(r["seed"]) == seed:
            recs.setdefault(r["backbone"], {})[(r["round"], r["source"], r["target"])] = r
    kinds = [k for k in config.backbones if k in recs]
    keys = sorted(set.intersection(*[set(recs[k]) for k in kinds]))[:n_pairs] if kinds else []
    if not keys:
        return None
    store = _reader(result.out)
    fig, axes = plt.subplots(len(keys) * len(kinds), 3, figsize=(8.4, 2.9 * len(keys) * len(kinds)), squeeze=False)
    for k, kind in enumerate(kinds):
        det = load_cell_detector((kind, body, config.largest, seed), config, result.out, proxy_file, device)
        thr = next(c["threshold"] for c in result.cells
                   if (c["backbone"], c["body"], c["size"], c["seed"]) == (kind, body, config.largest, seed))
        for p, key in enumerate(keys):
            rec = recs[kind][key]
            arrays, _ = store.load(rec["array"][len("stages/"):-len(".safetensors")])
            out_img = arrays["images"][rec["array_index"]]
            imgs = torch.stack([data["lst"].images[key[1]], out_img, data["lst"].images[key[2]]])
            preds = detect(det, imgs, device=device, score_floor=0.0)
            row = axes[p * len(kinds) + k]
            for col, (name, im, pr) in enumerate(zip(("source", "LST output", "target"), imgs, preds)):
                extra = f", RMS-l2 left {rec['rms_l2']:.3f}" if col == 1 else ""
                draw_detections(im, None, pr, score_threshold=thr, ax=row[col],
                                title=f"{kind}: {name}{extra}")
    fig.suptitle("LST against the detectors (clump in the central region kept): source, output, target with each "
                 "detector's boxes", fontsize=10)
    fig.tight_layout()
    return st.figure_to_png(fig, path)


def _reader(out: Path):
    from blindspots.store import RunStore

    return RunStore.reader(out)


# --------------------------------------------------------------------------------------------------- tables


def verdict_rows(analysis: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"galaxy backbone": label(g), **{WORDS[k]: v for k, v in verdict.items()}}
            for g, verdict in analysis["verdicts"].items()]


def _decides(row: Mapping[str, Any]) -> str:
    """What would decide an inconclusive cell at the observed effect (80% power): more test images or seeds."""
    if row.get("outcome") != vd.INCONCLUSIVE or "needs_seeds" not in row:
        return ""
    units = row.get("needs_units")
    seeds = row.get("needs_seeds")
    return (f"{units} images" if units else "no number of images") + " or " + (
        f"{seeds} seeds" if seeds else "no number of seeds")


def better_rows(analysis: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for g, cl in analysis["claims"].items():
        for cell, v in cl["better"].items():
            rows.append({"backbone": label(g), "cell": cell, "F1 diff [interval]": _ci(v["f1"]),
                         "F1 cell": v["f1"]["outcome"], "AP50 diff [interval]": _ci(v["ap50"]),
                         "AP50 cell": v["ap50"]["outcome"],
                         "units": f"{v['f1'].get('n_units', 0)} test images, {len(v['f1']['seed_values'])} seeds",
                         "F1 decided at (80% power)": _decides(v["f1"])})
        for body, v in cl["less_data"].items():
            rows.append({"backbone": label(g), "cell": f"{body}: mean F1 over the curve",
                         "F1 diff [interval]": _ci(v), "F1 cell": v["outcome"], "AP50 diff [interval]": "",
                         "AP50 cell": "", "units": f"{v.get('n_units', 0)} test images, "
                                                  f"{len(v['seed_values'])} seeds",
                         "F1 decided at (80% power)": _decides(v)})
    return rows


def final_rows(analysis: Mapping[str, Any], reach: Mapping[str, Any], largest: int) -> list[dict[str, str]]:
    rows = []
    for kind, f in analysis["final"].items():
        for body, v in f.items():
            if body == "overall":
                continue
            p = v["parts"]
            r = reach[kind][body]
            rows.append({"backbone": label(kind), "body": body,
                         "completeness >= 3% [interval]": _ci(p["completeness"]),
                         "purity [interval]": _ci(p["purity"]),
                         "real hosts: completeness >= 3% [interval]": _ci(p["real completeness"]),
                         "outcome": v["outcome"],
                         f"smallest size with both >= {rl.TARGET} (seed mean)": str(r) if r else f"> {largest}"})
    return rows


def action_rows(analysis: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for r in analysis["action"]:
        b = r["lst"]
        lst = "1 (reference)" if r["backbone"] == "imagenet" else "n/a" if not b or b.get("value") is None else (
            f"{sig(b['ratio'])} [{sig(b['ratio_low'])}, {sig(b['ratio_high'])}]: {b['outcome']}")
        rows.append({"backbone": label(r["backbone"]), "body": r["body"], "F1": _ci(r["f1"]), "AP50": _ci(r["ap50"]),
                     "real-host completeness": _ci(r["real_completeness3"]), "reaches 0.8": r["reaches"],
                     "RMS-l2 left vs ImageNet (< 1: more blind spots)": lst})
    return rows


def cell_rows(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: c[k] for k in ("backbone", "body", "size", "seed", "threshold", "steps", "train_seconds", "seconds",
                              "final_loss", "ap50")} | c["figures"] for c in cells]


def write_report(result, data, proxy_file, device, quiet: bool = False) -> Path:
    """report.html, tables.json, cells.csv, lst.csv and the figures in `result.out`."""
    out, config, a = result.out, result.config, result.analysis
    st.write_csv(cell_rows(result.cells), out / "cells.csv")
    st.write_csv(list(result.lst), out / "lst.csv")
    tables = {"summary": summary(result), "analysis": a, "cells": cell_rows(result.cells), "hosts": result.hosts,
              "proxy": result.proxy, "config": config.settings(), "seconds": round(result.seconds, 1),
              "cpu_seconds": round(result.cpu_seconds, 1)}
    st.write_json(tables, out / "tables.json")
    curves = learning_curves(a, config.bodies, out / "learning_curves.png")
    examples = example_detections(result, data, proxy_file, device, out / "detections.png")
    grid = lst_grid(result, data, proxy_file, device, out / "lst_grid.png")
    headline = headline_text(a)
    consts = constants_text(config)
    hosts = result.hosts
    path = st.write_html_report(out / "report.html", TITLE, [
        {"heading": "Verdicts", "text": rl.RULE_TEXT + "\n\n" + consts + "\n\n" + headline,
         "table": verdict_rows(a)},
        {"heading": "Learning curves", "figure": curves,
         "caption": f"{len(config.seeds)} seeds per point; every cell trains {config.steps} steps of "
                    f"{config.batch_size} images (one budget rule for every size); threshold chosen per detector "
                    f"on {config.n_val} validation images; {a['n_test']} test images."},
        {"heading": "Claims 1 and 2: the galaxy backbone minus ImageNet, per body setting and size",
         "table": better_rows(a)},
        {"heading": f"Claim 3: completeness and purity >= {rl.TARGET} at {config.largest} training images",
         "table": final_rows(a, a["reach"], config.largest),
         "caption": f"Real hosts: {len(hosts['used'])} cutouts of {hosts['folder']} x {config.injections} "
                    f"injections (the unit is the host); left out: "
                    + (", ".join(f"{k} ({v})" for k, v in hosts["left_out"].items()) or "none") + "."},
        {"heading": "Example detections", "figure": examples},
        {"heading": "LST against the detectors", "figure": grid,
         "caption": "Same pairs and start noise for every backbone; the detector keeps its clump confidence in the "
                    "central region while the image walks toward a galaxy of the other class."},
        {"heading": "What to act on: detection beside under-sensitivity (largest size, means over seeds)",
         "table": action_rows(a),
         "caption": "LST ratio = geometric mean over pairs and seeds of RMS-l2 left by this backbone's detector / by "
                    "ImageNet's on the same pair; below 1 the detector lets the image get closer to the other class "
                    "while keeping its answer (more blind spots)."},
        {"heading": "Settings", "text": "; ".join(f"{k} = {json.dumps(v)}" for k, v in config.settings().items())
         + "\n\nBackbones: " + "; ".join(f"{k}: {v}" for k, v in BACKBONES.items())
         + f"\n\nThis invocation: {result.seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU (a rerun reuses "
           "finished cells)."},
    ])
    path.write_text(path.read_text(encoding="utf-8").replace("</style>", WRAP + "</style>", 1), encoding="utf-8")
    if not quiet:
        print("\n" + headline + "\n")
        print(st.markdown_table(action_rows(a)))
        print(f"\nreport: {path} ({result.seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU)")
    return path


def headline_text(a: Mapping[str, Any]) -> str:
    if not a["verdicts"]:
        return "No verdict: ImageNet and a galaxy backbone (galaxy-proxy or zoobot) must both be trained."
    return " ".join(f"{label(g)}: " + "; ".join(f"{WORDS[k]}: {v}" for k, v in verdict.items()) + "."
                    for g, verdict in a["verdicts"].items())


def constants_text(config) -> str:
    return (f"Constants fixed before the numbers: target {rl.TARGET}; F1/AP50 equivalence margin {rl.F1_MARGIN}; "
            f"learning-curve margin {rl.AUC_MARGIN}; LST margin +-log 1.1; fewest units {vd.MIN_UNITS}; interval "
            f"level {rl.FAMILY:.0%}; match IoU >= {config.iou} (AP50: 0.5); budget rule: {config.steps} optimiser "
            f"steps of {config.batch_size} images per cell.")


# -------------------------------------------------------------------------------- the docs' blocks, generated


def summary(result) -> dict[str, Any]:
    """What the docs quote from one run."""
    a, c = result.analysis, result.config
    return {"verdicts": a["verdicts"], "headline": headline_text(a), "rule": rl.RULE_TEXT,
            "constants": constants_text(c), "action": action_rows(a), "final": final_rows(a, a["reach"], c.largest),
            "better": better_rows(a), "seeds": list(c.seeds), "sizes": list(c.sizes), "n_test": a["n_test"],
            "n_hosts": a["n_hosts"], "injections": c.injections, "steps": c.steps, "arch": c.arch,
            "bodies": list(c.bodies), "seconds": round(result.seconds, 1),
            "cell_seconds": round(sum(float(x.get("seconds") or 0.0) for x in result.cells), 1),
            "lst_pairs": len(result.lst)}


def record_summary(result, path: str | Path, command: str, threads: int | None = None) -> Path:
    """Add (or replace) this run's summary under its command line in the JSON file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    data.setdefault("runs", {})[command] = {**summary(result), "threads": threads}
    return st.write_json(data, path)


def _md(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(str(r.get(k, "")) for k in cols) + " |" for r in rows])


def render_docs(data: Mapping[str, Any]) -> str:
    """docs/studies.md's block from docs/results/transfer.json: the rules, then per run its command, time, verdicts
    and the claim tables."""
    runs = data.get("runs", {})
    if not runs:
        return "No run recorded yet: `blindspots transfer --results-to docs/results/transfer.json`.\n"
    first = next(iter(runs.values()))
    parts = [first["rule"], "", first["constants"], ""]
    for command, run in runs.items():
        parts += [f"`{command}`: {run['seconds'] / 60:.1f} min wall for its last invocation, the cells' own training "
                  f"and scoring {run.get('cell_seconds', 0) / 60:.1f} min ({run.get('threads')} thread(s)), "
                  f"{run.get('lst_pairs', 0)} LST walks, "
                  f"{len(run['seeds'])} seeds, sizes {', '.join(map(str, run['sizes']))}, {run['n_test']} test "
                  f"images, {run['n_hosts']} real hosts x {run['injections']} injections.", "",
                  f"Verdicts: {run['headline']}", "", _md(run["better"]), "", _md(run["final"]), ""]
    return "\n".join(parts)


def render_table(data: Mapping[str, Any]) -> str:
    """docs/detectors.md's block: per backbone and body, F1 / AP50 / real-host completeness at the largest size
    beside the LST ratio (of the recorded run with the most rows, the later one on ties)."""
    runs = data.get("runs", {})
    if not runs:
        return "No run recorded yet.\n"
    order = list(runs)
    command = max(order, key=lambda c: (len(runs[c]["action"]), order.index(c)))
    run = runs[command]
    return (f"From `{command}` ({run['arch']}, {run['sizes'][-1]} training images, {len(run['seeds'])} seeds, "
            f"means with 95% intervals over seeds and test images):\n\n" + _md(run["action"]) + "\n")
