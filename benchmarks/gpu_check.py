"""One command for the first machine with a GPU: the `cuda` tests, then the engine's throughput on ResNet-50 and
DeiT-S (random weights, 224 px, the largest power-of-two batch that fits) and the projected time of the paper's
protocol (1,000 sources x 5 rounds) in paper mode and in adaptive mode.

Throughput is sample-iterations per second (one sample through one forward+backward) of: the engine in float32,
bfloat16 autocast, channels_last, and torch.compile; the published loop structure (two evaluations per iteration,
`benchmarks.speed_lst.reference_lst`); PGD (l-inf, no early stop) in float32, bfloat16 and compiled; a bare
forward+backward. Adaptive mode's passes per pair are measured here on
the real photos with `imagenet-lite0`. Meant to finish in under 8 minutes on one GPU; without CUDA it says so and
exits 0 (nothing to measure).

    python -m benchmarks.gpu_check [--iterations 10] [--max-batch 256] [--skip-tests]
    python -m benchmarks.gpu_check --results-to docs/results/benchmarks.json   # record the run for the docs
    python -m benchmarks.gpu_check --device cpu --skip-tests --models resnet18 --size 64 --pairs 1 --iterations 2 \
        --max-batch 4              # a CPU smoke test of this script (about 2 minutes)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

import attacks
from blindspots import LSTConfig, level_set_traversal, load_classifier
from blindspots.models import probing
from blindspots.engine import Probe
from blindspots.studies.measured import add_results_option, record_run
from blindspots.traversal.probe import auto_batch_size

from .speed_lst import build_model, floor_passes, reference_lst

__all__ = ["summary", "main"]

REPO = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "deit_small_patch16_224")
PAPER_PAIRS = 1000 * 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], samples: int, iterations: int, device: torch.device) -> float:
    """Sample-iterations per second of fn (one warm-up call, then one timed call)."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return samples * iterations / (time.perf_counter() - t0)


def _throughputs(name: str, iterations: int, max_batch: int, device: torch.device, size: int
                 ) -> tuple[int, dict[str, float]]:
    """(the batch found, sample-iterations per second per row)."""
    model = build_model(name, size).to(device)
    gen = torch.Generator().manual_seed(0)
    with probing(model):
        batch = auto_batch_size(Probe(model), torch.rand(1, 3, size, size, device=device),
                                torch.zeros(1, dtype=torch.long, device=device), max_batch, device)
    xs, xt = torch.rand(batch, 3, size, size, generator=gen), torch.rand(batch, 3, size, size, generator=gen)
    y = torch.zeros(batch, dtype=torch.long)
    cfg = LSTConfig.paper(iterations=iterations)
    rows = {}
    for label, extra in (("engine fp32", {}), ("engine bf16", {"amp": True}),
                         ("engine bf16+channels_last", {"amp": True, "channels_last": True}),
                         ("engine bf16+compile", {"amp": True, "compile": True})):
        run_cfg = LSTConfig(**{**cfg.to_dict(), **extra})
        rows[label] = _rate(lambda c=run_cfg: level_set_traversal(model, xs, xt, y, config=c, seed=0), batch,
                            iterations, device)
    for label, extra in (("PGD fp32", {}), ("PGD bf16", {"amp": True}), ("PGD bf16+compile", {"amp": True,
                                                                                             "compile": True})):
        pgd = attacks.PGD(model, 4 / 255, steps=iterations, early_stop=False, seed=0, **extra)
        rows[label] = _rate(lambda a=pgd: a(xs, y), batch, iterations, device)
    rows["published loop fp32"] = _rate(lambda: reference_lst(model, xs, xt, y, config=cfg, seed=0), batch,
                                        iterations, device)
    rows["bare fwd+bwd fp32"] = _rate(lambda: floor_passes(model, xs.to(device), y.to(device), iterations), batch,
                                      iterations, device)
    print(f"{name}: batch {batch}, {iterations} iterations", flush=True)
    for label, rate in rows.items():
        print(f"  {label:<28}{rate:>10.0f} sample-iterations/s")
    return batch, rows


