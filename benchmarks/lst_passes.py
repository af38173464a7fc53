"""Model passes of LST: paper mode vs adaptive mode vs fixed steps, on real images, with the quality each reaches.

Per image set, one run of each mode on the same pairs and seeds. The cost is counted, not timed: the samples that
went through the model (forwards, with or without a backward; `LSTResult.model_passes`). Quality per pair: final
RMS-l2 and SSIM to the target. The threshold is checked at every accepted step (the logged source confidence) and
again by a separate forward of the final images.

Targets (adaptive vs paper, each set): total passes >= 20x fewer; on EVERY pair final RMS-l2 <= paper's * 1.05 and
SSIM >= paper's - 0.01; threshold held at every accepted step. The best fixed step is the cheapest of the `--fixed`
settings that meets the same quality targets; its ratio to adaptive is printed beside.

    python -m benchmarks.lst_passes           # imagenet-lite0 on photos + real galaxies, and the four MNIST zoo models
                                              # (8 pairs per set, photos at 128 px, galaxies at 96 px: about 5 min
                                              #  on 2 idle CPU cores; paper mode's 400 iterations dominate)
    python -m benchmarks.lst_passes --sets galaxies --size 96 --pairs 6 --quiet
    python -m benchmarks.lst_passes --sets mnist --mnist-models mnist-cnn-at
    python -m benchmarks.lst_passes --model resnet18 --sets photos    # any load_classifier spec
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from blindspots import LSTConfig, derangement_pairs, level_set_traversal, load_classifier
from blindspots.models import probing
from blindspots.studies.measured import add_results_option, record_run

__all__ = ["photo_pairs", "galaxy_pairs", "mnist_pairs", "run_set", "set_figures", "summary", "main"]

GALAXIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "galaxies"


def photo_pairs(model, size: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's photos: every photo towards every photo of another predicted class (at most `limit` pairs)."""
    from blindspots.data import demo_photos

    images, _ = demo_photos(size=size)
    labels, _ = model.predict(images.to(model.device))
    pairs = [(i, j) for i in range(len(images)) for j in range(len(images)) if labels[i] != labels[j]]
    src, tgt = zip(*pairs[:limit])
    return images[list(src)], images[list(tgt)]


