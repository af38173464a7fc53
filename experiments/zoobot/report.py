"""The study's outputs: verdict first (the rule, then each backbone's verdict with its intervals), the paired
comparison table and figure, the backbones, the proxy's quality, the settings last; CSV and JSON beside them."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from blindspots import studies as st

from .backbones import BACKBONES
from .data import MORPHOLOGY
from .paired import RULE, Comparison, stalled

__all__ = ["write_report", "sig", "comparison_rows", "backbone_rows", "paired_figure"]

TITLE = "Zoobot vs ImageNet: paired under-sensitivity of galaxy classifiers"
WRAP = "td,th,p,figcaption{overflow-wrap:break-word}"


def sig(x: Any, digits: int = 3) -> str:
    """Three significant digits (n/a for missing or non-finite values)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:#.{digits}g}".rstrip(".") if isinstance(x, float) else str(x)


def label(kind: str) -> str:
    return kind + (" (proxy for Zoobot)" if kind == "galaxy-proxy" else "")


def comparison_rows(comps: Sequence[Comparison]) -> list[dict[str, str]]:
    """Display rows: ratio of RMS-l2 left (backbone / ImageNet) with its 95% interval, pairs used and stalled."""
    rows = []
    for c in comps:
        r = c.row()
        rows.append({"backbone": label(c.a), "pairs": c.category, "seed": str(c.seed), "n used": str(c.n),
                     "distinct sources / targets": f"{r['sources']} / {r['targets']}",
                     "stalled (backbone / ImageNet)": f"{c.stalled_a} / {c.stalled_b} of {c.total}",
                     "RMS-l2 ratio": sig(r["ratio"]),
                     "95% interval": f"[{sig(r['ratio_lo'])}, {sig(r['ratio_hi'])}]",
                     "excludes 1": {-1: "yes, below", 1: "yes, above", 0: "no"}[c.sign()] if c.n >= 2 else "n/a"})
    return rows


