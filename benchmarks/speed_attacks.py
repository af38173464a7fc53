"""Speed of `attacks.PGD` against `torchattacks.PGD` (dev-only dependency) on the same model and batch, in one run.

Measured side by side, interleaved over several repeats (other processes may share the cores), in images per second:

(t) torchattacks: `torchattacks.PGD(model, eps, alpha, steps)` (returns the adversarial images only);
(a) ours, no early stop: `attacks.PGD(..., early_stop=False)`, started from the same random point through `init=`;
    it also returns the success mask, norms and counts (one extra forward per sample for the success of the last
    iterate). It feeds the model channels_last tensors (the default), whose float rounding differs from NCHW: a
    gradient component near zero may change sign, so a few pixels may differ by 2 alpha (the fraction is printed);
(n) ours, no early stop, NCHW (`channels_last=False`): the same arithmetic as torchattacks; its images must equal
    torchattacks' within --atol (1e-5; whether they are bit-identical is printed);
(b) ours, early stop: `attacks.PGD(..., early_stop=True)`: fooled samples leave the working batch.

Judged rows (natural batches, l-inf eps --eps, default 4/255, the usual ImageNet budget; labels = the model's
predictions): `photos`, scikit-image's bundled photos (cat, espresso, rocket, astronaut), and `galaxies`, --batch
simulated galaxies (`detectors.simulate`). The early-stop gain depends on how quickly the samples flip, which the
rows print (backwards per sample). `--constructed` adds an extra row, shown and not judged: a batch built so that
half of it flips within two steps (eps grown until early-stop PGD fools half a batch of photo crops that fast) and
half never flips.

Targets on each judged row: t/a >= 1.0 and t/b >= 1.5 (ratios of median times); on every row: max|n - t| <= --atol.

    python -m benchmarks.speed_attacks                         # imagenet-lite0 at 96 px, 16 galaxies, 10 steps
    python -m benchmarks.speed_attacks --size 64 --batch 8 --repeats 3 --constructed --threads 1
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

from blindspots.cli import Parser
from blindspots.studies.measured import add_results_option, record_run
from benchmarks import torchattacks_missing

__all__ = ["photo_crops", "half_flipping_batch", "natural_rows", "bench", "summary", "main"]


def photo_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """`n` random square crops (side 30-100 % of the shorter side) of the bundled demo photos, resized to `size`."""
    from blindspots.data import demo_photos, prepare

    photos, _ = demo_photos(size=256)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        side = int(256 * (0.3 + 0.7 * torch.rand((), generator=gen)))
        top, left = (int(torch.randint(0, 256 - side + 1, (), generator=gen)) for _ in range(2))
        out.append(prepare(img[:, top:top + side, left:left + side], size, crop_fraction=1.0))
    return torch.stack(out)


def half_flipping_batch(model, pool: torch.Tensor, batch: int, steps: int = 10, seed: int = 0,
                        start_eps: float = 1e-5, factor: float = 1.5
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, dict]:
    """A constructed batch: half fooled within the first two PGD steps, half never fooled; labels = predictions.

    eps grows geometrically from `start_eps` until early-stop PGD fools at least half a batch of the pool within
    its first two steps (at most 3 backwards, the start point's included); the other half is taken among the pool
    samples PGD does not fool at that eps. Returns (images, labels, per-sample seeds, eps, info).
    """
    import attacks

    labels = model.predict(pool)[0]
    half = batch // 2
    eps = start_eps
    for _ in range(60):
        res = attacks.PGD(model, eps, "linf", steps, early_stop=True, seed=seed)(pool, labels)
        fragile = (res.success & ~res.clean_success & (res.backwards <= 3)).nonzero().flatten()
        robust = (~res.success).nonzero().flatten()
        if fragile.numel() >= half:
            break
        eps *= factor
    if fragile.numel() < half or robust.numel() < batch - half:
        raise RuntimeError(f"no eps gives {half} fragile and {batch - half} robust samples (at eps={eps:.3g}: "
                           f"{fragile.numel()} and {robust.numel()}); use a larger --pool")
    pick = lambda t, k: t[torch.linspace(0, t.numel() - 1, k).long()]  # noqa: E731
    idx = torch.cat([pick(fragile, half), pick(robust, batch - half)])
    info = {"pool": pool.shape[0], "fragile_in_pool": int(fragile.numel()), "robust_in_pool": int(robust.numel())}
    return pool[idx], labels[idx], idx + seed, eps, info


def natural_rows(model, size: int, galaxies: int, seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, images, labels = the model's predictions) of the judged rows: the demo photos, simulated galaxies."""
    from blindspots.data import demo_photos
    from detectors.simulate import SimConfig, simulate

    photos, _ = demo_photos(size=size)
    sims = simulate(galaxies, SimConfig(image_size=size), seed=seed).images
    return [(name, x, model.predict(x)[0]) for name, x in (("photos", photos), ("galaxies", sims))]


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(model, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int, repeats: int,
          seeds: torch.Tensor | int = 0) -> dict:
    """Interleaved timings of (t), (a), (n), (b); returns medians, ratios and the output checks."""
    import torchattacks

    import attacks

    alpha = 2.5 * eps / steps
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    ours = attacks.PGD(model, eps, "linf", steps, alpha, early_stop=False, seed=seeds)
    ours_es = attacks.PGD(model, eps, "linf", steps, alpha, early_stop=True, seed=seeds)
    ours_nchw = attacks.PGD(model, eps, "linf", steps, alpha, early_stop=False, seed=seeds, channels_last=False)
    model.eval()

    def run_t():
        torch.manual_seed(0)
        return ta(images, labels)

    torch.manual_seed(0)  # torchattacks' start: x + U(-eps, eps) from the global RNG, clipped
    init = torch.clamp(images + torch.empty_like(images).uniform_(-eps, eps), 0, 1)
    adv_t = run_t()
    res_a, res_b = ours(images, labels, init=init), ours_es(images, labels)
    diff_n = (adv_t - ours_nchw(images, labels, init=init).images).abs()
    runs = {"t": run_t, "a": lambda: ours(images, labels, init=init), "b": lambda: ours_es(images, labels),
            "n": lambda: ours_nchw(images, labels, init=init)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:  # rotate: no variant always runs first
            times[k].append(_time(runs[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = images.shape[0]
    return {
        "batch": n, "steps": steps, "eps": eps, "repeats": repeats, "threads": torch.get_num_threads(),
        "images_per_s": {k: n / v for k, v in med.items()},
        "t_over_a": med["t"] / med["a"], "t_over_b": med["t"] / med["b"], "t_over_n": med["t"] / med["n"],
        "spread_s": {k: [min(v), max(v)] for k, v in times.items()},
        "fraction_differing_a_t": float(((adv_t - res_a.images).abs() > 1e-5).double().mean()),
        "max_abs_diff_n_t": float(diff_n.max()), "bit_identical_n_t": bool((diff_n == 0).all()),
        "success_a": res_a.success_rate, "success_b": res_b.success_rate,
        "backwards_per_sample_b": float(res_b.backwards.double().mean()),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m benchmarks.speed_attacks", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="imagenet-lite0", help="a blindspots.load_classifier spec")
    p.add_argument("--weights", default=None, metavar="FILE", help="weights file for --model")
    p.add_argument("--size", type=int, default=96, help="input size in px")
    p.add_argument("--batch", type=int, default=16, help="simulated galaxies in the galaxies row")
    p.add_argument("--eps", type=float, default=4 / 255, help="l-inf budget of the judged rows")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (medians are reported)")
    p.add_argument("--constructed", action="store_true", help="add the constructed half-flip row (not judged)")
    p.add_argument("--pool", type=int, default=64, help="photo crops to build the constructed row from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="append each row as one JSON line to this file")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed |(n) - torchattacks| on the images")
    p.add_argument("--min-a", type=float, default=1.0, help="target: t/a on the judged rows")
    p.add_argument("--min-b", type=float, default=1.5, help="target: t/b on the judged rows")
    p.add_argument("--quiet", action="store_true", help="print the rows and the verdict only")
    add_results_option(p)
    return p.parse_args(argv)


def _print_row(name: str, r: dict, judged: bool, args) -> None:
    ips, how = r["images_per_s"], "judged" if judged else "constructed: shown, not judged"
    print(f"[{name}] ({how}) PGD-linf eps={r['eps']:.4g} steps={r['steps']}, batch {r['batch']}, "
          f"{r['threads']} threads, medians of {r['repeats']} interleaved repeats")
    print(f"  torchattacks.PGD          {ips['t']:8.2f} images/s")
    print(f"  attacks.PGD no early stop {ips['a']:8.2f} images/s   t/a ratio {r['t_over_a']:.2f}x  "
          f"(target >= {args.min_a})  {r['fraction_differing_a_t']:.1e} of values differ")
    print(f"  attacks.PGD no e.s., NCHW {ips['n']:8.2f} images/s   t/n ratio {r['t_over_n']:.2f}x  max|n - t| "
          f"{r['max_abs_diff_n_t']:.2e} ({'bit-identical' if r['bit_identical_n_t'] else 'not bit-identical'})")
    print(f"  attacks.PGD early stop    {ips['b']:8.2f} images/s   t/b ratio {r['t_over_b']:.2f}x  "
          f"(target >= {args.min_b})  {r['success_b']:.0%} fooled, {r['backwards_per_sample_b']:.1f} "
          f"backwards/sample of {args.steps + 1}")


def _misses(name: str, r: dict, judged: bool, args) -> list[str]:
    out = []
    if r["max_abs_diff_n_t"] > args.atol:
        out.append(f"{name}: max|n - t| {r['max_abs_diff_n_t']:.2e} > {args.atol}")
    if judged and r["t_over_a"] < args.min_a:
        out.append(f"{name}: t/a {r['t_over_a']:.2f}x < {args.min_a}x")
    if judged and r["t_over_b"] < args.min_b:
        out.append(f"{name}: t/b {r['t_over_b']:.2f}x < {args.min_b}x")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 if every target is met and the outputs agree, else 1."""
    args = _parse(argv)
    if torchattacks_missing():
        return 1
    from blindspots import load_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_classifier(args.model, weights=args.weights)
    rows = [(name, x, y, args.seed, args.eps, True, {})
            for name, x, y in natural_rows(model, args.size, args.batch, args.seed)]
    if args.constructed:
        pool = photo_crops(args.pool, args.size, args.seed)
        x, y, seeds, eps, info = half_flipping_batch(model, pool, args.batch, args.steps, args.seed)
        rows.append(("constructed half-flip", x, y, seeds, eps, False, info))
    misses, measured = [], []
    for name, x, y, seeds, eps, judged, info in rows:
        r = bench(model, x, y, eps, args.steps, args.repeats, seeds)
        r.update(info, row=name, judged=judged, model=args.model, size=args.size)
        _print_row(name, r, judged, args)
        misses += _misses(name, r, judged, args)
        measured.append(r)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(r) + "\n")
    print(f"target (judged rows: t/a >= {args.min_a}x, t/b >= {args.min_b}x; every row: max|n - t| <= {args.atol}): "
          + ("met" if not misses else "MISSED: " + "; ".join(misses)))
    if args.results_to:
        figures = {"rows": [{k: r[k] for k in ("row", "judged", "t_over_a", "t_over_b", "t_over_n", "images_per_s",
                                               "bit_identical_n_t", "max_abs_diff_n_t", "success_b", "batch")}
                            for r in measured],
                   "targets": {"t_over_a": args.min_a, "t_over_b": args.min_b}, "eps": args.eps, "steps": args.steps,
                   "model": args.model, "misses": misses}
        record_run(args.results_to, "speed_attacks", sys.argv[1:] if argv is None else argv, met=not misses,
                   summary=summary(figures), figures=figures)
    return 1 if misses else 0


def summary(figures: dict) -> str:
    """One line: PGD against torchattacks per row, without and with early stop, and the NCHW bit check."""
    parts = [f"{r['row']}{'' if r['judged'] else ' (not judged)'}: {r['t_over_a']:.2f}x (no early stop) and "
             f"{r['t_over_b']:.2f}x (early stop)" for r in figures["rows"]]
    same = all(r["bit_identical_n_t"] for r in figures["rows"])
    return ("; ".join(parts) + f" faster than torchattacks; NCHW {'bit-identical to' if same else 'differs from'} "
            f"torchattacks on {'every row' if same else 'some row'}")


if __name__ == "__main__":
    raise SystemExit(main())