def galaxy_pairs(model, size: int, limit: int, folder: Path = GALAXIES, crop: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Real galaxy cutouts (central `crop`, resized to `size`), each towards one of another predicted class (a
    derangement; a cyclic shift when one class holds more than half)."""
    from skimage import io

    from blindspots.data import IMAGE_SUFFIXES, prepare, to_tensor

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no galaxy images under {folder}")
    images = torch.stack([prepare(to_tensor(io.imread(p))[:3], size, crop) for p in files])
    labels, _ = model.predict(images.to(model.device))
    try:
        tgt = derangement_pairs(labels.cpu(), rounds=1, seed=0)[0]
    except ValueError:
        tgt = torch.roll(torch.arange(len(images)), 1)
    return images[:limit], images[tgt][:limit]


def mnist_pairs(model, limit: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` held-out MNIST digits from position `start` on that the model classifies correctly, each
    towards another of them with a different label (a seeded derangement)."""
    from blindspots.zoo import mnist_split

    images, labels = mnist_split("test")
    images, labels = images[start:start + 20 * limit], labels[start:start + 20 * limit]
    pred, _ = model.predict(images.to(model.device))
    keep = (pred.cpu() == labels).nonzero().squeeze(1)[:limit]
    xs, ys = images[keep], labels[keep]
    return xs, xs[derangement_pairs(ys, rounds=1, seed=0)[0]]


def _threshold_held(model, res, sources: torch.Tensor) -> bool:
    """Every accepted point keeps p0 - p < delta: the logged confidences, and a separate forward of the outputs."""
    delta = res.config.threshold
    tr = res.trajectory
    moved = tr.accepted > 0
    logged = bool(((res.initial_confidence[None] - tr.source_confidence)[moved] < delta).all())
    with torch.no_grad(), probing(model):
        p = model(res.images.to(model.device)).float().softmax(-1).cpu()
    final = res.initial_confidence - p.gather(1, res.labels[:, None]).squeeze(1)
    moved_any = res.acceptance_rate > 0
    return logged and bool((final[moved_any] < delta).all())


def _run(model, xs, xt, config: LSTConfig, seed: int) -> dict:
    t0 = time.perf_counter()
    res = level_set_traversal(model, xs, xt, config=config, seed=seed)
    return {"res": res, "seconds": time.perf_counter() - t0, "passes": int(res.model_passes.sum()),
            "held": _threshold_held(model, res, xs)}


def _meets(row: dict, paper: dict) -> bool:
    r, p = row["res"], paper["res"]
    return bool((r.rms_l2 <= p.rms_l2 * 1.05).all() and (r.ssim >= p.ssim - 0.01).all()) and row["held"]


def run_set(model, xs: torch.Tensor, xt: torch.Tensor, fixed: Sequence[tuple[float, int]], seed: int,
            log: bool = True, adaptive: dict | None = None) -> dict:
    """Paper, adaptive (with `adaptive` overrides) and each fixed (step, iterations) on the same pairs; returns the
    rows and the verdict."""
    rows = {"paper": _run(model, xs, xt, LSTConfig.paper(log_every=1), seed),
            "adaptive": _run(model, xs, xt, LSTConfig.adaptive(log_every=1, **(adaptive or {})), seed)}
    for step, iters in fixed:
        rows[f"fixed {step:g} x{iters}"] = _run(model, xs, xt, LSTConfig.paper(step_size=step, iterations=iters,
                                                                               log_every=1), seed)
    paper = rows["paper"]
    for row in rows.values():
        row["ratio"] = paper["passes"] / row["passes"]
        row["meets"] = _meets(row, paper)
    ok_fixed = [k for k in rows if k.startswith("fixed") and rows[k]["meets"]]
    best = min(ok_fixed, key=lambda k: rows[k]["passes"]) if ok_fixed else None
    ad = rows["adaptive"]
    verdict = ad["ratio"] >= 20 and ad["meets"]
    if log:
        _print(rows, best)
    return {"rows": rows, "best_fixed": best, "ok": verdict}


def _print(rows: dict, best: str | None) -> None:
    print(f"  {'mode':<18}{'passes':>8}{'/pair med,max':>15}{'paper/mode':>11}{'RMS-l2 med':>11}{'worst':>8}"
          f"{'SSIM med':>9}{'worst':>7}{'held':>6}{'vs paper':>9}{'sec':>7}")
    for name, row in rows.items():
        r = row["res"]
        pp = r.model_passes.tolist()
        print(f"  {name:<18}{row['passes']:>8}{statistics.median(pp):>9.0f},{max(pp):>5}{row['ratio']:>11.1f}"
              f"{float(r.rms_l2.median()):>11.4f}{float(r.rms_l2.max()):>8.4f}{float(r.ssim.median()):>9.3f}"
              f"{float(r.ssim.min()):>7.3f}{str(row['held']):>6}{'ok' if row['meets'] else 'MISS':>9}"
              f"{row['seconds']:>7.1f}")
    ad = rows["adaptive"]
    need = _oracle_passes(ad["res"], rows["paper"]["res"])
    if need is not None:
        print(f"  adaptive's own path, stopped the moment it reaches paper's RMS-l2 * 1.05 on each pair (an oracle "
              f"stop): {need} passes, {rows['paper']['passes'] / need:.1f}x fewer than paper")
    else:
        print("  adaptive's own path never reaches paper's RMS-l2 * 1.05 on some pair")
    if best is not None:
        print(f"  best fixed step meeting paper's quality: {best} ({rows[best]['passes']} passes); adaptive uses "
              f"{rows[best]['passes'] / ad['passes']:.2f}x fewer")
    else:
        print("  no fixed step tried met paper's quality on every pair")


def _oracle_passes(ad, paper) -> int | None:
    """Passes adaptive would spend if each pair stopped at the first iteration its RMS-l2 is <= paper's * 1.05 (from
    its trajectory, logged every iteration): what any stop rule on this path could save at best."""
    rms = ad.trajectory.rms_to_target
    overhead = ad.model_passes - ad.iterations
    total = 0
    for i in range(rms.shape[1]):
        hit = (rms[:, i] <= paper.rms_l2[i] * 1.05).nonzero()
        if hit.numel() == 0:
            return None
        total += int(overhead[i]) + int(ad.trajectory.steps[hit[0, 0]])
    return total


STEP_GRID = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)


