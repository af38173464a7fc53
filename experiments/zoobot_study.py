"""Is a galaxy-domain backbone more or less under-sensitive than an ImageNet one? One architecture, four starts:

(a) `imagenet`: ImageNet weights (efficientnet_lite0: the offline weights of `imagenet-lite0`; other archs need
    `--imagenet-weights`); (b) `zoobot`: Zoobot encoder weights from a local file (`--zoobot-weights`; skipped, and
    its row left out, when not given); (c) `galaxy-proxy`: the same architecture pretrained HERE on simulated
    galaxies (regressing their simulated morphology: clump and star counts, disk size, axis ratio, bulge fraction,
    brightness), labelled "a proxy for Zoobot" in every table and figure, since it is not Zoobot; (d) `random`.

The task. Each start is fine-tuned (AdamW, warm-up + cosine schedule, rot90/flip augmentation, whole network) as a
clumpy / not-clumpy classifier on simulated SDSS-like galaxies (`detectors.simulate`): half with no clumps, half with
2-8 clumps of 3-8% of the host's flux each (`--min-clump-flux`), so the classes are separable at 64 px. The simulated
field of view (`--sim-fov`, arcsec) is chosen so simulated discs fill the frame about as the real cutouts' galaxies
do (Galaxy Zoo cutouts are scaled to each galaxy's size, so no fixed pixel scale matches them). The simulated sets
are made once and cached in the output folder. Test accuracies are printed; a backbone below `--min-accuracy`
is reported but kept out of LST (its blind spots would say nothing about a working classifier).

The measurement. On galaxy pairs (held-out simulated ones, sources that every backbone classifies correctly, each
sent towards a galaxy of the other class; and real cutouts from `--real`, each backbone's own prediction taken as the
source class, each sent towards another cutout) LST (`run_pair_protocol`: resumable, shardable with torchrun)
measures how close to the target galaxy a backbone lets an image go while keeping its class: RMS-l2 / l-inf / SSIM
to the target, the final confidence, straight-path confidence (path linearity, `geometry.path_confidence`), the
triangle-hull fractions and, from `attacks`, the minimal l-inf adversarial distance of each source (over-sensitivity,
for contrast). Lower RMS-l2 reached (higher SSIM) at kept confidence = more under-sensitive. The verdict and the
ratios to ImageNet use the median RMS-l2: a few traversals stall far from their target, and they decided the means.

    python -m benchmarks.zoobot_vs_imagenet                       # CPU default: 64 px, 7 min from scratch on 2 cores
    python -m benchmarks.zoobot_vs_imagenet --size 128 --train 4000 --epochs 5 --pretrain 8000 --iterations 400 \\
        --step-size 0.01 --rounds 5 --sim-pairs 100 --zoobot-weights zoobot_effnetb0.safetensors \\
        --arch efficientnet_b0 --imagenet-weights effnetb0_imagenet.safetensors
    torchrun --nproc-per-node 2 -m benchmarks.zoobot_vs_imagenet --out runs/zoobot

Output: the study folder of `blindspots.studies` (records, arrays, study.json; a rerun with the same settings skips
finished work), data/ (the cached simulated sets), checkpoints/ (fine-tuned backbones), training.json, table.csv,
tables.json, under_sensitivity.png and report.html.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from blindspots import Classifier, LSTConfig, derangement_pairs
from blindspots import studies as st
from blindspots.store import RunStore, record_sort_key

from .lst_tables import hull_metric
from blindspots.models import IMAGENET_MEAN, IMAGENET_STD, load_classifier, load_weights

__all__ = ["BACKBONES", "sim_config", "simulated_set", "pretraining_set", "real_cutouts", "build_backbone",
           "pretrain_proxy", "fine_tune", "study_tables", "add_arguments", "run", "main"]

BACKBONES = {
    "imagenet": "ImageNet weights",
    "zoobot": "Zoobot weights (local file)",
    "galaxy-proxy": "galaxy-proxy: pretrained here on simulated galaxies (a proxy for Zoobot, not Zoobot)",
    "random": "random init",
}
COLUMNS = {"accuracy": "sim test accuracy", "rms_l2": "RMS-l2 to target", "linf": "l-inf to target",
           "ssim": "SSIM to target", "final_confidence": "final confidence", "cross_class": "target in other class",
           "path_mean": "straight-path mean p", "path_min_drop": "straight-path min (p - p0)",
           "fraction@0.2": "hull frac p>=p_src-0.2", "min_adv_linf": "min adversarial l-inf"}
MAX_CLUMP_FLUX = 0.08  # the simulator's default upper clump flux (fraction of the host's r-band flux)


# ----------------------------------------------------------------------------------------------- data


def sim_config(size: int, fov: float):
    """The simulator's SDSS-like settings at `size` pixels across a field of `fov` arcsec."""
    from detectors.simulate import SimConfig

    return SimConfig(image_size=size, pixel_scale=fov / size)


