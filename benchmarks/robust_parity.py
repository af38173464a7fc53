"""The ensemble's attacks against torchattacks' (dev-only dependency) on an MNIST zoo model, side by side.

On the first --n held-out digits the model classifies correctly, at l-inf eps 0.3 and l2 eps 2.0:
- APGD-T from torchattacks' own random start, one target class: the share of equal verdicts (target >= AGREE_MIN);
- APGD-T with --targets target classes, each from its own seeds: success rates (|difference| <= RATE_TOL);
- FAB-T with --targets target classes (no random start, so deterministic): equal verdicts (>= AGREE_MIN) and the
  largest norm difference on samples both fooled;
- Square with --queries queries, --seeds seeds each (torchattacks draws one window per batch, `attacks.Square` one
  per sample, so only rates compare): mean success rates (|difference| <= RATE_TOL).
Exit 1 when a target is missed; `--results-to FILE` records the run's figures (each check's rates, agreement and
verdict) for the docs.

    python -m benchmarks.robust_parity --threads 1                      # mnist-cnn-at, 100 digits
    python -m benchmarks.robust_parity --model mnist-vit-at --n 200 --seeds 2
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import attacks
from blindspots.studies.measured import add_results_option, record_run
from blindspots.zoo import MNIST_MODELS, load_zoo_model, mnist_split
from benchmarks import torchattacks_missing

AGREE_MIN = 0.95  # share of equal verdicts required where both start from the same point
RATE_TOL = 0.05  # largest |success-rate difference| where the random draws differ

TA_NORM = {"linf": "Linf", "l2": "L2"}


def _norms(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    d = (adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


__all__ = ["compare", "summary", "main"]


def compare(model, x, y, norm: str, eps: float, targets: int, queries: int, seeds: int) -> list[dict]:
    """The four checks at one norm and eps, each {"check", "line" (its printed verdict), "ok", and its figures:
    "reference" and "ours" (success rates), "agree" (share of equal verdicts) where it applies}."""
    import torchattacks

    def fooled(adv):
        with torch.no_grad():
            return model(adv).argmax(1) != y

    verdicts = []
    torch.manual_seed(0)  # torchattacks' APGD-T start, from the global RNG after manual_seed(seed)
    t = 2 * torch.rand(x.shape) - 1 if norm == "linf" else torch.randn(x.shape)
    scale = t.flatten(1).abs().amax(1) if norm == "linf" else t.flatten(1).norm(dim=1) + 1e-12
    init = (x + eps * t / scale.view(-1, 1, 1, 1)).clamp(0, 1)
    ref = fooled(torchattacks.APGDT(model, norm=TA_NORM[norm], eps=eps, steps=100, n_classes=2, seed=0)(x, y))
    ours = attacks.APGDT(model, eps, norm, 100, target_classes=1, early_stop=False)(x, y, init=init).success
    agree = float((ref == ours).float().mean())
    verdicts.append({"check": "APGD-T 1 target, same start", "reference": float(ref.float().mean()),
                     "ours": float(ours.float().mean()), "agree": agree, "ok": agree >= AGREE_MIN,
                     "line": f"APGD-T 1 target, same start: success {ref.float().mean():.3f} vs "
                             f"{ours.float().mean():.3f}, equal verdicts {agree:.3f} (>= {AGREE_MIN})"})
    ref = fooled(torchattacks.APGDT(model, norm=TA_NORM[norm], eps=eps, steps=100, n_classes=targets + 1,
                                    seed=0)(x, y)).float().mean()
    ours = attacks.APGDT(model, eps, norm, 100, target_classes=targets, seed=0)(x, y).success.float().mean()
    verdicts.append({"check": f"APGD-T {targets} targets", "reference": float(ref), "ours": float(ours),
                     "ok": abs(float(ref - ours)) <= RATE_TOL,
                     "line": f"APGD-T {targets} targets: success {ref:.3f} vs {ours:.3f} (|diff| <= {RATE_TOL})"})
    adv = torchattacks.FAB(model, norm=TA_NORM[norm], eps=eps, steps=100, multi_targeted=True, n_classes=targets + 1,
                           seed=0)(x, y)
    ref = fooled(adv)
    res = attacks.FAB(model, eps, norm, 100, target_classes=targets, early_stop=False)(x, y)
    both = ref & res.success
    gap = float((_norms(adv, x, norm)[both] - _norms(res.images, x, norm)[both]).abs().max()) if both.any() else 0.0
    agree = float((ref == res.success).float().mean())
    verdicts.append({"check": f"FAB-T {targets} targets", "reference": float(ref.float().mean()),
                     "ours": float(res.success.float().mean()), "agree": agree, "norm_gap": gap,
                     "ok": agree >= AGREE_MIN,
                     "line": f"FAB-T {targets} targets: success {ref.float().mean():.3f} vs "
                             f"{res.success.float().mean():.3f}, equal verdicts {agree:.3f} (>= {AGREE_MIN}), "
                             f"largest norm difference {gap:.1e}"})
    ref_rates, our_rates = [], []
    for s in range(seeds):
        ref_rates.append(float(fooled(torchattacks.Square(model, norm=TA_NORM[norm], eps=eps, n_queries=queries,
                                                          seed=s)(x, y)).float().mean()))
        our_rates.append(attacks.Square(model, eps, norm, queries, seed=s * 100_003)(x, y).success_rate)
    ref_m, our_m = sum(ref_rates) / seeds, sum(our_rates) / seeds
    verdicts.append({"check": f"Square {queries} queries, {seeds} seeds", "reference": ref_m, "ours": our_m,
                     "per_seed": [[a, b] for a, b in zip(ref_rates, our_rates)], "ok": abs(ref_m - our_m) <= RATE_TOL,
                     "line": f"Square {queries} queries, {seeds} seeds: success {ref_m:.3f} vs {our_m:.3f} "
                             f"(per seed {', '.join(f'{a:.3f}/{b:.3f}' for a, b in zip(ref_rates, our_rates))}; "
                             f"|diff| <= {RATE_TOL})"})
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.robust_parity", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mnist-cnn-at", choices=MNIST_MODELS)
    p.add_argument("--n", type=int, default=100, help="first N held-out digits (those classified correctly are used)")
    p.add_argument("--targets", type=int, default=3, help="target classes of APGD-T and FAB-T")
    p.add_argument("--queries", type=int, default=1000, help="Square queries")
    p.add_argument("--seeds", type=int, default=2, help="Square runs per implementation")
    p.add_argument("--threads", type=int, default=None)
    add_results_option(p)
    args = p.parse_args(argv)
    if torchattacks_missing():
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_zoo_model(args.model)
    x, y = mnist_split("test")
    x, y = x[:args.n], y[:args.n]
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    ok_all, checks = True, []
    for norm, eps in (("linf", 0.3), ("l2", 2.0)):
        t0 = time.perf_counter()
        print(f"{args.model}, {norm} eps {eps}, n = {len(y)} correctly classified of the first {args.n} digits:")
        for c in compare(model, x, y, norm, eps, args.targets, args.queries, args.seeds):
            ok_all &= c["ok"]
            checks.append({"norm": norm, "eps": eps, **c})
            print(f"  {'ok    ' if c['ok'] else 'MISSED'} {c['line']}", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    if args.results_to:
        figures = {"model": args.model, "n": args.n, "n_used": int(len(y)), "targets": args.targets,
                   "queries": args.queries, "seeds": args.seeds, "agree_min": AGREE_MIN, "rate_tol": RATE_TOL,
                   "checks": checks}
        record_run(args.results_to, "robust_parity", sys.argv[1:] if argv is None else argv, met=ok_all,
                   summary=summary(figures), figures=figures)
    return 0 if ok_all else 1


def summary(figures: dict) -> str:
    """One line: the checks met of all, and each missed one by name."""
    missed = [f"{c['norm']} {c['check']}" for c in figures["checks"] if not c["ok"]]
    return (f"{figures['model']}, {figures['n_used']} digits: {len(figures['checks']) - len(missed)} of "
            f"{len(figures['checks'])} checks beside torchattacks within the targets (equal verdicts >= "
            f"{figures['agree_min']:g}, success rates within {figures['rate_tol']:g})"
            + (f"; missed: {', '.join(missed)}" if missed else ""))


if __name__ == "__main__":
    raise SystemExit(main())