def step_probe(model, xs: torch.Tensor, xt: torch.Tensor, seed: int, iterations: int = 60, every: int = 10) -> None:
    """Along adaptive's path (no stop rule), the largest step of STEP_GRID whose orthogonal step alone (no offset)
    keeps the threshold, per pair: where it stays small, no step rule can reach the target in few iterations."""
    from blindspots.engine import Probe

    cfg = LSTConfig.adaptive(patience=10**6, stop_rms=None, iterations=iterations, log_every=every,
                             log_snapshots=True)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=seed)
    y, p0, tr = res.labels.to(model.device), res.initial_confidence.to(model.device), res.trajectory
    with probing(model):
        probe = Probe(model)
        for k in range(len(tr.steps)):
            x = tr.snapshots[k].to(model.device)
            g = probe.log_probs_and_grad(x, y)[1]
            v = xt.to(model.device) - x
            d = v - ((g * v).flatten(1).sum(1) / (g * g).flatten(1).sum(1).clamp_min(1e-30)).view(-1, 1, 1, 1) * g
            best = torch.zeros(len(x))
            for eta in STEP_GRID:
                p = probe.log_probs((x + eta * d).clamp(0, 1)).gather(1, y[:, None]).squeeze(1).exp()
                best = torch.where((p0 - p < cfg.threshold).cpu(), torch.tensor(eta), best)
            print(f"  it {int(tr.steps[k]):>3}: RMS-l2 {' '.join(f'{v:.4f}' for v in tr.rms_to_target[k].tolist())}; "
                  f"largest step kept: {' '.join(f'{v:g}' for v in best.tolist())}")


def _sets(args, parser):
    """(name, model, sources, targets) per image set asked for."""
    model = None
    for name in filter(None, args.sets.split(",")):
        if name in ("photos", "galaxies"):
            if model is None:
                model = load_classifier(args.model, weights=args.weights)
            if name == "photos":
                yield ("photos", args.model), model, *photo_pairs(model, args.photo_size, args.pairs)
            elif not args.galaxies.is_dir():
                print(f"galaxies: folder {args.galaxies} not found; set skipped")
            else:
                yield ("galaxies", args.model), model, *galaxy_pairs(model, args.size, args.pairs, args.galaxies)
        elif name == "mnist":
            for spec in filter(None, args.mnist_models.split(",")):
                digits = load_classifier(spec)
                yield ("mnist", spec), digits, *mnist_pairs(digits, args.pairs, args.mnist_start)
        else:
            parser.error(f"unknown set {name!r} (photos, galaxies, mnist)")


def _print_summary(summary: list) -> None:
    """One line per set: passes ratio, pairs meeting paper's quality, RMS-l2 and SSIM against paper's."""
    print(f"\n{'set':<27}{'paper/adaptive':>15}{'pairs ok':>10}{'RMS/paper med':>14}{'worst':>7}"
          f"{'dSSIM med':>10}{'worst':>8}{'best fixed / adaptive':>23}")
    for name, out in summary:
        rows = out["rows"]
        ad, pa = rows["adaptive"]["res"], rows["paper"]["res"]
        ratio, dssim = ad.rms_l2 / pa.rms_l2, ad.ssim - pa.ssim
        good = (ratio <= 1.05) & (dssim >= -0.01)
        best = out["best_fixed"]
        vs = f"{rows[best]['passes'] / rows['adaptive']['passes']:.2f}x ({best})" if best else "none met quality"
        print(f"{name:<27}{rows['adaptive']['ratio']:>14.1f}x{f'{int(good.sum())}/{len(good)}':>10}"
              f"{float(ratio.median()):>14.2f}{float(ratio.max()):>7.2f}{float(dssim.median()):>+10.3f}"
              f"{float(dssim.min()):>+8.3f}  {vs}")


def set_figures(kind: str, model: str, xs: torch.Tensor, out: dict) -> dict:
    """The figures of one set for a results file: adaptive's saving and quality against paper, each fixed step's
    (its passes over adaptive's where it meets paper's quality, else None), the oracle stop's saving."""
    rows = out["rows"]
    ad, pa = rows["adaptive"]["res"], rows["paper"]["res"]
    ratio, dssim = ad.rms_l2 / pa.rms_l2, ad.ssim - pa.ssim
    good = (ratio <= 1.05) & (dssim >= -0.01)
    oracle = _oracle_passes(ad, pa)
    return {"set": kind, "model": model, "px": int(xs.shape[-1]), "pairs": len(good),
            "saving": rows["adaptive"]["ratio"], "pairs_at_quality": int(good.sum()),
            "rms_ratio": [float(ratio.median()), float(ratio.max())],
            "ssim_diff": [float(dssim.median()), float(dssim.min())],
            "fixed": {k.removeprefix("fixed "): (rows[k]["passes"] / rows["adaptive"]["passes"] if rows[k]["meets"]
                                                 else None) for k in rows if k.startswith("fixed")},
            "oracle_saving": None if oracle is None else rows["paper"]["passes"] / oracle, "met": out["ok"]}


