"""The galaxy-proxy's encoder side, shared by the studies that use it (`experiments.zoobot`, `experiments.transfer`):
the starting points of one timm architecture as classifiers, the whole-network training loop (resumable per epoch),
pretraining on simulated galaxy morphology, the Zoobot-layout encoder file, and the linear probe that measures how
good the proxy is. Moved here from `experiments.zoobot` so that no study imports another."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from blindspots import Classifier
from blindspots.models import IMAGENET_MEAN, IMAGENET_STD, load_classifier
from blindspots.store import temporary_path
from blindspots.errors import InputError

__all__ = ["STARTS", "PROXY_NORMALISATION", "MORPHOLOGY", "build_backbone", "train", "training_state",
           "pretrain_encoder", "save_encoder", "encoder_features", "linear_probe", "sim_config", "pretraining_set"]

STARTS = ("imagenet", "zoobot", "galaxy-proxy", "random")
PROXY_NORMALISATION = "none: inputs in [0, 1] without mean/std, as Zoobot's encoders"
MORPHOLOGY = ("clump count", "star count", "log disk radius", "axis ratio", "bulge fraction", "log flux")


def sim_config(size: int, fov: float):
    """The simulator's SDSS-like settings at `size` pixels across a field of `fov` arcsec."""
    from detectors.simulate import SimConfig

    return SimConfig(image_size=size, pixel_scale=fov / size)


def _morphology(params: Sequence[Any]) -> torch.Tensor:
    """Standardised simulated morphology (N, 6), in the order of MORPHOLOGY."""
    morph = torch.tensor([[float((q.label == 1).sum()), float((q.label == 2).sum()), math.log(q.disk_re),
                           q.axis_ratio, q.bulge_fraction, math.log(q.flux_r)] for q in params])
    return (morph - morph.mean(0)) / morph.std(0).clamp_min(1e-6)


