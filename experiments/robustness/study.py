"""The study as functions: `run_robust(config, out) -> RobustResult` (one model under one threat model) and
`run_zoo_robustness(config, out, results_to=...) -> ZooRobustResult` (the MNIST zoo's robustness table).

`evaluate_model` runs `attacks.evaluate_robustness` (the AutoAttack ensemble) and `attacks.masking_checks`, timing
both, into one JSON-ready record per (model, threat model); with a run store each attack of the ensemble is its own
stage, so a killed run resumes after the last attack that finished. `run_zoo_robustness` does so for every MNIST zoo
model on the zoo's 1,000 held-out digits at l-inf eps 0.3 and l2 eps 2.0; its full run writes
`blindspots/zoo/weights/mnist_robustness.json` (`ZOO_RESULTS`), each model's entry keyed by the sha256 of its weights
file so that a stale table is caught (`tests/test_zoo.py`); `report.render_zoo_robustness` turns that file into the
docs' table (docs/zoo.md, `experiments.generated_docs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import attacks
from attacks.budget import check_target_classes
from attacks.ensemble import ATTACKS as ENSEMBLE_ATTACKS
from blindspots import studies as st
from blindspots.cli import OUT_ROOT
from blindspots.errors import InputError
from blindspots.store import RunStore, StageRefused, atomic_write_text, jsonable
from blindspots.zoo import WEIGHTS_DIR

from .config import ZOO_THREATS, RobustConfig, ZooRobustConfig, twin_of

__all__ = ["RobustResult", "ZooRobustResult", "run_robust", "run_zoo_robustness", "evaluate_model", "load_inputs",
           "check_results_file", "weights_sha256", "twin_of", "ZOO_THREATS", "ZOO_RESULTS", "ZOO_COMMAND"]

ZOO_RESULTS = WEIGHTS_DIR / "mnist_robustness.json"
ZOO_COMMAND = "blindspots robust --zoo --threads 1 --quiet"  # the command of the shipped table


def weights_sha256(name: str) -> str:
    """First 16 hex digits of the sha256 of a shipped zoo weights file."""
    return hashlib.sha256((WEIGHTS_DIR / f"{name}.safetensors").read_bytes()).hexdigest()[:16]


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


# ------------------------------------------------------------------------------------------------- one model


@dataclass
class RobustResult:
    """What `run_robust` measured: `record` (the JSON-ready record of `evaluate_model`: `clean_accuracy`,
    `robust_accuracy` with `robust_ci95`, `attacks` (accuracy after each), `checks`, timings), `data` (what the
    images were), `budget_text`, the files written (`path`: robustness.json, `worst_cases`: the per-sample worst
    cases), `resumed` (the record was read from an earlier run in `out`, not measured now) and `ensemble` (the full
    `attacks.RobustnessResult`; None when resumed)."""

    config: RobustConfig
    out: Path
    record: dict[str, Any]
    data: str
    budget_text: str
    path: Path
    worst_cases: Path
    resumed: bool = False
    ensemble: attacks.RobustnessResult | None = None

    @property
    def clean_accuracy(self) -> float:
        return self.record["clean_accuracy"]

    @property
    def robust_accuracy(self) -> float:
        return self.record["robust_accuracy"]

    @property
    def flagged(self) -> list[str]:
        """The gradient-masking checks that were flagged (the robust accuracy is then an upper bound)."""
        return [c["name"] for c in self.record["checks"] if c["status"] == "flagged"]


def load_inputs(config: RobustConfig) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(images, labels or None, what they are): the zoo's held-out digits (true labels) for an MNIST zoo model,
    else the images of `config.images` or the demo photos (None: labelled by the model's predictions)."""
    from blindspots.data import demo_photos, load_image_folder
    from blindspots.zoo import mnist_split

    if config.images is not None:
        images, _ = load_image_folder(config.images, size=config.size, limit=config.limit)
        return images, None, f"{len(images)} images of {config.images} (labels: the model's predictions)"
    if config.is_mnist:
        x, y = mnist_split("test")
        if config.limit is not None:
            x, y = x[:config.limit], y[:config.limit]
        return x, y, f"{len(y):,} of the zoo's held-out digits (true labels)"
    images, _ = demo_photos(size=config.size)
    images = images[:config.limit] if config.limit is not None else images
    return images, None, f"{len(images)} demo photos (labels: the model's predictions)"


