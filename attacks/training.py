"""Adversarial training (Madry et al. 2018): minimise the loss on this project's own `attacks.PGD` examples.

`adversarial_training(model, data, eps)` trains a `blindspots.Classifier` on PGD examples made at each batch (textbook
PGD: random start, all steps, last iterate); `eps=0` is normal training with the same loop. After every epoch it
writes one safetensors checkpoint (weights, optimizer state, RNG states, history, settings), so an interrupted run
resumes exactly where it stopped and ends with the same weights as an uninterrupted one; a checkpoint written with
other settings is refused, naming what changed. Each epoch's history holds the training loss and accuracy on the PGD
examples, and the clean and PGD robust accuracy on `eval_data`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from blindspots.models import Classifier
from blindspots.errors import InputError, TrainingDiverged
from blindspots.store import RunStore, StageRefused, fingerprint_data, fingerprint_model
from blindspots.validation import check_images, check_labels

from .base import NORMS
from .budget import check_budget, check_choice, check_positive_int
from .ensemble import evaluate_robustness
from .pgd import PGD

__all__ = ["adversarial_training", "TrainResult", "load_checkpoint_weights"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass
class TrainResult:
    """What `adversarial_training` returns: the trained classifier (eval mode), one record per epoch, the settings
    that define the run, the checkpoint file, and the epoch it resumed from (0: started fresh)."""

    model: Classifier
    history: list[dict[str, float]]
    settings: dict[str, Any]
    checkpoint: Path | None = None
    resumed_from: int = 0


def _as_tensors(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, labels) tensors checked, or None for a Dataset/DataLoader-like iterable."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x = check_images(data[0], f"{name} images")
        return x, check_labels(data[1], x.shape[0], None, f"{name} labels")
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        return None
    if isinstance(data, Iterable):
        return None
    raise TypeError(f"{name} must be (images, labels) tensors, a torch Dataset or a DataLoader, got "
                    f"{type(data).__name__}")


def _data_fingerprint(data: Any, tensors: tuple[torch.Tensor, torch.Tensor] | None) -> str | None:
    """The training data's own fingerprint (`blindspots.store.fingerprint_data`), so a resume on other data is
    refused; None where the data cannot be read without consuming it (it then cannot resume)."""
    return fingerprint_data(tensors if tensors is not None else data)


def _batches(data: Any, tensors, batch_size: int, seed: int, epoch: int):
    """Shuffled (images, labels) batches. Tensors: a permutation drawn from (seed, epoch) alone; a Dataset is
    wrapped in a DataLoader and a DataLoader iterated as is (their shuffling draws from the restored global RNG)."""
    if tensors is not None:
        x, y = tensors
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
        return
    loader = data
    if isinstance(data, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    yield from loader


def _num_batches(data: Any, tensors, batch_size: int) -> int | None:
    if tensors is not None:
        return math.ceil(tensors[0].shape[0] / batch_size)
    if isinstance(data, torch.utils.data.Dataset):
        return math.ceil(len(data) / batch_size)
    return len(data) if hasattr(data, "__len__") else None


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------- checkpoints


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states (torch CPU and CUDA, numpy, python) as tensors plus JSON-able metadata."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, state, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [version, list(state), gauss_next]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = meta["python"]
    random.setstate((version, tuple(state), gauss_next))


CHECKPOINT = "checkpoint"  # the run store's stage holding the latest epoch


def _save_checkpoint(store: RunStore, model: Classifier, optimizer: torch.optim.Optimizer, epoch: int,
                     history: list[dict[str, float]]) -> None:
    """The latest epoch as one stage of the run store (written atomically: a kill leaves the previous epoch)."""
    tensors = {f"model.{k}": v for k, v in model.model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for pid, state in opt["state"].items():
        opt_meta["state"][str(pid)] = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
                opt_meta["state"][str(pid)][k] = "tensor"
            else:
                opt_meta["state"][str(pid)][k] = v
    rng, rng_meta = _rng_state()
    tensors.update(rng)
    store.save(CHECKPOINT, tensors, {"epoch": epoch, "history": history, "optimizer": opt_meta, "rng": rng_meta,
                                     "weights": fingerprint_model(model.model)})


def load_checkpoint_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights (state dict of the wrapped module) of a training run's latest epoch."""
    tensors, _ = RunStore.reader(folder).load(CHECKPOINT)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def _restore(store: RunStore, model: Classifier, optimizer: torch.optim.Optimizer
             ) -> tuple[int, list[dict[str, float]]]:
    """Load the latest epoch of the run store into model and optimizer, and the global RNG states."""
    tensors, meta = store.load(CHECKPOINT)  # refused when edited on disk (content hash)
    model.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    if fingerprint_model(model.model) != meta.get("weights"):
        raise StageRefused(f"{store.stage_path(CHECKPOINT)} does not hold the weights it was saved with; rerun with "
                           "resume=False")
    state = {}
    for pid, entries in meta["optimizer"]["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "tensor" else v) for k, v in entries.items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    _set_rng_state(tensors, meta["rng"])
    history = [{k: float("nan") if v is None else v for k, v in r.items()} for r in meta["history"]]  # JSON nulls
    return int(meta["epoch"]), history


def _initial_weights(model: nn.Module, folder: Path | None, resume: bool) -> str:
    """The fingerprint of the run's starting weights: the model's own, unless it already holds the weights of the
    run's latest epoch (a second call with the model the first one trained), then the run's recorded start."""
    weights = fingerprint_model(model)
    if folder is not None and resume and (folder / "run.json").is_file():
        reader = RunStore.reader(folder)
        if reader.has(CHECKPOINT) and reader.load(CHECKPOINT)[1].get("weights") == weights:
            return json.loads((folder / "run.json").read_text())["settings"]["initial_weights"]
    return weights


# ----------------------------------------------------------------------------------------------- the training loop


def _settings(model: Classifier, data_id: str, **kw: Any) -> dict[str, Any]:
    """Everything that decides the weights; a resume must match it exactly."""
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.model.state_dict().items())
    arch = hashlib.sha1(f"{type(model.model).__name__}|{shapes}".encode()).hexdigest()[:16]
    if kw["schedule"] == "constant":
        kw.pop("epochs")  # a constant-lr run may be extended to more epochs
    return {"architecture": arch, "data": data_id, **kw}