def _morphology(params: Sequence[Any]) -> torch.Tensor:
    """Standardised simulated morphology (N, 6): clump count, star count, log disk radius, axis ratio, bulge
    fraction, log flux."""
    morph = torch.tensor([[float((q.label == 1).sum()), float((q.label == 2).sum()), math.log(q.disk_re),
                           q.axis_ratio, q.bulge_fraction, math.log(q.flux_r)] for q in params])
    return (morph - morph.mean(0)) / morph.std(0).clamp_min(1e-6)


def simulated_set(n: int, size: int, seed: int, *, fov: float = 42.0, min_clump_flux: float = 0.03
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """n simulated galaxies for the clumpy task, classes interleaved: half with no clumps (label 0), half with 2-8
    clumps of `min_clump_flux`-8% of the host's flux each (label 1). Returns images (N, 3, size, size) in [0, 1] and
    labels (N,)."""
    from detectors.simulate import simulate

    if not 0 < min_clump_flux <= MAX_CLUMP_FLUX:
        raise ValueError(f"min_clump_flux must be in (0, {MAX_CLUMP_FLUX}], got {min_clump_flux}")
    cfg = sim_config(size, fov)
    half = n // 2
    parts = [simulate(half, cfg.replace(n_clumps=(0, 0)), seed=seed),
             simulate(n - half, cfg.replace(n_clumps=(2, 8), clump_flux=(min_clump_flux, MAX_CLUMP_FLUX)),
                      seed=seed + 1)]
    images = torch.cat([p.images for p in parts]).clamp(0, 1)
    labels = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(n - half, dtype=torch.long)])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return images[order].contiguous(), labels[order]