def summary(figures: dict) -> str:
    """One line from the sets' figures: each set's saving and pairs at paper's quality, and how many met."""
    sets = figures["sets"]
    met = sum(s["met"] for s in sets)
    return (f"{sets[0]['pairs'] if sets else 0} pairs per set: "
            + ", ".join(f"{s['model'] if s['set'] == 'mnist' else s['set']} {s['saving']:.1f}x "
                        f"({s['pairs_at_quality']}/{s['pairs']})" for s in sets)
            + f" fewer passes than paper mode (pairs at paper's quality); target met on {met} of {len(sets)} sets")


def _parse_overrides(text: str) -> dict:
    """"offset_scale_max=1,patience=2" -> {"offset_scale_max": 1.0, "patience": 2} (LSTConfig checks the values)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
    return out


def _parse_fixed(text: str) -> list[tuple[float, int]]:
    out = []
    for item in filter(None, text.split(",")):
        step, iters = item.split(":")
        out.append((float(step), int(iters)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; 0 when adaptive meets every target on every set, else 1."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.lst_passes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="imagenet-lite0", help="load_classifier spec for the photos and galaxies")
    p.add_argument("--weights", default=None, help="weights file for the spec")
    p.add_argument("--sets", default="photos,galaxies,mnist", help="comma list of: photos, galaxies, mnist")
    p.add_argument("--mnist-models", default="mnist-cnn,mnist-cnn-at,mnist-vit,mnist-vit-at",
                   help="zoo models the mnist set runs (each its own set)")
    p.add_argument("--mnist-start", type=int, default=0,
                   help="take the digits from this test-split position on (adaptive's settings were tuned on the "
                        "first ones; e.g. 100 for others)")
    p.add_argument("--pairs", type=int, default=8, help="pairs per set (photos: at most 12)")
    p.add_argument("--size", type=int, default=96, help="galaxy cutout size in px")
    p.add_argument("--photo-size", type=int, default=128)
    p.add_argument("--galaxies", type=Path, default=GALAXIES, help="folder of real galaxy cutouts")
    p.add_argument("--fixed", default="0.08:50,0.15:28", help="fixed step:iterations settings to compare")
    p.add_argument("--adaptive", default="", metavar="K=V,...",
                   help="LSTConfig.adaptive overrides, e.g. offset_scale_max=1 (the offset unscaled)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="print only the verdict lines")
    p.add_argument("--probe-steps", action="store_true", help="also print, along adaptive's path, the largest "
                   "step of a grid that keeps the threshold, per pair")
    add_results_option(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed = _parse_fixed(args.fixed)
    adaptive = _parse_overrides(args.adaptive)
    done, figures = [], []
    for (kind, spec), model, xs, xt in _sets(args, p):
        name = f"{kind} ({spec})"
        if not args.quiet:
            print(f"{name}: {len(xs)} pairs at {xs.shape[-1]} px")
        out = run_set(model, xs, xt, fixed, args.seed, log=not args.quiet, adaptive=adaptive)
        if args.probe_steps:
            step_probe(model, xs, xt, args.seed)
        ad = out["rows"]["adaptive"]
        print(f"{name}: adaptive {ad['ratio']:.1f}x fewer passes than paper (target >= 20), quality on every pair "
              f"{'met' if ad['meets'] else 'MISSED'} -> {'ok' if out['ok'] else 'MISS'}", flush=True)
        done.append((name, out))
        figures.append(set_figures(kind, spec, xs, out))
    _print_summary(done)
    ok = all(out["ok"] for _, out in done)
    if args.results_to:
        settings = {"adaptive": adaptive, "fixed": [f"{s:g} x{i}" for s, i in fixed], "mnist_start": args.mnist_start,
                    "pairs": args.pairs, "seed": args.seed}
        results = {"settings": settings, "sets": figures}
        record_run(args.results_to, "lst_passes", sys.argv[1:] if argv is None else argv, met=ok,
                   summary=summary(results), figures=results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
