"""The LST paper's findings checked on real trained models: normal vs adversarially trained (AT), CNN and ViT.

    blindspots paper                          # MNIST: mnist-cnn[-at], mnist-vit[-at]; ImageNet: lite0, MobileNetV2
    blindspots paper --groups mnist --sources 100 --iterations 400

Per group of models, the paper's protocol (`experiments.lst_tables.run_study`): sources that every model of the group
classifies correctly with confidence > `--min-confidence` (0.6, as the paper's pool), `--rounds` derangements (each
source to a target of another class), LST with the paper's settings unless told otherwise; Table 1 (RMS-l2, l-inf,
SSIM as the paper defines it, final confidence) and Table 2 (triangle hulls) in `OUT/<group>/`. Then the claims,
each decided by a rule fixed here, before any number is seen (`CLAIM_RULES`), with 95% intervals over sources:

1. LST outputs look like the target while the model keeps the source class: every pair ends with p_src >= p0 - delta
   and, per model, the bootstrap interval of the mean SSIM(output, target) lies above 0.9.
2. The straight path from the source to each LST output stays confident (star-like): the fraction of sources whose
   source edges never drop below p_src - delta (per-source worst edge), Wilson interval, lower bound >= 0.9.
3. AT models keep a larger confident fraction of the triangle hull than normal ones, for the CNN and for the ViT:
   the paired (same sources) difference AT - normal of the fraction of probes with p >= p_src - delta, bootstrap
   interval above 0.

A claim "holds" when its rule is met by every model (architecture, for 3), "does not hold" when the opposite bound
is met by every one, and is "mixed" otherwise. Writes `claims.json`, `claims.csv`, `triangles.png` (for one source,
the triangle confidence maps of the normal and the AT model side by side) and `report.html`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from blindspots import LSTConfig, load_classifier
from blindspots import studies as st
from blindspots.cli import add_common_options, model_call_options, positive_int, resolve_device
from blindspots.stats import bootstrap_interval, wilson_interval
from blindspots.store import RunStore

from .lst_tables import TABLE1_FIELDS, TABLE2_FIELDS, run_study

HELP = "the LST paper's claims on real normal and adversarially trained models (MNIST CNN/ViT, ImageNet)"

SSIM_FLOOR = 0.9  # claim 1: "looks like the target"
STAR_FLOOR = 0.9  # claim 2: share of star-like sources
CLAIM_RULES = {
    "outputs_look_like_target": f"every pair keeps p_src >= p0 - delta and the 95% bootstrap interval of the mean "
                                f"SSIM(output, target) lies above {SSIM_FLOOR} for every model (does not hold: "
                                "a pair loses the threshold, or the interval lies below 0.5)",
    "paths_star_like": f"the 95% Wilson interval of the share of sources whose source edges stay >= p_src - delta "
                       f"lies above {STAR_FLOOR} for every model (below 0.5: does not hold)",
    "at_hull_larger": "the 95% bootstrap interval of the paired difference AT - normal of the confident hull "
                      "fraction (p >= p_src - delta) lies above 0 for the CNN and for the ViT (below 0: does not "
                      "hold)",
}


@dataclass(frozen=True)
class Group:
    """Models probed on one image pool, and which of them form (normal, AT) pairs of one architecture."""

    models: tuple[str, ...]
    at_pairs: tuple[tuple[str, str, str], ...]  # (architecture, normal, AT)
    images: Callable[[int | None, int, int], tuple[torch.Tensor, torch.Tensor | None, list[str]]]


def _mnist_images(limit: int | None, seed: int, size: int):
    """Held-out MNIST digits (the 1,000 of the zoo's split), a seeded class-balanced subset of `limit`."""
    from blindspots.zoo import mnist_split

    x, y = mnist_split("test")
    if limit is not None and limit < len(y):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        per_class = -(-limit // 10)
        keep = torch.cat([order[y[order] == c][:per_class] for c in range(10)])[:limit]
        x, y = x[keep.sort().values], y[keep.sort().values]
    return x, y, [f"mnist-test-{i}" for i in range(len(y))]


def _photo_images(limit: int | None, seed: int, size: int):
    """The real photos both ImageNet models put in the same class, one per class (labels: their prediction), at
    `size` pixels."""
    from blindspots.photos import agreed_photo_pool

    pool = agreed_photo_pool([load_classifier(m) for m in GROUPS["imagenet"].models], size=size)
    n = len(pool) if limit is None else min(limit, len(pool))
    return pool.images[:n], pool.classes[:n], list(pool.names[:n])


GROUPS: dict[str, Group] = {
    "mnist": Group(("mnist-cnn", "mnist-cnn-at", "mnist-vit", "mnist-vit-at"),
                   (("CNN", "mnist-cnn", "mnist-cnn-at"), ("ViT", "mnist-vit", "mnist-vit-at")), _mnist_images),
    "imagenet": Group(("imagenet-lite0", "imagenet-mobilenetv2"), (), _photo_images),
}


# ------------------------------------------------------------------------------------------------ the claims


def _verdict(passes: Sequence[bool], fails: Sequence[bool]) -> str:
    if passes and all(passes):
        return "holds"
    if fails and all(fails):
        return "does not hold"
    return "mixed"


def _by_model(records: Sequence[Mapping[str, Any]], kind: str) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("kind") == kind:
            out.setdefault(r["model"], []).append(r)
    return out


def claim_outputs_look_like_target(records, delta: float, seed: int = 0) -> dict[str, Any]:
    """Claim 1 from the pair records: per model the share of pairs keeping p >= p0 - delta and the mean SSIM to
    the target (per-source means over rounds, bootstrap interval over sources)."""
    rows = []
    for model, recs in _by_model(records, "lst").items():
        held = float(np.mean([r["initial_confidence"] - r["final_confidence"] < delta for r in recs]))
        per_source: dict[int, list[float]] = {}
        for r in recs:
            per_source.setdefault(r["source"], []).append(r["ssim_paper"])
        values = np.array([np.mean(v) for v in per_source.values()])
        lo, hi = bootstrap_interval(values, seed=seed)
        rows.append({"model": model, "measure": "mean SSIM(output, target)", "value": float(values.mean()),
                     "ci_low": lo, "ci_high": hi, "n": len(values), "threshold_held": held})
    verdict = _verdict([r["threshold_held"] == 1.0 and r["ci_low"] > SSIM_FLOOR for r in rows],
                       [r["threshold_held"] < 1.0 or r["ci_high"] < 0.5 for r in rows])
    return {"claim": "outputs_look_like_target", "rule": CLAIM_RULES["outputs_look_like_target"], "rows": rows,
            "verdict": verdict}


def claim_paths_star_like(records, delta: float) -> dict[str, Any]:
    """Claim 2 from the hull records: the share of sources whose worst source-edge point stays >= p_src - delta."""
    rows = []
    for model, recs in _by_model(records, "hull").items():
        ok = np.array([r["edge_min"] >= -delta - 1e-5 for r in recs])
        lo, hi = wilson_interval(ok.sum(), ok.size)
        rows.append({"model": model, "measure": "share of star-like sources", "value": float(ok.mean()),
                     "ci_low": float(lo), "ci_high": float(hi), "n": int(ok.size)})
    verdict = _verdict([r["ci_low"] >= STAR_FLOOR for r in rows], [r["ci_high"] < 0.5 for r in rows])
    return {"claim": "paths_star_like", "rule": CLAIM_RULES["paths_star_like"], "rows": rows, "verdict": verdict}


def claim_at_hull_larger(records, at_pairs: Sequence[tuple[str, str, str]], delta: float,
                         seed: int = 0) -> dict[str, Any]:
    """Claim 3: per architecture, the paired per-source difference AT - normal of the confident hull fraction."""
    field = f"fraction@{delta:g}"
    hull = {m: {r["source"]: r[field] for r in recs} for m, recs in _by_model(records, "hull").items()}
    rows = []
    for arch, normal, at in at_pairs:
        if normal not in hull or at not in hull:
            continue
        common = sorted(set(hull[normal]) & set(hull[at]))
        diff = np.array([hull[at][s] - hull[normal][s] for s in common])
        lo, hi = bootstrap_interval(diff, seed=seed)
        rows.append({"model": f"{arch}: {at} - {normal}", "measure": f"hull fraction p >= p_src - {delta:g}",
                     "value": float(diff.mean()) if diff.size else float("nan"), "ci_low": lo, "ci_high": hi,
                     "n": int(diff.size), "normal": float(np.mean([hull[normal][s] for s in common])),
                     "at": float(np.mean([hull[at][s] for s in common]))})
    verdict = _verdict([r["ci_low"] > 0 for r in rows], [r["ci_high"] < 0 for r in rows])
    return {"claim": "at_hull_larger", "rule": CLAIM_RULES["at_hull_larger"], "rows": rows, "verdict": verdict}


def evaluate_claims(records, at_pairs, delta: float, seed: int = 0) -> list[dict[str, Any]]:
    """The three claims (see the module docstring) from a study's pair and hull records."""
    return [claim_outputs_look_like_target(records, delta, seed), claim_paths_star_like(records, delta),
            claim_at_hull_larger(records, at_pairs, delta, seed)]


def claims_table(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One display row per (claim, model): measured value, 95% interval, verdict."""
    return [{"claim": c["claim"], "model": r["model"], "measure": r["measure"], "value": f"{r['value']:.3g}",
             "95% interval": f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]", "n": str(r["n"]), "verdict": c["verdict"]}
            for c in claims for r in c["rows"]] or [{"claim": c["claim"], "verdict": c["verdict"]} for c in claims]


# ------------------------------------------------------------------------------------------------ the study


def run_claims(out: str | Path, groups: Mapping[str, Group] | Sequence[str] = ("mnist", "imagenet"), *,
               sources: int | None = 60, rounds: int = 5, config: LSTConfig | None = None,
               min_confidence: float = 0.6, seed: int = 0, device=None, batch_size: int = 50, photo_size: int = 128,
               progress: bool = False, restart: bool = False,
               models: Mapping[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Run (or resume) the protocol on every group into `out/<group>`, then evaluate the claims over all groups.

    `groups`: names of `GROUPS` or Group objects by name; `models` overrides `load_classifier` by name (tests);
    `sources`: at most this many images per group before the confidence filter; `photo_size`: the ImageNet
    photos' size in pixels (128 by default so that the default run fits about 15 minutes on 2 CPU cores; the paper
    uses 224, about 3x longer).
    """
    config = config or LSTConfig.paper()
    groups = {g: GROUPS[g] for g in groups} if not isinstance(groups, Mapping) else dict(groups)
    out = Path(out)
    records: list[dict[str, Any]] = []
    tables: dict[str, Any] = {}
    pools: dict[str, torch.Tensor] = {}
    for name, group in groups.items():
        nets = [(m, (models or {}).get(m) or load_classifier(m, device=device)) for m in group.models]
        images, labels, names = group.images(sources, seed, photo_size)
        pools[name] = images
        tables[name] = run_study(nets, images, labels, out / name, config=config,
                                 protocol=st.ProtocolConfig(rounds=rounds, seed=seed, pairs_per_batch=batch_size),
                                 min_confidence=min_confidence, image_names=names, progress=progress,
                                 restart=restart, settings={"group": name})
        records += [dict(r, group=name) for r in RunStore.read_records(out / name)]
    at_pairs = [p for g in groups.values() for p in g.at_pairs]
    claims = evaluate_claims(records, at_pairs, config.threshold, seed)
    st.write_json({"claims": claims, "rules": CLAIM_RULES, "delta": config.threshold}, out / "claims.json")
    st.write_csv(claims_table(claims), out / "claims.csv")
    figure = triangle_figure(out, groups, pools, models) if at_pairs else None
    write_report(out, claims, tables, figure, {"config": config.to_dict(), "rounds": rounds, "sources": sources,
                                               "photo_size": photo_size, "min_confidence": min_confidence,
                                               "seed": seed})
    return {"claims": claims, "tables": tables, "figure": figure}


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


def write_report(out: Path, claims, tables, figure: Path | None, settings: Mapping[str, Any]) -> Path:
    """report.html: the claims table first, then each group's tables and the triangle figure, settings last."""
    verdicts = "; ".join(f"{c['claim']}: {c['verdict']}" for c in claims)
    sections: list[dict[str, Any]] = [
        {"heading": "Claims of the paper, checked", "text": verdicts, "table": claims_table(claims)},
        {"heading": "Rules (fixed before the numbers)", "pre": "\n".join(f"{k}: {v}" for k, v in CLAIM_RULES.items())},
    ]
    if figure is not None:
        sections.append({"figure": figure, "caption": "One source's triangle (source, b0, b1): the source-class "
                                                      "confidence of the normal (left) and the AT model (right)."})
    for name, t in tables.items():
        sections.append({"heading": f"{name}: Table 1", "table": st.display_rows(t["table1"], ["model"],
                                                                                  TABLE1_FIELDS, digits=3)})
        if t["table2"]:
            sections.append({"heading": f"{name}: Table 2", "table": st.display_rows(t["table2"], ["model"],
                                                                                      TABLE2_FIELDS, digits=3)})
    sections.append({"heading": "Settings", "pre": str(dict(settings))})
    return st.write_html_report(out / "report.html", "LST paper claims on real models", sections)


# ------------------------------------------------------------------------------------------------ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groups", default="mnist,imagenet", help="comma-separated: mnist, imagenet")
    p.add_argument("--sources", type=positive_int, default=60,
                   help="images per group before the pool filter (claim 2's Wilson bound needs >= 35 sources to "
                        "reach 0.9 at all)")
    p.add_argument("--rounds", type=positive_int, default=5, help="derangement rounds (LST outputs per source)")
    p.add_argument("--min-confidence", type=float, default=0.6, help="pool: confidence needed (the paper's 0.6)")
    p.add_argument("--photo-size", type=positive_int, default=128,
                   help="ImageNet photos' size in pixels (the paper: 224, about 3x longer)")
    add_common_options(p, "paper", model=None, iterations=None, batch_size=50, model_calls=True)


def run(args: argparse.Namespace) -> int:
    groups = [g for g in args.groups.split(",") if g]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"--groups: unknown {unknown}; choose from {list(GROUPS)}")
    if args.model is not None or args.weights is not None:
        raise ValueError("--model/--weights: this study probes its fixed model groups (see --groups)")
    config = LSTConfig.paper(**({"iterations": args.iterations} if args.iterations else {}), **model_call_options(args))
    result = run_claims(args.out, groups, sources=args.sources, rounds=args.rounds, config=config,
                        min_confidence=args.min_confidence, seed=args.seed, device=resolve_device(args.device),
                        batch_size=args.batch_size, photo_size=args.photo_size, progress=not args.quiet,
                        restart=args.restart)
    if not args.quiet:
        print(st.markdown_table(claims_table(result["claims"])))
        print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from blindspots.cli import run_command

    return run_command("paper", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
