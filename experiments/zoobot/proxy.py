"""The galaxy-proxy encoder: trained once on simulated galaxy morphology (from the ImageNet weights by default), kept in its own run folder (keyed by
its settings, so studies with other fine-tuning seeds reuse it), saved as a Zoobot-layout file with its
normalisation, and its quality measured by a linear probe on held-out simulated morphology beside the ImageNet and
random-init encoders of the same architecture."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspots.cli import OUT_ROOT
from blindspots.store import RunStore
from blindspots.studies import write_json

from . import backbones as bb
from . import data as dt

__all__ = ["PRETRAIN_SEED", "PROBE_SEED", "proxy_settings", "ensure_proxy", "probe_quality"]

PRETRAIN_SEED = 1000  # the proxy is one fixed starting point, like a published Zoobot file
PROBE_SEED = 5000
PROBE_VERSION = 2  # 2: ridge penalty chosen per target on held-out train (1 overfitted: negative R^2)
ENCODER_FILE = "galaxy-proxy-encoder.safetensors"


def proxy_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"arch": args.arch, "size": args.size, "sim_fov": args.sim_fov, "pretrain": args.pretrain,
            "pretrain_epochs": args.pretrain_epochs, "lr": args.lr, "batch_size": args.batch_size,
            "probe": args.probe, "pretrain_seed": PRETRAIN_SEED, "proxy_init": args.proxy_init,
            "probe_seed": PROBE_SEED,
            "imagenet_weights": args.imagenet_weights and hashlib.sha256(
                Path(args.imagenet_weights).read_bytes()).hexdigest()[:16]}


def proxy_dir(args: argparse.Namespace) -> Path:
    if args.proxy_dir:
        return Path(args.proxy_dir)
    key = hashlib.sha256(json.dumps(proxy_settings(args), sort_keys=True).encode()).hexdigest()[:10]
    return OUT_ROOT / "zoobot-proxy" / f"{args.arch}-{key}"


def ensure_proxy(args: argparse.Namespace, device: torch.device) -> tuple[str, dict[str, Any]]:
    """The proxy encoder file (pretrained now, or reused) and its record: pretraining log and probe quality."""
    folder = proxy_dir(args)
    with RunStore(folder, "zoobot-proxy", settings=proxy_settings(args), restart=args.restart):
        path, log_path = folder / ENCODER_FILE, folder / "proxy.json"
        if path.is_file() and log_path.is_file():
            log = json.loads(log_path.read_text())
            if log.get("probe_version") != PROBE_VERSION:  # the encoder stays; its probe is measured again
                log.update(probe=probe_quality(args, str(path), device), probe_version=PROBE_VERSION)
                write_json(log, log_path)
            print(f"galaxy-proxy: reusing {path}", flush=True)
            return str(path), log
        t0, cpu = time.perf_counter(), time.process_time()
        images, morph = dt.pretraining_set(args.pretrain, args.size, PRETRAIN_SEED, fov=args.sim_fov)
        encoder, losses = bb.pretrain_encoder(args.arch, images, morph, epochs=args.pretrain_epochs,
                                              batch=args.batch_size, lr=args.lr, seed=PRETRAIN_SEED,
                                              device=device, init=args.proxy_init,
                                              imagenet_weights=args.imagenet_weights, progress=not args.quiet)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu
        bb.save_encoder(encoder, path, {"arch": args.arch, "image_size": args.size,
                                        "init": args.proxy_init,
                                        "trained_on": f"{args.pretrain} simulated galaxies, {args.pretrain_epochs} "
                                                      "epochs, MSE on standardised morphology"})
        k = max(1, len(losses) // 10)
        log = {"file": str(path), "normalisation": bb.PROXY_NORMALISATION, "init": args.proxy_init,
               "pretrain_seconds": round(seconds, 1), "pretrain_cpu_seconds": round(cpu, 1),
               "pretrain_images": args.pretrain, "pretrain_epochs": args.pretrain_epochs,
               "mse_first_last": [float(np.mean(losses[:k])), float(np.mean(losses[-k:]))],
               "probe": probe_quality(args, str(path), device), "probe_version": PROBE_VERSION}
        write_json(log, log_path)
        print(f"galaxy-proxy: pretrained in {seconds:.0f} s ({cpu:.0f} s CPU); linear-probe R^2 on held-out morphology "
              + ", ".join(f"{k} {v['mean_r2']:.3g}" for k, v in log["probe"].items() if v["mean_r2"] is not None),
              flush=True)
        return str(path), log


def probe_quality(args: argparse.Namespace, proxy_file: str, device: torch.device) -> dict[str, Any]:
    """Linear probe (ridge) from each encoder's pooled features to the simulated morphology, fitted on 2/3 of a
    held-out simulated set and scored (R^2) on the rest: the proxy beside ImageNet and random init."""
    images, morph = dt.pretraining_set(args.probe, args.size, PROBE_SEED, fov=args.sim_fov)
    cut = (2 * images.shape[0]) // 3
    out: dict[str, Any] = {}
    for kind in ("galaxy-proxy", "imagenet", "random"):
        torch.manual_seed(0)
        clf = bb.build_backbone(kind, args.arch, imagenet_weights=args.imagenet_weights, proxy_weights=proxy_file)
        if clf is None:
            continue
        feats = bb.encoder_features(clf.to(device), images)
        r2 = bb.linear_probe(feats[:cut], morph[:cut], feats[cut:], morph[cut:])
        mean = float(np.nanmean(r2)) if np.isfinite(r2).any() else None
        out[kind] = {"mean_r2": mean, **{name: float(v) for name, v in zip(dt.MORPHOLOGY, r2)}}
    return out
