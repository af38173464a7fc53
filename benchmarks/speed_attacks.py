"""Speed of `attacks.PGD` against `torchattacks.PGD` (dev-only dependency) on the same model and batch, in one run.

Measured side by side, interleaved over several repeats (other processes may share the cores), in images per second:

(t) torchattacks: `torchattacks.PGD(model, eps, alpha, steps)` (returns the adversarial images only);
(a) ours, no early stop: `attacks.PGD(..., early_stop=False)`, started from the same random point through `init=`;
    it also returns the success mask, norms and counts (one extra forward per sample for the success of the last
    iterate). Its speed over (t) comes from feeding the model channels_last tensors (the default; faster oneDNN
    convolutions), whose float rounding differs from NCHW: a gradient component near zero may change sign, so a few
    pixels may differ by 2 alpha (the fraction of differing values is reported);
(n) ours, no early stop, NCHW (`channels_last=False`): the same arithmetic as torchattacks, so its images must equal
    torchattacks' (max |difference| <= 1e-5 is checked); its speed shows the cost of the extra success forward;
(b) ours, early stop: `attacks.PGD(..., early_stop=True)` on the same batch: fooled samples leave the working batch.

The batch is built so that half of it flips within the first steps: on a pool of real photo crops (scikit-image's
bundled photos), eps grows geometrically until early-stop PGD fools half a batch within its first two steps; the
other half is taken among the crops PGD does not fool at that eps (they run every step).

Targets: t/a >= 1.0 and t/b >= 1.5 (ratios of median times), and (n) equal to (t) within 1e-5.

    python -m benchmarks.speed_attacks                         # imagenet-lite0 at 96 px, batch 16, 10 steps
    python -m benchmarks.speed_attacks --size 64 --batch 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

import attacks
from blindspots import load_classifier
from blindspots.data import demo_photos, prepare

__all__ = ["photo_crops", "half_flipping_batch", "bench", "main"]


def photo_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """`n` random square crops (side 30-100 % of the shorter side) of the bundled demo photos, resized to `size`."""
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
    """A batch of which half is fooled within the first two PGD steps and half is never fooled, with labels = the
    model's predictions.

    eps grows geometrically from `start_eps` until early-stop PGD at eps fools at least half a batch of the pool
    within its first two steps (fragile: at most 3 backwards, the start point's included); the other half is taken
    among the pool samples PGD does not fool at that eps (robust: they run every step). Returns (images, labels,
    pool indices (the per-sample seeds to use), eps, info).
    """
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


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(model, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int, repeats: int,
          seeds: torch.Tensor | int = 0) -> dict:
    """Interleaved timings of (t), (a), (b); returns medians, ratios and the output check."""
    import torchattacks

    alpha = 2.5 * eps / steps
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    ours = attacks.PGD(model, eps, "linf", steps, alpha, early_stop=False, seed=seeds)
    ours_es = attacks.PGD(model, eps, "linf", steps, alpha, early_stop=True, seed=seeds)
    ours_nchw = attacks.PGD(model, eps, "linf", steps, alpha, early_stop=False, seed=seeds, channels_last=False)
    seed = 0
    model.eval()

    def run_t():
        torch.manual_seed(seed)
        return ta(images, labels)

    def start():
        torch.manual_seed(seed)  # torchattacks' start: x + U(-eps, eps) from the global RNG, clipped
        return torch.clamp(images + torch.empty_like(images).uniform_(-eps, eps), 0, 1)

    init = start()
    # correctness: same start -> same images
    adv_t = run_t()
    res_a = ours(images, labels, init=init)
    res_b = ours_es(images, labels)
    max_diff = float((adv_t - res_a.images).abs().max())
    max_diff_n = float((adv_t - ours_nchw(images, labels, init=init).images).abs().max())
    frac_diff = float(((adv_t - res_a.images).abs() > 1e-5).double().mean())
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
        "max_abs_diff_a_t": max_diff, "fraction_differing_a_t": frac_diff, "max_abs_diff_n_t": max_diff_n,
        "success_a": res_a.success_rate, "success_b": res_b.success_rate,
        "backwards_per_sample_b": float(res_b.backwards.double().mean()),
        "first_steps_flips_b": float((res_b.success & (res_b.backwards <= 3)).double().mean()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 if both speed targets are met and the outputs agree, else 1."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed_attacks", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="imagenet-lite0", help="a blindspots.load_classifier spec")
    p.add_argument("--size", type=int, default=96, help="input size in px")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pool", type=int, default=64, help="photo crops to pick the half-flipping batch from")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (medians are reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="append the result as one JSON line to this file")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed |ours - torchattacks| on the images")
    args = p.parse_args(argv)
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        print("torchattacks is not installed (pip install torchattacks; a dev-only dependency)")
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_classifier(args.model)
    pool = photo_crops(args.pool, args.size, args.seed)
    images, labels, seeds, eps, info = half_flipping_batch(model, pool, args.batch, args.steps, args.seed)
    r = bench(model, images, labels, eps, args.steps, args.repeats, seeds)
    r.update(info, model=args.model, size=args.size)
    ips = r["images_per_s"]
    print(f"PGD-linf eps={eps:.4g} steps={args.steps}, {args.model} at {args.size} px, batch {args.batch} "
          f"({info['fragile_in_pool']} fragile / {info['robust_in_pool']} robust in {args.pool} crops), "
          f"{r['threads']} threads, medians of {args.repeats} interleaved repeats")
    print(f"  torchattacks.PGD          {ips['t']:8.2f} images/s")
    print(f"  attacks.PGD no early stop {ips['a']:8.2f} images/s   ratio {r['t_over_a']:.2f}x  (target >= 1.0)  "
          f"{r['fraction_differing_a_t']:.1e} of values differ")
    print(f"  attacks.PGD no e.s., NCHW {ips['n']:8.2f} images/s   ratio {r['t_over_n']:.2f}x  (no layout gain; "
          f"+1 forward for the success mask)  max|diff| {r['max_abs_diff_n_t']:.2e}")
    print(f"  attacks.PGD early stop    {ips['b']:8.2f} images/s   ratio {r['t_over_b']:.2f}x  (target >= 1.5)  "
          f"{r['first_steps_flips_b']:.0%} fooled within 2 steps, {r['backwards_per_sample_b']:.1f} backwards/sample")
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(json.dumps(r) + "\n")
    ok = r["t_over_a"] >= 1.0 and r["t_over_b"] >= 1.5 and r["max_abs_diff_n_t"] <= args.atol
    if not ok:
        print("  -> target missed")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
