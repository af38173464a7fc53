"""Speed of the triangle-hull statistics (`blindspots.geometry.hull_statistics`) against naive loops, side by side.

For S sources with K LST outputs each, all K(K-1)/2 triangles (source, b_i, b_j) on the 0.1 barycentric grid:

(a) dedup:     `hull_statistics`: shared probes (source, outputs, source edges) evaluated once, all sources in
               batches of --batch images;
(b) reference: `hull_statistics_naive(separate_edges=True)`, the reference code's structure: per source one pass for
               p_src, then per triangle one pass over its 66 grid points and one pass per source edge (11 points,
               the star-like check);
(c) grid-only: `hull_statistics_naive(separate_edges=False)`: the leanest per-triangle loop (p_src and edges read off
               each triangle's own grid), a stricter baseline than the reference.

All three must give the same statistics (checked). Model evaluations are counted by a wrapper around the model (an
independent count). The runs are interleaved in rotating order over --repeats; medians and min-max are reported.
Targets (S = 8, K = 5, CPU): (b)/(a) >= 1.5x fewer evaluations and >= 1.5x faster.

    python -m benchmarks.speed_geometry
    python -m benchmarks.speed_geometry --sources 8 --rounds 5 --size 64 --repeats 3 --model resnet18
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence

import torch
from torch import nn

from blindspots import Classifier
from blindspots.geometry import hull_statistics, hull_statistics_naive
from blindspots.models import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["CountingModel", "build_model", "main"]


class CountingModel(nn.Module):
    """Counts the images and forward passes that reach the wrapped model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0
        self.passes = 0
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        self.passes += 1
        return self.model(x)


def build_model(name: str, seed: int = 0) -> tuple[Classifier, CountingModel]:
    """A timm architecture with seeded random weights (nothing downloaded), wrapped to count evaluations."""
    import timm

    torch.manual_seed(seed)
    counter = CountingModel(timm.create_model(name, pretrained=False))
    return Classifier(counter, IMAGENET_MEAN, IMAGENET_STD, name=name), counter


def _run(kind: str, clf, sources, outputs, labels, batch: int):
    if kind == "dedup":
        return hull_statistics(clf, sources, outputs, labels, 0.1, batch_size=batch)
    return hull_statistics_naive(clf, sources, outputs, labels, 0.1, separate_edges=(kind == "reference"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed_geometry", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18", help="timm architecture (random weights)")
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="K, LST outputs per source")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the deduplicated run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    clf, counter = build_model(args.model)
    gen = torch.Generator().manual_seed(0)
    s, k, hw = args.sources, args.rounds, args.size
    sources = torch.rand(s, 3, hw, hw, generator=gen)
    # outputs: the source blended toward random images, like LST outputs on their way to their targets
    outputs = (0.5 * sources[:, None] + 0.5 * torch.rand(s, k, 3, hw, hw, generator=gen)).clamp(0, 1)
    labels = torch.arange(s) % 1000
    print(f"model {args.model} (random weights), S={s} sources x K={k} outputs, {k * (k - 1) // 2} triangles each, "
          f"{hw}x{hw} px, grid step 0.1 (66 points), threads {torch.get_num_threads()}")

    kinds = ("dedup", "reference", "grid-only")
    times: dict[str, list[float]] = {kd: [] for kd in kinds}
    evals: dict[str, tuple[int, int]] = {}
    results = {}
    with torch.inference_mode():  # warm-up
        clf(sources[:2])
    for r in range(args.repeats):
        order = kinds[r % 3:] + kinds[:r % 3]
        for kd in order:
            counter.images = counter.passes = 0
            t0 = time.perf_counter()
            res = _run(kd, clf, sources, outputs, labels, args.batch)
            times[kd].append(time.perf_counter() - t0)
            evals[kd] = (counter.images, counter.passes)
            results[kd] = res
            if res.evaluations != counter.images:
                raise AssertionError(f"{kd}: reported {res.evaluations} evaluations, counted {counter.images}")

    ref = results["reference"]
    for kd in ("dedup", "grid-only"):
        diff = max(float((getattr(results[kd], f) - getattr(ref, f)).abs().max())
                   for f in ("confidence", "p_src", "hull_mean", "fraction", "edge_mean", "edge_min"))
        if diff > 1e-5:
            raise AssertionError(f"{kd} statistics differ from the reference loop by {diff:.3g}")
        print(f"{kd}: same statistics as the reference loop (max abs difference {diff:.2g})")

    med = {kd: statistics.median(v) for kd, v in times.items()}
    print(f"\n{'run':<11} {'evaluations':>11} {'passes':>7} {'time s (median)':>16} {'min-max':>15}")
    for kd in kinds:
        print(f"{kd:<11} {evals[kd][0]:>11} {evals[kd][1]:>7} {med[kd]:>16.3f} "
              f"{min(times[kd]):>7.3f}-{max(times[kd]):<7.3f}")
    print()
    for base in ("reference", "grid-only"):
        e_ratio = evals[base][0] / evals["dedup"][0]
        t_ratio = med[base] / med["dedup"]
        print(f"{base}/dedup evaluations ratio = {e_ratio:.2f}x   time ratio = {t_ratio:.2f}x")
    e_ok = evals["reference"][0] / evals["dedup"][0] >= 1.5
    t_ok = med["reference"] / med["dedup"] >= 1.5
    print(f"target (reference/dedup >= 1.5x evaluations and >= 1.5x time): evaluations {'met' if e_ok else 'MISSED'}, "
          f"time {'met' if t_ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