def run_robust(config: RobustConfig, out: str | Path = OUT_ROOT / "robust", *, device: Any = None,
               threads: int | None = None, progress: bool = True, restart: bool = False) -> RobustResult:
    """Run (or resume) one model under one threat model into `out`: the ensemble with the checks beside it, the
    record in `out/robustness.json` and the per-sample worst cases in `out/stages/worst_case.safetensors`.

    `device`: 'cpu', 'cuda', ... (default: CUDA when present); `threads`: torch CPU threads (None: torch's own);
    `progress`: progress bars; `restart`: discard a different earlier run in `out`. Settings are checked when
    `config` is made; the target classes against the model's classes once it is loaded."""
    device = st.study_device(device, threads)
    from blindspots import load_classifier

    budget = config.budget()
    model = load_classifier(config.model, weights=config.weights, device=device)
    if config.target_classes is not None and model.num_classes is not None:
        check_target_classes(config.target_classes, model.num_classes, config.model)
    images, labels, what = load_inputs(config)
    twin_spec = config.twin_spec()
    twin = load_classifier(twin_spec, device=device) if twin_spec and config.checks else None
    inputs = {"images": images, **({"labels": labels} if labels is not None else {})}
    out = Path(out)
    result = None
    with RunStore(out, "robust", model=model, settings=config.settings(), inputs=inputs, restart=restart) as store:
        key = f"{config.model}:{config.norm}"
        rec = (store.get(key) or {}).get("record")
        resumed = rec is not None
        if rec is None:
            rec, result = evaluate_model(model, images, labels, config.eps, config.norm, budget=budget,
                                         attack_names=list(config.attacks) if config.attacks else None, twin=twin,
                                         twin_name=twin_spec or "", store=store,
                                         stage=re.sub(r"[^A-Za-z0-9._-]", "_", config.model) + f".{config.norm}",
                                         **_options(config, device, progress))
            store.save("worst_case", {"images": result.images, "fooled_by": result.fooled_by,
                                      "clean_correct": result.clean_correct, "labels": result.labels})
            store.append([{"key": key, "record": rec}])
    path = out / "robustness.json"
    path.write_text(json.dumps({"model": config.model, "data": what, "budget_text": budget.describe(), **rec},
                               indent=1) + "\n")
    return RobustResult(config=config, out=out, record=rec, data=what, budget_text=budget.describe(), path=path,
                        worst_cases=out / "stages" / "worst_case.safetensors", resumed=resumed, ensemble=result)


# ------------------------------------------------------------------------------------------------- the zoo


@dataclass
class ZooRobustResult:
    """What `run_zoo_robustness` measured: `table` (the results file's content: `command`, `data`, `budget`,
    `tolerances`, `machine`, and per model `weights_sha256`, `twin` and one record per norm), `results_to` (the file
    written; None: none), `measured` (the "model:norm" records measured by this call; the others were read from an
    earlier run in `out`)."""

    config: ZooRobustConfig
    out: Path
    table: dict[str, Any]
    results_to: Path | None = None
    measured: list[str] = field(default_factory=list)

    def record(self, model: str, norm: str) -> dict[str, Any]:
        """One model's record under one norm."""
        return self.table["models"][model][norm]