def _make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)


def _batch_seed(seed: int, epoch: int, batch: int, batch_size: int) -> int:
    """First per-sample PGD seed of a batch: distinct for every (seed, epoch, batch), independent of resuming."""
    return (((seed * 7919 + epoch) * 100_003 + batch) * (batch_size + 1)) % (2**62)


def _check_arguments(eps: Any, norm: str, optimizer: str, schedule: str, lr: float, eps_warmup: float,
                     clean_weight: float, momentum: float, weight_decay: float, **counts: int) -> float:
    """One clear error for a bad setting; returns eps as a float."""
    eps = check_budget(eps, "eps")
    if not isinstance(eps, float):
        raise InputError("eps must be one number for adversarial training")
    check_choice(norm, NORMS, "norm")
    check_choice(optimizer, OPTIMIZERS, "optimizer")
    check_choice(schedule, SCHEDULES, "schedule")
    for name, v in counts.items():
        check_positive_int(v, name)
    numbers = {"lr": lr, "eps_warmup": eps_warmup, "clean_weight": clean_weight, "momentum": momentum,
               "weight_decay": weight_decay}
    bad = [f"{k}={v!r}" for k, v in numbers.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        raise InputError(f"{', '.join(bad)}: must be finite numbers")
    if not (lr > 0 and eps_warmup >= 0 and 0 <= clean_weight <= 1 and momentum >= 0 and weight_decay >= 0):
        raise InputError(f"need lr > 0, eps_warmup >= 0, 0 <= clean_weight <= 1, momentum >= 0 and weight_decay >= 0,"
                         f" got lr={lr}, eps_warmup={eps_warmup}, clean_weight={clean_weight}, momentum={momentum}, "
                         f"weight_decay={weight_decay}")
    return eps


def adversarial_training(
    model: nn.Module,
    data: Any,
    eps: float,
    norm: str = "linf",
    *,
    steps: int = 10,
    step_size: float | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    eps_warmup: float = 0.0,
    clean_weight: float = 0.0,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_steps: int = 10,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model` on l-inf / l2 PGD examples of budget `eps` (Madry et al.); `eps=0` is normal training.

    Args:
        model: a `blindspots.Classifier`, or any module (wrapped in one without normalisation); trained in place.
        data: (images, labels) tensors (images in [0, 1]), a torch Dataset or a DataLoader.
        eps, norm, steps, step_size: the training attack, `attacks.PGD` (random start, all `steps`, last iterate;
            step size default 2.5 eps / steps).
        epochs, batch_size, optimizer ("adam" or "sgd"), lr, momentum (sgd), weight_decay: the optimisation;
            schedule: "constant" or "cosine" (per epoch, to 0 at `epochs`).
        eps_warmup: epochs over which the training budget ramps linearly from 0 to eps (per batch); MNIST-size
            budgets often need it for training to start.
        clean_weight: weight w of the clean loss in (1 - w) CE(adversarial) + w CE(clean) (Goodfellow et al.'s
            mix; 0 is Madry's pure PGD-AT). Keeps models that collapse under pure AT (small ViTs) learning.
        eval_data: held-out (images, labels) for the per-epoch clean and robust accuracy (PGD, `eval_steps`, the full
            eps); default: the first 500 training samples when `data` is tensors, else none (NaN in the history).
        checkpoint: a run-store folder (`blindspots.store.RunStore`) holding the latest epoch; a rerun resumes it
            when `resume` and nothing that decides the weights changed (the settings, the data, the starting
            weights), refuses naming what changed otherwise, and starts afresh with `resume=False`.
        seed: decides shuffling and PGD starts; global RNGs (dropout, loaders) are saved in the checkpoint.
        on_epoch_end: called with (epoch, record) after each epoch's checkpoint is written.

    Returns a `TrainResult`: the model in eval mode and the history (per epoch: loss, accuracy on the training
    attack's examples, eps used, clean and robust eval accuracy, seconds).
    """
    eps = _check_arguments(eps, norm, optimizer, schedule, lr, eps_warmup, clean_weight, momentum, weight_decay,
                           steps=steps, epochs=epochs, batch_size=batch_size, eval_steps=eval_steps)
    clf = model if isinstance(model, Classifier) else Classifier(model)
    if clf.num_classes is not None and clf.num_classes < 2:
        raise InputError(f"adversarial_training needs a model with at least 2 classes, {clf.name} has "
                         f"{clf.num_classes}")
    if device is not None:
        clf.to(device)
    dev = _device(clf)
    tensors = _as_tensors(data, "data")
    if eval_data is None and tensors is not None:
        eval_data = (tensors[0][:500], tensors[1][:500])
    elif eval_data is not None:
        eval_data = _as_tensors(eval_data, "eval_data")
    if tensors is not None and clf.num_classes is not None:
        check_labels(tensors[1], tensors[0].shape[0], clf.num_classes, "data labels")
    data_id = _data_fingerprint(data, tensors)
    settings = _settings(clf, data_id, eps=eps, norm=norm, steps=steps,
                         step_size=step_size, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                         momentum=momentum if optimizer == "sgd" else None, weight_decay=weight_decay,
                         schedule=schedule, eps_warmup=eps_warmup, clean_weight=clean_weight, seed=seed)
    opt = _make_optimizer(clf, optimizer, lr, momentum, weight_decay)
    path = Path(checkpoint) if checkpoint is not None else None
    settings["initial_weights"] = _initial_weights(clf.model, path, resume)
    store = RunStore(path, "adversarial_training", settings=settings, restart=not resume) if path else None
    if store is not None and data_id is None and store.has(CHECKPOINT):
        store.close()
        raise InputError(f"{path} holds a checkpoint, but {type(data).__name__} data cannot be fingerprinted (an "
                         "iterable stream, or items that are not tensors), so resuming on the same data cannot be "
                         "verified; pass resume=False to train afresh, or (images, labels) tensors / a Dataset")
    try:
        return _run(clf, opt, store, data, tensors, eval_data, settings, eps=eps, norm=norm, steps=steps,
                    step_size=step_size, epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule,
                    eps_warmup=eps_warmup, clean_weight=clean_weight, seed=seed, eval_steps=eval_steps, dev=dev,
                    progress=progress, on_epoch_end=on_epoch_end)
    finally:
        if store is not None:
            store.close()


def _run(clf, opt, store, data, tensors, eval_data, settings, *, eps, norm, steps, step_size, epochs, batch_size,
         lr, schedule, eps_warmup, clean_weight, seed, eval_steps, dev, progress, on_epoch_end) -> TrainResult:
    """The epochs of `adversarial_training`, resumed from the run store's latest epoch when it holds one."""
    start, history = 0, []
    if store is not None and store.has(CHECKPOINT):
        start, history = _restore(store, clf, opt)
        if start > epochs:
            raise InputError(f"{store.folder} holds {start} epochs, more than epochs={epochs}; pass resume=False "
                             "to start over")
    else:
        torch.manual_seed(seed)  # the global RNG (dropout, DataLoader shuffling) starts from the seed
    nb = _num_batches(data, tensors, batch_size)
    bar = tqdm(total=(epochs - start) * nb if nb else None, disable=not progress, desc="adversarial training"
               if eps > 0 else "training", unit="batch")
    try:
        for epoch in range(start, epochs):
            record = _train_epoch(clf, opt, data, tensors, epoch, bar, eps=eps, norm=norm, steps=steps,
                                  step_size=step_size, epochs=epochs, batch_size=batch_size, lr=lr,
                                  schedule=schedule, eps_warmup=eps_warmup, clean_weight=clean_weight, seed=seed,
                                  nb=nb, dev=dev)
            if eval_data is not None:
                attack = [PGD(clf, eps, norm, eval_steps, seed=seed, early_stop=True)] if eps > 0 else []
                scored = evaluate_robustness(clf, eval_data[0], eval_data[1], attacks=attack, batch_size=500)
                record["eval_clean_accuracy"], record["eval_robust_accuracy"] = scored.clean_accuracy, \
                    scored.robust_accuracy
            else:
                record["eval_clean_accuracy"] = record["eval_robust_accuracy"] = float("nan")
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", clean=f"{record['eval_clean_accuracy']:.3f}",
                            robust=f"{record['eval_robust_accuracy']:.3f}")
            if store is not None:
                _save_checkpoint(store, clf, opt, epoch + 1, history)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    finally:
        bar.close()
        clf.eval()
    return TrainResult(clf, history, settings, store.folder if store is not None else None, start)


def _train_epoch(clf: Classifier, opt: torch.optim.Optimizer, data: Any, tensors, epoch: int, bar, *, eps: float,
                 norm: str, steps: int, step_size: float | None, epochs: int, batch_size: int, lr: float,
                 schedule: str, eps_warmup: float, clean_weight: float, seed: int, nb: int | None,
                 dev: torch.device
                 ) -> dict[str, float]:
    """One epoch: per batch, PGD examples at the (warmed-up) budget, then one optimizer step on them."""
    factor = 0.5 * (1 + math.cos(math.pi * epoch / epochs)) if schedule == "cosine" else 1.0
    for group in opt.param_groups:
        group["lr"] = lr * factor
    t0 = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    for b, (x, y) in enumerate(_batches(data, tensors, batch_size, seed, epoch)):
        x, y = x.to(dev), y.to(dev)
        done = epoch + b / nb if nb else epoch
        eps_now = eps * min(1.0, (done + 1 / (nb or 1)) / eps_warmup) if eps_warmup > 0 else eps
        x_train = x
        if eps_now > 0:
            alpha = None if step_size is None else step_size * eps_now / eps
            attack = PGD(clf, eps_now, norm, steps, alpha, early_stop=False, channels_last=False,
                         seed=_batch_seed(seed, epoch, b, batch_size))
            x_train = attack(x, y).images
        clf.train()
        logits = clf(x_train)
        if logits.ndim == 2 and logits.shape[1] < 2:  # cross-entropy over one class is 0: nothing would be learnt
            raise InputError(f"adversarial_training needs a model with at least 2 classes; the model returns "
                             f"{logits.shape[1]} logit(s)")
        if eps_now == 0:  # PGD checks the labels against the logits itself
            check_labels(y, y.shape[0], logits.shape[1], "training labels")
        loss = F.cross_entropy(logits, y)
        if not bool(torch.isfinite(loss)):
            raise TrainingDiverged(f"the training loss became {float(loss.detach())} at epoch {epoch + 1}, batch {b + 1} "
                                   f"(lr={lr}); lower the learning rate")
        if clean_weight > 0 and eps_now > 0:
            loss = (1 - clean_weight) * loss + clean_weight * F.cross_entropy(clf(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not all(bool(torch.isfinite(p).all()) for p in clf.parameters()):
            raise TrainingDiverged(f"the weights became NaN or infinite at epoch {epoch + 1}, batch {b + 1} (lr={lr});"
                                   " lower the learning rate")
        total_loss += float(loss.detach()) * y.shape[0]
        correct += int((logits.argmax(1) == y).sum())
        seen += y.shape[0]
        bar.update(1)
    return {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen,
            "eps": eps_now if seen else eps, "lr": lr * factor, "seconds": time.perf_counter() - t0}
