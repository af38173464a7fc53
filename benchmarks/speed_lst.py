"""Speed of the LST engine against the reference code's loop structure and against the bare model cost.

Measured side by side in one run, on the same model and batch, in seconds per sample-iteration:

(a) engine:    `blindspots.level_set_traversal` with `LSTConfig.paper(iterations=T)` (whole call, including its clean
               forward, its first forward+backward and the final distances);
(b) reference: `reference_lst`, the public code's structure: per iteration a forward+backward at x for the gradient,
               then a SEPARATE no-grad forward at the candidate x' for the acceptance test; same math and the same
               per-sample start noise as the engine, so its final images must equal the engine's;
(c) floor:     T bare forward+backward passes of the model with respect to its input.

Targets: (b)/(a) >= 1.35 with identical outputs, (a)/(c) <= 1.10, on whole-call times (conservative: the engine's
fixed costs -- clean forward, first gradient, final distances -- weigh ~1/T). A second line gives the per-iteration
(steady-state) ratios, from the difference to 2-iteration runs, which is what a long (T=400) traversal sees. All runs
are interleaved (rotating order) over several repeats; medians and the min-max spread are reported, since other
processes may share the cores (on an oversubscribed machine, --threads 1 avoids OpenMP barrier stalls).

    python -m benchmarks.speed_lst                       # resnet18 + deit_tiny at 64 and 224 px
    python -m benchmarks.speed_lst --models resnet18 --sizes 64 --batch 8 --iterations 20 --repeats 5
    python -m benchmarks.speed_lst --channels-last --models resnet18 efficientnet_lite0 --sizes 224

`--channels-last` instead times the engine with NCHW inputs against channels_last inputs (interleaved), and checks
that the outputs agree within float tolerance (target: max |difference| <= --atol-cl); it reports the ratio and does
not judge speed (which format is faster depends on the model and the machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from blindspots import Classifier, LSTConfig, level_set_traversal
from blindspots.models import IMAGENET_MEAN, IMAGENET_STD, probing
from blindspots.engine import sample_seeds
from blindspots.studies.measured import add_results_option, record_run
from blindspots.traversal.loop import start_noise
from blindspots.validation import check_images, check_labels, check_same_shape

__all__ = ["reference_lst", "floor_passes", "build_model", "bench_one", "summary", "main"]


def _source_log_prob(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p_y(x) per sample, computed as the engine does (float log-softmax, then gather)."""
    return model(x).float().log_softmax(-1).gather(1, y[:, None]).squeeze(1)


