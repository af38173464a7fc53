"""`blindspots demo`: Level Set Traversal on real weights and real photos, with no download and no argument.

Every photo is sent towards every other photo the model puts in another class (the paper's N x N grid). Each source
row is saved as soon as it is computed, so an interrupted run resumes where it stopped. Writes, into `--out`:
`grid.png` (sources, targets and LST outputs with confidences), `curves.png` (confidence and distance over
iterations), `results.json` / `results.csv` (one record per pair) and `lst_results.pt` (images, for
`blindspots geometry`), plus the geometry figures when the geometry module is available.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from .data import DEMO_PHOTOS, demo_photos, load_image_folder
from .models import load_classifier
from .traversal import LSTConfig, LSTResult, level_set_traversal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="imagenet-lite0",
                        help="model spec: imagenet-lite0 (default, offline), timm:<name>, torchvision:<name>, "
                             "zoobot:<arch>")
    parser.add_argument("--weights", default=None, help="local .safetensors/.pth weights for --model")
    parser.add_argument("--images", default=None, help="folder of images to use instead of the bundled photos")
    parser.add_argument("--photos", default=",".join(DEMO_PHOTOS),
                        help="comma-separated scikit-image photo names (default: %(default)s)")
    parser.add_argument("--paper", action="store_true", help="the paper's settings (400 iterations, step 1e-2)")
    parser.add_argument("--iterations", type=int, default=None, help="override the number of iterations")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    parser.add_argument("--out", default="blindspots-out/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224, help="image size in pixels")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-geometry", action="store_true",
                        help="skip the level-set geometry (paths, triangle hulls, tube width) of the outputs")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device) if args.device else default_device()
    config = LSTConfig.paper() if args.paper else LSTConfig()
    if args.iterations is not None:
        config = LSTConfig(**{**config.to_dict(), "iterations": args.iterations})
    config = LSTConfig(**{**config.to_dict(), "log_every": max(1, config.iterations // 40),
                          "amp": device.type == "cuda"})

    model = load_classifier(args.model, weights=args.weights, device=device)
    if args.images:
        images, names = load_image_folder(args.images, size=args.size)
    else:
        images, names = demo_photos(tuple(p.strip() for p in args.photos.split(",") if p.strip()), size=args.size)
    classes, confidence = model.predict(images.to(device))
    classes, confidence = classes.cpu(), confidence.cpu()
    class_names = [model.class_names[c] if model.class_names else str(int(c)) for c in classes]
    if not args.quiet:
        for n, c, p in zip(names, class_names, confidence):
            print(f"  {n:>14}: {c} ({p:.3f})")

    rows = run_rows(model, images, classes, config, out / "rows", seed=args.seed, progress=not args.quiet,
                    device=device)
    if not rows:
        print("no pair of photos in different classes: nothing to traverse")
        return 1
    records = []
    for i, (targets, result) in rows.items():
        for k, j in enumerate(targets):
            rec = {"source": names[i], "target": names[j], "source_class": class_names[i],
                   "target_class": class_names[j], **result.records()[k]}
            rec.pop("index")
            records.append(rec)
    meta = {"model": model.name, "device": str(device), "config": config.to_dict(), "seed": args.seed,
            "photos": names, "classes": [int(c) for c in classes], "class_names": class_names}
    (out / "results.json").write_text(json.dumps({"meta": meta, "pairs": records}, indent=1))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    _save_figures(out, images, names, class_names, rows)
    if not args.no_geometry:
        _geometry(model, images, classes, rows, out, args)
    if not args.quiet:
        _print_table(records)
        print(f"results and figures in {out.resolve()}")
    return 0


def run_rows(model, images: torch.Tensor, classes: torch.Tensor, config: LSTConfig, folder: Path, *, seed: int,
             progress: bool, device) -> dict[int, tuple[list[int], LSTResult]]:
    """LST from each image to every image of another class, one source row at a time, each row saved to `folder`
    as soon as it is done; rows already saved with the same settings are loaded instead of recomputed."""
    folder.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    fingerprint = json.dumps({"config": config.to_dict(), "seed": seed, "n": n,
                              "classes": [int(c) for c in classes],
                              "images": float(images.double().sum())}, sort_keys=True)
    rows: dict[int, tuple[list[int], LSTResult]] = {}
    for i in range(n):
        targets = [j for j in range(n) if j != i and classes[j] != classes[i]]
        if not targets:
            continue
        path = folder / f"row_{i:03d}.pt"
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            saved = json.loads(meta.read_text())
            if saved.get("fingerprint") == fingerprint:
                rows[i] = (saved["targets"], LSTResult.load(path))
                continue
        started = time.perf_counter()
        result = level_set_traversal(model, images[i].expand(len(targets), -1, -1, -1).contiguous(),
                                     images[targets], classes[i].repeat(len(targets)), config,
                                     target_labels=classes[targets], seed=[seed + n * i + j for j in targets],
                                     progress=progress, device=device)
        if progress:
            print(f"  row {i + 1}/{n}: {len(targets)} pairs in {time.perf_counter() - started:.1f} s")
        result.save(path)
        meta.write_text(json.dumps({"fingerprint": fingerprint, "targets": targets}))  # written last: marks done
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
                     **({"weights": str(args.weights)} if args.weights else {}))
    report = geometry_report(model, images[sources], outputs, classes[sources], out / "geometry",
                             trajectory=rows[sources[0]][1],  # LST paths of source 0, for the path figure
                             triangle_figures=min(3, len(sources)) if k >= 2 else 0, tube_directions=32,
                             tube_points=3, seed=args.seed,
                             progress=not args.quiet)
    if not args.quiet and "hull" in report:
        print("triangle hulls (mean +- std over sources):", report["hull"])


def _print_table(records: list[dict]) -> None:
    print(f"{'source':>12} -> {'target':<12} {'p_src start':>11} {'p_src end':>9} {'RMS-l2':>7} {'l-inf':>6} "
          f"{'SSIM':>6}")
    for r in records:
        print(f"{r['source']:>12} -> {r['target']:<12} {r['initial_confidence']:>11.3f} "
              f"{r['final_confidence']:>9.3f} {r['rms_l2']:>7.3f} {r['linf']:>6.3f} {r.get('ssim', float('nan')):>6.3f}")


def _save_figures(out: Path, images, names, class_names, rows) -> None:
    from . import plots

    n = images.shape[0]
    outputs = torch.full((n, n, *images.shape[1:]), float("nan"))
    conf = torch.full((n, n), float("nan"))
    for i, (targets, result) in rows.items():
        outputs[i, targets] = result.images
        conf[i, targets] = result.final_confidence
    plots.lst_grid(images, outputs, conf, names=names, class_names=class_names, path=out / "grid.png")
    plots.lst_curves([r for _, r in rows.values()], path=out / "curves.png")
