"""The galaxy-proxy encoder: trained once on simulated galaxy morphology (from the ImageNet weights by default), kept
in its own run folder (keyed by its settings, so studies with other fine-tuning seeds reuse it) with a checkpoint
after every epoch (a killed pretraining resumes to the same weights), saved as a Zoobot-layout file with its
normalisation, and its quality measured by a linear probe on held-out simulated morphology beside the ImageNet and
random-init encoders of the same architecture."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspots.cli import OUT_ROOT
from blindspots.store import RunStore
from blindspots.studies import write_json

from . import encoder as bb
from . import encoder as dt
from blindspots.store import fingerprint_file
from detectors.simulate import simulator_fingerprint

__all__ = ["ProxyConfig", "PRETRAIN_SEED", "PROBE_SEED", "proxy_settings", "proxy_dir", "ensure_proxy",
           "probe_quality"]

PRETRAIN_SEED = 1000  # the proxy is one fixed starting point, like a published Zoobot file
PROBE_SEED = 5000
PROBE_VERSION = 2  # 2: ridge penalty chosen per target on held-out train (1 overfitted: negative R^2)
ENCODER_FILE = "galaxy-proxy-encoder.safetensors"
CHECKPOINT = "pretrain-epoch{:03d}"  # the run store's stage after each pretraining epoch (the latest is kept)


@dataclass(frozen=True)
class ProxyConfig:
    """What decides the proxy encoder: timm `arch`, pretraining on `pretrain` simulated `size`-px galaxies over a
    field of `sim_fov` arcsec for `pretrain_epochs` epochs (AdamW `lr`, `batch_size`) from `proxy_init`
    ('imagenet': the ImageNet weights, `imagenet_weights` or the offline lite0 ones; 'random'), and `probe`
    held-out galaxies for its linear probe. The defaults are `ZoobotConfig`'s, so both studies share one proxy."""

    arch: str = "efficientnet_lite0"
    size: int = 64
    sim_fov: float = 42.0
    pretrain: int = 8192
    pretrain_epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 32
    probe: int = 768
    proxy_init: str = "imagenet"
    imagenet_weights: str | None = None

    @classmethod
    def of(cls, config: Any) -> "ProxyConfig":
        """The proxy settings of a study's config (any object with these attributes, e.g. a `ZoobotConfig`)."""
        if isinstance(config, cls):
            return config
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


def proxy_settings(config: Any) -> dict[str, Any]:
    """What decides the proxy encoder (its run store's key): a study with other fine-tuning seeds reuses it.
    `config`: a `ProxyConfig` or a study config holding its fields (`ProxyConfig.of`)."""
    config = ProxyConfig.of(config)
    return {"arch": config.arch, "size": config.size, "sim_fov": config.sim_fov, "pretrain": config.pretrain,
            "pretrain_epochs": config.pretrain_epochs, "lr": config.lr, "batch_size": config.batch_size,
            "probe": config.probe, "pretrain_seed": PRETRAIN_SEED, "proxy_init": config.proxy_init,
            "probe_seed": PROBE_SEED,
            "imagenet_weights": config.imagenet_weights and fingerprint_file(config.imagenet_weights),
            "simulator": simulator_fingerprint()}  # the pretraining images: a new simulator pretrains a new proxy


def proxy_dir(config: Any) -> Path:
    """blindspots-out/zoobot-proxy/<arch>-<key> (`arch` is a checked timm name, never a path)."""
    config = ProxyConfig.of(config)
    key = hashlib.sha256(json.dumps(proxy_settings(config), sort_keys=True).encode()).hexdigest()[:10]
    return OUT_ROOT / "zoobot-proxy" / f"{config.arch}-{key}"


