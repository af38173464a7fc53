"""Robust accuracy with its gradient-masking checks, as one record per (model, threat model), and the MNIST zoo's
robustness table built from such records (`blindspots robust`, `experiments.robustness.cli`).

`evaluate_model` runs `attacks.evaluate_robustness` (the AutoAttack ensemble) and `attacks.masking_checks`, timing
both; `zoo_robustness` does so for every MNIST zoo model on the zoo's 1,000 held-out digits at l-inf eps 0.3 and l2
eps 2.0 and writes `blindspots/zoo/weights/mnist_robustness.json`, each model's entry keyed by the sha256 of its
weights file so that a stale table is caught (`tests/test_zoo.py`); `render_zoo_robustness` turns that file into the
docs' table (docs/zoo.md, `experiments.generated_docs`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import attacks
from attacks.ensemble import ATTACKS as ENSEMBLE_ATTACKS
from attacks.ensemble import LABELS
from blindspots.store import RunStore, StageRefused, atomic_write_text, jsonable
from blindspots.zoo import MNIST_MODELS, WEIGHTS_DIR

__all__ = ["ZOO_THREATS", "ZOO_RESULTS", "evaluate_model", "format_record", "zoo_robustness",
           "render_zoo_robustness", "weights_sha256", "twin_of"]

# the zoo table's threat models: MNIST's customary l-inf budget (Madry et al.) and the l2 budget most MNIST papers
# report (Croce & Hein's FAB and AutoAttack papers, Rony et al.'s DDN): 2.0, about a tenth of the l2 size of a digit
ZOO_THREATS = (("linf", 0.3), ("l2", 2.0))
ZOO_RESULTS = WEIGHTS_DIR / "mnist_robustness.json"
ZOO_COMMAND = "blindspots robust --zoo --threads 1 --quiet"


def weights_sha256(name: str) -> str:
    """First 16 hex digits of the sha256 of a shipped zoo weights file."""
    return hashlib.sha256((WEIGHTS_DIR / f"{name}.safetensors").read_bytes()).hexdigest()[:16]


def twin_of(name: str) -> str | None:
    """The normal twin of an adversarially trained zoo model ("mnist-cnn-at" -> "mnist-cnn"), else None."""
    return name[:-3] if name.endswith("-at") and name[:-3] in MNIST_MODELS else None


def evaluate_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, eps: float, norm: str, *,
                   budget: attacks.EnsembleBudget, attack_names: list[str] | None = None, checks: bool = True,
                   twin: nn.Module | None = None, twin_name: str = "", check_samples: int = attacks.masking.CHECK_SAMPLES,
                   seed: int = 0, batch_size: int = 250, device: Any = None, progress: bool = False,
                   amp: bool = False, compile: bool = False, store: RunStore | None = None, stage: str = ""
                   ) -> tuple[dict[str, Any], attacks.RobustnessResult]:
    """The ensemble (and the masking checks) on one threat model: a JSON-ready record and the full result. With a
    run `store`, each attack of the ensemble is its own stage `ensemble/<stage>/<attack>`: a killed run resumes
    after the last attack that finished."""
    from scipy.stats import binomtest

    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    opts = dict(seed=seed, batch_size=batch_size, device=device, progress=progress, amp=amp, compile=compile)
    done, on_attack = _attack_stages(store, stage, images)
    result = attacks.evaluate_robustness(model, images, labels, eps, norm, attack_names or "standard", budget=budget,
                                         done=done, on_attack=on_attack, **opts)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    found = []
    if checks:
        found = attacks.masking_checks(model, images, result.labels, result, twin=twin, twin_name=twin_name,
                                       samples=check_samples, budget=budget, **opts)
    n, k = len(result), int(result.robust.sum())
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    record = {**result.summary(), "robust_ci95": [ci.low, ci.high], "robust": k, "clean": int(result.clean_correct.sum()),
              "checks": [vars(c) for c in found], "tolerances": attacks.masking.TOLERANCES if checks else {},
              "seconds_ensemble": round(seconds, 1), "seconds_checks": round(time.perf_counter() - t0 - seconds, 1),
              "cpu_seconds_ensemble": round(cpu, 1), "cpu_seconds_checks": round(time.process_time() - c0 - cpu, 1),
              "threads": torch.get_num_threads(), "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    return jsonable(record), result


def _attack_stages(store: RunStore | None, stage: str, images: torch.Tensor):
    """(done, on_attack) for `attacks.evaluate_robustness`: the attacks this run already measured, read from the
    store's stages (checked against the images), and the callback that saves each attack as it finishes."""
    if store is None:
        return None, None
    name = f"ensemble/{stage}/{{}}".format
    done: dict[str, dict[str, Any]] = {}
    for attack in ENSEMBLE_ATTACKS:
        saved = store.saved(name(attack))
        if saved is None:
            continue
        step, stats = saved
        n, hit = images.shape[0], step.get("hit")
        fits = (hit is not None and hit.ndim == 1 and (hit.numel() == 0 or int(hit.max()) < n)
                and step.get("images") is not None
                and tuple(step["images"].shape) == (hit.numel(), *images.shape[1:])
                and all(k in step and tuple(step[k].shape) == (n,) for k in ("forwards", "backwards"))
                and isinstance(stats, dict))
        if not fits:
            raise StageRefused(f"saved stage {store.stage_path(name(attack))} does not fit this run's {n} images; "
                               "rerun with --restart")
        done[attack] = {**step, "stats": stats}

    def on_attack(attack: str, step: dict[str, Any]) -> None:
        store.save(name(attack), {k: step[k] for k in ("hit", "images", "forwards", "backwards")}, step["stats"])

    return done, on_attack


