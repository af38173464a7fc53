"""The LST paper's Tables 1 and 2 on any list of models and an image pool, resumable and shardable.

Protocol (Balasubramanian et al. 2023): the pool is the images every model classifies correctly (confidence >
`--min-confidence`, strict; 0.6 in the paper); 5 rounds, each a derangement sending every source to a target of another
class; LST with the paper's settings (`LSTConfig.paper()`: step 1e-2, 400 iterations, threshold 0.2, adversarial
step 2e-3). Table 1 per model: RMS-l2, l-inf, SSIM (and LPIPS with `--lpips-weights`) between LST outputs and
targets, and the final source confidence, mean +- std over rounds and sources. Table 2 per model: the triangle-hull
statistics of `blindspots.geometry.hull_statistics` over the 5 outputs of each source, mean +- std over sources.

    blindspots tables                                   # imagenet-lite0 on scikit-image's photos
    blindspots tables --iterations 40 --out blindspots-out/quick  # a quick look (not the paper's T)
    blindspots tables --model timm:resnet50,timm:deit_small_patch16_224 \\
        --weights resnet50.safetensors,deit_s.safetensors --images val_pool/ --labels val_pool/labels.csv \\
        --min-confidence 0.6
    torchrun --nproc-per-node 2 -m benchmarks.lst_tables --out blindspots-out/lst   # sharded; rank 0 writes

Output folder: run.json (the run store's key), records*.jsonl (one line per pair / per source, resumable), stages/
(LST outputs), table1.csv, table2.csv, tables.json, report.html (+ PNG figures).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from blindspots import LSTConfig, derangement_pairs, load_classifier
from blindspots import studies as st
from blindspots.errors import InputError
from blindspots.cli import add_common_options, model_call_options, positive_int

HELP = "the LST paper's Table 1 (distances, SSIM, confidence) and Table 2 (triangle hulls) for any models"

__all__ = ["TABLE1_FIELDS", "TABLE2_FIELDS", "HULL_DELTAS", "hull_deltas", "table2_fields", "hull_metric",
           "lpips_metric", "run_study", "build_tables",
           "write_report", "run_tables", "open_unit_float", "add_arguments", "run", "main"]

TABLE1_FIELDS = {"rms_l2": "RMS-l2", "linf": "l-inf", "ssim_paper": "SSIM (Gaussian 11, sigma 1.5; the paper's)",
                 "ssim": "SSIM (7x7 uniform; scikit-image)", "lpips": "LPIPS",
                 "final_confidence": "final confidence", "initial_confidence": "source confidence",
                 "acceptance_rate": "acceptance rate",
                 "unconstrained": "unconstrained (source confidence <= threshold; its mean is their share)"}
# Table 2: every triangle (source, b_i, b_j) probed on the 66-point barycentric grid of step 0.1 (vertices and edges
# included; the published code keeps 64 of them); "frac" counts probes with p >= p_src - delta (- 1e-5 for float
# rounding; the published code uses a strict '>'); per source, means over its triangles except the worst edge minimum.
TABLE2_FIELDS = {"p_src": "p_src", "hull_mean": "hull mean p", "edge_mean": "source-edge mean p",
                 "edge_min": "worst source-edge min (p - p_src)", "fraction@0": "frac p>=p_src",
                 "fraction@0.1": "frac p>=p_src-0.1", "fraction@0.2": "frac p>=p_src-0.2",
                 "fraction@0.3": "frac p>=p_src-0.3", "side_source": "triangle side source-output (RMS-l2)",
                 "side_outputs": "triangle side output-output (RMS-l2)"}
HULL_DELTAS = (0.0, 0.1, 0.2, 0.3)


def hull_deltas(threshold: float) -> tuple[float, ...]:
    """The deltas Table 2 reports: the paper's four and the run's own threshold (any value in (0, 1))."""
    return tuple(sorted(set(HULL_DELTAS) | {float(threshold)}))


def table2_fields(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """TABLE2_FIELDS plus a column for each delta of `rows` (summaries or records) beyond the paper's four."""
    keys = sorted({k.removesuffix("_mean") for r in rows for k in r if k.startswith("fraction@")} - set(TABLE2_FIELDS))
    return {**TABLE2_FIELDS, **{k: f"frac p>=p_src-{k.removeprefix('fraction@')}" for k in keys
                                if not k.endswith(("_std", "_median", "_n"))}}


