"""The study's outputs: verdict first (the rule, then each backbone's verdict with its intervals), the paired
comparison and stall tables, the figure, accuracies, the real arm's design, the proxy's quality and the settings
last; CSV and JSON beside them. `summary` / `record_summary` / `render_readme`: the docs' Zoobot block, generated
from the run's results (`experiments.generated_docs`), so no sentence there says more than the rule decided."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from blindspots import studies as st
from blindspots import verdicts as vd

from . import paired as pd
from .backbones import BACKBONES
from .data import MORPHOLOGY

__all__ = ["write_report", "sig", "arm_rows", "comparison_rows", "paired_figure", "summary", "record_summary",
           "render_readme"]

TITLE = "Zoobot vs ImageNet: paired under-sensitivity of galaxy classifiers"
WRAP = "td,th,p,figcaption{overflow-wrap:break-word}"
ORDER = ("sim", "real injected", "real cross-class", "real within-class", "real mixed")


def sig(x: Any, digits: int = 3) -> str:
    """Three significant digits (n/a for missing or non-finite values)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:#.{digits}g}".rstrip(".") if isinstance(x, float) else str(x)


def label(kind: str) -> str:
    return kind + (" (proxy for Zoobot)" if kind == "galaxy-proxy" else "")


def arm_rows(arms: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, str]]:
    """Display rows of the verdict's arms (`paired.Arm.row`): the seed-pooled geometric mean ratio with its
    interval, n, units and seeds, the outcome, and where it cannot decide its power and the units 80% needs."""
    rows = []
    for kind, found in arms.items():
        for r in found:
            power = pd.power_text(r, r["unit"]) if r.get("power") is not None and r["outcome"] in (
                vd.INCONCLUSIVE, vd.UNDERPOWERED) else ""
            dropped = "; ".join(f"seed {s}: {why}" for s, why in r["dropped"].items())
            rows.append({"backbone": label(kind), "arm": r["pairs"],
                         "seeds": ", ".join(map(str, r["seeds"])) + (f" (dropped: {dropped})" if dropped else ""),
                         "n pairs (distinct units)": f"{r['n']} ({r['units']} {r['unit']}s)",
                         "geometric mean ratio": sig(r["ratio"]),
                         f"{r['level']:.1%} interval": f"[{sig(r['ratio_lo'])}, {sig(r['ratio_hi'])}]",
                         "outcome": r["words"] if r["ratio_lo"] is not None else f"{r['words']}: {r['reason']}",
                         "power at the observed effect": power or "n/a (decided)" if r["ratio_lo"] is not None
                         else "n/a"})
    return rows


def comparison_rows(comps: Sequence[pd.Comparison]) -> list[dict[str, str]]:
    """Display rows: each seed's own ratio of RMS-l2 left (backbone / ImageNet; the geometric mean of its pairs)
    with its interval over units, n, units, stalls. Description: the verdict pools the seeds (`arm_rows`)."""
    rows = []
    for c in comps:
        r = c.row()
        rows.append({"backbone": label(c.a), "pairs": c.category, "seed": str(c.seed), "n pairs": str(c.n),
                     "distinct units": f"{r['units']} {c.unit}s", "geometric mean ratio": sig(r["ratio"]),
                     f"{c.level:.1%} interval": f"[{sig(r['ratio_lo'])}, {sig(r['ratio_hi'])}]",
                     "this seed alone": r["cell_words"] if c.category in pd.VERDICT_ARMS else "reported only",
                     "stalled (backbone / ImageNet)": f"{r['stalled_a']} / {r['stalled_b']} of {c.n}",
                     "McNemar p": sig(r["stall_p"])})
    return rows


def stall_rows(stalls: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"backbone": label(s["backbone"]), "pairs": s["pairs"], "seed": str(s["seed"]), "n pairs": str(s["n"]),
             "stall rate": sig(s["stall_rate"]), "ImageNet stall rate": sig(s["stall_rate_vs"]),
             "only backbone / only ImageNet": f"{s['only_backbone']} / {s['only_vs']}",
             "exact McNemar p": sig(s["mcnemar_p"]), f"Holm p (family of {s['family']})": sig(s["holm_p"])}
            for s in sorted(stalls, key=lambda s: (ORDER.index(s["pairs"]) if s["pairs"] in ORDER else 9,
                                                   s["backbone"], str(s["seed"])))]