def format_record(title: str, rec: dict[str, Any]) -> str:
    """The printed report of one record: accuracy after each attack, the worst case with its interval, the checks."""
    n = rec["n"]
    lines = [title, f"{'step':<12} {'robust acc.':>11} {'fooled':>7} {'fwd/sample':>11} {'bwd/sample':>11} "
                    f"{'seconds':>8}",
             f"{'clean':<12} {rec['clean_accuracy']:>11.3f}"]
    for i, a in enumerate(rec["attacks"]):
        name = ("+ " if i else "") + LABELS.get(a["name"], a["name"])
        lines.append(f"{name:<12} {a['accuracy_after']:>11.3f} {a['fooled']:>7} {a['forwards_per_sample']:>11.1f} "
                     f"{a['backwards_per_sample']:>11.1f} {a['seconds']:>8.1f}"
                     + (f"  ({a['unconfirmed']} claimed successes not confirmed)" if a["unconfirmed"] else ""))
    lo, hi = rec["robust_ci95"]
    lines.append(f"{'worst case':<12} {rec['robust_accuracy']:>11.3f}  95% CI [{lo:.3f}, {hi:.3f}] (Wilson), n={n:,}")
    if rec["checks"]:
        tol = ", ".join(f"{k}={v:g}" for k, v in rec["tolerances"].items())
        lines.append(f"gradient-masking checks ({tol}):")
        for c in rec["checks"]:
            shown = "-" if c["value"] is None else f"{c['value']:.3f}"
            lines.append(f"  {c['name']:<26} {c['status'].upper():<8} {shown:>6} <= {c['limit']:<5g} n={c['n']:<5} "
                         f"{c['detail']}")
    load = rec["load_average"]
    lines.append(f"wall time: ensemble {rec['seconds_ensemble']:.0f} s, checks {rec['seconds_checks']:.0f} s; CPU time "
                 f"{rec['cpu_seconds_ensemble']:.0f} s and {rec['cpu_seconds_checks']:.0f} s ({rec['threads']} "
                 f"threads, load average {load[0]:.1f} -> {load[1]:.1f})")
    return "\n".join(lines)