def reference_lst(
    model: nn.Module,
    sources: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    config: LSTConfig | None = None,
    *,
    seed: int | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LST with the reference code's loop structure (two model evaluations of each point), for speed and parity checks.

    Per iteration: forward+backward at x for g, then a separate no-grad forward at the candidate x' for the
    acceptance test. Uses `step_size`, `iterations`, `threshold`, `adv_eps`, `init_noise` and `use_prediction` of
    `config` (default `LSTConfig.paper()`); no early stop, logging, batching or mixed precision. Runs with parameter
    gradients off (inside `probing`). Start noise is drawn per sample exactly as in the engine.

    Returns:
        (final images (N, C, H, W) on the model's device, accept decisions (T, N) bool).
    """
    config = config or LSTConfig.paper()
    check_images(sources, "sources")
    check_images(targets, "targets")
    check_same_shape(sources, targets, "sources", "targets")
    n = sources.shape[0]
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    xs, xt = sources.to(device), targets.to(device)
    seeds = sample_seeds(seed, n)
    eta, eps, delta = config.step_size, config.adv_eps, config.threshold
    decisions = []
    with probing(model):
        with torch.no_grad():
            clean = model(xs).float().log_softmax(-1)
        if labels is None or config.use_prediction:
            y = clean.argmax(1)
        else:
            y = check_labels(labels, n, clean.shape[1]).to(device)
        p0 = clean.gather(1, y[:, None]).squeeze(1).exp()
        x = (xs + start_noise(seeds, xs.shape[1:], config.init_noise).to(xs)).clamp_(0, 1)
        a = torch.zeros_like(x)
        for _ in range(config.iterations):
            with torch.enable_grad():  # evaluation 1: gradient at x
                xg = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(-_source_log_prob(model, xg, y).sum(), xg)
            v = xt - x
            gg = (g * g).flatten(1).sum(1)
            gv = (g * v).flatten(1).sum(1)
            coef = torch.where(gg > 0, gv / gg.clamp_min(torch.finfo(gg.dtype).tiny), torch.zeros_like(gg))
            d = v - coef.view(-1, 1, 1, 1) * g
            if eps > 0:
                a = (a + (eps / 2) * g).clamp_(-eps, eps)
                candidate = (x + eta * d - a).clamp_(0, 1)
            else:
                candidate = (x + eta * d).clamp_(0, 1)
            with torch.no_grad():  # evaluation 2: acceptance test at the candidate
                p_c = _source_log_prob(model, candidate, y).exp()
            ok = (p0 - p_c) < delta
            x = torch.where(ok.view(-1, 1, 1, 1), candidate, x)
            decisions.append(ok)
    return x.detach(), torch.stack(decisions) if decisions else torch.zeros(0, n, dtype=torch.bool)


def floor_passes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iterations: int) -> torch.Tensor:
    """`iterations` bare forward+backward passes w.r.t. the input (parameter gradients off); returns the last gradient."""
    g = torch.zeros_like(x)
    with probing(model), torch.enable_grad():
        for _ in range(iterations):
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(-_source_log_prob(model, xg, y).sum(), xg)
    return g


def build_model(name: str, size: int, seed: int = 0) -> Classifier:
    """A timm model with random weights (no download) for `size`-px inputs, wrapped with ImageNet normalisation."""
    import timm

    torch.manual_seed(seed)
    kwargs = {"img_size": size} if ("deit" in name or "vit" in name) else {}
    net = timm.create_model(name, pretrained=False, **kwargs)
    return Classifier(net, IMAGENET_MEAN, IMAGENET_STD, name=name).eval()


SHORT = 2  # iterations of the short runs whose time, subtracted, removes the fixed costs


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_one(name: str, size: int, batch: int, iterations: int, repeats: int, seed: int = 0) -> dict:
    """Interleaved timings of (a) engine, (b) reference structure, (c) floor for one model and input size."""
    model = build_model(name, size, seed)
    gen = torch.Generator().manual_seed(seed)
    xs = torch.rand(batch, 3, size, size, generator=gen)
    xt = torch.rand(batch, 3, size, size, generator=gen)
    config = LSTConfig.paper(iterations=iterations)
    with torch.no_grad():
        y = model(xs).argmax(1)

    short = LSTConfig.paper(iterations=SHORT)
    runs = {
        "a": lambda: level_set_traversal(model, xs, xt, y, config=config, seed=seed),
        "b": lambda: reference_lst(model, xs, xt, y, config=config, seed=seed),
        "c": lambda: floor_passes(model, xs, y, iterations),
        # short runs: their difference to the long ones gives the per-iteration (steady-state) cost
        "a_short": lambda: level_set_traversal(model, xs, xt, y, config=short, seed=seed),
        "b_short": lambda: reference_lst(model, xs, xt, y, config=short, seed=seed),
    }
    # warm-up (allocator, oneDNN primitive caches)
    level_set_traversal(model, xs, xt, y, config=short, seed=seed)
    reference_lst(model, xs, xt, y, config=short, seed=seed)
    floor_passes(model, xs, y, SHORT)

    seconds: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, object] = {}
    order = list(runs)
    for r in range(repeats):
        rot = order[r % len(order):] + order[:r % len(order)]  # rotate, so drifts in load hit all runs alike
        for k in rot:
            dt, out = _timed(runs[k])
            seconds[k].append(dt)
            outputs[k] = out
    per = batch * iterations
    times = {k: [t / per for t in seconds[k]] for k in "abc"}
    # marginal cost of one iteration (fixed costs -- clean forward, first gradient, final distances -- removed)
    steady = {k: [(lt - st) / (batch * (iterations - SHORT)) for lt, st in zip(seconds[k], seconds[k + "_short"])]
              for k in "ab"}
    steady["c"] = times["c"]

    res_a, (img_b, dec_b) = outputs["a"], outputs["b"]
    max_diff = float((res_a.images - img_b.cpu()).abs().max())
    acc_a = (res_a.acceptance_rate * iterations).round().long()
    acc_b = dec_b.sum(0).cpu()
    ba = [b / a for a, b in zip(times["a"], times["b"])]
    ac = [a / c for a, c in zip(times["a"], times["c"])]
    ba_s = [b / a for a, b in zip(steady["a"], steady["b"])]
    ac_s = [a / c for a, c in zip(steady["a"], steady["c"])]
    return {
        "model": name, "size": size, "batch": batch, "iterations": iterations, "repeats": repeats,
        "sec_per_sample_iter": {k: statistics.median(v) for k, v in times.items()},
        "spread": {k: [min(v), max(v)] for k, v in times.items()},
        "b_over_a": statistics.median(ba), "b_over_a_range": [min(ba), max(ba)],
        "a_over_c": statistics.median(ac), "a_over_c_range": [min(ac), max(ac)],
        "steady_sec_per_sample_iter": {k: statistics.median(v) for k, v in steady.items()},
        "steady_b_over_a": statistics.median(ba_s), "steady_b_over_a_range": [min(ba_s), max(ba_s)],
        "steady_a_over_c": statistics.median(ac_s), "steady_a_over_c_range": [min(ac_s), max(ac_s)],
        "max_abs_diff_a_b": max_diff,
        "same_accept_counts": bool(torch.equal(acc_a, acc_b)),
        "mean_acceptance": float(res_a.acceptance_rate.mean()),
        "threads": torch.get_num_threads(),
    }


def bench_channels_last(name: str, size: int, batch: int, iterations: int, repeats: int, seed: int = 0) -> dict:
    """Interleaved timings of the engine with NCHW inputs and with channels_last inputs (model weights untouched)."""
    model = build_model(name, size, seed)
    gen = torch.Generator().manual_seed(seed)
    xs = torch.rand(batch, 3, size, size, generator=gen)
    xt = torch.rand(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        y = model(xs).argmax(1)
    configs = {"nchw": LSTConfig.paper(iterations=iterations), "cl": LSTConfig.paper(iterations=iterations,
                                                                                     channels_last=True)}
    seconds: dict[str, list[float]] = {k: [] for k in configs}
    outputs = {}
    for k, cfg in configs.items():  # warm-up
        level_set_traversal(model, xs, xt, y, config=LSTConfig(**{**cfg.to_dict(), "iterations": SHORT}), seed=seed)
    for r in range(repeats):
        for k in (list(configs) if r % 2 == 0 else list(configs)[::-1]):
            dt, outputs[k] = _timed(lambda c=configs[k]: level_set_traversal(model, xs, xt, y, config=c, seed=seed))
            seconds[k].append(dt)
    ratio = [c / n for n, c in zip(seconds["nchw"], seconds["cl"])]
    return {"model": name, "size": size, "batch": batch, "iterations": iterations,
            "sec_per_sample_iter": {k: statistics.median(v) / (batch * iterations) for k, v in seconds.items()},
            "cl_over_nchw": statistics.median(ratio), "cl_over_nchw_range": [min(ratio), max(ratio)],
            "max_abs_diff": float((outputs["nchw"].images - outputs["cl"].images).abs().max())}


def _print_row(r: dict) -> None:
    t, s = r["sec_per_sample_iter"], r["spread"]
    print(f"{r['model']:>24} {r['size']:>4}px  "
          + "  ".join(f"{k}={t[k] * 1e3:7.2f}ms [{s[k][0] * 1e3:.2f}-{s[k][1] * 1e3:.2f}]" for k in "abc")
          + f"  b/a={r['b_over_a']:.3f} [{r['b_over_a_range'][0]:.2f}-{r['b_over_a_range'][1]:.2f}]"
          + f"  a/c={r['a_over_c']:.3f} [{r['a_over_c_range'][0]:.2f}-{r['a_over_c_range'][1]:.2f}]"
          + f"  max|a-b|={r['max_abs_diff_a_b']:.1e} accepts_equal={r['same_accept_counts']}")
    print(f"{'':>24} {'':>4}    per-iteration (long minus {SHORT}-iteration runs): "
          f"b/a={r['steady_b_over_a']:.3f} [{r['steady_b_over_a_range'][0]:.2f}-{r['steady_b_over_a_range'][1]:.2f}]"
          f"  a/c={r['steady_a_over_c']:.3f} [{r['steady_a_over_c_range'][0]:.2f}-{r['steady_a_over_c_range'][1]:.2f}]",
          flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 if every configuration meets the targets and the outputs agree, else 1."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed_lst", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "deit_tiny_patch16_224"], help="timm model names")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 224], help="input sizes in px")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iterations", type=int, default=20, help="LST iterations T per timed run")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (medians are reported; with 3, "
                   "the 2-thread medians on an idle machine still swung across the targets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="append one JSON line per configuration to this file")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed |engine - reference| on final images")
    p.add_argument("--channels-last", action="store_true", help="time NCHW against channels_last inputs instead")
    p.add_argument("--atol-cl", type=float, default=1e-4, help="largest allowed |NCHW - channels_last| on images")
    add_results_option(p)
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.iterations <= SHORT:
        p.error(f"--iterations must exceed {SHORT} (the short runs' length)")

    if args.channels_last:
        return _main_channels_last(args)
    print(f"seconds per sample-iteration (median [min-max] over {args.repeats} interleaved repeats), batch "
          f"{args.batch}, T={args.iterations}, {torch.get_num_threads()} threads; a=engine b=reference c=floor")
    ok, rows = True, []
    for name in args.models:
        for size in args.sizes:
            r = bench_one(name, size, args.batch, args.iterations, args.repeats, args.seed)
            rows.append({k: r[k] for k in ("model", "size", "b_over_a", "a_over_c", "steady_b_over_a",
                                           "steady_a_over_c", "max_abs_diff_a_b", "same_accept_counts")})
            _print_row(r)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
            good = (r["b_over_a"] >= 1.35 and r["a_over_c"] <= 1.10 and r["max_abs_diff_a_b"] <= args.atol
                    and r["same_accept_counts"])
            ok &= good
            if not good:
                print(f"  -> target missed (b/a >= 1.35, a/c <= 1.10, max|a-b| <= {args.atol}, equal accepts)")
    _record(args, ok, {"mode": "reference", "rows": rows, "targets": {"b_over_a": 1.35, "a_over_c": 1.10}})
    return 0 if ok else 1


def summary(figures: dict) -> str:
    """One line per mode: the engine against the published loop and the floor, or channels_last against NCHW."""
    if figures["mode"] == "channels_last":
        return ("engine time channels_last / NCHW: "
                + ", ".join(f"{r['model']} {r['cl_over_nchw']:.2f}x" for r in figures["rows"])
                + "; outputs differ by up to " + ", ".join(f"{r['max_abs_diff']:.1e}" for r in figures["rows"])
                + f" (allowed {figures['atol_cl']:.0e})")
    return ("published loop / engine time: "
            + ", ".join(f"{r['model']} {r['size']} px {r['b_over_a']:.2f}x" for r in figures["rows"])
            + "; engine / bare forward+backward: " + ", ".join(f"{r['a_over_c']:.2f}x" for r in figures["rows"])
            + " (targets >= 1.35x, <= 1.10x)")


def _record(args: argparse.Namespace, ok: bool, figures: dict) -> None:
    if args.results_to:
        record_run(args.results_to, "speed_lst", args.argv, met=ok, summary=summary(figures), figures=figures)


def _main_channels_last(args: argparse.Namespace) -> int:
    ok, rows = True, []
    for name in args.models:
        for size in args.sizes:
            r = bench_channels_last(name, size, args.batch, args.iterations, args.repeats, args.seed)
            rows.append({k: r[k] for k in ("model", "size", "cl_over_nchw", "cl_over_nchw_range", "max_abs_diff")})
            t = r["sec_per_sample_iter"]
            print(f"{name:>20} {size:>4}px  NCHW {t['nchw'] * 1e3:7.2f} ms  channels_last {t['cl'] * 1e3:7.2f} ms"
                  f"  cl/nchw={r['cl_over_nchw']:.3f} [{r['cl_over_nchw_range'][0]:.2f}-"
                  f"{r['cl_over_nchw_range'][1]:.2f}]  max|diff|={r['max_abs_diff']:.1e}", flush=True)
            ok &= r["max_abs_diff"] <= args.atol_cl
    _record(args, ok, {"mode": "channels_last", "rows": rows, "atol_cl": args.atol_cl})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