def pretraining_set(n: int, size: int, seed: int, *, fov: float = 42.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n simulated galaxies with the simulator's own morphology mix (0-8 clumps of 0.5-8% flux, foreground stars,
    bulges) and their standardised morphology (N, 6): the galaxy-domain pretraining data of the proxy."""
    from detectors.simulate import simulate

    batch = simulate(n, sim_config(size, fov), seed=seed)
    return batch.images.clamp(0, 1).contiguous(), _morphology(batch.params)


def _cached(path: Path, make: Callable[[], dict[str, torch.Tensor]], info: st.DistInfo) -> dict[str, torch.Tensor]:
    """Tensors from `path` (safetensors), made by rank 0 with `make` and saved atomically the first time."""
    from safetensors.torch import load_file, save_file

    if info.is_main and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in make().items()}, str(tmp))
        os.replace(tmp, path)
    st.barrier(info)
    return load_file(str(path))


def real_cutouts(folder: str | Path, size: int, crop: float, limit: int | None) -> tuple[torch.Tensor, list[str]]:
    """Real galaxy cutouts (every image under `folder`, sorted), central `crop` fraction resized to `size`."""
    from skimage import io

    from blindspots.data import IMAGE_SUFFIXES, prepare, to_tensor

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images under {folder}")
    return torch.stack([prepare(to_tensor(io.imread(p))[:3], size, crop) for p in files]), \
        [str(p.relative_to(folder)) for p in files]


# ----------------------------------------------------------------------------------------------- backbones


def build_backbone(kind: str, arch: str, *, imagenet_weights: str | None = None, zoobot_weights: str | None = None,
                   num_outputs: int = 2) -> Classifier | None:
    """The starting point (a)-(d) with a fresh `num_outputs` head, or None (with a printed notice) if unavailable."""
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
        return Classifier(clf.model, IMAGENET_MEAN, IMAGENET_STD, name="imagenet")
    if kind == "zoobot":
        if zoobot_weights is None:
            print("skipped: zoobot backbone (no --zoobot-weights file given)")
            return None
        clf = load_classifier(f"zoobot:{arch}", weights=zoobot_weights, num_classes=num_outputs)
        return Classifier(clf.model, None, None, name="zoobot")
    if kind in ("galaxy-proxy", "random"):
        model = timm.create_model(arch, pretrained=False, num_classes=num_outputs)
        return Classifier(model, IMAGENET_MEAN, IMAGENET_STD, name=kind)
    raise ValueError(f"unknown backbone {kind!r}; choose from {list(BACKBONES)}")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Galaxies have no preferred orientation: a random quarter turn per batch and a random flip per image."""
    x = torch.rot90(x, int(torch.randint(4, (1,), generator=gen)), (2, 3))
    flip = torch.rand(x.shape[0], 1, 1, 1, generator=gen).to(x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def _train(clf: Classifier, images: torch.Tensor, targets: torch.Tensor, loss_fn, *, epochs: int, batch: int,
           lr: float, seed: int, device: torch.device, weight_decay: float = 0.05, warmup: float = 0.1
           ) -> list[float]:
    """Whole-network training: AdamW, linear warm-up over `warmup` of the steps then cosine decay to 0, augmented
    batches in channels_last (faster convolutions on CPU); returns the per-step losses."""
    gen = torch.Generator().manual_seed(seed)
    clf.to(device).train()
    clf.model.to(memory_format=torch.channels_last)
    for p in clf.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    per_epoch = sum(1 for i in range(0, images.shape[0], batch) if images[i:i + batch].shape[0] >= 2)
    total = max(1, epochs * per_epoch)
    warm = max(1, int(warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    losses = []
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            if idx.numel() < 2:  # batch norm needs two samples
                continue
            x = _augment(images[idx].to(device), gen).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(clf(x), targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    clf.eval()
    return losses


def pretrain_proxy(clf: Classifier, images: torch.Tensor, morph: torch.Tensor, *, epochs: int, batch: int,
                   lr: float, seed: int, device: torch.device) -> list[float]:
    """Galaxy-domain pretraining of (c): regress the standardised simulated morphology (MSE); the head is then reset
    to two outputs (so only the encoder carries over, as with Zoobot)."""
    clf.model.reset_classifier(morph.shape[1])
    losses = _train(clf, images, morph, nn.functional.mse_loss, epochs=epochs, batch=batch, lr=lr, seed=seed,
                    device=device)
    clf.model.reset_classifier(2)
    clf.to(device)
    return losses


def fine_tune(clf: Classifier, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch: int, lr: float,
              seed: int, device: torch.device) -> list[float]:
    """Clumpy / not-clumpy fine-tuning of the whole network (cross-entropy)."""
    return _train(clf, images, labels, nn.functional.cross_entropy, epochs=epochs, batch=batch, lr=lr, seed=seed,
                  device=device)


# ----------------------------------------------------------------------------------------------- metrics


def _path_metric() -> st.PairMetric | None:
    try:
        from blindspots.geometry import path_confidence
    except ImportError:
        print("skipped: path linearity (blindspots.geometry not available)")
        return None

    def metric(model, sources, outputs, targets, labels):
        res = path_confidence(model, sources, outputs, labels, 11)
        return {"path_mean": res.mean, "path_min_drop": res.min_drop}

    return metric


def _attack_metric(seed: int, steps: int = 10, search_steps: int = 8) -> st.SourceMetric | None:
    try:
        from attacks import minimal_epsilon
    except ImportError:
        print("skipped: minimal adversarial distance (attacks not available)")
        return None

    def metric(model, sources, outputs, labels, *, source_ids):
        # per-source seeds (random starts), independent of batching; round index 10**6 marks the attack stream
        seeds = [st.pair_seed(seed, 10**6, i) for i in source_ids]
        res = minimal_epsilon(model, sources, labels, norm="linf", max_eps=0.1, search_steps=search_steps,
                              steps=steps, seed=seeds)
        return [{"min_adv_linf": float(e) if math.isfinite(float(e)) else None} for e in res.epsilon]

    return metric


# ----------------------------------------------------------------------------------------------- tables, figure


def study_tables(records: Sequence[dict[str, Any]], training: dict[str, Any], order: Sequence[str],
                 min_accuracy: float = 0.0) -> dict[str, Any]:
    """One row per (backbone, domain): mean +- std and median of every measured column, plus the ratio of each
    backbone's median RMS-l2 reached (robust to the few traversals that stall far from their target) and mean hull
    fraction to the ImageNet backbone's, on the same domain. A trained backbone kept out of LST (accuracy below
    `min_accuracy`) gets one row with its accuracy and domain 'none (LST skipped)'."""
    records = sorted({r['key']: r for r in reversed(list(records))}.values(), key=lambda r: record_sort_key(r['key']))
    rows: list[dict[str, Any]] = []
    for kind in ("lst", "hull", "attack"):
        sub = [dict(r, backbone=r["model"].split("/")[0], domain=r["model"].split("/")[1]) for r in records
               if r["kind"] == kind]
        if kind == "lst":
            for r in sub:
                r["cross_class"] = float(r["source_label"] != r["target_label"])
        for row in st.summarize(sub, ["backbone", "domain"], [c for c in COLUMNS if c != "accuracy"]):
            match = next((x for x in rows if x["backbone"] == row["backbone"] and x["domain"] == row["domain"]), None)
            if match is None:
                rows.append(row)
            else:
                match.update({k: v for k, v in row.items() if k.endswith(("_mean", "_std", "_median", "_n"))})
    for kind in order:
        acc = training.get(kind, {}).get("test_accuracy")
        if acc is not None and acc < min_accuracy and not any(r["backbone"] == kind for r in rows):
            rows.append({"backbone": kind, "domain": "none (LST skipped)", "n": 0})
    for row in rows:
        acc = training.get(row["backbone"], {}).get("test_accuracy")
        if acc is not None:
            row["accuracy_mean"], row["accuracy_std"] = acc, None
    rank = {b: i for i, b in enumerate(order)}
    rows.sort(key=lambda r: (r["domain"], rank.get(r["backbone"], 99)))
    for row in rows:
        ref = next((x for x in rows if x["backbone"] == "imagenet" and x["domain"] == row["domain"]), None)
        for stat in ("rms_l2_median", "fraction@0.2_mean"):
            if ref is not None and stat in row and ref.get(stat):
                row[f"{stat}_vs_imagenet"] = row[stat] / ref[stat]
    return {"rows": rows}


def _verdict(rows: Sequence[dict[str, Any]], min_accuracy: float = 0.7) -> str:
    """The answer in words: lower RMS-l2 reached at the kept confidence = more under-sensitive."""
    lines = []
    for domain in sorted({r["domain"] for r in rows}):
        sub = [r for r in rows if r["domain"] == domain and "rms_l2_median" in r]
        if not sub:
            continue
        ranked = sorted(sub, key=lambda r: r["rms_l2_median"])
        best = ranked[0]
        tie = len(ranked) > 1 and ranked[1]["rms_l2_median"] <= best["rms_l2_median"] * 1.01
        parts = [f"{r['backbone']} {r['rms_l2_median']:.4f}"
                 + (f" ({r['rms_l2_median_vs_imagenet']:.2f}x ImageNet)"
                    if "rms_l2_median_vs_imagenet" in r else "") + f" [mean {r['rms_l2_mean']:.4f}]" for r in sub]
        lines.append(f"{domain} pairs: median RMS-l2 left to the target with the source class kept [mean, pulled "
                     "up by traversals that stall]: " + ", ".join(parts)
                     + (f". No clear winner: {best['backbone']} and {ranked[1]['backbone']} are within 1%."
                        if tie else f". Most under-sensitive (gets closest to other galaxies while keeping its "
                                    f"class): {best['backbone']}."))
    weak = [r["backbone"] for r in rows if (r.get("accuracy_mean") or 1) < min_accuracy]
    if weak:
        lines.append(f"Caution: {', '.join(sorted(set(weak)))} reached < {min_accuracy:.0%} test accuracy on "
                     "simulated galaxies; read its columns with care (below --min-accuracy: kept out of LST); "
                     "scale up --train/--epochs.")
    return "\n\n".join(lines) + ("\n\n'galaxy-proxy' is pretrained here on simulated galaxies: a proxy for Zoobot, "
                                 "not Zoobot." if any(r["backbone"] == "galaxy-proxy" for r in rows) else "")


def _label(backbone: str) -> str:
    return backbone + (" (proxy for Zoobot)" if backbone == "galaxy-proxy" else "")


def _figure(out: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Test accuracy per backbone, then one panel per measured column: bars per domain and backbone (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in ("rms_l2", "ssim", "final_confidence", "path_mean", "fraction@0.2", "min_adv_linf")
            if any(f"{c}_mean" in r for r in rows)]
    if not rows:
        return None
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    colours = {b: f"C{i}" for i, b in enumerate(backbones)}
    domains = sorted({r["domain"] for r in rows if "rms_l2_mean" in r})
    fig, axes = plt.subplots(1, len(cols) + 1, figsize=(3.0 * (len(cols) + 1), 3.6), squeeze=False)
    ax = axes[0][0]
    accs = [next((r.get("accuracy_mean") for r in rows if r["backbone"] == b), None) for b in backbones]
    ax.bar(range(len(backbones)), [np.nan if a is None else a for a in accs],
           color=[colours[b] for b in backbones])
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(range(len(backbones)))
    ax.set_xticklabels(backbones, rotation=30, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title("sim test accuracy (chance 0.5)", fontsize=9)
    for ax, col in zip(axes[0][1:], cols):
        w = 0.8 / len(backbones)
        for i, b in enumerate(backbones):
            vals = [next((r for r in rows if r["backbone"] == b and r["domain"] == d), {}) for d in domains]
            ax.bar([j + i * w for j in range(len(domains))], [v.get(f"{col}_mean", np.nan) for v in vals], w,
                   yerr=[v.get(f"{col}_std") or 0 for v in vals], capsize=2, color=colours[b], label=_label(b))
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(domains))])
        ax.set_xticklabels(domains)
        ax.set_title(COLUMNS.get(col, col), fontsize=9)
    handles = [matplotlib.patches.Patch(color=colours[b], label=_label(b)) for b in backbones]
    fig.legend(handles=handles, loc="lower center", ncol=len(backbones), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Under-sensitivity by backbone: lower RMS-l2 / higher SSIM, confidence, hull fraction = more "
                 "under-sensitive; min adversarial l-inf = over-sensitivity", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return st.figure_to_png(fig, out / "under_sensitivity.png")


# ----------------------------------------------------------------------------------------------- the run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="efficientnet_lite0", help="timm architecture shared by all backbones")
    p.add_argument("--backbones", default="imagenet,zoobot,galaxy-proxy,random")
    p.add_argument("--imagenet-weights", default=None)
    p.add_argument("--zoobot-weights", default=None, help="Zoobot encoder file (e.g. from mwalmsley/zoobot-encoder-*)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--sim-fov", type=float, default=42.0,
                   help="field of view of the simulated images, arcsec (42: discs fill the frame like the real cutouts")
    p.add_argument("--min-clump-flux", type=float, default=0.03,
                   help="clumpy class: 2-8 clumps each of at least this fraction of the host's flux (up to 0.08)")
    p.add_argument("--crop", type=float, default=0.5, help="central fraction of the real cutouts kept")
    p.add_argument("--pretrain", type=int, default=2048, help="simulated galaxies for the proxy's pretraining")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--train", type=int, default=2048, help="simulated galaxies for fine-tuning")
    p.add_argument("--test", type=int, default=256, help="held-out simulated galaxies (accuracy, sim pairs)")
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs of the pretrained backbones")
    p.add_argument("--scratch-epochs", type=int, default=12,
                   help="epochs of the random-init backbone (from scratch it needs more steps to leave chance)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (warm-up, cosine decay)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-accuracy", type=float, default=0.6,
                   help="backbones below this simulated test accuracy are reported but kept out of LST")
    p.add_argument("--real", default=None, help="folder of real cutouts (default: ../shared/data/galaxies)")
    p.add_argument("--real-limit", type=int, default=0, help="real cutouts used (0: all)")
    p.add_argument("--sim-pairs", type=int, default=12, help="held-out simulated sources used (half per class)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=40, help="LST iterations (paper: 400)")
    p.add_argument("--step-size", type=float, default=None,
                   help="LST step (default: 4 / iterations, the paper's step x T = 1e-2 x 400, at most 0.25)")
    p.add_argument("--batch", type=int, default=48, help="LST pairs per batch")
    p.add_argument("--no-attacks", action="store_true")
    p.add_argument("--attack-steps", type=int, default=10, help="PGD steps per budget of the minimal-l-inf search")
    p.add_argument("--attack-search", type=int, default=8,
                   help="bisection rounds of the minimal-l-inf search (resolution 0.1 / 2**rounds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine is shared)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/zoobot_vs_imagenet")
    p.add_argument("--progress", action="store_true")


_UNSTORED = ("out", "progress", "device", "threads")  # settings that do not change the results


def _default_real() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "galaxies"


def _train_backbone(kind: str, clf: Classifier, data: dict[str, torch.Tensor], args: argparse.Namespace,
                    info: st.DistInfo) -> dict[str, Any]:
    """Pretrain (galaxy-proxy only) and fine-tune one backbone; returns its training log."""
    log: dict[str, Any] = {"description": BACKBONES[kind]}
    t0 = time.perf_counter()
    if kind == "galaxy-proxy":
        torch.manual_seed(args.seed)
        losses = pretrain_proxy(clf, data["pre_images"], data["pre_morph"], epochs=args.pretrain_epochs,
                                batch=args.batch_size, lr=args.lr, seed=args.seed + 1, device=info.device)
        log["pretrain_mse_first_last"] = [round(losses[0], 4), round(losses[-1], 4)] if losses else None
        log["pretrain_seconds"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    torch.manual_seed(args.seed)
    epochs = args.scratch_epochs if kind == "random" else args.epochs
    losses = fine_tune(clf, data["train_images"], data["train_labels"], epochs=epochs, batch=args.batch_size,
                       lr=args.lr, seed=args.seed, device=info.device)
    cls, _ = clf.predict(data["test_images"].to(info.device))
    k = max(1, len(losses) // 10)  # mean over the first and last 10% of steps (single batches are noisy)
    log.update(train_loss_first_last=[round(float(np.mean(losses[:k])), 4), round(float(np.mean(losses[-k:])), 4)]
               if losses else None, fine_tune_seconds=round(time.perf_counter() - t1, 1),
               epochs=epochs, test_accuracy=float((cls.cpu() == data["test_labels"]).float().mean()),
               test_images=int(data["test_labels"].numel()))
    return log


def run(args: argparse.Namespace) -> int:
    try:
        import detectors.simulate  # noqa: F401
    except ImportError as exc:
        print(f"skipped: zoobot_vs_imagenet (detectors.simulate not available: {exc})")
        return 1
    from safetensors.torch import load_file, save_file

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = st.init_distributed(args.device)
    out = Path(args.out)
    try:
        kinds = [k for k in args.backbones.split(",") if k]
        unknown = [k for k in kinds if k not in BACKBONES]
        if unknown:
            raise ValueError(f"unknown backbones {unknown}; choose from {list(BACKBONES)}")
        settings = {"study": "zoobot_vs_imagenet", **{k: v for k, v in vars(args).items() if k not in _UNSTORED}}
        if info.is_main:
            store = RunStore(out, "zoobot_study", settings=settings, rank=info.rank, world=info.world)
        st.barrier(info)
        if not info.is_main:
            store = RunStore(out, "zoobot_study", settings=settings, rank=info.rank, world=info.world)

        # The simulated sets, made once and cached in the folder (the settings are pinned by study.json).
        def make_task() -> dict[str, torch.Tensor]:
            x, y = simulated_set(args.train + args.test, args.size, args.seed, fov=args.sim_fov,
                                 min_clump_flux=args.min_clump_flux)
            return {"train_images": x[:args.train], "train_labels": y[:args.train],
                    "test_images": x[args.train:], "test_labels": y[args.train:]}

        data = _cached(out / "data" / "task.safetensors", make_task, info)
        if "galaxy-proxy" in kinds:
            def make_pretraining() -> dict[str, torch.Tensor]:
                x, morph = pretraining_set(args.pretrain, args.size, args.seed + 1000, fov=args.sim_fov)
                return {"pre_images": x, "pre_morph": morph}

            data.update(_cached(out / "data" / "pretrain.safetensors", make_pretraining, info))
        xte, yte = data["test_images"], data["test_labels"]

        # Backbones: rank 0 trains (or reuses saved checkpoints); the others wait and load.
        ckpt = out / "checkpoints"
        train_log_path = out / "training.json"
        training = json.loads(train_log_path.read_text()) if train_log_path.exists() else {}
        models: list[tuple[str, Classifier]] = []
        for kind in kinds:
            clf = build_backbone(kind, args.arch, imagenet_weights=args.imagenet_weights,
                                 zoobot_weights=args.zoobot_weights)
            if clf is None:
                continue
            path = ckpt / f"{kind}.safetensors"
            if info.is_main and not (path.exists() and kind in training):
                log = _train_backbone(kind, clf, data, args, info)
                ckpt.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(tmp))
                os.replace(tmp, path)
                training[kind] = log
                st.write_json(training, train_log_path)
                print(f"{kind}: test accuracy {log['test_accuracy']:.3f} on {log['test_images']} simulated galaxies "
                      f"(fine-tuned in {log['fine_tune_seconds']} s"
                      + (f", pretrained in {log['pretrain_seconds']} s" if "pretrain_seconds" in log else "") + ")",
                      flush=True)
            elif info.is_main:
                print(f"{kind}: reusing {path} (test accuracy {training[kind]['test_accuracy']:.3f})", flush=True)
            st.barrier(info)
            load_weights(clf.model, load_file(str(path)))
            clf.to(info.device).eval()
            models.append((kind, clf))
        training = st.broadcast_object(
            json.loads(train_log_path.read_text()) if info.is_main and train_log_path.exists() else None, info) \
            or training
        if not models:
            print("no backbone available")
            return 1
        measured = [(k, m) for k, m in models if training[k]["test_accuracy"] >= args.min_accuracy]
        for k, _ in models:
            if (k, _) not in measured:
                print(f"skipped LST for {k}: test accuracy {training[k]['test_accuracy']:.3f} < --min-accuracy "
                      f"{args.min_accuracy}")
        # the paper's settings, with the step scaled so that step x iterations stays the paper's 1e-2 x 400
        step = args.step_size or min(1e-2 * 400 / max(args.iterations, 1), 0.25)
        cfg = LSTConfig(step_size=step, iterations=args.iterations, threshold=0.2, adv_eps=2e-3, channels_last=True)
        protocol = st.ProtocolConfig(rounds=args.rounds, seed=args.seed, pairs_per_batch=args.batch)
        pair_metrics = {k: v for k, v in (("path", _path_metric()),) if v is not None}
        source_metrics: dict[str, st.SourceMetric] = {}
        if args.rounds >= 2:
            source_metrics["hull"] = hull_metric()
        if not args.no_attacks:
            atk = _attack_metric(args.seed, args.attack_steps, args.attack_search)
            if atk is not None:
                source_metrics["attack"] = atk
        # Pools: simulated held-out sources every measured backbone classifies correctly, balanced over the classes
        # (targets of the other class); real cutouts, where each backbone's own prediction is the source class.
        domains: list[tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        if measured:
            sim_pool, _ = st.select_pool([m for _, m in measured], xte, yte)
            c0, c1 = sim_pool[yte[sim_pool] == 0], sim_pool[yte[sim_pool] == 1]
            m = min(len(c0), len(c1), args.sim_pairs // 2)
            if m >= 1:
                domains.append(("sim", xte, yte, torch.cat([c0[:m], c1[:m]]).sort().values))
            else:
                print("skipped: simulated pairs (no correctly classified source of each class)")
            real_dir = Path(args.real) if args.real else _default_real()
            if real_dir.is_dir():
                real, _names = real_cutouts(real_dir, args.size, args.crop, args.real_limit or None)
                domains.append(("real", real, None, torch.arange(real.shape[0])))
            else:
                print(f"skipped: real pairs ({real_dir} not found)")
        mine: list[dict[str, Any]] = []
        for domain, x, y, pool in domains:
            ids = torch.arange(pool.numel())
            targets = derangement_pairs(y[pool] if y is not None else ids, protocol.rounds, args.seed)
            for kind, clf in measured:
                t0 = time.perf_counter()
                lab = y if y is not None else clf.predict(x.to(info.device))[0].cpu()
                mine += st.run_pair_protocol(clf, f"{kind}/{domain}", x, lab, pool, targets, store, config=cfg,
                                             protocol=protocol, info=info, pair_metrics=pair_metrics,
                                             source_metrics=source_metrics, extra={"domain": domain},
                                             progress=args.progress)
                if info.is_main:
                    print(f"{kind}/{domain}: {pool.numel()} sources x {protocol.rounds} rounds measured in "
                          f"{time.perf_counter() - t0:.1f} s", flush=True)
        records = st.gather_records(mine, info)
        if records is None:
            return 0
        tables = study_tables(records, training, kinds, args.min_accuracy)
        tables["training"] = training
        tables["lst_config"] = cfg.to_dict()
        tables["verdict"] = _verdict(tables["rows"], max(args.min_accuracy, 0.7))
        st.write_json(tables, out / "tables.json")
        st.write_csv(tables["rows"], out / "table.csv")
        st.write_csv(records, out / "records.csv")
        shown = st.display_rows(tables["rows"], ["backbone", "domain"], COLUMNS)
        for r, d in zip(tables["rows"], shown):
            if "rms_l2_median" in r:
                d["RMS-l2 median"] = f"{r['rms_l2_median']:.4g}"
            if "rms_l2_median_vs_imagenet" in r:
                d["RMS-l2 median / ImageNet's"] = f"{r['rms_l2_median_vs_imagenet']:.3f}"
            d["backbone"] = _label(r["backbone"])
        fig = _figure(out, tables["rows"])
        st.write_html_report(out / "report.html", "Zoobot vs ImageNet: under-sensitivity of galaxy classifiers", [
            {"text": tables["verdict"]},
            {"heading": "Backbones (arch " + args.arch + ")",
             "table": [{"backbone": _label(k), "start": BACKBONES[k],
                        **{kk: str(v) for kk, v in training.get(k, {}).items() if kk != "description"}}
                       for k, _ in models]},
            {"heading": "Under-sensitivity (n = pairs; per-source columns over sources)", "table": shown},
            {"figure": fig, "caption": "Mean ± std per backbone and domain. galaxy-proxy = pretrained here on "
                                       "simulated galaxies, a proxy for Zoobot, not Zoobot."},
            {"heading": "Settings", "pre": json.dumps({"study": settings, "lst": cfg.to_dict()}, indent=1)},
        ])
        print("\ntest accuracy (simulated clumpy vs not): " + ", ".join(
            f"{_label(k)} {training[k]['test_accuracy']:.3f}" for k, _ in models))
        print(st.markdown_table(shown))
        print()
        print(tables["verdict"])
        print(f"\nreport: {out / 'report.html'} ({time.perf_counter() - started:.0f} s)")
    finally:
        st.finish_distributed(info)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.zoobot_vs_imagenet", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