def check_results_file(path: str | Path, name: str = "results_to") -> Path:
    """A results file that can be written: not a folder, in a folder that exists, writable (checked before any
    work); `name` names it in the message."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{name} {path} is a folder; give the path of the results file (.json)")
    if not path.parent.is_dir():
        raise InputError(f"{name} {path}: its folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{name} {path} cannot be written (permission denied)")
    return path


def run_zoo_robustness(config: ZooRobustConfig = ZooRobustConfig(), out: str | Path = OUT_ROOT / "robust", *,
                       results_to: str | Path | None = None, command: str | None = None, device: Any = None,
                       threads: int | None = None, progress: bool = True, restart: bool = False,
                       on_record: Callable[[str, str, dict[str, Any]], None] | None = None) -> ZooRobustResult:
    """Each model of `config` on the zoo's held-out digits under each threat model, with checks (the normal twin for
    the transfer check of an AT model), run (or resumed: each record, and each attack of each ensemble, is kept in
    the run store in `out`) and written to `results_to` (None: nothing written; `ZOO_RESULTS` is the shipped table,
    which only the full default run should write). `command` is recorded as what measured the file (default: this
    call); `on_record(model, norm, record)` is called as each new record is kept. Runtime arguments as `run_robust`.
    """
    from blindspots.zoo import load_zoo_model, mnist_split

    if results_to is not None:
        results_to = check_results_file(results_to)
    device = st.study_device(device, threads)
    budget = config.budget()
    models = {name: load_zoo_model(name) for name in config.models}
    if config.target_classes is not None:
        for name, model in models.items():
            check_target_classes(config.target_classes, model.num_classes, name)
    x, y = mnist_split("test")
    if config.limit is not None:
        x, y = x[:config.limit], y[:config.limit]
    options = _options(config, device, progress)
    measured: list[str] = []
    table: dict[str, Any] = {
        "command": command or f"experiments.robustness.run_zoo_robustness({_changed_fields(config)})",
        "data": f"the zoo's {len(y):,} held-out digits (blindspots.zoo.mnist_split('test')), true labels",
        "budget": jsonable(vars(budget)), "budget_text": budget.describe(), "tolerances": attacks.masking.TOLERANCES,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}", "models": {}}
    with RunStore(out, "robust-zoo", model=models, settings=config.settings(), restart=restart) as store:
        done = {r["key"]: r["record"] for r in store.records()}
        for name in config.models:
            model = load_zoo_model(name)
            twin = twin_of(name)
            entry: dict[str, Any] = {"weights_sha256": weights_sha256(name), "twin": twin}
            for norm, eps in config.threats:
                key = f"{name}:{norm}"
                if key not in done:
                    rec, _ = evaluate_model(model, x, y, eps, norm, budget=budget,
                                            twin=load_zoo_model(twin) if twin else None, twin_name=twin or "",
                                            store=store, stage=f"{name}.{norm}", **options)
                    done[key] = rec
                    measured.append(key)
                    store.append([{"key": key, "record": rec}])
                    if on_record is not None:
                        on_record(name, norm, rec)
                entry[norm] = done[key]
            table["models"][name] = entry
    if results_to is not None:
        atomic_write_text(results_to, json.dumps(table, indent=1) + "\n")
    return ZooRobustResult(config=config, out=Path(out), table=table, results_to=results_to, measured=measured)


# ------------------------------------------------------------------------------------------------- helpers


def _options(config, device: Any, progress: bool) -> dict[str, Any]:
    """`evaluate_model`'s keyword arguments from the ensemble's settings."""
    return dict(seed=config.seed, batch_size=config.batch_size, device=device, progress=progress, amp=config.amp,
                compile=config.compile, checks=config.checks, check_samples=config.check_samples)


def _changed_fields(config) -> str:
    """`config` as the Python that makes it: `ZooRobustConfig(limit=3, ...)` with the fields that differ from the
    defaults."""
    default = type(config)()
    changed = [f"{f.name}={getattr(config, f.name)!r}" for f in dataclasses.fields(config)
               if getattr(config, f.name) != getattr(default, f.name)]
    return f"{type(config).__name__}({', '.join(changed)})"
