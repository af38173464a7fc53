"""The run: options, the proxy encoder, fine-tuning every backbone at every seed, the paired LST measurement, and
the analysis handed to `report`."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from blindspots import Classifier, LSTConfig
from blindspots import studies as st
from blindspots.cli import UsageError, add_common_options, positive_int, resolve_device
from blindspots.models import load_weights
from blindspots.store import RunStore

from . import backbones as bb
from . import data as dt
from . import proxy as px

__all__ = ["add_arguments", "run", "measure", "analyse"]

_UNSTORED = ("out", "quiet", "device", "threads", "restart", "proxy_dir")  # do not change the results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="efficientnet_lite0", help="timm architecture shared by all backbones")
    p.add_argument("--backbones", default="imagenet,zoobot,galaxy-proxy",
                   help="comma list of imagenet, zoobot, galaxy-proxy, random (zoobot needs --zoobot-weights)")
    p.add_argument("--seeds", default="0,1", help="fine-tuning seeds, comma list (a full run: 0,1,2,3,4)")
    p.add_argument("--imagenet-weights", default=None, metavar="FILE",
                   help="ImageNet weights of --arch (timm layout; default for efficientnet_lite0: offline ones)")
    p.add_argument("--zoobot-weights", default=None, metavar="FILE",
                   help="Zoobot encoder file (a local copy of hf_hub:mwalmsley/zoobot-encoder-<arch>)")
    p.add_argument("--proxy-encoder", default=None, metavar="FILE", help="use this galaxy-proxy encoder file")
    p.add_argument("--proxy-dir", default=None, metavar="DIR",
                   help="where the proxy is pretrained and kept for reuse (default: blindspots-out/zoobot-proxy/KEY)")
    p.add_argument("--size", type=positive_int, default=64)
    p.add_argument("--sim-fov", type=float, default=42.0, help="field of view of the simulated images, arcsec")
    p.add_argument("--min-clump-flux", type=float, default=0.03,
                   help="clumpy class: 2-8 clumps each of at least this fraction of the host's flux (up to 0.08)")
    p.add_argument("--crop", type=float, default=0.5, help="central fraction of the real cutouts kept")
    p.add_argument("--proxy-init", choices=("imagenet", "random"), default="imagenet",
                   help="the proxy's start before its galaxy training (imagenet: the same ImageNet weights)")
    p.add_argument("--pretrain", type=positive_int, default=8192, help="simulated galaxies for the proxy")
    p.add_argument("--pretrain-epochs", type=positive_int, default=6)
    p.add_argument("--probe", type=positive_int, default=768, help="held-out galaxies of the proxy's linear probe")
    p.add_argument("--train", type=positive_int, default=1024, help="simulated galaxies for fine-tuning")
    p.add_argument("--test", type=positive_int, default=256, help="held-out simulated galaxies (accuracy, pairs)")
    p.add_argument("--epochs", type=positive_int, default=4, help="fine-tuning epochs of pretrained backbones")
    p.add_argument("--scratch-epochs", type=positive_int, default=10, help="fine-tuning epochs of 'random'")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (warm-up, cosine decay)")
    p.add_argument("--min-accuracy", type=float, default=0.6,
                   help="backbones below this simulated test accuracy (any seed) are reported, kept out of LST")
    p.add_argument("--real", default=None, help="folder of real cutouts (default: ../shared/data/galaxies)")
    p.add_argument("--real-limit", type=int, default=0, help="real cutouts used (0: all)")
    p.add_argument("--sim-pairs", type=positive_int, default=24, help="held-out simulated sources (half per class)")
    p.add_argument("--rounds", type=positive_int, default=2, help="targets per source")
    p.add_argument("--step-size", type=float, default=None,
                   help="LST step (default: 4 / iterations: step x iterations as the paper's 1e-2 x 400)")
    p.add_argument("--lst-batch", type=positive_int, default=64, help="LST pairs per batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 on a shared machine)")
    add_common_options(p, "zoobot", model=None, iterations=40, batch_size=32)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be a comma list of integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def _check(args: argparse.Namespace) -> list[str]:
    """Validate the options before any work; returns the backbone kinds."""
    if args.model is not None:  # the shared --model/--weights name the Zoobot encoder
        kind, _, arch = args.model.partition(":")
        if kind != "zoobot" or not arch or args.weights is None:
            raise UsageError("--model here must be zoobot:<arch> with --weights FILE (or use --arch and "
                             "--zoobot-weights)")
        args.arch, args.zoobot_weights, args.model, args.weights = arch, args.weights, None, None
    elif args.weights is not None:
        raise UsageError("--weights needs --model zoobot:<arch> (or use --zoobot-weights)")
    kinds = [k for k in args.backbones.split(",") if k]
    unknown = [k for k in kinds if k not in bb.BACKBONES]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise UsageError(f"--backbones {args.backbones!r}: choose distinct names from {list(bb.BACKBONES)}")
    for name in ("zoobot_weights", "imagenet_weights", "proxy_encoder"):
        if getattr(args, name) and not Path(getattr(args, name)).is_file():
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file")
    if args.real and not Path(args.real).is_dir():
        raise UsageError(f"--real {args.real}: no such folder")
    if not 0 < args.crop <= 1:
        raise UsageError(f"--crop must be in (0, 1], got {args.crop}")
    return kinds


def _settings(args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    s = {k: v for k, v in vars(args).items() if k not in _UNSTORED}
    s["seeds"] = seeds
    for name in ("zoobot_weights", "imagenet_weights", "proxy_encoder"):  # by content, not by path
        if s.get(name):
            s[name] = hashlib.sha256(Path(s[name]).read_bytes()).hexdigest()[:16]
    return {"study": "zoobot_vs_imagenet", **s}


def _task(args: argparse.Namespace, out: Path, info: st.DistInfo) -> dict[str, torch.Tensor]:
    def make() -> dict[str, torch.Tensor]:
        x, y = dt.simulated_set(args.train + args.test, args.size, args.seed, fov=args.sim_fov,
                                min_clump_flux=args.min_clump_flux)
        return {"train_images": x[:args.train], "train_labels": y[:args.train],
                "test_images": x[args.train:], "test_labels": y[args.train:]}

    return dt.cached(out / "data" / "task.safetensors", make, info.is_main, lambda: st.barrier(info))


def _backbone(kind: str, seed: int, args: argparse.Namespace, proxy_file: str | None) -> Classifier | None:
    torch.manual_seed(seed)  # the random-init backbone's weights come from the fine-tuning seed
    return bb.build_backbone(kind, args.arch, imagenet_weights=args.imagenet_weights,
                             zoobot_weights=args.zoobot_weights, proxy_weights=proxy_file)


def _train_all(kinds, seeds, args, data, proxy_file, out: Path, info) -> tuple[list, dict[str, Any]]:
    """Fine-tune every backbone at every seed (rank 0; reused from checkpoints/ when present)."""
    from safetensors.torch import load_file, save_file

    log_path = out / "training.json"
    training = json.loads(log_path.read_text()) if log_path.exists() else {}
    models = []
    for kind in kinds:
        for seed in seeds:
            clf = _backbone(kind, seed, args, proxy_file)
            if clf is None:
                break
            name, path = f"{kind}/s{seed}", out / "checkpoints" / f"{kind}-s{seed}.safetensors"
            if info.is_main and not (path.exists() and name in training):
                t0 = time.perf_counter()
                epochs = args.scratch_epochs if kind == "random" else args.epochs
                losses = bb.fine_tune(clf, data["train_images"], data["train_labels"], epochs=epochs,
                                      batch=args.batch_size, lr=args.lr, seed=seed, device=info.device,
                                      progress=not args.quiet)
                cls, _ = clf.predict(data["test_images"].to(info.device))
                acc = float((cls.cpu() == data["test_labels"]).float().mean())
                training[name] = {"backbone": kind, "seed": seed, "epochs": epochs, "test_accuracy": acc,
                                  "test_images": int(data["test_labels"].numel()),
                                  "seconds": round(time.perf_counter() - t0, 1), "final_loss": losses[-1]}
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(path))
                st.write_json(training, log_path)
                print(f"{name}: test accuracy {acc:.3f} (fine-tuned in {training[name]['seconds']} s)", flush=True)
            st.barrier(info)
            load_weights(clf.model, load_file(str(path)))
            models.append((kind, seed, clf.to(info.device).eval()))
    training = st.broadcast_object(training if info.is_main else None, info)
    return models, training


def _kept_class(model, sources, outputs, targets, labels):
    """Per pair: does the model still predict the source class at the LST output?"""
    cls, _ = model.predict(outputs.to(next(model.parameters()).device))
    return {"kept_class": (cls.cpu() == labels.cpu()).float()}


def domains(models, data, args) -> list[tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]]:
    """(name, images, true labels or None, pool, targets): simulated held-out sources every model classifies
    correctly (balanced, other-class targets) and real cutouts (targets of another consensus-predicted class)."""
    xte, yte = data["test_images"], data["test_labels"]
    pool, _ = st.select_pool([m for _, _, m in models], xte, yte)
    c0, c1 = pool[yte[pool] == 0], pool[yte[pool] == 1]
    m = min(len(c0), len(c1), args.sim_pairs // 2)
    out = []
    if m >= 1:
        sim_pool = torch.cat([c0[:m], c1[:m]]).sort().values
        out.append(("sim", xte, yte, sim_pool, dt.sim_targets(yte[sim_pool], args.rounds, args.seed)))
    else:
        print("skipped: simulated pairs (no correctly classified source of each class)")
    real_dir = Path(args.real) if args.real else dt.default_real()
    if real_dir.is_dir():
        real, _ = dt.real_cutouts(real_dir, args.size, args.crop, args.real_limit or None)
        votes = torch.stack([mdl.predict(real.to(next(mdl.parameters()).device))[0].cpu() for _, _, mdl in models])
        consensus = (votes.float().mean(0) > 0.5).long()
        out.append(("real", real, None, torch.arange(real.shape[0]),
                    dt.real_targets(consensus, args.rounds, args.seed)))
    else:
        print(f"skipped: real pairs ({real_dir} not found)")
    return out


def measure(models: Sequence[tuple[str, int, Classifier]], doms, store: RunStore, cfg: LSTConfig,
            protocol: st.ProtocolConfig, info: st.DistInfo, progress: bool = False) -> list[dict[str, Any]]:
    """LST on the same pairs from the same start noise (seeds depend on the protocol seed, round and source only)
    for every (backbone, fine-tuning seed); real sources take each model's own prediction as their class."""
    mine: list[dict[str, Any]] = []
    for domain, x, y, pool, targets in doms:
        for kind, seed, clf in models:
            t0 = time.perf_counter()
            lab = y if y is not None else clf.predict(x.to(info.device))[0].cpu()
            mine += st.run_pair_protocol(clf, f"{kind}/s{seed}/{domain}", x, lab, pool, targets, store, config=cfg,
                                         protocol=protocol, info=info, pair_metrics={"kept": _kept_class},
                                         extra={"domain": domain, "backbone": kind, "ft_seed": seed},
                                         progress=progress)
            if info.is_main and progress:
                print(f"{kind}/s{seed}/{domain}: {pool.numel()} sources x {protocol.rounds} rounds in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    return mine


def analyse(records: Sequence[dict[str, Any]], kinds: Sequence[str], seeds: Sequence[int],
            reference: str = "imagenet") -> dict[str, Any]:
    """Paired comparisons of every backbone against `reference`, per seed and pair category, and the verdicts."""
    from .paired import compare, index_records, verdict

    index = index_records(records)
    comps, verdicts = [], {}
    doms = sorted({d for _, _, d in index})
    for kind in kinds:
        if kind == reference or not any(k == kind for k, _, _ in index):
            continue
        mine = [c for s in seeds for d in doms for c in compare(index, kind, reference, s, d)]
        comps += mine
        verdicts[kind] = verdict(mine, kind, reference, seeds)
    order = {"sim": 0, "real cross-class": 1, "real within-class": 2, "real mixed": 3}
    comps.sort(key=lambda c: (kinds.index(c.a), order.get(c.category, 9), str(c.seed)))
    return {"comparisons": comps, "verdicts": verdicts, "index": index}


def run(args: argparse.Namespace) -> int:
    """The whole study; every finished piece (data, proxy, checkpoints, LST records) is reused on a rerun."""
    seeds, kinds = _seeds(args.seeds), _check(args)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, cpu = time.perf_counter(), time.process_time()
    info = st.init_distributed(device)
    out = Path(args.out)
    try:
        proxy_file, proxy_log = None, None
        if "galaxy-proxy" in kinds:
            if args.proxy_encoder:
                proxy_file = args.proxy_encoder
            elif info.is_main:
                proxy_file, proxy_log = px.ensure_proxy(args, info.device)
            proxy_file, proxy_log = st.broadcast_object((proxy_file, proxy_log), info)
        store = st.open_run_store(out, "zoobot", info, restart=args.restart, settings=_settings(args, seeds))
        with store:
            data = _task(args, out, info)
            models, training = _train_all(kinds, seeds, args, data, proxy_file, out, info)
            measured = _gate(models, training, args.min_accuracy)
            if not measured:
                print("no backbone to measure")
            step = args.step_size or min(4.0 / args.iterations, 0.25)
            cfg = LSTConfig(step_size=step, iterations=args.iterations, threshold=0.2, adv_eps=2e-3,
                            channels_last=True)
            protocol = st.ProtocolConfig(rounds=args.rounds, seed=args.seed, pairs_per_batch=args.lst_batch)
            doms = domains(measured, data, args) if measured else []
            mine = measure(measured, doms, store, cfg, protocol, info, progress=not args.quiet)
            records = st.gather_records(mine, info)
            if records is None:
                return 0
            from .report import write_report

            result = analyse(records, [k for k in kinds if any(k == m[0] for m in measured)], seeds)
            write_report(out, args, seeds, records, result, training, proxy_log, cfg,
                         seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu)
    finally:
        st.finish_distributed(info)
    return 0


def _gate(models, training, min_accuracy: float):
    """Backbones whose every seed reaches `min_accuracy` on the simulated test set; the others are reported."""
    low = {k for k, s, _ in models if training[f"{k}/s{s}"]["test_accuracy"] < min_accuracy}
    for k in sorted(low):
        print(f"skipped LST for {k}: a seed's test accuracy is below --min-accuracy {min_accuracy}")
    return [(k, s, m) for k, s, m in models if k not in low]
