"""The bridge to the blind spots: LST against the trained detectors themselves. Each largest-size detector becomes
a 2-class classifier, "is there a clump in the central region" (`detectors.as_classifier(det, region=...)`, the
soft maximum of the clump scores of the proposals centred there). The candidates are simulated galaxies held out
from everything else, half without clumps and half with 2-8 clumps of 3-8% of the host's flux; those with a clump
of >= 3% centred in the region are 'clumpy', those with no clump centred there 'not clumpy' (others are not used).
Per body setting, the pool holds the images every compared detector of that setting (ImageNet and the galaxy
backbones, every seed; `random` is in no comparison and does not walk) classifies correctly, half of each class;
every compared detector walks the same pairs (each source to a target of the other class)
from the same start noise, so d = log(RMS-l2 left by the galaxy backbone's detector / by ImageNet's) is paired."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspots import studies as st
from blindspots.store import RunStore

from .config import TransferConfig

__all__ = ["region", "clump_labels", "run_lst", "lst_config"]


def region(size: int) -> tuple[float, float, float, float]:
    """The central region where the clump is sought: the inner three quarters of the image (the galaxy's disk)."""
    return (size / 8, size / 8, 7 * size / 8, 7 * size / 8)


def clump_labels(targets, box: tuple[float, float, float, float], min_flux: float = 0.03) -> np.ndarray:
    """1: a clump (label 1) of flux >= `min_flux` centred in `box`; 0: no clump of any flux centred there; -1:
    only fainter clumps there (ambiguous, not used)."""
    x0, y0, x1, y1 = box
    out = []
    for t in targets:
        b, lab, f = t["boxes"], t["labels"], t["flux_fraction"]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        inside = (lab == 1) & (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
        out.append(1 if bool((inside & (f >= min_flux)).any()) else 0 if not bool(inside.any()) else -1)
    return np.asarray(out)


def lst_config(config: TransferConfig):
    from blindspots import LSTConfig

    return LSTConfig(step_size=config.lst_step, iterations=config.lst_iterations, threshold=config.lst_threshold,
                     adv_eps=config.lst_adv_eps)


def _classifier(det, config: TransferConfig, name: str):
    from detectors.classifier import as_classifier

    return as_classifier(det, region=region(config.image_size), name=name)


def _pool(config, body, kinds, images, labels, classifiers, store: RunStore) -> torch.Tensor:
    """The images every compared classifier of this body setting gets right, balanced (saved: a rerun keeps the
    pairs)."""
    stage = f"lst-pool-{body}-{'-'.join(kinds)}"
    if store.has(stage):
        return store.load(stage)[0]["pool"]
    half = max(1, config.lst_sources // 2)
    cand = np.concatenate([np.flatnonzero(labels == c) for c in (0, 1)])
    cand_t = torch.as_tensor(np.sort(cand))
    if cand_t.numel():
        ok, _ = st.select_pool(classifiers, images[cand_t], torch.as_tensor(labels[cand_t]))
        chosen = cand_t[ok]
    else:
        chosen = cand_t.long()
    lab = torch.as_tensor(labels)[chosen]
    m = min(int((lab == 0).sum()), int((lab == 1).sum()), half)
    pool = torch.cat([chosen[lab == 0][:m], chosen[lab == 1][:m]]).sort().values.long()
    store.save(stage, {"pool": pool}, {"candidates": int(cand_t.numel()), "per_class": m})
    return pool


def run_lst(config: TransferConfig, data: dict[str, Any], store: RunStore, out: Path, proxy_file: str | None,
            device, progress: bool = False) -> list[dict[str, Any]]:
    """LST on the same pairs for every largest-size detector; the records (one per pair and detector)."""
    from blindspots.pairing import derangement_pairs

    from .cells import load_cell_detector

    from .config import GALAXY

    if "imagenet" not in config.backbones or not any(g in config.backbones for g in GALAXY):
        return []  # the bridge compares a galaxy backbone's detector with ImageNet's: nothing to walk
    test = data["lst"]
    labels = clump_labels(test.targets, region(config.image_size))
    records: list[dict[str, Any]] = []
    protocol = st.ProtocolConfig(rounds=config.lst_rounds, seed=config.data_seed,
                                 pairs_per_batch=max(config.lst_rounds, config.lst_sources * config.lst_rounds))
    kinds = [k for k in config.backbones if k == "imagenet" or k in GALAXY]  # the compared ones walk
    for body in config.bodies:
        clfs = {}
        for kind in kinds:
            for seed in config.seeds:
                det = load_cell_detector((kind, body, config.largest, seed), config, out, proxy_file, device)
                clfs[(kind, seed)] = _classifier(det, config, f"{kind}/{body}/s{seed}")
        pool = _pool(config, body, kinds, test.images, labels, list(clfs.values()), store)
        if pool.numel() < 2:
            print(f"LST {body}: no pair (no test image that every detector classifies correctly in each class)",
                  flush=True)
            continue
        targets = derangement_pairs(torch.as_tensor(labels)[pool], config.lst_rounds, config.data_seed)
        lab = torch.as_tensor(np.maximum(labels, 0))
        for (kind, seed), clf in clfs.items():
            records += st.run_pair_protocol(clf, f"{kind}/{body}/s{seed}", test.images, lab, pool, targets, store,
                                            config=lst_config(config), protocol=protocol,
                                            extra={"backbone": kind, "body": body, "seed": seed},
                                            progress=progress, log=None)
        if progress:
            print(f"LST {body}: {pool.numel()} sources x {config.lst_rounds} round(s) against "
                  f"{len(clfs)} detectors", flush=True)
    return [r for r in records if r.get("kind") == "lst"]
