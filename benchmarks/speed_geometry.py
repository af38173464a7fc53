"""Speed of the triangle-hull statistics (`blindspots.geometry.hull_statistics`) against the leanest per-triangle
loop, side by side in one run.

For S sources with K LST outputs each, all K(K-1)/2 triangles (source, b_i, b_j) on the barycentric grid of step 1/n
(n = 10: 66 points, vertices and edges included):

(a) dedup:     `hull_statistics`: the probes that triangles share (the source, the K outputs, the K source edges)
               are evaluated once, and all sources go through the model in batches of --batch images:
               1 + K n + C(K,2) n(n-1)/2 evaluations per source;
(b) grid-only: `hull_statistics_naive(separate_edges=False)`, the baseline the verdict is judged against: one pass
               for p_src, then one pass per triangle over its own grid (p_src and edge statistics read off it):
               1 + C(K,2) (n+1)(n+2)/2 evaluations per source;
(r) reference: (`--reference`, shown, not judged) the reference code's structure, which also re-evaluates both
               source edges of every triangle: 1 + C(K,2) ((n+1)(n+2)/2 + 2(n+1)) evaluations per source.

The statistics of every run must equal each other (max abs difference <= 1e-5), and the evaluations counted by a
wrapper around the model (an independent count) must equal the closed forms above. Runs are interleaved in rotating
order over --repeats; medians and min-max are reported.

Targets (grid-only over dedup): evaluations >= --min-evaluations-ratio (default 1.3; the closed form at K = 5 is
661/501 = 1.32, tending to 66/45 = 1.47 for large K) and median time >= --min-time-ratio (default 1.25).

    python -m benchmarks.speed_geometry
    python -m benchmarks.speed_geometry --sources 8 --rounds 5 --size 64 --repeats 5 --reference --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from math import comb
from typing import Sequence

import torch
from torch import nn

from blindspots.cli import Parser
from blindspots.studies.measured import add_results_option, record_run

__all__ = ["CountingModel", "build_model", "closed_form_evaluations", "summary", "main"]

KINDS = ("dedup", "grid-only", "reference")
FIELDS = ("confidence", "p_src", "hull_mean", "fraction", "edge_mean", "edge_min")


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


def build_model(name: str, seed: int = 0):
    """A timm architecture with seeded random weights (nothing downloaded), wrapped to count evaluations."""
    import timm

    from blindspots import Classifier
    from blindspots.models import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(seed)
    counter = CountingModel(timm.create_model(name, pretrained=False))
    return Classifier(counter, IMAGENET_MEAN, IMAGENET_STD, name=name), counter


def closed_form_evaluations(kind: str, sources: int, k: int, n: int = 10) -> int:
    """Model evaluations of one run, from the docstring's closed forms."""
    per_source = {"dedup": 1 + k * n + comb(k, 2) * n * (n - 1) // 2,
                  "grid-only": 1 + comb(k, 2) * (n + 1) * (n + 2) // 2,
                  "reference": 1 + comb(k, 2) * ((n + 1) * (n + 2) // 2 + 2 * (n + 1))}[kind]
    return sources * per_source


def _run(kind: str, clf, sources, outputs, labels, batch: int):
    from blindspots.geometry import hull_statistics, hull_statistics_naive

    if kind == "dedup":
        return hull_statistics(clf, sources, outputs, labels, 0.1, batch_size=batch)
    return hull_statistics_naive(clf, sources, outputs, labels, 0.1, separate_edges=(kind == "reference"))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m benchmarks.speed_geometry", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="timm architecture (seeded random weights)")
    p.add_argument("--sources", type=int, default=4, help="S, sources")
    p.add_argument("--rounds", type=int, default=5, help="K, LST outputs per source")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--batch", type=int, default=256, help="batch size of the deduplicated run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians are reported)")
    p.add_argument("--reference", action="store_true", help="also time the reference structure (not judged)")
    p.add_argument("--min-evaluations-ratio", type=float, default=1.3, help="target: grid-only/dedup evaluations")
    p.add_argument("--min-time-ratio", type=float, default=1.25, help="target: grid-only/dedup median time")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--quiet", action="store_true", help="print the table and the verdict only")
    add_results_option(p)
    return p.parse_args(argv)


def _time_runs(kinds, clf, counter, data, batch: int, repeats: int):
    """Interleaved timed runs; returns (times per kind, counted evaluations and passes per kind, results)."""
    times: dict[str, list[float]] = {kd: [] for kd in kinds}
    evals, results = {}, {}
    for r in range(repeats):
        for kd in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            counter.images = counter.passes = 0
            t0 = time.perf_counter()
            results[kd] = _run(kd, clf, *data, batch)
            times[kd].append(time.perf_counter() - t0)
            evals[kd] = (counter.images, counter.passes)
    return times, evals, results


def _check(kinds, evals, results, s: int, k: int, log) -> list[str]:
    """Failed checks: counts against the closed forms and the runs' own reports, statistics against dedup."""
    failed = []
    for kd in kinds:
        expected = closed_form_evaluations(kd, s, k)
        if not evals[kd][0] == results[kd].evaluations == expected:
            failed.append(f"{kd}: counted {evals[kd][0]} evaluations, reported {results[kd].evaluations}, "
                          f"closed form {expected}")
        if kd != "dedup":
            diff = max(float((getattr(results[kd], f) - getattr(results["dedup"], f)).abs().max()) for f in FIELDS)
            log(f"{kd}: statistics equal to dedup's within {diff:.2g}")
            if diff > 1e-5:
                failed.append(f"{kd} statistics differ from dedup's by {diff:.3g} (> 1e-5)")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 if both targets are met and every check passes, else 1."""
    args = _parse(argv)
    log = (lambda *a: None) if args.quiet else print
    if args.threads:
        torch.set_num_threads(args.threads)
    clf, counter = build_model(args.model)
    gen = torch.Generator().manual_seed(0)
    s, k, hw = args.sources, args.rounds, args.size
    sources = torch.rand(s, 3, hw, hw, generator=gen)
    # outputs: the source blended toward random images, like LST outputs on their way to their targets
    outputs = (0.5 * sources[:, None] + 0.5 * torch.rand(s, k, 3, hw, hw, generator=gen)).clamp(0, 1)
    labels = torch.arange(s) % 1000
    log(f"model {args.model} (random weights), S={s} sources x K={k} outputs, {comb(k, 2)} triangles each, "
        f"{hw}x{hw} px, grid step 0.1 (66 points), threads {torch.get_num_threads()}")
    kinds = KINDS if args.reference else KINDS[:2]
    with torch.inference_mode():  # warm-up
        clf(sources[:2])
    times, evals, results = _time_runs(kinds, clf, counter, (sources, outputs, labels), args.batch, args.repeats)
    failed = _check(kinds, evals, results, s, k, log)

    med = {kd: statistics.median(v) for kd, v in times.items()}
    print(f"{'run':<10} {'evaluations':>11} {'passes':>7} {'time s (median)':>16} {'min-max':>15}")
    for kd in kinds:
        print(f"{kd:<10} {evals[kd][0]:>11} {evals[kd][1]:>7} {med[kd]:>16.3f} "
              f"{min(times[kd]):>7.3f}-{max(times[kd]):<7.3f}")
    ratios = {}
    for kd in kinds[1:]:
        ratios[kd] = (evals[kd][0] / evals["dedup"][0], med[kd] / med["dedup"])
        print(f"{kd}/dedup evaluations ratio = {ratios[kd][0]:.2f}x, time ratio = {ratios[kd][1]:.2f}x"
              + ("" if kd == "grid-only" else " (shown, not judged)"))
    e_ratio, t_ratio = ratios["grid-only"]
    if e_ratio < args.min_evaluations_ratio:
        failed.append(f"grid-only/dedup evaluations {e_ratio:.2f}x < {args.min_evaluations_ratio}x")
    if t_ratio < args.min_time_ratio:
        failed.append(f"grid-only/dedup time {t_ratio:.2f}x < {args.min_time_ratio}x")
    print(f"target (grid-only/dedup: evaluations >= {args.min_evaluations_ratio}x, time >= {args.min_time_ratio}x; "
          f"counts = closed forms; equal statistics): {'met' if not failed else 'MISSED: ' + '; '.join(failed)}")
    if args.results_to:
        figures = {"ratios": ratios, "evaluations": {kd: evals[kd][0] for kd in kinds}, "median_seconds": med,
                   "targets": {"evaluations": args.min_evaluations_ratio, "time": args.min_time_ratio},
                   "threads": torch.get_num_threads(), "misses": failed}
        record_run(args.results_to, "speed_geometry", sys.argv[1:] if argv is None else argv, met=not failed,
                   summary=summary(figures), figures=figures)
    return 1 if failed else 0


def summary(figures: dict) -> str:
    """One line: dedup against the grid-only loop (and the reference loop when timed), and the targets."""
    e, t = figures["ratios"]["grid-only"]
    text = (f"{e:.2f}x fewer evaluations, {t:.2f}x faster than the grid-only loop (targets "
            f"{figures['targets']['evaluations']:g}x, {figures['targets']['time']:g}x)")
    if "reference" in figures["ratios"]:
        re_, rt = figures["ratios"]["reference"]
        text += f"; the reference loop: {re_:.2f}x / {rt:.2f}x"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
