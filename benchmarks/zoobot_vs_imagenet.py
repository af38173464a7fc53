"""Is a galaxy-domain backbone more or less under-sensitive than an ImageNet one? One architecture, four starts:

(a) `imagenet`: ImageNet weights (efficientnet_lite0: the offline weights of `imagenet-lite0`; other archs need
    `--imagenet-weights`); (b) `zoobot`: Zoobot encoder weights from a local file (`--zoobot-weights`; skipped, and
    its column left out, when not given); (c) `galaxy-proxy`: the same architecture pretrained HERE on simulated
    galaxies (regressing their simulated morphology: clump and star counts, disk size, axis ratio, bulge fraction,
    brightness), labelled "a proxy for Zoobot" in every table and figure, since it is not Zoobot; (d) `random`.

Each is fine-tuned as a clumpy / not-clumpy classifier on simulated galaxies (`detectors.simulate`: half without
clumps, half with 2-8). Then, on galaxy pairs (real cutouts from `--real` and held-out simulated ones), LST
(`run_pair_protocol`, resumable and shardable like every study) measures how close to a target galaxy the model lets
an image go while keeping its class: RMS-l2 / l-inf / SSIM to the target, the final confidence, the straight-path
confidence (path linearity, `geometry.path_confidence`), the triangle-hull fractions and, where `attacks` exists, the
minimal l-inf adversarial distance of each source (over-sensitivity, for contrast).

    python -m benchmarks.zoobot_vs_imagenet                       # CPU default: 64 px, small sets, a few minutes
    python -m benchmarks.zoobot_vs_imagenet --size 128 --train 4000 --epochs 5 --pretrain 8000 --iterations 400 \\
        --rounds 5 --real-limit 0 --sim-pairs 100 --zoobot-weights zoobot_effnetb0.safetensors --arch efficientnet_b0 \\
        --imagenet-weights effnetb0_imagenet.safetensors
    torchrun --nproc-per-node 2 -m benchmarks.zoobot_vs_imagenet --out runs/zoobot

Output: the study folder of `blindspots.studies` (records, arrays, study.json), checkpoints/ (fine-tuned backbones),
table.csv, tables.json, under_sensitivity.png and report.html.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from blindspots import Classifier, LSTConfig, derangement_pairs
from blindspots import studies as st
from blindspots.models import IMAGENET_MEAN, IMAGENET_STD, load_classifier, load_weights

__all__ = ["BACKBONES", "simulated_set", "real_cutouts", "build_backbone", "pretrain_proxy", "fine_tune",
           "study_tables", "add_arguments", "run", "main"]

BACKBONES = {
    "imagenet": "ImageNet weights",
    "zoobot": "Zoobot weights (local file)",
    "galaxy-proxy": "galaxy-proxy: pretrained here on simulated galaxies (a proxy for Zoobot, not Zoobot)",
    "random": "random init",
}
COLUMNS = {"accuracy": "sim test accuracy", "rms_l2": "RMS-l2 to target", "linf": "l-inf to target",
           "ssim": "SSIM to target", "final_confidence": "final confidence", "path_mean": "straight-path mean p",
           "path_min_drop": "straight-path min (p - p0)", "fraction@0.2": "hull frac p>=p_src-0.2",
           "min_adv_linf": "min adversarial l-inf"}


# ----------------------------------------------------------------------------------------------- data


def _sim_config(size: int, crop: float):
    from detectors.simulate import SimConfig

    # match the field of view of the real cutouts (424 px at 0.396"/px, central `crop` fraction kept)
    return SimConfig(image_size=size, pixel_scale=0.396 * 424 * crop / size)


def simulated_set(n: int, size: int, crop: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n simulated galaxies, half without clumps and half with 2-8: images, clumpy labels (1 = at least one clump
    present) and standardised morphology targets for pretraining (N, 6)."""
    from detectors.simulate import simulate

    cfg = _sim_config(size, crop)
    half = n // 2
    parts = [simulate(half, cfg.replace(n_clumps=(0, 0)), seed=seed),
             simulate(n - half, cfg.replace(n_clumps=(2, 8)), seed=seed + 1)]
    images = torch.cat([p.images for p in parts])
    params = [q for p in parts for q in p.params]
    clumps = torch.tensor([int((q.label == 1).sum()) for q in params])
    morph = torch.tensor([[float((q.label == 1).sum()), float((q.label == 2).sum()), math.log(q.disk_re),
                           q.axis_ratio, q.bulge_fraction, math.log(q.flux_r)] for q in params])
    morph = (morph - morph.mean(0)) / morph.std(0).clamp_min(1e-6)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # interleave the two halves
    return images[order].clamp(0, 1), (clumps[order] > 0).long(), morph[order]