def pretraining_set(n: int, size: int, seed: int, *, fov: float = 42.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n simulated galaxies with the simulator's own morphology mix (0-8 clumps of 0.5-8% flux, foreground stars,
    bulges) and their standardised morphology (N, 6): the proxy's pretraining data and its probe's data."""
    from detectors.simulate import simulate

    batch = simulate(n, sim_config(size, fov), seed=seed)
    return batch.images.clamp(0, 1).contiguous(), _morphology(batch.params)


def build_backbone(kind: str, arch: str, *, imagenet_weights: str | None = None, zoobot_weights: str | None = None,
                   proxy_weights: str | None = None, num_outputs: int = 2) -> Classifier | None:
    """The starting point `kind` with a fresh `num_outputs` head, or None (with a printed notice) if unavailable.
    'zoobot' and 'galaxy-proxy' are both Zoobot-layout encoder files (timm `arch` without head), fed [0, 1]."""
    import timm

    if kind == "imagenet":
        if arch == "efficientnet_lite0" and imagenet_weights is None:
            clf = load_classifier("imagenet-lite0")
        elif imagenet_weights is not None:
            clf = load_classifier(f"timm:{arch}", weights=imagenet_weights)
        else:
            print(f"skipped: imagenet backbone (no offline ImageNet weights for {arch}; pass --imagenet-weights)")
            return None
        clf.model.reset_classifier(num_outputs)
        return Classifier(clf.model, clf.mean.flatten().tolist() if clf.mean is not None else IMAGENET_MEAN,
                          clf.std.flatten().tolist() if clf.std is not None else IMAGENET_STD, name="imagenet")
    if kind in ("zoobot", "galaxy-proxy"):
        weights = zoobot_weights if kind == "zoobot" else proxy_weights
        if weights is None:
            print(f"skipped: {kind} backbone (no encoder file given)")
            return None
        clf = load_classifier(f"zoobot:{arch}", weights=weights, num_classes=num_outputs)
        return Classifier(clf.model, None, None, name=kind)
    if kind == "random":
        return Classifier(timm.create_model(arch, pretrained=False, num_classes=num_outputs), IMAGENET_MEAN,
                          IMAGENET_STD, name=kind)
    raise InputError(f"unknown backbone {kind!r}; choose from {list(STARTS)}")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Galaxies have no preferred orientation: a random quarter turn per batch and a random flip per image."""
    x = torch.rot90(x, int(torch.randint(4, (1,), generator=gen)), (2, 3))
    flip = torch.rand(x.shape[0], 1, 1, 1, generator=gen).to(x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def train(net: nn.Module, images: torch.Tensor, targets: torch.Tensor, loss_fn, *, epochs: int, batch: int,
          lr: float, seed: int, device: torch.device, weight_decay: float = 0.05, warmup: float = 0.1,
          progress: bool = False, desc: str = "training", resume: dict[str, Any] | None = None,
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> list[float]:
    """Whole-network training: AdamW, linear warm-up over `warmup` of the steps then cosine decay to 0, augmented
    batches in channels_last; every random draw (init excluded) comes from `seed`. Returns the per-step losses.

    After each epoch `on_epoch(epoch, state)` gets the whole training state (`training_state`: weights, optimiser,
    schedule, random generators, losses); `resume=state` continues from it, ending with the same weights as a run
    that was never stopped."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    per_epoch = sum(1 for i in range(0, images.shape[0], batch) if images[i:i + batch].shape[0] >= 2)
    total = max(1, epochs * per_epoch)
    warm = max(1, int(warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    losses: list[float] = []
    first = 0
    if resume is not None:
        first, losses = _restore(resume, net, opt, sched, gen, device)
    with tqdm(total=total, initial=first * per_epoch, disable=not progress, desc=desc, unit="step",
              leave=False) as bar:
        for epoch in range(first, epochs):
            order = torch.randperm(images.shape[0], generator=gen)
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                if idx.numel() < 2:  # batch norm needs two samples
                    continue
                x = _augment(images[idx].to(device), gen).contiguous(memory_format=torch.channels_last)
                loss = loss_fn(net(x), targets[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
            if on_epoch is not None:
                on_epoch(epoch + 1, training_state(epoch + 1, net, opt, sched, gen, losses, device))
    net.eval()
    return losses


def training_state(epoch: int, net: nn.Module, opt, sched, gen: torch.Generator, losses: list[float],
                   device: torch.device) -> dict[str, Any]:
    """Everything `train` needs to continue after `epoch` epochs: tensors (weights, optimiser moments, random
    generator states) and JSON metadata (epoch, schedule, optimiser settings, losses)."""
    tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().clone()
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    meta = {"epoch": epoch, "losses": list(losses), "param_groups": opt_state["param_groups"],
            "scheduler": {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}}
    return {"tensors": tensors, "meta": meta}


def _restore(state: dict[str, Any], net: nn.Module, opt, sched, gen: torch.Generator,
             device: torch.device) -> tuple[int, list[float]]:
    from blindspots.models import load_weights

    tensors, meta = state["tensors"], state["meta"]
    load_weights(net, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    net.to(device)
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            moments.setdefault(int(idx), {})[name] = v if name == "step" else v.to(device)
    opt.load_state_dict({"state": moments, "param_groups": meta["param_groups"]})
    sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None]})
    gen.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return int(meta["epoch"]), [float(x) for x in meta["losses"]]


def pretrain_encoder(arch: str, images: torch.Tensor, morph: torch.Tensor, *, epochs: int, batch: int, lr: float,
                     seed: int, device: torch.device, init: str = "imagenet", imagenet_weights: str | None = None,
                     progress: bool = False, resume: dict[str, Any] | None = None,
                     on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> tuple[nn.Module, list[float]]:
    """The galaxy-proxy: timm `arch` from `init` ('imagenet': the ImageNet start of this study; 'random'), trained
    to regress the standardised simulated morphology (MSE) from [0, 1] images without mean/std (Zoobot's
    convention). Returns the encoder (head removed) and the per-step losses. `resume` / `on_epoch`: see `train`."""
    import timm

    torch.manual_seed(seed)
    if init == "imagenet":
        start = build_backbone("imagenet", arch, imagenet_weights=imagenet_weights, num_outputs=morph.shape[1])
        if start is None:
            raise InputError(f"--proxy-init imagenet needs ImageNet weights for {arch} (--imagenet-weights)")
        net = start.model
    elif init == "random":
        net = timm.create_model(arch, pretrained=False, num_classes=morph.shape[1])
    else:
        raise InputError(f"proxy init must be 'imagenet' or 'random', got {init!r}")
    losses = train(net, images, morph, nn.functional.mse_loss, epochs=epochs, batch=batch, lr=lr, seed=seed,
                   device=device, progress=progress, desc="pretrain galaxy-proxy", resume=resume, on_epoch=on_epoch)
    net.reset_classifier(0)
    return net.cpu().to(memory_format=torch.contiguous_format).eval(), losses


def save_encoder(encoder: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
    """A Zoobot-layout encoder file (the state dict of timm.create_model(arch, num_classes=0)) with its
    normalisation in the metadata; `zoobot:<arch>` and `detectors` (weights='zoobot:FILE') load it as is."""
    import json
    import os

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    info = {"normalisation": PROXY_NORMALISATION, **meta}
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(tmp),
              metadata={k: json.dumps(v) for k, v in info.items()})
    os.replace(tmp, path)
    return path


@torch.no_grad()
def encoder_features(clf: Classifier, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Pooled features of the backbone (its head bypassed), with the backbone's own normalisation."""
    model = clf.model
    clf.eval()
    feats = []
    for i in range(0, images.shape[0], batch):
        x = clf.normalize(images[i:i + batch].to(next(model.parameters()).device))
        if hasattr(model, "encoder"):
            f = model.encoder(x)
        else:
            f = model.forward_head(model.forward_features(x), pre_logits=True)
        feats.append(f.float().cpu())
    return torch.cat(feats)


RIDGES = tuple(10.0 ** k for k in range(-3, 5))  # penalties per sample, chosen per target on held-out train


def _ridge_fit(a: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    reg = ridge * a.shape[0] * torch.eye(a.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0  # the intercept is not penalised
    return torch.linalg.solve(a.T @ a + reg, a.T @ y)


def _r2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    total = ((y - y.mean(0)) ** 2).sum(0)
    r2 = 1 - ((pred - y) ** 2).sum(0) / total
    return torch.where(total > 0, r2, torch.full_like(r2, float("nan")))  # a constant target has no R^2


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 ridges: tuple[float, ...] = RIDGES) -> np.ndarray:
    """R^2 per target on held-out test of a ridge regression on standardised features (dead features dropped);
    each target's penalty is chosen among `ridges` on the last quarter of train, then refitted on all of train."""
    sd = train_x.std(0)
    keep = sd > 1e-4 * sd.max().clamp_min(1e-12)
    mu, sd = train_x[:, keep].mean(0), sd[keep]

    def design(x):
        return torch.cat([(x[:, keep] - mu) / sd, torch.ones(x.shape[0], 1)], 1).double()

    a, b, ya, yb = design(train_x), design(test_x), train_y.double(), test_y.double()
    cut = (3 * a.shape[0]) // 4
    scores = torch.stack([_r2(a[cut:] @ _ridge_fit(a[:cut], ya[:cut], r), ya[cut:]).nan_to_num(-1e9)
                          for r in ridges])
    best = scores.argmax(0)
    pred = torch.stack([b @ _ridge_fit(a, ya[:, [j]], ridges[int(best[j])]) for j in range(ya.shape[1])], 1)
    return _r2(pred.squeeze(-1), yb).numpy()
