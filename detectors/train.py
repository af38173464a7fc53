"""Resumable detector training: Adam, random flips, an optional warm-up and cosine decay of the learning rate, a
checkpoint every epoch (and every `checkpoint_every` steps).

A run in `out_dir` is reproducible step by step: epoch e visits the data in a permutation and with flips drawn
from a generator seeded by (seed, e), and the global torch / numpy / random states (used by torchvision's
proposal samplers) are saved with every checkpoint. Resuming therefore continues at the exact step where the last
checkpoint was taken, and a run interrupted and resumed ends with the same weights as an uninterrupted one.

Checkpoint files (only tensors and plain containers, nothing unpickled on load):
  ``ckpt-<step>.safetensors``   model weights
  ``ckpt-<step>.pt``            optimiser state, RNG states (loaded with ``torch.load(weights_only=True)``)
  ``checkpoint.json``           the pointer to the latest pair (written last, atomically) + history and settings
  ``model.safetensors``         the final weights once all epochs are done
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from blindspots.models import model_device
from blindspots.store import RunStore, StageRefused, atomic_write_text, fingerprint_model, temporary_path
from blindspots.weights import load_torch_file
from blindspots.errors import InputError, TrainingDiverged

__all__ = ["train", "TrainResult", "load_checkpoint", "flip_sample", "lr_factor", "LR_SCHEDULES", "CHECKPOINT_POINTER"]

CHECKPOINT_POINTER = "checkpoint.json"


@dataclass
class TrainResult:
    """Outcome of `train`: where it stopped, the per-epoch mean losses and the time spent training (all sessions)."""

    epoch: int
    step: int
    completed: bool
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: Path | None = None


def flip_sample(image: torch.Tensor, target: dict[str, torch.Tensor], horizontal: bool, vertical: bool
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flip a (C, H, W) image and its xyxy boxes (in pixels, [0, W] x [0, H]) horizontally and/or vertically."""
    if not (horizontal or vertical):
        return image, target
    h, w = image.shape[-2:]
    boxes = target["boxes"].clone()
    if horizontal:
        image = image.flip(-1)
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if vertical:
        image = image.flip(-2)
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return image, {**target, "boxes": boxes}


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, total: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based) of a run of `total` steps: linear
    warm-up over the first `warmup_steps`, then constant or cosine-decayed to 0 at `total`. A pure function of the
    step, so a resumed run follows the same schedule without any scheduler state."""
    if schedule not in LR_SCHEDULES:
        raise InputError(f"unknown lr_schedule {schedule!r}; choose from {LR_SCHEDULES}")
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine" and total > 0:
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    return factor


def _epoch_plan(n: int, seed: int, epoch: int) -> tuple[list[int], torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=gen).tolist(), torch.rand(n, 2, generator=gen) < 0.5


def _sample(dataset: Any, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if hasattr(dataset, "images") and hasattr(dataset, "targets"):  # a SimulatedBatch
        return dataset.images[i], dataset.targets[i]
    return dataset[i]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_weights(model: nn.Module, path: Path, meta: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = temporary_path(path)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _save_checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    step = info["step"]
    _save_weights(model, out / f"ckpt-{step}.safetensors", {"step": str(step)})
    tmp = temporary_path(out / f"ckpt-{step}.pt")
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state(), "step": step}, tmp)
    os.replace(tmp, out / f"ckpt-{step}.pt")
    previous = _read_pointer(out)
    atomic_write_text(out / CHECKPOINT_POINTER, json.dumps(info, indent=1))
    if previous is not None and previous["step"] != step:  # the old pair is garbage only once the pointer moved
        for suffix in (".safetensors", ".pt"):
            (out / f"ckpt-{previous['step']}{suffix}").unlink(missing_ok=True)


def _read_pointer(out: Path) -> dict[str, Any] | None:
    path = out / CHECKPOINT_POINTER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is corrupt ({exc}); delete it to start over") from exc


def load_checkpoint(out_dir: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any] | None:
    """Load the latest checkpoint of `out_dir` into `model` (and `optimizer`, restoring the RNG states too).

    Returns the checkpoint's info (epoch, step, history, settings), or None when `out_dir` holds no checkpoint.
    """
    from blindspots.models import load_weights

    out = Path(out_dir)
    info = _read_pointer(out)
    if info is None:
        return None
    weights = out / f"ckpt-{info['step']}.safetensors"
    load_weights(model, weights)
    if info.get("weights") != fingerprint_model(model):  # the pointer records the weights it points at
        raise StageRefused(f"{weights} does not hold the weights its checkpoint recorded (edited or replaced?); "
                           "rerun with --restart")
    if optimizer is not None:
        state = load_torch_file(out / f"ckpt-{info['step']}.pt", "optimizer checkpoint")
        if state["step"] != info["step"]:
            raise InputError(f"checkpoint files in {out} disagree (step {state['step']} vs {info['step']})")
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
    return info


def train(
    detector: nn.Module,
    dataset: Any,
    epochs: int,
    out_dir: str | os.PathLike,
    batch_size: int = 4,
    *,
    lr: float | None = None,
    lr_schedule: str | None = None,
    warmup_steps: int | None = None,
    weight_decay: float | None = None,
    hflip: bool | None = None,
    vflip: bool | None = None,
    seed: int = 0,
    resume: bool = True,
    checkpoint_every: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train `detector` (a torchvision detection model) on `dataset` for `epochs` epochs, checkpointing in `out_dir`.

    Args:
        dataset: items ``(image (3, H, W) in [0, 1], {"boxes": (K, 4) xyxy, "labels": (K,)})``, e.g.
            `detectors.SimulatedClumps`, or a `SimulatedBatch`.
        epochs: the total number of epochs of the run (a resumed run continues up to it; with a decaying schedule it
            must stay the same, since the schedule is laid out over it).
        lr, lr_schedule, warmup_steps, weight_decay, hflip, vflip: default to the detector's preset (the paper:
            Adam 1e-4 constant, weight decay 5e-5, both flips). "cosine" decays to 0 at the end of `epochs`
            (see `lr_factor`); a run stopped early by `max_seconds` stops with the rate not yet decayed.
        seed: fixes the visiting order and flips of every epoch.
        resume: continue from the checkpoint in `out_dir` if there is one (its settings must match); False starts
            over and overwrites it.
        checkpoint_every: also checkpoint every this many steps (an epoch end always checkpoints; so does Ctrl-C).
        max_seconds: a budget for the run's total training time (all calls on `out_dir`, as recorded in its
            checkpoints): stop with a checkpoint once it is spent; raise it (or pass None) and call again to continue.
        clock: measures training time (default wall time; on a shared machine, e.g.
            ``lambda: time.process_time() / torch.get_num_threads()`` counts this process's CPU time per core).
    Returns a `TrainResult`; ``completed`` is False when stopped by `max_seconds`. A fresh run seeds torch's global
    RNG with `seed` (torchvision's anchor and proposal samplers draw from it); a resumed one restores it.
    """
    preset = getattr(detector, "preset", None)
    lr = lr if lr is not None else getattr(preset, "lr", 1e-4)
    lr_schedule = lr_schedule if lr_schedule is not None else getattr(preset, "lr_schedule", "constant")
    warmup_steps = warmup_steps if warmup_steps is not None else getattr(preset, "warmup_steps", 0)
    weight_decay = weight_decay if weight_decay is not None else getattr(preset, "weight_decay", 5e-5)
    hflip = hflip if hflip is not None else getattr(preset, "hflip", True)
    vflip = vflip if vflip is not None else getattr(preset, "vflip", True)
    if not isinstance(epochs, int) or epochs < 0:
        raise InputError(f"epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise InputError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    lr_factor(0, 1, lr_schedule)  # rejects an unknown schedule before any work
    n = len(dataset)
    if n == 0:
        raise InputError("the dataset is empty")
    steps_per_epoch = math.ceil(n / batch_size)
    device = torch.device(device) if device is not None else model_device(detector)
    detector.to(device)
    params = [p for p in detector.parameters() if p.requires_grad]
    if not params:
        raise InputError("the detector has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    out = Path(out_dir)
    settings = {"n": n, "batch_size": batch_size, "lr": lr, "lr_schedule": lr_schedule, "warmup_steps": warmup_steps,
                "weight_decay": weight_decay, "hflip": hflip, "vflip": vflip, "seed": seed}
    # The run store's key: the detector's initial weights (backbone and its weights file included) and the
    # settings; a changed one is refused naming what changed, resume=False starts afresh. A detector that already
    # holds the latest checkpoint's weights (a second call in the same process) counts as its run's initial one.
    weights = fingerprint_model(detector)
    latest = _read_pointer(out) if resume and out.is_dir() else None
    initial = latest["initial_weights"] if latest and latest.get("weights") == weights else weights
    settings["initial_weights"] = initial
    store = RunStore(out, "train", settings=settings, restart=not resume)
    try:
        return _train(detector, dataset, epochs, out, batch_size, optimizer, settings, steps_per_epoch, n, device,
                      lr, lr_schedule, warmup_steps, hflip, vflip, seed, max_seconds, checkpoint_every, progress,
                      clock)
    finally:
        store.close()


def _train(detector, dataset, epochs, out, batch_size, optimizer, settings, steps_per_epoch, n, device, lr,
           lr_schedule, warmup_steps, hflip, vflip, seed, max_seconds, checkpoint_every, progress, clock):
    """The training loop of `train` (after its checks), resuming from the latest checkpoint in `out`."""
    info = load_checkpoint(out, detector, optimizer)
    if info is not None:
        if lr_schedule != "constant" and info.get("epochs") != epochs and info["step"] > 0:
            raise InputError(f"{out} holds a run whose {lr_schedule} schedule spans {info.get('epochs')} epochs; "
                             f"resuming it with epochs={epochs} would bend the schedule mid-run (use another "
                             "out_dir, resume=False, or lr_schedule='constant' to extend runs)")
        step, history, spent = info["step"], info["history"], info["seconds"]
        running = info.get("running", {})
    else:
        torch.manual_seed(seed)
        step, history, spent, running = 0, [], 0.0, {}

    def checkpoint() -> None:
        _save_checkpoint(out, detector, optimizer, {
            "epoch": step // steps_per_epoch, "step": step, "steps_per_epoch": steps_per_epoch, "epochs": epochs,
            "history": history, "running": running, "seconds": spent, "settings": settings,
            "initial_weights": settings["initial_weights"], "weights": fingerprint_model(detector)})

    total = epochs * steps_per_epoch
    start = clock()
    session_start = spent
    completed = step >= total
    out_of_time = max_seconds is not None and spent >= max_seconds
    detector.train()
    bar = tqdm(total=total, initial=min(step, total), disable=not progress, desc="train", unit="step")
    try:
        while step < total and not out_of_time:
            epoch, k = divmod(step, steps_per_epoch)
            order, flips = _epoch_plan(n, seed, epoch)
            images, targets = _batch(dataset, order[k * batch_size:(k + 1) * batch_size], flips, hflip, vflip, device)
            losses, loss = _step(detector, optimizer, images, targets, lr * lr_factor(step, total, lr_schedule,
                                                                                     warmup_steps), step)
            step += 1
            spent = session_start + clock() - start
            for name, v in losses.items():
                running[name] = running.get(name, 0.0) + float(v.detach())
            running["loss"] = running.get("loss", 0.0) + float(loss.detach())
            running["steps"] = running.get("steps", 0) + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}")
            if step % steps_per_epoch == 0:
                m = running.pop("steps")
                history.append({"epoch": epoch + 1, **{k: v / m for k, v in running.items()}, "seconds": spent})
                running = {}
                checkpoint()
            elif checkpoint_every and step % checkpoint_every == 0:
                checkpoint()
            if max_seconds is not None and spent >= max_seconds and step < total:
                if step % steps_per_epoch:
                    checkpoint()
                break
        completed = step >= total
    except KeyboardInterrupt:
        checkpoint()  # the step in flight is lost, every finished one is kept
        raise
    finally:
        bar.close()
    if completed:
        _save_weights(detector, out / "model.safetensors")
    return TrainResult(epoch=step // steps_per_epoch, step=step, completed=completed, history=history,
                       seconds=spent, out_dir=out)


def _batch(dataset, idx, flips, hflip: bool, vflip: bool, device) -> tuple[list, list]:
    images, targets = [], []
    for i in idx:
        img, tgt = _sample(dataset, i)
        img, tgt = flip_sample(img, tgt, hflip and bool(flips[i, 0]), vflip and bool(flips[i, 1]))
        images.append(img.to(device))
        targets.append({"boxes": tgt["boxes"].to(device).float(), "labels": tgt["labels"].to(device)})
    return images, targets


def _step(detector, optimizer, images, targets, lr: float, step: int):
    """One optimiser step at learning rate `lr`; a non-finite loss stops training with its components."""
    losses = detector(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"non-finite loss at step {step}: {({k: float(v) for k, v in losses.items()})}")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return losses, loss