def real_cutouts(folder: str | Path, size: int, crop: float, limit: int | None) -> tuple[torch.Tensor, list[str]]:
    """Real galaxy cutouts (every image under `folder`, sorted), central `crop` fraction resized to `size`."""
    from skimage import io

    from blindspots.data import IMAGE_SUFFIXES, prepare, to_tensor

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images under {folder}")
    return torch.stack([prepare(to_tensor(io.imread(p)), size, crop) for p in files]), \
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


def _train(clf: Classifier, images: torch.Tensor, targets: torch.Tensor, loss_fn, *, epochs: int, batch: int,
           lr: float, seed: int, device: torch.device) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    clf.to(device).train()
    for p in clf.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            if idx.numel() < 2:
                continue
            x = images[idx].to(device)
            x = torch.where(torch.rand(x.shape[0], 1, 1, 1, generator=gen).to(device) < 0.5, x.flip(-1), x)
            loss = loss_fn(clf(x), targets[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    clf.eval()
    return losses


def pretrain_proxy(clf: Classifier, images: torch.Tensor, morph: torch.Tensor, *, epochs: int, batch: int,
                   seed: int, device: torch.device) -> list[float]:
    """Galaxy-domain pretraining of (c): regress the standardised simulated morphology (MSE); the head is then reset."""
    clf.model.reset_classifier(morph.shape[1])
    losses = _train(clf, images, morph, nn.functional.mse_loss, epochs=epochs, batch=batch, lr=1e-3, seed=seed,
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


def _attack_metric(seed: int) -> st.SourceMetric | None:
    try:
        from attacks import minimal_epsilon
    except ImportError:
        print("skipped: minimal adversarial distance (attacks not available)")
        return None

    def metric(model, sources, outputs, labels, *, source_ids):
        # per-source seeds (random starts), independent of batching; round index 10**6 marks the attack stream
        seeds = [st.pair_seed(seed, 10**6, i) for i in source_ids]
        res = minimal_epsilon(model, sources, labels, norm="linf", max_eps=0.1, search_steps=8, steps=10,
                              seed=seeds)
        return [{"min_adv_linf": float(e) if math.isfinite(float(e)) else None} for e in res.epsilon]

    return metric


# ----------------------------------------------------------------------------------------------- tables, figure


def study_tables(records: Sequence[dict[str, Any]], training: dict[str, Any], order: Sequence[str]
                 ) -> dict[str, Any]:
    """One row per (backbone, domain): mean +- std of every measured column, plus the ratio of each backbone's
    mean RMS-l2 reached (and hull fraction) to the ImageNet backbone's, on the same domain."""
    records = st._dedup_sorted(records)
    rows = []
    for kind in ("lst", "hull", "attack"):
        sub = [dict(r, backbone=r["model"].split("/")[0], domain=r["model"].split("/")[1]) for r in records
               if r["kind"] == kind]
        for row in st.summarize(sub, ["backbone", "domain"], [c for c in COLUMNS if c != "accuracy"]):
            match = next((x for x in rows if x["backbone"] == row["backbone"] and x["domain"] == row["domain"]), None)
            if match is None:
                rows.append(row)
            else:
                match.update({k: v for k, v in row.items() if k.endswith(("_mean", "_std", "_n"))})
    for row in rows:
        acc = training.get(row["backbone"], {}).get("test_accuracy")
        if acc is not None:
            row["accuracy_mean"], row["accuracy_std"] = acc, None
    rank = {b: i for i, b in enumerate(order)}
    rows.sort(key=lambda r: (r["domain"], rank.get(r["backbone"], 99)))
    for row in rows:
        ref = next((x for x in rows if x["backbone"] == "imagenet" and x["domain"] == row["domain"]), None)
        for col in ("rms_l2", "fraction@0.2"):
            if ref is not None and f"{col}_mean" in row and ref.get(f"{col}_mean"):
                row[f"{col}_vs_imagenet"] = row[f"{col}_mean"] / ref[f"{col}_mean"]
    return {"rows": rows}


def _verdict(rows: Sequence[dict[str, Any]]) -> str:
    """The answer in words: lower RMS-l2 reached at the kept confidence = more under-sensitive."""
    lines = []
    for domain in sorted({r["domain"] for r in rows}):
        sub = [r for r in rows if r["domain"] == domain and "rms_l2_mean" in r]
        if not sub:
            continue
        ranked = sorted(sub, key=lambda r: r["rms_l2_mean"])
        best = ranked[0]
        tie = len(ranked) > 1 and ranked[1]["rms_l2_mean"] <= best["rms_l2_mean"] * 1.01
        parts = [f"{r['backbone']} {r['rms_l2_mean']:.4f}" + (f" ({r['rms_l2_vs_imagenet']:.2f}x ImageNet)"
                                                              if "rms_l2_vs_imagenet" in r else "") for r in sub]
        lines.append(f"{domain} pairs: mean RMS-l2 left to the target with the source class kept: " + ", ".join(parts)
                     + (f". No clear winner: {best['backbone']} and {ranked[1]['backbone']} are within 1%."
                        if tie else f". Most under-sensitive (gets closest to other galaxies while keeping its "
                                    f"class): {best['backbone']}."))
    weak = [r["backbone"] for r in rows if (r.get("accuracy_mean") or 1) < 0.7]
    if weak:
        lines.append(f"Caution: {', '.join(sorted(set(weak)))} reached < 70% test accuracy on simulated galaxies; "
                     "scale up --train/--epochs before reading the comparison.")
    return "\n\n".join(lines) + ("\n\n'galaxy-proxy' is pretrained here on simulated galaxies: a proxy for Zoobot, "
                                 "not Zoobot." if any(r["backbone"] == "galaxy-proxy" for r in rows) else "")


def _figure(out: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in ("rms_l2", "ssim", "final_confidence", "path_mean", "fraction@0.2", "min_adv_linf")
            if any(f"{c}_mean" in r for r in rows)]
    if not cols:
        return None
    domains = sorted({r["domain"] for r in rows})
    fig, axes = plt.subplots(1, len(cols), figsize=(3.1 * len(cols), 3.4), squeeze=False)
    for ax, col in zip(axes[0], cols):
        backbones = list(dict.fromkeys(r["backbone"] for r in rows))
        w = 0.8 / len(backbones)
        for i, b in enumerate(backbones):
            vals = [next((r for r in rows if r["backbone"] == b and r["domain"] == d), {}) for d in domains]
            ax.bar([j + i * w for j in range(len(domains))], [v.get(f"{col}_mean", np.nan) for v in vals], w,
                   yerr=[v.get(f"{col}_std") or 0 for v in vals], capsize=2,
                   label=b + (" (proxy for Zoobot)" if b == "galaxy-proxy" else ""))
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(domains))])
        ax.set_xticklabels(domains)
        ax.set_title(COLUMNS.get(col, col), fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Under-sensitivity by backbone (lower RMS-l2 / higher SSIM, confidence, hull fraction = more "
                 "under-sensitive)", fontsize=9)
    fig.tight_layout()
    return st.figure_to_png(fig, out / "under_sensitivity.png")


# ----------------------------------------------------------------------------------------------- the run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="efficientnet_lite0", help="timm architecture shared by all backbones")
    p.add_argument("--backbones", default="imagenet,zoobot,galaxy-proxy,random")
    p.add_argument("--imagenet-weights", default=None)
    p.add_argument("--zoobot-weights", default=None, help="Zoobot encoder file (e.g. from mwalmsley/zoobot-encoder-*)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--crop", type=float, default=0.5, help="central fraction of the real cutouts kept")
    p.add_argument("--pretrain", type=int, default=384, help="simulated galaxies for the proxy's pretraining")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--train", type=int, default=384, help="simulated galaxies for fine-tuning")
    p.add_argument("--test", type=int, default=128, help="held-out simulated galaxies (accuracy, sim pairs)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--real", default=None, help="folder of real cutouts (default: ../shared/data/galaxies)")
    p.add_argument("--real-limit", type=int, default=6, help="real cutouts used (0: all)")
    p.add_argument("--sim-pairs", type=int, default=6, help="held-out simulated sources used")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=40, help="LST iterations (paper: 400)")
    p.add_argument("--step-size", type=float, default=None,
                   help="LST step (default: 4 / iterations, the paper's step x T = 1e-2 x 400, at most 0.25)")
    p.add_argument("--batch", type=int, default=24, help="LST pairs per batch")
    p.add_argument("--no-attacks", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/zoobot_vs_imagenet")
    p.add_argument("--progress", action="store_true")


def _default_real() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "galaxies"


def run(args: argparse.Namespace) -> int:
    try:
        import detectors.simulate  # noqa: F401
    except ImportError as exc:
        print(f"skipped: zoobot_vs_imagenet (detectors.simulate not available: {exc})")
        return 1
    from safetensors.torch import load_file, save_file

    info = st.init_distributed(args.device)
    out = Path(args.out)
    try:
        kinds = [k for k in args.backbones.split(",") if k]
        settings = {"study": "zoobot_vs_imagenet", **{k: v for k, v in vars(args).items()
                                                      if k not in ("out", "progress", "device")}}
        if info.is_main:
            store = st.RecordStore(out, settings, rank=info.rank, world=info.world)
        st.barrier(info)
        if not info.is_main:
            store = st.RecordStore(out, settings, rank=info.rank, world=info.world)
        torch.manual_seed(args.seed)
        n_total = args.train + args.test
        images, labels, morph = simulated_set(n_total, args.size, args.crop, args.seed)
        xtr, ytr, xte, yte = images[:args.train], labels[:args.train], images[args.train:], labels[args.train:]
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
            if info.is_main and not path.exists():
                log: dict[str, Any] = {"description": BACKBONES[kind]}
                if kind == "galaxy-proxy":
                    pre = simulated_set(args.pretrain, args.size, args.crop, args.seed + 1000)
                    torch.manual_seed(args.seed)
                    clf.model.reset_classifier(6)
                    losses = pretrain_proxy(clf, pre[0], pre[2], epochs=args.pretrain_epochs, batch=args.batch_size,
                                            seed=args.seed, device=info.device)
                    log["pretrain_loss_first_last"] = [losses[0], losses[-1]]
                losses = fine_tune(clf, xtr, ytr, epochs=args.epochs, batch=args.batch_size, lr=args.lr,
                                   seed=args.seed, device=info.device)
                cls, _ = clf.predict(xte.to(info.device))
                log.update(train_loss_first_last=[losses[0], losses[-1]],
                           test_accuracy=float((cls.cpu() == yte).float().mean()))
                ckpt.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(path))
                training[kind] = log
                st.write_json(training, train_log_path)
                print(f"{kind}: {log}")
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
        # the paper's settings, with the step scaled so that step x iterations stays the paper's 1e-2 x 400
        step = args.step_size or min(1e-2 * 400 / max(args.iterations, 1), 0.25)
        cfg = LSTConfig(step_size=step, iterations=args.iterations, threshold=0.2, adv_eps=2e-3)
        protocol = st.ProtocolConfig(rounds=args.rounds, seed=args.seed, pairs_per_batch=args.batch)
        pair_metrics = {k: v for k, v in (("path", _path_metric()),) if v is not None}
        source_metrics: dict[str, st.SourceMetric] = {}
        try:
            from benchmarks.lst_tables import hull_metric

            if args.rounds >= 2:
                source_metrics["hull"] = hull_metric()
        except ImportError:
            print("skipped: hull fractions (blindspots.geometry not available)")
        if not args.no_attacks:
            atk = _attack_metric(args.seed)
            if atk is not None:
                source_metrics["attack"] = atk
        # Pools: simulated held-out sources every backbone classifies correctly (targets of the other class);
        # real cutouts, where each backbone's own prediction is the source class (targets: any other cutout).
        sim_pool, _ = st.select_pool([m for _, m in models], xte, yte)
        sim_pool = sim_pool[:args.sim_pairs]
        real_dir = Path(args.real) if args.real else _default_real()
        domains: list[tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        if sim_pool.numel() >= 2 and len(set(yte[sim_pool].tolist())) == 2:
            pool = sim_pool
            # balance the classes so a derangement across classes exists
            c0, c1 = pool[yte[pool] == 0], pool[yte[pool] == 1]
            m = min(len(c0), len(c1))
            pool = torch.cat([c0[:m], c1[:m]]).sort().values
            domains.append(("sim", xte, yte, pool))
        else:
            print("skipped: simulated pairs (fewer than 2 correctly classified sources of each class)")
        if real_dir.is_dir():
            real, names = real_cutouts(real_dir, args.size, args.crop, args.real_limit or None)
            domains.append(("real", real, None, torch.arange(real.shape[0])))
        else:
            print(f"skipped: real pairs ({real_dir} not found)")
        mine: list[dict[str, Any]] = []
        for domain, x, y, pool in domains:
            ids = torch.arange(pool.numel())
            targets = derangement_pairs(y[pool] if y is not None else ids, protocol.rounds, args.seed)
            for kind, clf in models:
                lab = y if y is not None else clf.predict(x.to(info.device))[0].cpu()
                mine += st.run_pair_protocol(clf, f"{kind}/{domain}", x, lab, pool, targets, store, config=cfg,
                                             protocol=protocol, info=info, pair_metrics=pair_metrics,
                                             source_metrics=source_metrics, extra={"domain": domain},
                                             progress=args.progress)
        records = st.gather_records(mine, info)
        if records is None:
            return 0
        tables = study_tables(records, training, kinds)
        tables["training"] = training
        tables["lst_config"] = cfg.to_dict()
        tables["verdict"] = _verdict(tables["rows"])
        st.write_json(tables, out / "tables.json")
        st.write_csv(tables["rows"], out / "table.csv")
        st.write_csv(records, out / "records.csv")
        shown = st.display_rows(tables["rows"], ["backbone", "domain"], COLUMNS)
        for r, d in zip(tables["rows"], shown):
            if "rms_l2_vs_imagenet" in r:
                d["RMS-l2 / ImageNet's"] = f"{r['rms_l2_vs_imagenet']:.3f}"
            if r["backbone"] == "galaxy-proxy":
                d["backbone"] = "galaxy-proxy (proxy for Zoobot)"
        fig = _figure(out, tables["rows"])
        st.write_html_report(out / "report.html", "Zoobot vs ImageNet: under-sensitivity of galaxy classifiers", [
            {"text": tables["verdict"]},
            {"heading": "Backbones (arch " + args.arch + ")",
             "table": [{"backbone": k, "start": BACKBONES[k], **{kk: str(v) for kk, v in training.get(k, {}).items()
                                                                  if kk != "description"}} for k, _ in models]},
            {"heading": "Under-sensitivity (n = pairs; per-source columns over sources)", "table": shown},
            {"figure": fig, "caption": "Mean ± std per backbone and domain. " + "galaxy-proxy = pretrained here on "
                                       "simulated galaxies, a proxy for Zoobot."},
            {"heading": "LST settings", "pre": json.dumps(cfg.to_dict(), indent=1)},
        ])
        print(st.markdown_table(shown))
        print()
        print(tables["verdict"])
        print(f"\nreport: {out / 'report.html'}")
    finally:
        st.finish_distributed(info)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.zoobot_vs_imagenet", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
