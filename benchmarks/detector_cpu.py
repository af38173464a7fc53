"""Clump detector on 2 CPU cores: does a small Faster R-CNN reach completeness >= 0.8 and purity >= 0.8 (IoU >= 0.3)
for clumps of >= 3% of the host's flux within 15 minutes of training, on the simulator's default settings?

Trains the `cpu` preset once per row with the same architecture, efficientnet_lite0 + FPN: by default from the offline
ImageNet weights (`imagenet-lite0`) and from random init (`--zoobot-weights FILE` adds a Zoobot row; `--backbones`
sets any rows), same data, same seed, same budget: 2 epochs of 4,000 simulated images
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
jobs running); then run the rows side by side with --threads 1 --only imagenet / --only random.
Rows run by separate calls into the same --out are gathered in its summary.json and compared together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SHARED_GALAXIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "galaxies"


def _backbone_spec(text: str) -> tuple[str, str]:
    name, sep, weights = text.partition("=")
    if not sep or not name or not weights:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHTS (e.g. imagenet=imagenet, random=none, "
                                         f"zoobot=zoobot:FILE), got {text!r}")
    return name, weights


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
    parser.add_argument("--arch", default="efficientnet_lite0", help="encoder of every row (timm or torchvision)")
    parser.add_argument("--backbones", nargs="+", type=_backbone_spec, metavar="NAME=WEIGHTS",
                        default=[("imagenet", "imagenet"), ("random", "none")],
                        help="the rows, each NAME=WEIGHTS with WEIGHTS as for `blindspots detect --weights`: "
                        "imagenet, none, imagenet:FILE, zoobot:FILE or FILE")
    parser.add_argument("--zoobot-weights", default=None, metavar="FILE",
                        help="adds the row zoobot=zoobot:FILE (a local hf_hub:mwalmsley/zoobot-encoder-<arch> file)")
    parser.add_argument("--only", default=None, metavar="NAME", help="run one row only")
    parser.add_argument("--wall", action="store_true", help="count the budget in wall time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is far more efficient when the "
                        "cores are shared with other jobs: run the rows side by side with --only)")
    parser.add_argument("--hosts", nargs="*", default=None, metavar="DIR",
                        help="real cutout folders for injected-clump completeness (default: the sdss and decals "
                        "folders of ../shared/data/galaxies beside the repository, if present)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    rows = list(args.backbones) + ([("zoobot", f"zoobot:{args.zoobot_weights}")] if args.zoobot_weights else [])
    if len({name for name, _ in rows}) != len(rows):
        parser.error(f"row names must differ: {[name for name, _ in rows]}")
    if args.only is not None:
        if args.only not in dict(rows):
            parser.error(f"--only {args.only!r} is not one of the rows {[name for name, _ in rows]}")
        rows = [(name, w) for name, w in rows if name == args.only]

    from detectors.cli import DetectRun, format_summary, run_detection

    torch.set_num_threads(args.threads)
    hosts = args.hosts if args.hosts is not None else [
        str(p) for p in (SHARED_GALAXIES / "sdss", SHARED_GALAXIES / "decals") if p.is_dir()]
    summary_path = Path(args.out) / "summary.json"
    results = json.loads(summary_path.read_text()) if summary_path.is_file() else {}  # rows of earlier calls
    for name, weights in rows:
        cfg = DetectRun(out=str(Path(args.out) / name), backbone=args.arch, weights=weights,
                        preset="cpu", n_train=args.n_train, n_test=args.n_test, n_val=args.n_val,
                        hosts=tuple(hosts), epochs=args.epochs,
                        seed=args.seed, minutes=args.minutes, n_draw=4, progress=args.progress,
                        cpu_clock=not args.wall)
        s = run_detection(cfg)
        results[name] = s
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(results, indent=1))
        print(format_summary(s), flush=True)
        if not s["train"]["completed"]:
            print("  note: the time budget ended training before the learning-rate schedule did", flush=True)
        ok = (s["completeness_bright"] or 0) >= 0.8 and (s["purity"] or 0) >= 0.8
        print(f"  target (completeness >= 0.8 and purity >= 0.8 for clumps >= 3%): {'MET' if ok else 'NOT met'}",
              flush=True)
    if len(results) > 1:
        print(comparison(results))
    return results


def comparison(results: dict[str, dict]) -> str:
    """One column per row of the benchmark (same architecture, data and budget), one line per figure."""
    names = list(results)
    lines = [f"{'':30s}" + "".join(f"{n:>14s}" for n in names)]

    def line(label: str, values: list) -> None:
        lines.append(f"  {label:28s}" + "".join(f"{'n/a' if v is None else f'{v:.3f}':>14s}" for v in values))

    for key in ("score_threshold", "completeness_bright", "purity", "completeness_all", "f1"):
        line(key, [results[n][key] for n in names])
    for key in ("completeness_bright", "purity"):
        line(f"{key} @preset", [results[n]["at_preset_threshold"][key] for n in names])
    line("AP50 clump", [results[n]["ap50"]["clump"] for n in names])
    line("real hosts completeness", [(results[n].get("real_hosts") or {}).get("completeness_bright")
                                     for n in names])
    lines.append(f"  {'training steps':28s}" + "".join(f"{results[n]['train']['steps']:>14d}" for n in names))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