def ensure_proxy(config: Any, device: torch.device, folder: str | Path | None = None, *,
                 restart: bool = False, progress: bool = False) -> tuple[str, dict[str, Any]]:
    """The proxy encoder file (pretrained now, resumed from its last finished epoch, or reused) and its record:
    pretraining log and probe quality. One line per pretraining epoch is printed whatever `progress` says.
    `config`: a `ProxyConfig` or a study config holding its fields."""
    config = ProxyConfig.of(config)
    folder = Path(folder) if folder is not None else proxy_dir(config)
    with RunStore(folder, "zoobot-proxy", settings=proxy_settings(config), restart=restart) as store:
        path, log_path = folder / ENCODER_FILE, folder / "proxy.json"
        if path.is_file() and log_path.is_file():
            log = json.loads(log_path.read_text())
            if log.get("probe_version") != PROBE_VERSION:  # the encoder stays; its probe is measured again
                log.update(probe=probe_quality(config, str(path), device), probe_version=PROBE_VERSION)
                write_json(log, log_path)
            print(f"galaxy-proxy: reusing {path}", flush=True)
            return str(path), log
        t0, cpu = time.perf_counter(), time.process_time()
        resume, done_before = _last_checkpoint(store, config.pretrain_epochs)
        images, morph = dt.pretraining_set(config.pretrain, config.size, PRETRAIN_SEED, fov=config.sim_fov)
        encoder, losses = bb.pretrain_encoder(
            config.arch, images, morph, epochs=config.pretrain_epochs, batch=config.batch_size, lr=config.lr,
            seed=PRETRAIN_SEED, device=device, init=config.proxy_init, imagenet_weights=config.imagenet_weights,
            progress=progress, resume=resume, on_epoch=_checkpointer(store, config.pretrain_epochs, t0, done_before))
        seconds = time.perf_counter() - t0 + done_before["seconds"]
        cpu = time.process_time() - cpu + done_before["cpu_seconds"]
        bb.save_encoder(encoder, path, {"arch": config.arch, "image_size": config.size, "init": config.proxy_init,
                                        "trained_on": f"{config.pretrain} simulated galaxies, "
                                                      f"{config.pretrain_epochs} epochs, MSE on standardised "
                                                      "morphology"})
        k = max(1, len(losses) // 10)
        log = {"file": str(path), "normalisation": bb.PROXY_NORMALISATION, "init": config.proxy_init,
               "pretrain_seconds": round(seconds, 1), "pretrain_cpu_seconds": round(cpu, 1),
               "pretrain_threads": torch.get_num_threads(), "pretrain_images": config.pretrain,
               "pretrain_epochs": config.pretrain_epochs,
               "mse_first_last": [float(np.mean(losses[:k])), float(np.mean(losses[-k:]))],
               "probe": probe_quality(config, str(path), device), "probe_version": PROBE_VERSION}
        write_json(log, log_path)
        last = store.stage_path(CHECKPOINT.format(config.pretrain_epochs))
        if last.is_file():  # the encoder file holds what it held
            last.unlink()
        print(f"galaxy-proxy: pretrained in {seconds:.0f} s ({cpu:.0f} s CPU, {torch.get_num_threads()} threads); "
              "linear-probe R^2 on held-out morphology "
              + ", ".join(f"{k} {v['mean_r2']:.3g}" for k, v in log["probe"].items() if v["mean_r2"] is not None),
              flush=True)
        return str(path), log


def _last_checkpoint(store: RunStore, epochs: int) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """The latest finished epoch's training state in the store (None: start afresh) and the time it had cost."""
    for epoch in range(epochs, 0, -1):
        name = CHECKPOINT.format(epoch)
        if store.has(name):
            tensors, meta = store.load(name)
            print(f"galaxy-proxy pretraining: resuming after epoch {epoch}/{epochs} ({store.stage_path(name)})",
                  flush=True)
            return {"tensors": tensors, "meta": meta}, {k: float(meta.get(k, 0.0))
                                                        for k in ("seconds", "cpu_seconds")}
    return None, {"seconds": 0.0, "cpu_seconds": 0.0}


def _checkpointer(store: RunStore, epochs: int, t0: float, before: dict[str, float]):
    """Saves each finished epoch through the run store (dropping the one before) and prints one line for it."""
    cpu0 = time.process_time()

    def on_epoch(epoch: int, state: dict[str, Any]) -> None:
        seconds = time.perf_counter() - t0 + before["seconds"]
        cpu = time.process_time() - cpu0 + before["cpu_seconds"]
        meta = {**state["meta"], "seconds": seconds, "cpu_seconds": cpu}
        store.save(CHECKPOINT.format(epoch), state["tensors"], meta)
        previous = store.stage_path(CHECKPOINT.format(epoch - 1))
        if previous.is_file():
            previous.unlink()
        steps = max(1, len(state["meta"]["losses"]) // epoch)
        last = state["meta"]["losses"][-steps:]
        epoch_done(f"galaxy-proxy pretraining: epoch {epoch}/{epochs} done, mean MSE {np.mean(last):.4f}, "
                   f"{seconds:.0f} s so far ({torch.get_num_threads()} threads); checkpoint saved")

    return on_epoch


def epoch_done(line: str) -> None:
    """Print one pretraining epoch's line (always, even under --quiet: a first run is long)."""
    print(line, flush=True)


def probe_quality(config: Any, proxy_file: str, device: torch.device) -> dict[str, Any]:
    """Linear probe (ridge) from each encoder's pooled features to the simulated morphology, fitted on 2/3 of a
    held-out simulated set and scored (R^2) on the rest: the proxy beside ImageNet and random init."""
    config = ProxyConfig.of(config)
    images, morph = dt.pretraining_set(config.probe, config.size, PROBE_SEED, fov=config.sim_fov)
    cut = (2 * images.shape[0]) // 3
    out: dict[str, Any] = {}
    for kind in ("galaxy-proxy", "imagenet", "random"):
        torch.manual_seed(0)
        clf = bb.build_backbone(kind, config.arch, imagenet_weights=config.imagenet_weights, proxy_weights=proxy_file)
        if clf is None:
            continue
        feats = bb.encoder_features(clf.to(device), images)
        r2 = bb.linear_probe(feats[:cut], morph[:cut], feats[cut:], morph[cut:])
        mean = float(np.nanmean(r2)) if np.isfinite(r2).any() else None
        out[kind] = {"mean_r2": mean, **{name: float(v) for name, v in zip(dt.MORPHOLOGY, r2)}}
    return out