def hull_metric(grid_step: float = 0.1, deltas: Sequence[float] = HULL_DELTAS, batch_size: int = 256
                ) -> st.SourceMetric:
    """Per-source triangle-hull statistics (paper Table 2) as a source metric for `run_pair_protocol`, with the
    triangles' size: mean RMS-l2 from the source to its outputs and between its outputs."""
    from blindspots.geometry import hull_statistics
    from blindspots.metrics import rms_l2

    def metric(model: nn.Module, sources: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor, **_: Any):
        res = hull_statistics(model, sources, outputs, labels, grid_step, deltas, batch_size=batch_size)
        per = res.per_source()
        s, k = outputs.shape[:2]
        i, j = torch.triu_indices(k, k, 1)
        side_src = rms_l2(outputs.flatten(0, 1), sources.repeat_interleave(k, 0)).view(s, k).mean(1)
        side_out = rms_l2(outputs[:, i].flatten(0, 1), outputs[:, j].flatten(0, 1)).view(s, -1).mean(1)
        return [{k_: float(v[n]) for k_, v in per.items()} | {
            "pairs": int(res.pairs.shape[0]), "probes_per_triangle": int(res.grid.shape[0]),
            "side_source": float(side_src[n]), "side_outputs": float(side_out[n])} for n in range(sources.shape[0])]

    return metric


def ssim_paper_metric(model, sources, outputs, targets, labels) -> dict[str, torch.Tensor]:
    """SSIM between LST outputs and targets as the paper defines it (Gaussian window 11, sigma 1.5, data range 1)."""
    from blindspots.metrics import ssim_paper

    return {"ssim_paper": ssim_paper(outputs, targets)}


def lpips_metric(weights: str | Path) -> st.PairMetric:
    """LPIPS (AlexNet) between LST outputs and targets, with AlexNet weights from a local file."""
    from blindspots.metrics import load_lpips, lpips

    load_lpips(weights)  # fail now, not after the first batch of LST, when the file is wrong

    def metric(model, sources, outputs, targets, labels):
        return {"lpips": lpips(outputs, targets, weights)}

    return metric


