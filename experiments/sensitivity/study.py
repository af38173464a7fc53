"""Over- and under-sensitivity side by side, per image: `sensitivity_profile(model, images)` on tensors in memory,
and the study as a function, `run_sensitivity(config, out) -> SensitivityResult` (the model and images of a
`SensitivityConfig`, resumable in `out`, the table and figure written).

Over-sensitivity: the smallest budget that flips the model (by default `attacks.minimal_epsilon`, bisection over
PGD; any registered attack, `attacks.registry`: a fixed-budget one tells whether eps flips the model).
Under-sensitivity: how far Level Set Traversal gets towards images of other classes while the model keeps its
confidence in the source class (the RMS-l2 distance left to the target, and the confidence kept).

A model is doubly brittle where both are small: tiny perturbations flip it, yet large changes towards another
class's image go unnoticed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import attacks
from attacks.registry import run_attack
from blindspots.models import Classifier, model_device, probing
from blindspots.store import RunStore
from blindspots.studies.tables import write_csv
from blindspots.traversal import LSTConfig, LSTResult, Trajectory, derangement_pairs, level_set_traversal
from blindspots.validation import check_images, check_labels
from blindspots.errors import InputError

from .config import SensitivityConfig

__all__ = ["SensitivityProfile", "sensitivity_profile", "SensitivityResult", "run_sensitivity"]


@dataclass
class SensitivityProfile:
    """One row per image (`rows`), with the underlying results: `attack` (an `attacks.AttackResult` from
    `minimal_epsilon`), `lst` (one `LSTResult` per round) and `pairs` ((rounds, N) target indices)."""

    rows: list[dict[str, Any]]
    attack: Any
    lst: list[LSTResult] = field(default_factory=list)
    pairs: torch.Tensor | None = None
    norm: str = "linf"

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]

    def to_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_csv(self.rows, path)

    def to_json(self, path: str | os.PathLike, **meta: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                 for r in self.rows]
        payload = {"norm": self.norm, "attack": self.attack.params, **meta, "rows": clean}
        if self.lst:
            payload["lst_config"] = self.lst[0].config.to_dict()
        path.write_text(json.dumps(payload, indent=2))
        return path

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None):
        from .report import plot_sensitivity

        return plot_sensitivity(self, path=path, title=title)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def sensitivity_profile(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    names: Sequence[str] | None = None,
    norm: str = "linf",
    max_eps: float | None = None,
    search_steps: int | None = None,
    rtol: float | None = None,
    steps: int | None = None,
    attack: str = "minimal-epsilon",
    eps: float | None = None,
    rounds: int = 1,
    config: LSTConfig | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    restart: bool = False,
    attack_options: dict[str, Any] | None = None,
) -> SensitivityProfile:
    """Per image: the minimal adversarial distance and the LST distance/confidence to other-class targets.

    Args:
        model: a `Classifier` (images in [0, 1]).
        images: (N, C, H, W) in [0, 1]; labels: (N,) classes (default: the model's predictions).
        names: one name per image for the table and figure (default: the index).
        attack: a registered attack (`attacks.registry.ATTACKS`); eps: the budget of a fixed-budget attack.
        norm, steps: the attack's norm and iteration count (default: its own); max_eps, rtol, search_steps:
            settings of `attacks.minimal_epsilon` (log-scale bisection to a relative precision `rtol`, at most
            `search_steps` rounds), refused for an attack that does not take them.
        rounds: LST targets per image, drawn by `derangement_pairs` (each image's target is an image of another
            class); 0 skips the under-sensitivity side (its columns are then NaN).
        config: LST settings (default `LSTConfig.adaptive()`: far fewer model passes than paper mode, see
            docs/engine.md); seed: seeds both sides (LST round r uses seed + r * N).
        device, progress: where to compute; show progress bars.
        checkpoint: a run-store folder where each stage (the budget search, every LST round) is kept as it
            completes; a rerun with the same model weights, images and settings reuses them, any change is refused
            naming what changed (unless `restart=True`).
        attack_options: more keyword arguments of the attack (e.g. amp=True, compile=True).

    Row columns: index, name, label, class_name, min_eps (in `norm`; 0 if misclassified, inf if `max_eps` does not
    flip it; for a fixed-budget attack eps where it flips, inf where not, see `attacks.registry.run_attack`), min_eps_text ("<= x" where the search reached its floor, "> max_eps" where nothing flipped),
    min_eps_lower (the largest budget at which PGD failed), adv_rms_l2, adv_linf (the perturbation found at min_eps),
    adv_success; lst_rms_l2 (RMS-l2 left to the target after LST, mean over rounds; smaller = a larger blind spot),
    lst_rms_l2_min, lst_linf, lst_start_rms_l2 (source-target distance), lst_fraction_left (lst_rms_l2 /
    lst_start_rms_l2), lst_confidence (source-class confidence at the end), lst_initial_confidence, lst_misclassified,
    lst_unconstrained (the source's confidence started at or below the threshold: its LST columns mean nothing),
    lst_start_outside (in some round the noisy start already broke the threshold: see `LSTResult.start_outside`).
    """
    check_images(images, "images")
    n = images.shape[0]
    if names is not None and len(names) != n:
        raise InputError(f"names must hold one name per image ({n}), got {len(names)}")
    if not isinstance(rounds, int) or rounds < 0:
        raise InputError(f"rounds must be a non-negative int, got {rounds!r}")
    labels = _labels(model, images, labels, device)
    pairs = derangement_pairs(labels.cpu(), rounds, seed) if rounds > 0 else None  # clear error without targets
    config = config or LSTConfig.adaptive()
    attack_options = dict(attack_options or {})
    settings = {"attack": attack, "eps": eps, "norm": norm, "max_eps": max_eps, "search_steps": search_steps, "rtol": rtol, "steps": steps,
                "rounds": rounds, "seed": seed, "config": config.to_dict(), "attack_options": attack_options}
    store = None
    if checkpoint is not None:
        store = RunStore(checkpoint, "sensitivity", model=model, settings=settings,
                         inputs={"images": images, "labels": labels}, restart=restart)
    try:
        adv = _stage(store, "adversarial", attacks.AttackResult, lambda: run_attack(
            attack, model, images, labels, norm=norm, eps=eps, steps=steps, max_eps=max_eps,
            search_steps=search_steps, rtol=rtol, seed=seed, device=device, progress=progress, **attack_options))
        lst_results = [_stage(store, f"lst-round{r}", LSTResult, lambda r=r: level_set_traversal(
            model, images, images[pairs[r]], labels, config, target_labels=labels[pairs[r]], seed=seed + r * n,
            progress=progress, device=device), check=lambda res: res.validate(n, images.shape[1:]))
            for r in range(rounds)]
    finally:
        if store is not None:
            store.close()
    class_names = model.class_names if isinstance(model, Classifier) else None
    rows = [_row(i, names, labels, class_names, adv, lst_results) for i in range(n)]
    return SensitivityProfile(rows=rows, attack=adv, lst=lst_results, pairs=pairs, norm=norm)


def _labels(model, images, labels, device) -> torch.Tensor:
    """The given labels, checked against the logits' width, or the model's predictions."""
    if labels is None:
        with probing(model), torch.no_grad():
            dev = torch.device(device) if device is not None else model_device(model)
            labels = torch.cat([model(images[i:i + 64].to(dev)).argmax(1).cpu() for i in range(0, len(images), 64)])
    return check_labels(labels, images.shape[0], model.num_classes if isinstance(model, Classifier) else None)


def _stage(store: RunStore | None, name: str, cls: type, compute, check=None):
    if store is None:
        return compute()
    return store.dataclass_stage(name, cls, compute, nested={"config": LSTConfig, "trajectory": Trajectory},
                                 check=check)


def _row(i: int, names, labels, class_names, adv, lst_results: list[LSTResult]) -> dict[str, Any]:
    lab = int(labels[i])
    row: dict[str, Any] = {
        "index": i, "name": names[i] if names is not None else str(i), "label": lab,
        "class_name": class_names[lab] if class_names is not None else "",
        "min_eps": float(adv.epsilon[i]), "min_eps_text": adv.epsilon_text()[i],
        "min_eps_lower": float(adv.epsilon_lower[i]) if adv.epsilon_lower is not None else float("nan"),
        "adv_rms_l2": float(adv.rms_l2[i]), "adv_linf": float(adv.linf[i]),
        "adv_success": bool(adv.success[i]),
    }
    rms = [float(res.rms_l2[i]) for res in lst_results]
    start = [float(res.start_rms_l2[i]) for res in lst_results]
    row.update({
        "lst_rms_l2": _mean(rms), "lst_rms_l2_min": min(rms) if rms else float("nan"),
        "lst_linf": _mean([float(res.linf[i]) for res in lst_results]),
        "lst_start_rms_l2": _mean(start),
        "lst_fraction_left": _mean([a / b if b > 0 else float("nan") for a, b in zip(rms, start)]),
        "lst_confidence": _mean([float(res.final_confidence[i]) for res in lst_results]),
        "lst_initial_confidence": _mean([float(res.initial_confidence[i]) for res in lst_results]),
        "lst_misclassified": bool(lst_results[0].misclassified[i]) if lst_results else False,
        "lst_unconstrained": bool(lst_results[0].unconstrained[i]) if lst_results else False,
        "lst_start_outside": any(bool(res.flagged[i] & ~res.unconstrained[i]) for res in lst_results),
    })
    return row


@dataclass
class SensitivityResult:
    """What a run found: `profile` (the `SensitivityProfile`: one row per image, the attack's and LST's results)
    and the files written: `csv` (sensitivity.csv), `json` (sensitivity.json: the rows with the run's
    description) and `figure` (sensitivity.png)."""

    config: SensitivityConfig
    out: Path
    profile: SensitivityProfile
    csv: Path
    json: Path
    figure: Path

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.profile.rows


def run_sensitivity(config: SensitivityConfig, out: str | os.PathLike, *, device: str | None = None,
                    progress: bool = True, restart: bool = False) -> SensitivityResult:
    """The `blindspots attack` study from Python: `config`'s model and images, the profile computed (or resumed:
    every stage is kept in `out`/checkpoint, and a rerun with anything changed is refused naming it unless
    `restart=True`), then sensitivity.csv, sensitivity.json and sensitivity.png written into `out`."""
    from types import SimpleNamespace

    from blindspots import load_classifier
    from blindspots.cli import load_images, resolve_device

    dev = resolve_device(device)
    model = load_classifier(config.model, weights=config.weights, device=dev)
    image_set = SimpleNamespace(images=config.images, photos=config.photos, digits=config.digits, size=config.size,
                                limit=config.limit)  # the image options of `add_image_options`, from the config
    images, names = load_images(image_set, model, dev)
    out = Path(out)
    with RunStore(out, "attack", model=model, settings=config.settings(), inputs={"images": images},
                  restart=restart):
        profile = sensitivity_profile(model, images, None, names=names, attack=config.attack, eps=config.eps,
                                      norm=config.norm, max_eps=config.max_eps, search_steps=config.search_steps,
                                      rtol=config.rtol, steps=config.steps, rounds=config.rounds,
                                      config=config.lst_config(), seed=config.seed, device=dev, progress=progress,
                                      attack_options=config.attack_options(), checkpoint=out / "checkpoint",
                                      restart=restart)
        csv_path = profile.to_csv(out / "sensitivity.csv")
        meta = {"model": config.model, "attack_name": config.attack, "images": config.images if config.images else
                ("MNIST digits" if names[0].startswith("digit") else "demo photos"),
                "size": int(images.shape[-1]), "rounds": config.rounds, "seed": config.seed}
        json_path = profile.to_json(out / "sensitivity.json", **meta)
        png_path = out / "sensitivity.png"
        profile.plot(png_path, title=f"{getattr(model, 'name', config.model)}, {config.attack}: over- vs "
                                     "under-sensitivity")
    return SensitivityResult(config=config, out=out, profile=profile, csv=csv_path, json=json_path, figure=png_path)