def backbone_rows(index: Mapping[tuple, Mapping], training: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per backbone and seed: test accuracy, median RMS-l2 left and stalled traversals per domain."""
    rows = []
    for name, t in training.items():
        row = {"backbone": label(t["backbone"]), "seed": str(t["seed"]), "sim test accuracy": sig(t["test_accuracy"]),
               "fine-tune s": sig(float(t["seconds"]))}
        for dom in ("sim", "real"):
            recs = list(index.get((t["backbone"], t["seed"], dom), {}).values())
            ok = [r["rms_l2"] for r in recs if not stalled(r)]
            row[f"{dom}: median RMS-l2 left"] = sig(float(np.median(ok))) if ok else "n/a"
            row[f"{dom}: stalled"] = f"{len(recs) - len(ok)} of {len(recs)}"
        rows.append(row)
    return rows


def proxy_rows(proxy_log: Mapping[str, Any] | None) -> list[dict[str, str]]:
    if not proxy_log:
        return []
    return [{"encoder": label(k), "mean R²": sig(v["mean_r2"]), **{m: sig(v[m]) for m in MORPHOLOGY}}
            for k, v in proxy_log["probe"].items()]


def paired_figure(comps: Sequence[Comparison], path: Path) -> Path | None:
    """Per pair category, per (backbone, seed): every usable pair's ratio (points) and the mean with its 95%
    bootstrap interval (bar), on a log axis with 1 (no difference) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [c for c in ("sim", "real cross-class", "real within-class", "real mixed")
            if any(x.category == c and x.n for x in comps)]
    if not cats:
        return None
    fig, axes = plt.subplots(1, len(cats), figsize=(10, 4.2), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, cat in zip(axes[0], cats):
        sub = [c for c in comps if c.category == cat and c.n]
        for i, c in enumerate(sub):
            colour = "C1" if c.a == "galaxy-proxy" else "C2" if c.a == "zoobot" else "C0"
            ax.scatter(i + rng.uniform(-0.18, 0.18, c.n), np.exp(c.d), s=10, alpha=0.5, color=colour)
            if c.n >= 2:
                lo, hi = c.interval()
                m = c.mean()
                ax.errorbar(i + 0.3, math.exp(m), yerr=[[math.exp(m) - math.exp(lo)], [math.exp(hi) - math.exp(m)]],
                            fmt="D", color="k", capsize=4, ms=5)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels([f"{c.a}\nseed {c.seed}\nn={c.n}" for c in sub], fontsize=9)
        ax.set_title(f"{cat} pairs", fontsize=11)
        ax.tick_params(axis="y", labelsize=9)
    axes[0][0].set_ylabel("RMS-l2 left: backbone / ImageNet\n(< 1: backbone more under-sensitive)", fontsize=10)
    fig.suptitle("Paired comparison per pair (points) with mean and 95% bootstrap interval (black)", fontsize=11)
    fig.tight_layout()
    return st.figure_to_png(fig, path)


def _headline(result: Mapping[str, Any]) -> str:
    if not result["verdicts"]:
        return "No verdict: the ImageNet backbone and at least one other backbone must both be measured."
    return "Verdict: " + "; ".join(f"{label(k)} vs ImageNet: " + (o if o == "inconclusive" else
                                   f"{label(o)} is more under-sensitive") for k, (o, _) in result["verdicts"].items())


def _verdict_text(result: Mapping[str, Any], seeds: Sequence[int]) -> str:
    lines = [sentence for _, sentence in result["verdicts"].values()]
    lines.append(f"Fine-tuning seeds per backbone: {len(seeds)} ({', '.join(map(str, seeds))}); same pairs and "
                 "same start noise for every backbone and seed.")
    return "\n\n".join(lines)


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


def write_report(out: Path, args: argparse.Namespace, seeds: Sequence[int], records: Sequence[dict[str, Any]],
                 result: Mapping[str, Any], training: Mapping[str, Any], proxy_log: Mapping[str, Any] | None,
                 cfg: Any, seconds: float, cpu_seconds: float = math.nan) -> Path:
    """report.html, comparisons.csv, backbones.csv, tables.json, records.csv and paired.png in `out`."""
    comps = result["comparisons"]
    shown, backs = comparison_rows(comps), backbone_rows(result["index"], training)
    st.write_csv([c.row() for c in comps], out / "comparisons.csv")
    st.write_csv(backs, out / "backbones.csv")
    st.write_csv(list(records), out / "records.csv")
    verdict = _verdict_text(result, seeds)
    settings = {k: v for k, v in vars(args).items() if k not in ("quiet",)}
    st.write_json({"verdicts": {k: {"outcome": o, "sentence": s} for k, (o, s) in result["verdicts"].items()},
                   "rule": RULE, "seeds": list(seeds), "comparisons": [c.row() for c in comps],
                   "training": training, "proxy": proxy_log, "lst_config": cfg.to_dict(), "settings": settings,
                   "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)}, out / "tables.json")
    fig = paired_figure(comps, out / "paired.png")
    path = st.write_html_report(out / "report.html", TITLE, [
        {"heading": _headline(result), "text": RULE + "\n\n" + verdict},
        {"heading": "Paired comparison with ImageNet (ratio < 1: the backbone gets closer to the other galaxy "
                    "while keeping its class)", "table": shown},
        {"figure": fig, "caption": "Each point is one pair: RMS-l2 left to the target by the backbone / by "
                                   "ImageNet, same pair and start noise. Stalled pairs are left out and counted "
                                   "in the table. Pairs that share a source or a target are not independent: the "
                                   "intervals (bootstrap over pairs) are too narrow where few distinct images "
                                   "make up many pairs (see 'distinct sources / targets')."},
        {"heading": "Backbones (simulated test accuracy, per fine-tuning seed)", "table": backs},
        {"heading": "How good is the proxy? Linear probe R² on held-out simulated morphology",
         "table": proxy_rows(proxy_log), "caption": _proxy_caption(proxy_log)},
        {"heading": "Settings", "text": "; ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
         + "\n\nLST: " + "; ".join(f"{k} = {json.dumps(v)}" for k, v in cfg.to_dict().items())
         + "\n\nBackbones: " + "; ".join(f"{k}: {v}" for k, v in BACKBONES.items())
         + f"\n\nThis invocation: {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU (a rerun reuses finished work)."},
    ])
    path.write_text(path.read_text(encoding="utf-8").replace("</style>", WRAP + "</style>", 1), encoding="utf-8")
    if not args.quiet:
        print("\n" + _headline(result) + "\n\n" + verdict + "\n")
        print(st.markdown_table(shown))
        print(f"\nreport: {path} ({seconds:.0f} s wall, {cpu_seconds:.0f} s CPU)")
    return path
