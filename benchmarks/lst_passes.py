"""Model passes of LST: paper mode vs adaptive mode vs fixed steps, on real images, with the quality each reaches.

Per image set, one run of each mode on the same pairs and seeds. The cost is counted, not timed: the samples that
went through the model (forwards, with or without a backward; `LSTResult.model_passes`). Quality per pair: final
RMS-l2 and SSIM to the target. The threshold is checked at every accepted step (the logged source confidence) and
again by a separate forward of the final images.

Targets (adaptive vs paper, each set): total passes >= 20x fewer; on EVERY pair final RMS-l2 <= paper's * 1.05 and
SSIM >= paper's - 0.01; threshold held at every accepted step. The best fixed step is the cheapest of the `--fixed`
settings that meets the same quality targets; its ratio to adaptive is printed beside.

    python -m benchmarks.lst_passes                                   # imagenet-lite0: photos + real galaxies
                                        # (defaults: 4 pairs per set, photos at 128 px, galaxies at 96 px: a few
                                        #  minutes on 2 idle CPU cores; paper mode's 400 iterations dominate)
    python -m benchmarks.lst_passes --sets galaxies --size 96 --pairs 6 --quiet
    python -m benchmarks.lst_passes --model mnist-cnn-at --sets ...   # any load_classifier spec
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from blindspots import LSTConfig, derangement_pairs, level_set_traversal, load_classifier
from blindspots.models import probing

__all__ = ["photo_pairs", "galaxy_pairs", "run_set", "main"]

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
            log: bool = True) -> dict:
    """Paper, adaptive and each fixed (step, iterations) on the same pairs; returns the rows and the verdict."""
    rows = {"paper": _run(model, xs, xt, LSTConfig.paper(log_every=1), seed),
            "adaptive": _run(model, xs, xt, LSTConfig.adaptive(log_every=1), seed)}
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
    from blindspots.traversal_probe import Probe

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


def _parse_fixed(text: str) -> list[tuple[float, int]]:
    out = []
    for item in filter(None, text.split(",")):
        step, iters = item.split(":")
        out.append((float(step), int(iters)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; 0 when adaptive meets every target on every set, else 1."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.lst_passes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="imagenet-lite0", help="load_classifier spec (e.g. mnist-cnn-at)")
    p.add_argument("--weights", default=None, help="weights file for the spec")
    p.add_argument("--sets", default="photos,galaxies", help="comma list of: photos, galaxies")
    p.add_argument("--pairs", type=int, default=4, help="pairs per set (photos: at most 12)")
    p.add_argument("--size", type=int, default=96, help="galaxy cutout size in px")
    p.add_argument("--photo-size", type=int, default=128)
    p.add_argument("--galaxies", type=Path, default=GALAXIES, help="folder of real galaxy cutouts")
    p.add_argument("--fixed", default="0.08:50,0.15:28", help="fixed step:iterations settings to compare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="print only the verdict lines")
    p.add_argument("--probe-steps", action="store_true", help="also print, along adaptive's path, the largest "
                   "step of a grid that keeps the threshold, per pair")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_classifier(args.model, weights=args.weights)
    fixed = _parse_fixed(args.fixed)
    ok = True
    for name in filter(None, args.sets.split(",")):
        if name == "photos":
            xs, xt = photo_pairs(model, args.photo_size, args.pairs)
        elif name == "galaxies":
            if not args.galaxies.is_dir():
                print(f"galaxies: folder {args.galaxies} not found; set skipped")
                continue
            xs, xt = galaxy_pairs(model, args.size, args.pairs, args.galaxies)
        else:
            p.error(f"unknown set {name!r} (photos, galaxies)")
        if not args.quiet:
            print(f"{name}: {len(xs)} pairs at {xs.shape[-1]} px, model {args.model}")
        out = run_set(model, xs, xt, fixed, args.seed, log=not args.quiet)
        if args.probe_steps:
            step_probe(model, xs, xt, args.seed)
        ad = out["rows"]["adaptive"]
        print(f"{name}: adaptive {ad['ratio']:.1f}x fewer passes than paper (target >= 20), quality on every pair "
              f"{'met' if ad['meets'] else 'MISSED'} -> {'ok' if out['ok'] else 'MISS'}", flush=True)
        ok &= out["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