def run_study(
    models: Sequence[tuple[str, nn.Module]],
    images: torch.Tensor,
    labels: torch.Tensor | None,
    out: str | Path,
    *,
    config: LSTConfig | None = None,
    protocol: st.ProtocolConfig | None = None,
    min_confidence: float = 0.0,
    hull: bool = True,
    grid_step: float = 0.1,
    lpips_weights: str | Path | None = None,
    image_names: Sequence[str] | None = None,
    info: st.DistInfo | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
    report: bool = True,
    restart: bool = False,
    pool: Sequence[int] | torch.Tensor | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) the protocol for every model into `out`; on rank 0 return the tables (None elsewhere).

    `models` are (name, classifier) pairs already on `info.device`. The run store's key holds every model's
    weights, the images, the protocol, the config and `settings` (e.g. the command line): a rerun with any of them
    changed into the same folder is refused naming what changed (`restart=True` discards the old run). `pool`:
    the source indices when the caller chose them (e.g. a second run on the same pool); by default the images
    every model classifies correctly with confidence > `min_confidence`.
    """
    config = config or LSTConfig.paper()
    protocol = protocol or st.ProtocolConfig()
    info = info or st.DistInfo()
    out = Path(out)
    if hull and protocol.rounds < 2:
        raise InputError(f"rounds {protocol.rounds}: the hull statistics (Table 2) need >= 2 rounds, two LST outputs "
                         "per source for a triangle; give --rounds >= 2 or --no-hull")
    chosen, labels_t = st.select_pool([m for _, m in models], images, labels, min_confidence=min_confidence)
    pool = chosen if pool is None else torch.as_tensor(pool).long().flatten()
    if pool.numel() < 2:
        raise InputError(f"only {pool.numel()} image(s) are classified correctly by every model (confidence > "
                         f"{min_confidence}); the protocol needs at least 2 of different classes")
    targets = derangement_pairs(labels_t[pool], protocol.rounds, protocol.seed)
    full_settings = {"study": "lst_tables", "models": [n for n, _ in models], "config": config.to_dict(),
                     "protocol": asdict(protocol),
                     "min_confidence": min_confidence, "hull": hull, "grid_step": grid_step,
                     "lpips": lpips_weights is not None, "pool": pool.tolist(), "labels": labels_t.tolist(),
                     **(settings or {})}
    store = st.open_run_store(out, "lst_tables", info, restart=restart, model=dict(models), settings=full_settings,
                              inputs={"images": images})
    try:
        return _run(store, models, images, labels_t, pool, targets, out, config, protocol, info, hull,
                    grid_step, lpips_weights, image_names, progress, report)
    finally:
        store.close()


def _run(store, models, images, labels_t, pool, targets, out, config, protocol, info, hull, grid_step,
         lpips_weights, image_names, progress, report) -> dict[str, Any] | None:
    if lpips_weights is None and info.is_main:
        print("skipped: LPIPS (no --lpips-weights given)")
    pair_metrics = {"ssim_paper": ssim_paper_metric}
    if lpips_weights is not None:
        pair_metrics["lpips"] = lpips_metric(lpips_weights)
    source_metrics = {"hull": hull_metric(grid_step, hull_deltas(config.threshold))} if hull else {}
    mine: list[dict[str, Any]] = []
    for name, model in models:
        mine += st.run_pair_protocol(model, name, images, labels_t, pool, targets, store, config=config,
                                     protocol=protocol, info=info, pair_metrics=pair_metrics,
                                     source_metrics=source_metrics, progress=progress)
    records = st.gather_records(mine, info)
    if records is None:
        return None
    tables = build_tables(records, [n for n, _ in models])
    tables["pool"] = {"indices": pool.tolist(), "labels": labels_t[pool].tolist(),
                      "names": [image_names[i] for i in pool.tolist()] if image_names else None}
    tables["labels"] = labels_t.tolist()  # of every image: the classes the protocol used
    tables["targets"] = targets.tolist()  # (rounds, pool) positions in the pool: the pairs
    tables["skipped"] = [s for s, missing in (("hull statistics (--no-hull)", not hull),
                                              ("LPIPS (no weights given)", lpips_weights is None)) if missing]
    st.write_json(tables, out / "tables.json")
    st.write_csv(tables["table1"], out / "table1.csv")
    if tables["table2"]:
        st.write_csv(tables["table2"], out / "table2.csv")
    st.write_csv(records, out / "records.csv")
    if report:
        write_report(out, tables, records, images, [n for n, _ in models])
    return tables


def build_tables(records: Sequence[dict[str, Any]], model_order: Sequence[str]) -> dict[str, Any]:
    """Table 1 and 2 (mean, std and n per column and model) from the records; deterministic given the records."""
    records = st.dedup_sorted(records)
    order = {m: i for i, m in enumerate(model_order)}
    lst = [r for r in records if r["kind"] == "lst"]
    hull = [r for r in records if r["kind"] == "hull"]
    t1 = sorted(st.summarize(lst, ["model"], list(TABLE1_FIELDS)), key=lambda r: order.get(r["model"], 1 << 30))
    t2 = sorted(st.summarize(hull, ["model"], list(table2_fields(hull))), key=lambda r: order.get(r["model"], 1 << 30))
    return {"table1": t1, "table2": t2, "pairs": len(lst), "hull_sources": len(hull)}


def _example_figure(out: Path, records: Sequence[dict[str, Any]], images: torch.Tensor, model_order: Sequence[str],
                    per_model: int = 3) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from safetensors.torch import load_file

    rows = []
    for m in model_order:
        recs = [r for r in records if r["kind"] == "lst" and r["model"] == m and r["round"] == 0][:per_model]
        rows += recs
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 3, figsize=(7, 2.4 * len(rows)), squeeze=False)
    cache: dict[str, dict[str, torch.Tensor]] = {}
    for ax, r in zip(axes, rows):
        arr = cache.setdefault(r["array"], load_file(str(out / r["array"])))["images"][r["array_index"]]
        for a, img, title in zip(ax, (images[r["source"]], arr, images[r["target"]]),
                                 (f"source #{r['source']} (class {r['source_label']})",
                                  f"LST output, p_src {r['final_confidence']:.3f}\nRMS {r['rms_l2']:.4f}",
                                  f"target #{r['target']} (class {r['target_label']})")):
            a.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            a.set_title(title, fontsize=8)
            a.axis("off")
        ax[0].set_ylabel(r["model"], fontsize=8)
    fig.suptitle("LST outputs look like their targets while the model keeps the source class", fontsize=9)
    return st.figure_to_png(fig, out / "examples.png")


def _hull_figure(out: Path, table2: Sequence[dict[str, Any]]) -> Path | None:
    if not table2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("fraction@0", "fraction@0.1", "fraction@0.2", "fraction@0.3") if f"{k}_mean" in table2[0]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(table2)
    for i, row in enumerate(table2):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [row[f"{k}_mean"] for k in keys], width, yerr=[row[f"{k}_std"] for k in keys],
               label=row["model"], capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("fraction@", "delta=") for k in keys])
    ax.set_ylabel("fraction of hull probes with p >= p_src - delta")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return st.figure_to_png(fig, out / "hull_fractions.png")


def write_report(out: Path, tables: dict[str, Any], records: Sequence[dict[str, Any]], images: torch.Tensor,
                 model_order: Sequence[str]) -> Path:
    """report.html beside the records: both tables, example LST outputs and the hull fractions."""
    t1 = st.display_rows(tables["table1"], ["model"], TABLE1_FIELDS)
    t2 = st.display_rows(tables["table2"], ["model"], table2_fields(tables["table2"]))
    sections: list[dict[str, Any]] = [
        {"text": f"{tables['pairs']} LST pairs over {len(tables['pool']['indices'])} correctly classified sources "
                 "(mean ± std over rounds and sources; n = pairs)."
                 + (" Skipped: " + "; ".join(tables["skipped"]) + "." if tables.get("skipped") else "")},
        {"heading": "Table 1: LST output vs target, and the source confidence kept", "table": t1},
    ]
    if t2:
        sections.append({"heading": "Table 2: triangle hull (source, b_i, b_j) statistics (n = sources)",
                         "table": t2})
        sections.append({"figure": _hull_figure(out, tables["table2"]),
                         "caption": "Fraction of probes of the triangles spanned by a source and two LST outputs "
                                    "where the source class stays confident (mean ± std over sources)."})
    ex = _example_figure(out, records, images, model_order)
    if ex is not None:
        sections.append({"heading": "Examples (round 0)", "figure": ex,
                         "caption": "Source, LST output and target for the first sources of the pool."})
    return st.write_html_report(out / "report.html", "LST paper tables", sections)


# ----------------------------------------------------------------------------------------------- command line


def _read_labels(path: str | Path, names: Sequence[str]) -> torch.Tensor:
    """A CSV of 'file,label' lines (header optional) -> labels in the order of `names`."""
    table: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
                    table[row[0].strip()] = int(row[1])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read labels file {path}: not a UTF-8 CSV of 'file,label' lines ({exc})") from None
    missing = [n for n in names if n not in table]
    if missing:
        raise InputError(f"{path} has no label for {len(missing)} images, e.g. {missing[:3]}")
    return torch.tensor([table[n] for n in names])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default=None, help="folder of images (default: scikit-image's bundled photos)")
    p.add_argument("--labels", default=None, help="CSV 'file,label' for --images (default: the first model's "
                                                  "predictions, i.e. the pool is where all models agree)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many images")
    p.add_argument("--size", type=positive_int, default=224)
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="pool: confidence above this (strict; paper: 0.6)")
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--threshold", type=open_unit_float, default=None, help="delta, in (0, 1) (paper: 0.2)")
    p.add_argument("--adv-eps", type=float, default=None)
    p.add_argument("--no-hull", action="store_true", help="skip Table 2")
    p.add_argument("--grid-step", type=float, default=0.1)
    p.add_argument("--lpips-weights", default=None, help="ImageNet AlexNet weights for LPIPS (torchvision's alexnet "
                   "checkpoint, or an lpips state dict)")
    add_common_options(p, "tables", iterations=None, batch_size=20, model_calls=True)


def run_tables(out: str | Path, models: str | Sequence[str] = "imagenet-lite0", *,
               weights: Sequence[str | None] | None = None, images: str | Path | None = None,
               labels: str | Path | None = None, limit: int | None = None, size: int = 224,
               min_confidence: float = 0.0, rounds: int = 5, config: LSTConfig | None = None, hull: bool = True,
               grid_step: float = 0.1, lpips_weights: str | Path | None = None, seed: int = 0, batch_size: int = 20,
               device: str | None = None, progress: bool = False, restart: bool = False) -> dict[str, Any] | None:
    """The `blindspots tables` study from Python: model specs (with local weight files, None for the spec's own),
    an image folder (`images`, with a 'file,label' CSV `labels`) or scikit-image's photos, the protocol and LST
    config (`LSTConfig.paper()` by default). Returns the tables on rank 0 (None on other ranks of torchrun)."""
    from blindspots.data import demo_photos, load_image_folder

    specs = [s for s in models.split(",") if s] if isinstance(models, str) else list(models)
    weights = list(weights or [])
    if len(weights) > len(specs):
        raise InputError(f"weights has {len(weights)} entries for {len(specs)} models")
    weights += [None] * (len(specs) - len(weights))
    config = config or LSTConfig.paper()
    protocol = st.ProtocolConfig(rounds=rounds, seed=seed, pairs_per_batch=batch_size)
    if hull and rounds < 2:  # before loading anything: run_study checks it too
        raise InputError(f"rounds {rounds}: the hull statistics (Table 2) need >= 2 rounds, two LST outputs per "
                         "source for a triangle; give --rounds >= 2 or --no-hull")
    info = st.init_distributed(device)
    try:
        nets = [(spec, load_classifier(spec, weights=w or None, device=info.device)) for spec, w in zip(specs, weights)]
        if images:
            x, names = load_image_folder(images, size, limit)
        else:
            x, names = demo_photos(size=size)
            x, names = x[:limit], names[:limit]
        y = _read_labels(labels, names) if labels else None
        settings = {"images": str(images) if images else "skimage", "size": size, "weights": [w or "" for w in weights]}
        return run_study(nets, x, y, out, config=config, protocol=protocol, min_confidence=min_confidence, hull=hull,
                         grid_step=grid_step, lpips_weights=lpips_weights, image_names=names, info=info,
                         settings=settings, progress=progress, restart=restart)
    finally:
        st.finish_distributed(info)


def open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("iterations", args.iterations), ("step_size", args.step_size),
                                   ("threshold", args.threshold), ("adv_eps", args.adv_eps)) if v is not None}
    weights = [w if w not in ("", "-") else None for w in args.weights.split(",")] if args.weights else None
    tables = run_tables(args.out, args.model, weights=weights, images=args.images, labels=args.labels,
                        limit=args.limit, size=args.size, min_confidence=args.min_confidence, rounds=args.rounds,
                        config=LSTConfig.paper(**overrides, **model_call_options(args)), hull=not args.no_hull,
                        grid_step=args.grid_step, lpips_weights=args.lpips_weights, seed=args.seed,
                        batch_size=args.batch_size, device=args.device, progress=not args.quiet, restart=args.restart)
    if tables is not None and not args.quiet:
        print(st.markdown_table(st.display_rows(tables["table1"], ["model"], TABLE1_FIELDS)))
        if tables["table2"]:
            print()
            print(st.markdown_table(st.display_rows(tables["table2"], ["model"], table2_fields(tables["table2"]))))
        print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from blindspots.cli import run_command

    return run_command("tables", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
