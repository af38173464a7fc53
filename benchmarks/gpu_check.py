"""One command for the first machine with a GPU: the `cuda` tests, then the engine's throughput on ResNet-50 and
DeiT-S (random weights, 224 px, the largest power-of-two batch that fits) and the projected time of the paper's
protocol (1,000 sources x 5 rounds) in paper mode and in adaptive mode.

Throughput is sample-iterations per second (one sample through one forward+backward) of: the engine in float32,
bfloat16 autocast, channels_last, and torch.compile; the published loop structure (two evaluations per iteration,
`benchmarks.speed_lst.reference_lst`); a bare forward+backward. Adaptive mode's passes per pair are measured here on
the real photos with `imagenet-lite0`. Meant to finish in under 8 minutes on one GPU; without CUDA it says so and
exits 0 (nothing to measure).

    python -m benchmarks.gpu_check [--iterations 10] [--max-batch 256] [--skip-tests]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from blindspots import LSTConfig, level_set_traversal, load_classifier
from blindspots.models import probing
from blindspots.traversal_probe import Probe, auto_batch_size

from .speed_lst import build_model, floor_passes, reference_lst

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "deit_small_patch16_224")
PAPER_PAIRS = 1000 * 5


def _rate(fn: Callable[[], object], samples: int, iterations: int) -> float:
    """Sample-iterations per second of fn (one warm-up call, then one timed call)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return samples * iterations / (time.perf_counter() - t0)


def _throughputs(name: str, iterations: int, max_batch: int) -> dict[str, float]:
    model = build_model(name, 224).cuda()
    gen = torch.Generator().manual_seed(0)
    with probing(model):
        batch = auto_batch_size(Probe(model), torch.rand(1, 3, 224, 224, device="cuda"),
                                torch.zeros(1, dtype=torch.long, device="cuda"), max_batch, torch.device("cuda"))
    xs, xt = torch.rand(batch, 3, 224, 224, generator=gen), torch.rand(batch, 3, 224, 224, generator=gen)
    y = torch.zeros(batch, dtype=torch.long)
    cfg = LSTConfig.paper(iterations=iterations)
    rows = {}
    for label, extra in (("engine fp32", {}), ("engine bf16", {"amp": True}),
                         ("engine bf16+channels_last", {"amp": True, "channels_last": True}),
                         ("engine bf16+compile", {"amp": True, "compile": True})):
        run_cfg = LSTConfig(**{**cfg.to_dict(), **extra})
        rows[label] = _rate(lambda c=run_cfg: level_set_traversal(model, xs, xt, y, config=c, seed=0), batch, iterations)
    rows["published loop fp32"] = _rate(lambda: reference_lst(model, xs, xt, y, config=cfg, seed=0), batch, iterations)
    rows["bare fwd+bwd fp32"] = _rate(lambda: floor_passes(model, xs.cuda(), y.cuda(), iterations), batch, iterations)
    print(f"{name}: batch {batch}, {iterations} iterations", flush=True)
    for label, rate in rows.items():
        print(f"  {label:<28}{rate:>10.0f} sample-iterations/s")
    return rows


def _adaptive_passes_per_pair() -> tuple[float, float]:
    """Mean model passes per pair of paper and adaptive mode on the real photos with imagenet-lite0 (12 pairs)."""
    from .lst_passes import photo_pairs

    model = load_classifier("imagenet-lite0", device="cuda")
    xs, xt = photo_pairs(model, 224, 12)
    paper = level_set_traversal(model, xs, xt, config=LSTConfig.paper(), seed=0)
    adaptive = level_set_traversal(model, xs, xt, config=LSTConfig.adaptive(), seed=0)
    return float(paper.model_passes.float().mean()), float(adaptive.model_passes.float().mean())


def main(argv: Sequence[str] | None = None) -> int:
    """0 when the cuda tests pass (or there is no CUDA device), 1 otherwise."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=10, help="LST iterations per timed run")
    p.add_argument("--max-batch", type=int, default=256, help="upper bound of the batch-size search")
    p.add_argument("--skip-tests", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing measured (run it on a GPU machine)")
        return 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    ok = True
    if not args.skip_tests:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], cwd=REPO)
        print(f"cuda tests: {'passed' if rc == 0 else 'FAILED'}", flush=True)
        ok = rc == 0
    paper_pp, adaptive_pp = _adaptive_passes_per_pair()
    print(f"passes per pair on the photos (imagenet-lite0, 224 px): paper {paper_pp:.0f}, adaptive {adaptive_pp:.1f}")
    for name in MODELS:
        rows = _throughputs(name, args.iterations, args.max_batch)
        best = max(v for k, v in rows.items() if k.startswith("engine"))
        for mode, pp in (("paper", paper_pp), ("adaptive", adaptive_pp)):
            hours = PAPER_PAIRS * pp / best / 3600
            print(f"  projected paper protocol ({PAPER_PAIRS} pairs), {mode} mode at the best engine rate: "
                  f"{hours:.2f} h")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