def zoo_robustness(results_to: Path | None = ZOO_RESULTS, *, budget: attacks.EnsembleBudget,
                   models: tuple[str, ...] = MNIST_MODELS, threats=ZOO_THREATS, limit: int | None = None,
                   done: dict[str, dict[str, Any]] | None = None,
                   on_record: Callable[[str, str, dict[str, Any]], None] | None = None, command: str = ZOO_COMMAND,
                   store: RunStore | None = None, **options: Any) -> dict[str, Any]:
    """Each MNIST zoo model on the zoo's held-out digits for each threat model, with checks (the normal twin for the
    transfer check of an AT model); `done` holds records already measured ("model:norm" -> record), reused as they
    are; with a run `store` each attack of each ensemble is a stage (`evaluate_model`). `command` is recorded as the
    command that measured the file. Writes `results_to` (None: nothing) and returns its content."""
    from blindspots.zoo import load_zoo_model, mnist_split

    x, y = mnist_split("test")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    done = dict(done or {})
    out: dict[str, Any] = {"command": command, "data": f"the zoo's {len(y):,} held-out digits "
                           "(blindspots.zoo.mnist_split('test')), true labels", "budget": jsonable(vars(budget)),
                           "budget_text": budget.describe(), "tolerances": attacks.masking.TOLERANCES,
                           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
                           "models": {}}
    for name in models:
        model = load_zoo_model(name)
        twin = twin_of(name)
        entry: dict[str, Any] = {"weights_sha256": weights_sha256(name), "twin": twin}
        for norm, eps in threats:
            key = f"{name}:{norm}"
            if key not in done:
                rec, _ = evaluate_model(model, x, y, eps, norm, budget=budget, twin=load_zoo_model(twin) if twin
                                        else None, twin_name=twin or "", store=store, stage=f"{name}.{norm}",
                                        **options)
                done[key] = rec
                if on_record is not None:
                    on_record(name, norm, rec)
            entry[norm] = done[key]
        out["models"][name] = entry
    if results_to is not None:
        atomic_write_text(results_to, json.dumps(out, indent=1) + "\n")
    return out


def render_zoo_robustness(data: dict[str, Any]) -> str:
    """The docs' table of `mnist_robustness.json` (docs/zoo.md): accuracy after each attack of the cascade and the
    checks."""
    threats = {"linf": "l-inf", "l2": "l2"}
    rows = ["| model | threat | clean | APGD-CE | + APGD-T | + FAB-T | + Square = worst case (95% CI) | masking "
            "checks | CPU time |", "|---|---|---|---|---|---|---|---|---|"]
    flagged, sizes, threads = [], set(), set()
    for name, entry in data["models"].items():
        for norm in ("linf", "l2"):
            rec = entry.get(norm)
            if rec is None:
                continue
            sizes.add(rec["n"])
            threads.add(rec["threads"])
            after = {a["name"]: a["accuracy_after"] for a in rec["attacks"]}
            lo, hi = rec["robust_ci95"]
            bad = [c["name"] for c in rec["checks"] if c["status"] == "flagged"]
            ran = [c for c in rec["checks"] if c["status"] != "not run"]
            flagged += [f"{name} ({threats[norm]}): {c}" for c in bad]
            checks = f"{len(ran) - len(bad)}/{len(ran)} pass" + (f"; flagged: {', '.join(bad)}" if bad else "")
            cells = [f"{after[a]:.3f}" if a in after else "-" for a in ("apgd-ce", "apgd-t", "fab-t")]
            cpu = rec["cpu_seconds_ensemble"] + rec["cpu_seconds_checks"]
            rows.append(f"| {name} | {threats[norm]} {rec['eps']:g} | {rec['clean_accuracy']:.3f} | "
                        f"{' | '.join(cells)} | **{rec['robust_accuracy']:.3f}** ({lo:.3f}-{hi:.3f}) | {checks} | "
                        f"{cpu / 60:.1f} min |")
    tol = ", ".join(f"`{k}` = {v:g}" for k, v in data["tolerances"].items())
    n = ", ".join(f"{v:,}" for v in sorted(sizes))
    lines = [f"Measured with `{data['command']}` on {data['data']}; budget: {data['budget_text']}.", "",
             *rows, "",
             "Each column is the robust accuracy after the attacks up to it (each runs on the samples still standing), "
             f"the last one the per-sample worst case with its Wilson interval (n = {n}). Checks run: eps sweep "
             "(monotone, unbounded), black box vs white box, more steps and restarts, and for the AT models transfer "
             f"from the normal twin; tolerances: {tol}. CPU time: ensemble and checks, one process with "
             f"{', '.join(map(str, sorted(threads)))} torch thread(s) (wall times and load averages are in the file).",
             "", ("Flagged: " + "; ".join(flagged) + ". Where a check is flagged, the attacks were stopped on some "
              "samples by something other than robustness (the gradients, or a loss that misleads them): read that "
              "row's robust accuracy as an upper bound.") if flagged else "No check was flagged."]
    return "\n".join(lines) + "\n"
