"""Clump detector on 2 CPU cores: does a small Faster R-CNN reach completeness >= 0.8 and purity >= 0.8 (IoU >= 0.3)
for clumps of >= 3% of the host's flux within 15 minutes of training, on the simulator's default settings?

Trains the `cpu` preset twice with the same architecture, efficientnet_lite0 + FPN: from the offline ImageNet weights
(`imagenet-lite0`) and from random init, same data, same seed, same budget: 2 epochs of 4,000 simulated images
(2,000 steps of batch 4, about 11 minutes on 2 idle cores) with the preset's warm-up and cosine decay, so the
schedule ends inside the budget. The score threshold is chosen on 300 held-out validation images (best clump F1);
the test figures at the paper's threshold 0.3 are printed beside it, and so is the completeness of simulated clumps
injected into real SDSS and DECaLS cutouts (10 injections per host; `--hosts`). Prints the figures, the
completeness-vs-flux curves and the training time of each; writes everything to --out (re-running resumes the
training runs instead of repeating them).

Run: python -m benchmarks.detector_cpu [--minutes 15] [--n-test 300] [--n-val 300] [--out bench-detector]
By default the budget is counted in this process's CPU time per torch thread (`--wall` for wall time), so that
other jobs on a shared machine do not eat the budget; on an idle machine both clocks agree. On a busy machine two
threads mostly spin (one step of batch 4 cost 3-6 CPU-s with 2 threads vs 0.35 CPU-s with 1, measured with other
jobs running); then run the two backbones side by side with --threads 1 --only imagenet / --only random.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SHARED_GALAXIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "galaxies"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per backbone")
    parser.add_argument("--n-train", type=int, default=4000, help="simulated training images (generated on the fly)")
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of --n-train images (the cosine schedule's "
                        "length); the time budget stops training earlier if it runs out")
    parser.add_argument("--n-val", type=int, default=300, help="validation images for the score threshold "
                        "(0: the paper's 0.3)")
    parser.add_argument("--out", default="bench-detector")
    parser.add_argument("--only", choices=["imagenet", "random"], default=None, help="run one backbone only")
    parser.add_argument("--wall", action="store_true", help="count the budget in wall time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is far more efficient when the "
                        "cores are shared with other jobs: run --only imagenet and --only random side by side)")
    parser.add_argument("--hosts", nargs="*", default=None, metavar="DIR",
                        help="real cutout folders for injected-clump completeness (default: the sdss and decals "
                        "folders of ../shared/data/galaxies beside the repository, if present)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    from detectors.cli import DetectRun, format_summary, run_detection

    torch.set_num_threads(args.threads)
    hosts = args.hosts if args.hosts is not None else [
        str(p) for p in (SHARED_GALAXIES / "sdss", SHARED_GALAXIES / "decals") if p.is_dir()]
    results = {}
    for name, weights in [("imagenet", "imagenet"), ("random", None)]:
        if args.only and name != args.only:
            continue
        cfg = DetectRun(out=str(Path(args.out) / name), backbone="efficientnet_lite0", weights=weights,
                        preset="cpu", n_train=args.n_train, n_test=args.n_test, n_val=args.n_val,
                        hosts=tuple(hosts), epochs=args.epochs,
                        seed=args.seed, minutes=args.minutes, n_draw=4, progress=args.progress,
                        cpu_clock=not args.wall)
        s = run_detection(cfg)
        results[name] = s
        print(format_summary(s), flush=True)
        if not s["train"]["completed"]:
            print("  note: the time budget ended training before the learning-rate schedule did", flush=True)
        ok = (s["completeness_bright"] or 0) >= 0.8 and (s["purity"] or 0) >= 0.8
        print(f"  target (completeness >= 0.8 and purity >= 0.8 for clumps >= 3%): {'MET' if ok else 'NOT met'}",
              flush=True)
    if len(results) == 2:
        a, b = results["imagenet"], results["random"]
        print("imagenet-lite0 vs random init, same architecture, data and budget:")
        rows = [(key, a[key], b[key]) for key in ("score_threshold", "completeness_bright", "purity",
                                                    "completeness_all", "f1")]
        rows += [(f"{key} @{a['at_preset_threshold']['score_threshold']:g}", a["at_preset_threshold"][key],
                  b["at_preset_threshold"][key])
                 for key in ("completeness_bright", "purity")]
        for key, x, y in rows:
            print(f"  {key:24s} {x if x is None else round(x, 3)!s:>8} vs {y if y is None else round(y, 3)!s:>8}")
        print(f"  {'AP50 clump':24s} {a['ap50']['clump']:8.3f} vs {b['ap50']['clump']:8.3f}")
        print(f"  {'training steps':24s} {a['train']['steps']:8d} vs {b['train']['steps']:8d}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