def backbone_rows(index: Mapping[tuple, Mapping], training: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per backbone and seed: simulated test accuracy, accuracy on the injected real hosts, stalled traversals."""
    rows = []
    for name, t in training.items():
        real = t.get("real_host") or {}
        row = {"backbone": label(t["backbone"]), "seed": str(t["seed"]),
               "simulated test accuracy": f"{sig(t['test_accuracy'])} ({t['test_images']})",
               "injected real hosts: accuracy (plain / clumpy)":
                   f"{sig(real.get('accuracy'))} ({sig(real.get('plain'))} / {sig(real.get('injected'))}; "
                   f"{real.get('images', 0)} images, {real.get('hosts', 0)} hosts)" if real else "n/a",
               "fine-tune s": sig(float(t["seconds"]))}
        for dom in ("sim", "injected"):
            recs = list(index.get((t["backbone"], t["seed"], dom), {}).values())
            row[f"{dom}: stalled"] = f"{sum(pd.stalled(r) for r in recs)} of {len(recs)}"
        rows.append(row)
    return rows


def real_rows(real: Mapping[str, Any]) -> list[dict[str, str]]:
    excluded, surveys = real.get("excluded", {}), real.get("surveys", {})
    return [{"host": h, "survey": surveys.get(h, "n/a"), "clumps injected": ", ".join(map(str, c)),
             "used": "no: " + excluded[h] if h in excluded else "yes"}
            for h, c in zip(real.get("hosts", []), real.get("clumps", []))]


def proxy_rows(proxy_log: Mapping[str, Any] | None) -> list[dict[str, str]]:
    if not proxy_log:
        return []
    return [{"encoder": label(k), "mean R²": sig(v["mean_r2"]), **{m: sig(v[m]) for m in MORPHOLOGY}}
            for k, v in proxy_log["probe"].items()]


def paired_figure(comps: Sequence[pd.Comparison], path: Path) -> Path | None:
    """Per pair category, per (backbone, seed): every pair's ratio (points) and the mean with its interval over
    units (bar), on a log axis with 1 (no difference) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [c for c in ORDER if any(x.category == c and x.n for x in comps)][:4]
    if not cats:
        return None
    fig, axes = plt.subplots(1, len(cats), figsize=(10, 4.2), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, cat in zip(axes[0], cats):
        sub = [c for c in comps if c.category == cat and c.n]
        for i, c in enumerate(sub):
            colour = "C1" if c.a == "galaxy-proxy" else "C2" if c.a == "zoobot" else "C0"
            ax.scatter(i + rng.uniform(-0.18, 0.18, c.n), np.exp(c.d), s=10, alpha=0.5, color=colour)
            e = c.estimate
            if e.has_interval:
                m = math.exp(e.value)
                ax.errorbar(i + 0.3, m, yerr=[[m - math.exp(e.low)], [math.exp(e.high) - m]], fmt="D", color="k",
                            capsize=4, ms=5)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels([f"{c.a}\nseed {c.seed}\nn={c.n}, {c.units()} {c.unit}s" for c in sub], fontsize=8)
        ax.set_title(f"{cat} pairs", fontsize=11)
        ax.tick_params(axis="y", labelsize=9)
    axes[0][0].set_ylabel("RMS-l2 left: backbone / ImageNet\n(< 1: backbone more under-sensitive)", fontsize=10)
    fig.suptitle("Every pair (points) with the mean and its interval over units (black)", fontsize=11)
    fig.tight_layout()
    return st.figure_to_png(fig, path)


def headline(verdicts: Mapping[str, Any]) -> str:
    if not verdicts:
        return "No verdict: the ImageNet backbone and at least one other backbone must both be measured."
    return "Verdict: " + "; ".join(f"{label(k)} vs ImageNet: {pd.OUTCOME_WORDS[v.outcome]}"
                                   for k, v in verdicts.items())


def constants(level: float, family: Sequence[str], min_accuracy: float) -> str:
    return (f"Constants fixed before the numbers: stall = less than {pd.MIN_PROGRESS:.0%} of the start distance "
            f"covered or the class lost; equivalence margin +-log 1.1 on mean d (ratios {1 / 1.1:.3f}-1.1); "
            f"fewest distinct units {vd.MIN_UNITS} and fewest fine-tuning seeds {pd.MIN_SEEDS} per arm; family-wise "
            f"level {pd.FAMILY_LEVEL:.0%} over {len(family)} backbone(s) compared with ImageNet "
            f"({', '.join(family) or 'none'}), so each arm's interval is {level:.1%} (seed-pooled t over units, "
            f"Satterthwaite df; each seed's own interval, described only, BCa over units); accuracy floor "
            f"{min_accuracy} (simulated test set and injected real hosts, per seed: a seed below it leaves its arm); "
            f"power reported at the observed effect with the units {vd.POWER:.0%} power needs.")


def write_report(result, analysis: Mapping[str, Any], cpu_seconds: float = math.nan, quiet: bool = False) -> Path:
    """report.html, comparisons.csv, stalls.csv, backbones.csv, records.csv, tables.json and paired.png in
    `result.out`."""
    out, config = result.out, result.config
    comps = analysis["comparisons"]
    training = result.training
    shown, backs = comparison_rows(comps), backbone_rows(analysis["index"], training)
    pooled = arm_rows(analysis.get("arms", {}))
    st.write_csv([c.row() for c in comps], out / "comparisons.csv")
    st.write_csv([dict(r, backbone=k) for k, rows in analysis.get("arms", {}).items() for r in rows],
                 out / "arms.csv")
    st.write_csv(analysis["stalls"], out / "stalls.csv")
    st.write_csv(backs, out / "backbones.csv")
    st.write_csv(list(result.records), out / "records.csv")
    consts = constants(analysis["level"], analysis["family"], config.min_accuracy)
    text = "\n\n".join([v.reason for v in result.verdicts.values()] + [consts])
    lst = config.lst_config().to_dict()
    tables = {"summary": summary(result, analysis, cpu_seconds),
              "verdicts": {k: v.to_dict() for k, v in result.verdicts.items()},
              "rule": pd.RULE, "screen_rule": result.real.get("rule"), "constants": consts,
              "arms": analysis.get("arms", {}),
              "comparisons": [c.row() for c in comps], "stalls": analysis["stalls"], "training": training,
              "real": result.real, "proxy": result.proxy, "lst_settings": config.lst_name(), "lst_config": lst,
              "config": config.settings(), "seconds": round(result.seconds, 1),
              "cpu_seconds": round(cpu_seconds, 1)}
    st.write_json(tables, out / "tables.json")
    result.tables = tables
    fig = paired_figure(comps, out / "paired.png")
    per_seed = "; ".join(f"seed {s} ({', '.join(d.get('backbones', []))}): {d['pairs']} pairs from "
                         f"{d['sources']} sources ({d['plain_sources']} plain, "
                         f"{d['injected_sources']} clumpy) on {d['hosts']} hosts"
                         for s, d in result.real.get("per_seed", {}).items())
    path = st.write_html_report(out / "report.html", TITLE, [
        {"heading": headline(result.verdicts), "text": pd.RULE + "\n\n" + text},
        {"heading": "The verdict's arms: seeds pooled as a random effect (ratio < 1: the backbone gets closer to "
                    "the other galaxy while keeping its class)", "table": pooled},
        {"heading": "Each seed alone (description; the verdict pools the seeds): paired comparison with ImageNet",
         "table": shown},
        {"figure": fig, "caption": "Each point is one pair: RMS-l2 left to the target by the backbone / by "
                                   "ImageNet, same pair and start noise, stalled pairs included. The intervals "
                                   "resample the independent units (images, hosts) with every pair involving them."},
        {"heading": "Stalled traversals: each backbone beside ImageNet on the same pairs (exact McNemar test)",
         "table": stall_rows(analysis["stalls"])},
        {"heading": "Backbones: simulated test accuracy beside accuracy on the injected real hosts (the domain gap)",
         "table": backs},
        {"heading": "Real hosts with injected clumps", "text": f"{result.real.get('rule', '')}\n\n{per_seed}",
         "table": real_rows(result.real)},
        {"heading": "How good is the proxy? Linear probe R² on held-out simulated morphology",
         "table": proxy_rows(result.proxy), "caption": _proxy_caption(result.proxy)},
        {"heading": "Settings", "text": "; ".join(f"{k} = {json.dumps(v)}" for k, v in config.settings().items())
         + f"\n\nLST ({config.lst_name()} settings): " + "; ".join(f"{k} = {json.dumps(v)}" for k, v in lst.items())
         + "\n\nBackbones: " + "; ".join(f"{k}: {v}" for k, v in BACKBONES.items())
         + f"\n\nThis invocation: {result.seconds:.0f} s wall, {cpu_seconds:.0f} s CPU (a rerun reuses finished "
           "work)."},
    ])
    path.write_text(path.read_text(encoding="utf-8").replace("</style>", WRAP + "</style>", 1), encoding="utf-8")
    if not quiet:
        print("\n" + headline(result.verdicts) + "\n\n" + text + "\n")
        print(st.markdown_table(pooled))
        print(f"\nreport: {path} ({result.seconds:.0f} s wall, {cpu_seconds:.0f} s CPU)")
    return path


def _proxy_caption(proxy_log: Mapping[str, Any] | None) -> str:
    if not proxy_log:
        return "No galaxy-proxy in this run (or its encoder was given as a file)."
    start = "the ImageNet weights" if proxy_log.get("init") == "imagenet" else "random init"
    return (f"galaxy-proxy = trained here from {start} on {proxy_log['pretrain_images']} simulated galaxies "
            f"x {proxy_log['pretrain_epochs']} epochs ({proxy_log['pretrain_seconds']} s wall, "
            f"{proxy_log.get('pretrain_cpu_seconds')} s CPU), MSE on their standardised "
            f"morphology; a proxy for Zoobot, not Zoobot. Encoder file: {proxy_log['file']} (Zoobot layout, "
            f"normalisation {proxy_log['normalisation']}). Linear probe: ridge regression from each encoder's pooled "
            "features (before any fine-tuning) to held-out simulated morphology, R² on a third held out.")


# -------------------------------------------------------------------------------- the docs' block, generated


def summary(result, analysis: Mapping[str, Any], cpu_seconds: float = math.nan) -> dict[str, Any]:
    """What the docs quote from one run: verdicts, the verdict cells' intervals, accuracies, the real arm, the
    traversals per pair set, wall and CPU time, and the galaxy-proxy's pretraining and probe."""
    cells = [c.row() for c in analysis["comparisons"] if c.category in pd.VERDICT_ARMS]
    walks = dict(Counter(r.get("domain", "?") for r in result.records))
    return {"verdicts": {k: {"outcome": v.outcome, "sentence": v.reason} for k, v in result.verdicts.items()},
            "arms": analysis.get("arms", {}), "cells": cells, "accuracy": result.accuracy,
            "stalls": [s for s in analysis["stalls"]
                                                                    if s["pairs"] in pd.VERDICT_ARMS],
            "real": {k: result.real.get(k) for k in ("hosts", "excluded", "per_seed", "folder", "surveys")},
            "seeds": list(result.config.seeds), "seed": result.config.seed, "lst": result.config.lst_name(),
            "level": analysis["level"], "min_units": vd.MIN_UNITS, "min_accuracy": result.config.min_accuracy,
            "seconds": round(result.seconds, 1), "rule": pd.RULE, "traversals": walks,
            "cpu_seconds": round(cpu_seconds, 1) if math.isfinite(cpu_seconds) else None,
            "proxy": _proxy_summary(result.proxy), "invocations": list(getattr(result, "invocations", [])),
            "screen_rule": result.real.get("rule"),
            "fine_tuned_here": getattr(result, "trained_here", None),
            "models": sum(1 for _ in result.accuracy),
            "constants": constants(analysis["level"], analysis["family"], result.config.min_accuracy)}


def _proxy_summary(log: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The proxy's pretraining (wall and CPU seconds, threads: of the run that pretrained it) and its probe's mean
    R² per encoder, from its log."""
    if not log:
        return None
    return {"pretrain_seconds": log.get("pretrain_seconds"), "pretrain_cpu_seconds": log.get("pretrain_cpu_seconds"),
            "pretrain_threads": log.get("pretrain_threads"),
            "probe_r2": {k: v.get("mean_r2") for k, v in (log.get("probe") or {}).items()}}


def record_summary(result, path: str | Path, command: str, threads: int | None = None) -> Path:
    """Add (or replace) this run's summary under its command line in the JSON file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    data.setdefault("runs", {})[command] = {**result.tables["summary"], "threads": threads}
    return st.write_json(data, path)


def render_readme(data: Mapping[str, Any]) -> str:
    """The docs' Zoobot results block (docs/studies.md) from docs/results/zoobot.json: the rule and its constants,
    then per run its command, each arm's seed-pooled geometric mean ratio [interval], pairs, units and seeds, the
    outcome and (where it cannot decide) its power and the units 80% power needs; each seed alone as description;
    accuracies, hosts and their surveys, the verdict. Runs recorded before the seed-pooled rule (no 'arms') are
    listed with their per-seed cells under the rule they were decided by."""
    runs = data.get("runs", {})
    pooled = {c: r for c, r in runs.items() if "arms" in r}
    older = {c: r for c, r in runs.items() if "arms" not in r}
    first = next(iter(pooled.values()), next(iter(runs.values()), {}))
    lines = [first.get("rule", ""), "", first.get("screen_rule", ""), "", first.get("constants", ""), ""]
    if pooled:
        lines += ["| run | backbone | arm | seeds | geometric mean ratio [interval] | pairs (distinct units) | outcome "
                  "| power at the observed effect |", "|---|---|---|---|---|---|---|---|"]
    texts = []
    for command, run in pooled.items():
        k = 0
        for kind, found in run["arms"].items():
            for r in found:
                dropped = "".join(f"; seed {s} dropped: {why}" for s, why in r["dropped"].items())
                power = pd.power_text(r, r["unit"]) if r.get("power") is not None and r["outcome"] in (
                    vd.INCONCLUSIVE, vd.UNDERPOWERED) else "n/a"
                outcome = r["words"] if r["ratio_lo"] is not None else f"{r['words']} ({r['reason']})"
                lines.append(f"| {'`' + command + '`' if k == 0 else ''} | {label(kind)} | {r['pairs']} | "
                             f"{', '.join(map(str, r['seeds'])) or 'none'}{dropped} | {sig(r['ratio'])} "
                             f"[{sig(r['ratio_lo'])}, {sig(r['ratio_hi'])}] | {r['n']} ({r['units']} {r['unit']}s) | "
                             f"{outcome} | {power} |")
                k += 1
        alone = "; ".join(f"{label(c['backbone'])} {c['pairs']} seed {c['seed']}: {sig(c['ratio'])}x "
                          f"[{sig(c['ratio_lo'])}, {sig(c['ratio_hi'])}] ({c['cell_words']})" for c in run["cells"])
        texts.append(_run_text(command, run) + f" Each seed alone (description, decides nothing): {alone}.")
    if older:
        lines += ([""] if pooled else []) + [
            "Runs recorded under the earlier rule (every seed's cell had to decide on its own):", "",
                  "| run | pairs | seed | RMS-l2 ratio, backbone / ImageNet [interval] | pairs (distinct units) | "
                  "cell |", "|---|---|---|---|---|---|"]
    for command, run in older.items():
        for k, c in enumerate(run["cells"]):
            lines.append(f"| {'`' + command + '`' if k == 0 else ''} | {c['pairs']} | {c['seed']} | "
                         f"{c['backbone']}: {sig(c['ratio'])} [{sig(c['ratio_lo'])}, {sig(c['ratio_hi'])}] | "
                         f"{c['n']} ({c['units']} {c['unit']}s) | {c['cell_words']} |")
        texts.append(_run_text(command, run) + " (earlier rule)")
    return "\n".join(lines) + "\n\n" + "\n".join(texts) + "\n"


def _run_text(command: str, run: Mapping[str, Any]) -> str:
    acc = "; ".join(f"{k} {sig(v['simulated'])} / {sig(v['real_host'])}" + _by_survey(v.get("real_by_survey"))
                    for k, v in run["accuracy"].items())
    left = _left_out(run["real"].get("excluded") or {})
    surveys = run["real"].get("surveys") or {}
    counted = ", ".join(f"{n} {s}" for s, n in sorted(
        {s: list(surveys.values()).count(s) for s in set(surveys.values())}.items()))
    hosts = f"{len(run['real'].get('hosts') or [])} real hosts" + (f" ({counted})" if counted else "")
    verdicts = " ".join(v["sentence"] for v in run["verdicts"].values())
    calls = run.get("invocations") or []
    if len(calls) > 1:  # a rerun into the same folder recorded this entry: the work's time is all invocations'
        took = (f"{sum(c['seconds'] for c in calls) / 60:.1f} min wall, "
                f"{sum(c['cpu_seconds'] for c in calls) / 60:.1f} min CPU over its {len(calls)} invocations into the "
                f"folder ({run.get('threads')} thread(s); the last, {run['seconds'] / 60:.1f} min, recorded this entry "
                f"and fine-tuned {run.get('fine_tuned_here')} of {run.get('models')} models)")
    else:
        here = run.get("fine_tuned_here")
        reuse = f"; {here} of {run.get('models')} models fine-tuned in this invocation, the rest and finished LST " \
                "reused from its folder" if here is not None and here < (run.get("models") or 0) else ""
        cpu = f", {run['cpu_seconds'] / 60:.1f} min CPU" if run.get("cpu_seconds") is not None else ""
        took = f"{run['seconds'] / 60:.1f} min wall{cpu} ({run.get('threads')} thread(s){reuse})"
    walks = run.get("traversals")
    order = sorted(walks or {}, key=lambda d: list(WALK_NAMES).index(d) if d in WALK_NAMES else len(WALK_NAMES))
    walked = (" Traversals: " + ", ".join(f"{walks[d]} {WALK_NAMES.get(d, d)}" for d in order) + ".") if walks else ""
    proxy = run.get("proxy")
    pretrained = ""
    if proxy and proxy.get("pretrain_seconds") is not None:
        r2 = ", ".join(f"{k} {sig(v)}" for k, v in proxy["probe_r2"].items())
        pretrained = (f" The galaxy-proxy: pretrained in {proxy['pretrain_seconds'] / 60:.1f} min wall "
                      f"({proxy['pretrain_cpu_seconds'] / 60:.1f} min CPU, {proxy['pretrain_threads']} thread(s)) by "
                      f"the run that first needed it; linear-probe R² on held-out morphology: {r2}.")
    return (f"- `{command}`: {took}.{walked} Accuracy, simulated test set / injected real hosts: {acc}. {hosts}; "
            f"left out: {left}.{pretrained} Verdict: {verdicts}")


def _by_survey(accuracy: Mapping[str, float] | None) -> str:
    return f" ({', '.join(f'{s} {sig(a)}' for s, a in accuracy.items())})" if accuracy and len(accuracy) > 1 else ""


WALK_NAMES = {"sim": "simulated", "injected": "injected-host", "real": "real-cutout"}


def _left_out(excluded: Mapping[str, str]) -> str:
    """The hosts left out, by reason: all named where there are few, else counted per reason (the names are in the
    run's report.html and results file)."""
    if len(excluded) <= 4:
        return "; ".join(f"{h} ({why})" for h, why in excluded.items()) or "none"
    reasons = Counter(why.split(":")[0] if why.startswith(("injection failed", "possibly clumpy")) else why
                      for why in excluded.values())
    return f"{len(excluded)} hosts (" + "; ".join(f"{n} {why}" for why, n in reasons.items()) + ")"
