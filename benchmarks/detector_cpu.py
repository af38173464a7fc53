"""Clump detector on CPU: does a small Faster R-CNN reach completeness >= 0.8 and purity >= 0.8 (IoU >= 0.3) for
clumps of >= 3% of the host's flux within 15 minutes of training, on the simulator's default settings?

Trains the `cpu` preset once per row (`--rows NAME=SPEC ...`, SPEC in the shared model grammar: `imagenet-lite0`,
`timm:<name>` (random init), `timm:<name>:FILE` (ImageNet weights from FILE), `zoobot:<arch>:FILE`), on the same
data with the same seed and budget: by default efficientnet_lite0 + FPN from the offline ImageNet weights and from
random init, 2 epochs of 4,000 simulated 128-px images (2,000 steps of batch 4) with the preset's warm-up and cosine
decay, stopped by the --minutes budget if it runs out first. The score threshold is chosen on 300 held-out
validation images (best clump F1); the test figures at the paper's threshold 0.3 are printed beside it, and so is
the completeness of simulated clumps injected into the real SDSS and DECaLS cutouts (10 injections per host;
`--hosts`). Writes everything to --out; a rerun resumes each row's training (a changed setting is refused unless
--restart). Rows run by separate calls into the same --out with the same settings are compared together.

    python -m benchmarks.detector_cpu
    python -m benchmarks.detector_cpu --rows zoobot=zoobot:efficientnet_lite0:zoobot-lite0.safetensors
    python -m benchmarks.detector_cpu --threads 1 --only random          # rows side by side on a shared machine
    python -m benchmarks.detector_cpu --results-to docs/results/benchmarks.json   # record the rows for the docs

The budget is counted in this process's CPU time per torch thread (`--wall` for wall time), so that other jobs on a
shared machine do not eat it; on an idle machine both clocks agree. On a busy machine two threads mostly spin: run
the rows side by side with --threads 1 --only NAME. Target per row: completeness (clumps >= 3%) >=
--min-completeness and purity >= --min-purity on the simulated test images, at the validated threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

SHARED_GALAXIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "galaxies"
FAMILIES = ("timm", "torchvision", "zoobot")
DEFAULT_ROWS = ("imagenet=imagenet-lite0", "random=timm:efficientnet_lite0")
# Settings that may differ between compared rows (everything else must be equal).
ROW_KEYS = ("backbone", "weights", "weights_file", "out", "progress", "restart", "device")

__all__ = ["parse_row", "comparison", "row_figures", "summary", "main"]


def parse_row(text: str) -> tuple[str, str, str | None]:
    """`NAME=SPEC[:FILE]` -> (name, spec, file); SPEC as `load_classifier` spells it, FILE its weights."""
    from detectors.backbones import backbone_spec

    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME=SPEC[:FILE] (e.g. imagenet=imagenet-lite0, "
                                         f"random=timm:efficientnet_lite0, zoobot=zoobot:efficientnet_lite0:FILE), "
                                         f"got {text!r}")
    parts = rest.split(":", 2 if rest.split(":", 1)[0] in FAMILIES else 1)
    head = 2 if parts[0] in FAMILIES else 1
    spec, file = ":".join(parts[:head]), (parts[head] if len(parts) > head else None)
    if spec.startswith("zoobot:") and file is None:
        raise argparse.ArgumentTypeError(f"row {name}: {spec} needs its weights file: {name}={spec}:FILE")
    if file is not None and not Path(file).is_file():
        raise argparse.ArgumentTypeError(f"row {name}: weights file {file} does not exist")
    try:
        backbone_spec(spec, file)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"row {name}: {exc}") from None
    return name, spec, file


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from blindspots.cli import OUT_ROOT, Parser

    p = Parser(prog="python -m benchmarks.detector_cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", type=parse_row, default=[parse_row(r) for r in DEFAULT_ROWS],
                   metavar="NAME=SPEC[:FILE]", help=f"the rows (default: {' '.join(DEFAULT_ROWS)})")
    p.add_argument("--only", default=None, metavar="NAME", help="run one row only")
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per row")
    p.add_argument("--n-train", type=int, default=4000, help="simulated training images (generated on the fly)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of --n-train images (the cosine schedule's length)")
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--n-val", type=int, default=300, help="validation images for the score threshold "
                   "(0: the paper's 0.3)")
    p.add_argument("--hosts", nargs="*", default=None, metavar="DIR",
                   help="real cutout folders for injected-clump completeness (default: the sdss and decals "
                   "folders of ../shared/data/galaxies beside the repository, if present)")
    p.add_argument("--out", default=str(OUT_ROOT / "bench-detector"), metavar="DIR")
    p.add_argument("--wall", action="store_true", help="count the budget in wall time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--min-completeness", type=float, default=0.8, help="target per row")
    p.add_argument("--min-purity", type=float, default=0.8, help="target per row")
    p.add_argument("--restart", action="store_true", help="discard a row's earlier run with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from blindspots.studies.measured import add_results_option

    add_results_option(p)
    args = p.parse_args(argv)
    names = [name for name, _, _ in args.rows]
    if len(set(names)) != len(names):
        p.error(f"row names must differ: {names}")
    if args.only is not None:
        if args.only not in names:
            p.error(f"--only {args.only!r} is not one of the rows {names}")
        args.rows = [r for r in args.rows if r[0] == args.only]
    return args


def _settings(summary: dict) -> dict:
    """The settings rows must share to be compared, as JSON holds them (tuples become lists)."""
    return json.loads(json.dumps({k: v for k, v in summary["settings"].items() if k not in ROW_KEYS}))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def comparison(results: dict[str, dict]) -> str:
    """The docs' table (docs/detectors.md): one line per row (same architecture, data and budget)."""
    header = ("| row | backbone (weights) | threshold (validation) | simulated test | at the paper's 0.3 "
              "| AP50 clump | real hosts, completeness | training steps |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        at = s["at_preset_threshold"]
        real = (s.get("real_hosts") or {}).get("completeness_bright")
        lines.append(f"| {name} | {s['backbone']} ({s['weights']}) | {s['score_threshold']:g} "
                     f"| {_fmt(s['completeness_bright'])} / {_fmt(s['purity'])} "
                     f"| {_fmt(at['completeness_bright'])} / {_fmt(at['purity'])} "
                     f"| {_fmt(s['ap50'].get('clump'))} | {_fmt(real)} | {s['train']['steps']} |")
    return "\n".join(lines)


def row_figures(s: dict) -> dict:
    """The figures of one row that the docs' table shows (`comparison`), from its `run_detection` summary."""
    at = s["at_preset_threshold"]
    return {"backbone": s["backbone"], "weights": s["weights"], "score_threshold": s["score_threshold"],
            "completeness_bright": s["completeness_bright"], "purity": s["purity"],
            "at_preset_threshold": {"score_threshold": at["score_threshold"],
                                    "completeness_bright": at["completeness_bright"], "purity": at["purity"]},
            "ap50_clump": s["ap50"].get("clump"), "real_completeness": (s.get("real_hosts") or {}).get(
                "completeness_bright"), "steps": s["train"]["steps"], "completed": s["train"]["completed"]}


def summary(figures: dict) -> str:
    """One line: per row, completeness / purity for clumps >= 3% at the validated threshold against the target."""
    t = figures["targets"]
    rows = "; ".join(f"{name} {_fmt(r['completeness_bright'])} / {_fmt(r['purity'])} at threshold "
                     f"{r['score_threshold']:g} ({r['steps']} training steps)" for name, r in figures["rows"].items())
    return (f"completeness / purity for clumps >= 3% on simulated test images: {rows} "
            f"(target >= {t['completeness']:g} / >= {t['purity']:g} per row)")


def _run_rows(args, hosts: list[str]) -> tuple[dict, list[str]]:
    """Train and score each row; returns (this call's summaries, misses)."""
    from detectors.backbones import backbone_spec
    from detectors.cli import DetectRun, format_summary, run_detection

    results, misses = {}, []
    for name, spec, file in args.rows:
        arch, weights, weights_file = backbone_spec(spec, file)
        cfg = DetectRun(out=str(Path(args.out) / name), backbone=arch, weights=weights, weights_file=weights_file,
                        preset="cpu", n_train=args.n_train, n_test=args.n_test, n_val=args.n_val,
                        hosts=tuple(hosts), epochs=args.epochs, seed=args.seed, minutes=args.minutes, n_draw=4,
                        progress=not args.quiet, device="cpu", cpu_clock=not args.wall, restart=args.restart)
        s = results[name] = run_detection(cfg)
        print(format_summary(s), flush=True)
        if not s["train"]["completed"]:
            print("  note: the time budget ended training before the learning-rate schedule did", flush=True)
        c, pur = s["completeness_bright"] or 0.0, s["purity"] or 0.0
        ok = c >= args.min_completeness and pur >= args.min_purity
        print(f"  [{name}] target (completeness >= {args.min_completeness} and purity >= {args.min_purity} for "
              f"clumps >= 3%): {'met' if ok else 'MISSED'} ({c:.3f} / {pur:.3f})", flush=True)
        if not ok:
            misses.append(f"{name} {c:.3f} / {pur:.3f}")
    return results, misses


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rows; returns 0 if every row run meets the target, 1 if any misses, 2 on a user error."""
    args = _parse(argv)
    import torch

    from blindspots.store import FolderInUse, RunChanged

    torch.set_num_threads(args.threads)
    hosts = args.hosts if args.hosts is not None else [
        str(p) for p in (SHARED_GALAXIES / "sdss", SHARED_GALAXIES / "decals") if p.is_dir()]
    try:
        results, misses = _run_rows(args, hosts)
    except (RunChanged, FolderInUse, FileNotFoundError, ValueError) as exc:
        print(f"python -m benchmarks.detector_cpu: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    summary_path = Path(args.out) / "summary.json"
    earlier = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    this = _settings(next(iter(results.values())))
    same = {n: s for n, s in earlier.items() if n not in results and _settings(s) == this}
    left_out = sorted(set(earlier) - set(results) - set(same))
    gathered = {**same, **results}
    summary_path.write_text(json.dumps({**earlier, **results}, indent=1))
    print(comparison(gathered))
    if left_out:
        print(f"(rows of earlier calls with other settings, left out of the table: {', '.join(left_out)})")
    print(f"target (every row run: completeness >= {args.min_completeness} and purity >= {args.min_purity}): "
          + ("met" if not misses else "MISSED: " + "; ".join(misses)))
    if args.results_to:  # this call's rows (rows run by other calls are recorded by their own commands)
        from blindspots.studies.measured import record_run

        figures = {"rows": {name: row_figures(s) for name, s in results.items()},
                   "targets": {"completeness": args.min_completeness, "purity": args.min_purity},
                   "settings": {k: v for k, v in _settings(next(iter(results.values()))).items()
                                if k in ("n_train", "epochs", "n_test", "n_val", "minutes", "seed", "preset",
                                         "image_size", "cpu_clock")},
                   "misses": misses}
        record_run(args.results_to, "detector_cpu", sys.argv[1:] if argv is None else argv, met=not misses,
                   summary=summary(figures), figures=figures)
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
