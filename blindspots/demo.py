"""`blindspots demo`: Level Set Traversal on real weights and real photos, with no download and no argument.

Every photo is sent towards every other photo the model puts in another class (the paper's N x N grid). Each source
row is saved as soon as it is computed, so an interrupted run resumes where it stopped. Writes, into `--out`:
`grid.png` (sources, targets and LST outputs with confidences), `curves.png` (confidence and distance over
iterations), `results.json` / `results.csv` (one record per pair) and `lst_results.pt` (images, for
`blindspots geometry`), plus the geometry figures when the geometry module is available.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .cli import (UsageError, add_common_options, add_image_options, load_images, model_call_options,
                  resolve_device)
from .models import load_classifier
from .store import RunStore, fingerprint_model
from .studies.tables import write_csv
from .traversal import LSTConfig, LSTResult, Trajectory, level_set_traversal

HELP = "LST on the offline ImageNet model and scikit-image's photos (no downloads)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_options(parser, limit=False)
    parser.add_argument("--paper", action="store_true", help="the paper's settings (400 iterations, step 1e-2)")
    parser.add_argument("--redraw-start", action="store_true",
                        help="redraw a noisy start that already breaks the threshold (LSTConfig(start='redraw'); "
                             "default: keep it and flag the output, as the published code does)")
    parser.add_argument("--no-geometry", action="store_true",
                        help="skip the level-set geometry (paths, triangle hulls, tube width) of the outputs")
    add_common_options(parser, "demo", iterations=None, batch_size=64, model_calls=True)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    config = LSTConfig.paper() if args.paper else LSTConfig.adaptive()  # far fewer passes (docs/engine.md)
    overrides = {"log_every": max(1, (args.iterations or config.iterations) // 40), **model_call_options(args)}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.redraw_start:
        overrides["start"] = "redraw"
    config = LSTConfig(**{**config.to_dict(), **overrides})
    model = load_classifier(args.model, weights=args.weights, device=device)
    images, names = load_images(args, model, device)
    out = Path(args.out)
    settings = {"config": config.to_dict(), "seed": args.seed, "names": names, "geometry": not args.no_geometry}
    with RunStore(out, "demo", model=model, settings=settings, inputs={"images": images},
                  restart=args.restart) as store:
        classes, confidence = model.predict(images.to(device))
        classes, confidence = classes.cpu(), confidence.cpu()
        class_names = [model.class_names[c] if model.class_names else str(int(c)) for c in classes]
        if not args.quiet:
            for n, c, p in zip(names, class_names, confidence):
                print(f"  {n:>14}: {c} ({p:.3f})")
        rows = run_rows(model, images, classes, config, store, seed=args.seed, progress=not args.quiet,
                        device=device)
        if not rows:
            raise UsageError(f"the model puts all {len(names)} images in one class ({class_names[0]}): no pair of "
                             "images in different classes to traverse")
        records = _records(rows, names, class_names)
        meta = {"model": model.name, "device": str(device), "config": config.to_dict(), "seed": args.seed,
                "photos": names, "classes": [int(c) for c in classes], "class_names": class_names}
        (out / "results.json").write_text(json.dumps({"meta": meta, "pairs": records}, indent=1))
        write_csv(records, out / "results.csv")
        _save_figures(out, images, names, class_names, rows)
        if not args.no_geometry:
            _geometry(model, images, classes, rows, out, args)
    if not args.quiet:
        _print_table(records)
        print(f"results and figures in {out.resolve()}")
    return 0


def _records(rows, names, class_names) -> list[dict]:
    records = []
    for i, (targets, result) in rows.items():
        for k, j in enumerate(targets):
            rec = {"source": names[i], "target": names[j], "source_class": class_names[i],
                   "target_class": class_names[j], **result.records()[k]}
            rec.pop("index")
            records.append(rec)
    return records


def run_rows(model, images: torch.Tensor, classes: torch.Tensor, config: LSTConfig, store: RunStore, *, seed: int,
             progress: bool, device) -> dict[int, tuple[list[int], LSTResult]]:
    """LST from each image to every image of another class, one source row at a time, each row kept in the run
    store as soon as it is done (a resumed run reloads finished rows)."""
    n = images.shape[0]
    rows: dict[int, tuple[list[int], LSTResult]] = {}
    for i in range(n):
        targets = [j for j in range(n) if j != i and classes[j] != classes[i]]
        if not targets:
            continue

        def traverse(i=i, targets=targets) -> LSTResult:
            started = time.perf_counter()
            result = level_set_traversal(model, images[i].expand(len(targets), -1, -1, -1).contiguous(),
                                         images[targets], classes[i].repeat(len(targets)), config,
                                         target_labels=classes[targets], seed=[seed + n * i + j for j in targets],
                                         progress=progress, device=device)
            if progress:
                print(f"  row {i + 1}/{n}: {len(targets)} pairs in {time.perf_counter() - started:.1f} s")
            return result

        result = store.dataclass_stage(f"row-{i:03d}", LSTResult, traverse,
                                       nested={"config": LSTConfig, "trajectory": Trajectory},
                                       check=lambda r, k=len(targets): r.validate(k, images.shape[1:]))
        rows[i] = (targets, result)
    return rows


def _geometry(model, images, classes, rows, out: Path, args) -> None:
    """Save the outputs for `blindspots geometry` and run its report: K = the smallest number of targets per
    source, so that every source has as many LST outputs (K >= 2 gives triangles)."""
    from .geometry import geometry_report, save_lst_results

    k = min(len(targets) for targets, _ in rows.values())
    sources = sorted(rows)
    outputs = torch.stack([rows[i][1].images[:k] for i in sources])
    targets = torch.stack([images[rows[i][0][:k]] for i in sources])
    spec = args.model if isinstance(args.model, str) else None
    save_lst_results(out / "lst_results.pt", images[sources], targets, outputs, classes[sources], model=spec,
                     model_fingerprint=fingerprint_model(model.model),
                     **({"weights": str(Path(args.weights).resolve())} if args.weights else {}))
    report = geometry_report(model, images[sources], outputs, classes[sources], out / "geometry",
                             trajectory=rows[sources[0]][1],  # LST paths of source 0, for the path figure
                             triangle_figures=min(3, len(sources)) if k >= 2 else 0, tube_directions=32,
                             tube_points=3, seed=args.seed, batch_size=args.batch_size, device=resolve_device(args.device),
                             progress=not args.quiet, restart=args.restart)
    if not args.quiet and "hull" in report:
        print(hull_table(report["hull"]))


HULL_ROWS = {"p_src": "source confidence p_src", "hull_mean": "mean confidence in the triangles",
             "edge_mean": "mean confidence on the source's edges", "edge_min": "worst drop on the source's edges"}


def hull_table(summary: dict) -> str:
    """The triangle-hull summary (`HullResult.summary()`) as a small table: each statistic's mean and std over
    sources, with the number of sources and of triangles per source."""
    lines = [f"triangle hulls: {summary['sources']} sources x {summary['pairs']} triangle(s), "
             f"{summary['probes_per_triangle']} probes per triangle (mean and std over sources)",
             f"  {'statistic':<40} {'mean':>7} {'std':>7}"]
    for key, value in summary.items():
        if isinstance(value, dict) and "mean" in value:
            label = HULL_ROWS.get(key) or (f"share of probes >= p_src - {key.split('@')[1]}" if key.startswith(
                "fraction@") else key)
            lines.append(f"  {label:<40} {value['mean']:>7.3f} {value['std']:>7.3f}")
    return "\n".join(lines)


def _print_table(records: list[dict]) -> None:
    print(f"{'source':>12} -> {'target':<12} {'p_src start':>11} {'p_src end':>9} {'RMS-l2':>7} {'l-inf':>6} "
          f"{'SSIM':>6}")
    for r in records:
        mark = "*" if r.get("unconstrained") else ("!" if r.get("start_outside") else " ")
        print(f"{r['source']:>12} -> {r['target']:<12} {r['initial_confidence']:>10.3f}{mark} "
              f"{r['final_confidence']:>9.3f} {r['rms_l2']:>7.3f} {r['linf']:>6.3f} "
              f"{r.get('ssim', float('nan')):>6.3f}")
    if any(r.get("unconstrained") for r in records):
        print("* the source's confidence starts at or below the threshold: no step could be rejected, so the output "
              "says nothing about its level set")
    if any(r.get("start_outside") for r in records):
        print("! the noisy start already broke the threshold (kept, as the published code keeps it): the traversal "
              "began outside the level set; --redraw-start draws a start that does not")


def _save_figures(out: Path, images, names, class_names, rows) -> None:
    from . import plots

    n = images.shape[0]
    outputs = torch.full((n, n, *images.shape[1:]), float("nan"))
    conf = torch.full((n, n), float("nan"))
    unconstrained = torch.zeros(n, dtype=torch.bool)
    for i, (targets, result) in rows.items():
        outputs[i, targets] = result.images
        conf[i, targets] = result.final_confidence
        unconstrained[i] = bool(result.unconstrained.any())
    plots.lst_grid(images, outputs, conf, names=names, class_names=class_names, unconstrained=unconstrained,
                   path=out / "grid.png")
    plots.lst_curves([r for _, r in rows.values()], path=out / "curves.png")