def _adaptive_passes_per_pair(device: torch.device, pairs: int, size: int) -> tuple[float, float]:
    """Mean model passes per pair of paper and adaptive mode on the real photos with imagenet-lite0."""
    from .lst_passes import photo_pairs

    model = load_classifier("imagenet-lite0", device=device)
    xs, xt = photo_pairs(model, size, pairs)
    paper = level_set_traversal(model, xs, xt, config=LSTConfig.paper(), seed=0)
    adaptive = level_set_traversal(model, xs, xt, config=LSTConfig.adaptive(), seed=0)
    return float(paper.model_passes.float().mean()), float(adaptive.model_passes.float().mean())


def main(argv: Sequence[str] | None = None) -> int:
    """0 when the cuda tests pass (or there is no CUDA device), 1 otherwise."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=10, help="LST iterations per timed run")
    p.add_argument("--max-batch", type=int, default=256, help="upper bound of the batch-size search")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--models", default=",".join(MODELS), help="timm/torchvision names (random weights)")
    p.add_argument("--size", type=int, default=224, help="image size of the throughput runs")
    p.add_argument("--pairs", type=int, default=12, help="photo pairs for the passes per pair (at most 12)")
    p.add_argument("--device", default="cuda", help="cuda (the point); cpu only to smoke-test this script")
    add_results_option(p)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing measured (run it on a GPU machine)")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke test)"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    ok, tests = True, "skipped"
    if not args.skip_tests:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], cwd=REPO)
        print(f"cuda tests: {'passed' if rc == 0 else 'FAILED'}", flush=True)
        ok, tests = rc == 0, ("passed" if rc == 0 else "failed")
    paper_pp, adaptive_pp = _adaptive_passes_per_pair(device, args.pairs, args.size)
    print(f"passes per pair on the photos (imagenet-lite0, {args.size} px): paper {paper_pp:.0f}, "
          f"adaptive {adaptive_pp:.1f}")
    models = {}
    for model_name in filter(None, args.models.split(",")):
        batch, rows = _throughputs(model_name, args.iterations, args.max_batch, device, args.size)
        best = max(v for k, v in rows.items() if k.startswith("engine"))
        hours = {}
        for mode, pp in (("paper", paper_pp), ("adaptive", adaptive_pp)):
            hours[mode] = PAPER_PAIRS * pp / best / 3600
            print(f"  projected paper protocol ({PAPER_PAIRS} pairs), {mode} mode at the best engine rate: "
                  f"{hours[mode]:.2f} h")
        models[model_name] = {"batch": batch, "rates": rows, "best_engine": best, "projected_hours": hours}
    if args.results_to:
        figures = {"device": name, "tests": tests, "size": args.size, "iterations": args.iterations,
                   "pairs": args.pairs, "paper_pairs": PAPER_PAIRS,
                   "passes_per_pair": {"paper": paper_pp, "adaptive": adaptive_pp}, "models": models}
        record_run(args.results_to, "gpu_check", sys.argv[1:] if argv is None else argv, met=ok,
                   summary=summary(figures), figures=figures)
    return 0 if ok else 1


def summary(figures: dict) -> str:
    """One line: the cuda tests, the passes per pair, and per model the best engine rate and the projected paper
    protocol in paper and adaptive mode."""
    pp = figures["passes_per_pair"]
    parts = [f"{figures['device']}: cuda tests {figures['tests']}; passes per pair on the photos: paper "
             f"{pp['paper']:.0f}, adaptive {pp['adaptive']:.1f}"]
    for model, m in figures["models"].items():
        h = m["projected_hours"]
        parts.append(f"{model} (batch {m['batch']}): best engine rate {m['best_engine']:.0f} sample-iterations/s, "
                     f"the paper's protocol ({figures['paper_pairs']} pairs) {h['paper']:.2f} h in paper mode, "
                     f"{h['adaptive']:.2f} h in adaptive mode")
    return "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
