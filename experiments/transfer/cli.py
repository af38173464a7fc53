"""`blindspots transfer`: the command line parses its options into a `TransferConfig` (`--paper`: the paper's
detector, `TransferConfig.paper()`, the other options override it) and calls `run_transfer`; nothing below this
module sees the argparse namespace."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from blindspots.cli import UsageError, add_common_options, positive_int, recorded_command

from .config import BACKBONES, BODIES, TransferConfig

__all__ = ["add_arguments", "config_from_args", "run", "command_line"]

# option -> config field, for the options that map one to one (None default: the base config's value)
_FIELDS = {"arch": "arch", "trainable": "trainable", "pool": "pool", "steps": "steps", "lr": "lr",
           "warmup": "warmup", "image_size": "image_size", "resize": "resize", "n_val": "n_val", "n_test": "n_test",
           "iou": "iou", "hosts": "hosts", "crop": "crop", "injections": "injections", "lst_sources": "lst_sources",
           "lst_rounds": "lst_rounds", "lst_step": "lst_step", "iterations": "lst_iterations",
           "imagenet_weights": "imagenet_weights", "zoobot_weights": "zoobot_weights",
           "proxy_encoder": "proxy_encoder"}


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--{what} must be a comma list of integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TransferConfig()
    p.add_argument("--paper", action="store_true",
                   help="the paper's detector: ResNet-50 FPN, 200-px cutouts resized to 800, sizes 200-4800, 5 seeds, "
                        "6000 steps per cell (a GPU run; ImageNet/Zoobot ResNet-50 weights as files)")
    p.add_argument("--arch", default=None, help=f"the body's architecture (default: {d.arch})")
    p.add_argument("--backbones", default=None,
                   help=f"comma list of {', '.join(BACKBONES)} (default: {','.join(d.backbones)}; zoobot is added "
                        "when --zoobot-weights is given)")
    p.add_argument("--bodies", default=None, help=f"comma list of {', '.join(BODIES)} (default: both)")
    p.add_argument("--trainable", type=positive_int, default=None,
                   help=f"feature stages trained in the 'trainable' setting (default: {d.trainable}, the paper's)")
    p.add_argument("--sizes", default=None, help=f"training-set sizes, comma list (default: "
                                                 f"{','.join(map(str, d.sizes))})")
    p.add_argument("--pool", type=int, default=None, help=f"simulated images the training sets are drawn from "
                                                           f"(nested prefixes; default: {d.pool})")
    p.add_argument("--seeds", default=None, help=f"training seeds, comma list, at least 2 (default: "
                                                 f"{','.join(map(str, d.seeds))})")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"optimiser steps per training, the same for every cell (default: {d.steps})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--warmup", type=int, default=None, help=f"warm-up steps (default: {d.warmup})")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help=f"simulated image size in pixels (default: {d.image_size})")
    p.add_argument("--resize", type=positive_int, default=None, help="the detector's internal resize (default: none)")
    p.add_argument("--n-val", type=positive_int, default=None,
                   help=f"validation images for the score threshold (default: {d.n_val})")
    p.add_argument("--n-test", type=positive_int, default=None, help=f"test images (default: {d.n_test})")
    p.add_argument("--iou", type=float, default=None, help=f"IoU of a match (default: {d.iou}; AP50 uses 0.5)")
    p.add_argument("--hosts", default=None, metavar="DIR",
                   help="real cutouts for injected-clump completeness (default: ../shared/data/galaxies)")
    p.add_argument("--crop", type=float, default=None, help=f"central fraction of the cutouts (default: {d.crop})")
    p.add_argument("--injections", type=positive_int, default=None,
                   help=f"clumpy versions of each real host (default: {d.injections})")
    p.add_argument("--lst-sources", type=positive_int, default=None,
                   help=f"LST sources per body setting, half clumpy (default: {d.lst_sources})")
    p.add_argument("--lst-rounds", type=positive_int, default=None, help=f"targets per source (default: "
                                                                         f"{d.lst_rounds})")
    p.add_argument("--lst-step", type=float, default=None, help=f"LST step (default: {d.lst_step})")
    p.add_argument("--imagenet-weights", default=None, metavar="FILE",
                   help="ImageNet weights of --arch (default for efficientnet_lite0: the offline ones)")
    p.add_argument("--zoobot-weights", default=None, metavar="FILE",
                   help="Zoobot encoder of --arch (a local copy of hf_hub:mwalmsley/zoobot-encoder-<arch>)")
    p.add_argument("--proxy-encoder", default=None, metavar="FILE", help="use this galaxy-proxy encoder file")
    p.add_argument("--proxy-dir", default=None, metavar="DIR",
                   help="where the galaxy-proxy is kept (default: blindspots-out/zoobot-proxy/KEY, shared with "
                        "blindspots zoobot)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--results-to", default=None, metavar="FILE",
                   help="also record this run's summary in FILE (the docs' blocks come from "
                        "docs/results/transfer.json)")
    add_common_options(p, "transfer", model=None, iterations=None, batch_size=d.batch_size)


def config_from_args(args: argparse.Namespace) -> TransferConfig:
    """The options as a checked TransferConfig; a bad value is one UsageError line naming its option."""
    base = TransferConfig.paper if args.paper else TransferConfig
    changes = {f: getattr(args, o) for o, f in _FIELDS.items() if getattr(args, o) is not None}
    if args.model is not None:
        kind, _, arch = args.model.partition(":")
        if kind != "zoobot" or not arch or args.weights is None:
            raise UsageError("--model here must be zoobot:<arch> with --weights FILE (or use --arch and "
                             "--zoobot-weights)")
        changes.update(arch=arch, zoobot_weights=args.weights)
    elif args.weights is not None:
        raise UsageError("--weights needs --model zoobot:<arch> (or use --zoobot-weights)")
    if args.backbones is not None:
        changes["backbones"] = tuple(k for k in args.backbones.split(",") if k)
    if args.bodies is not None:
        changes["bodies"] = tuple(k for k in args.bodies.split(",") if k)
    if args.sizes is not None:
        changes["sizes"] = _int_list(args.sizes, "sizes")
        if args.pool is None and not args.paper:
            changes.setdefault("pool", max(changes["sizes"] + (1,)))
    if args.seeds is not None:
        changes["seeds"] = _int_list(args.seeds, "seeds")
    changes.update(data_seed=args.seed, batch_size=args.batch_size)
    if args.paper and args.batch_size == TransferConfig().batch_size:
        changes.pop("batch_size")
    try:
        return base(**changes)
    except ValueError as exc:  # name the option, not the field
        raise UsageError(re.sub(r"^([a-z_]+)\b", lambda m: _option(m.group(1)), str(exc), count=1)) from None


def _option(field: str) -> str:
    back = {f: o for o, f in _FIELDS.items()}
    names = {"seeds": "seeds", "sizes": "sizes", "backbones": "backbones", "bodies": "bodies",
             "data_seed": "seed", "batch_size": "batch-size"}
    if field in back:
        return "--" + back[field].replace("_", "-")
    if field in names:
        return "--" + names[field]
    return field


def command_line(args: argparse.Namespace) -> str:
    """'blindspots transfer' with the options that differ from their defaults (not --quiet or --results-to)."""
    return recorded_command("transfer", add_arguments, args)


def run(args: argparse.Namespace) -> int:
    """Parse into the config, run the study, print the verdicts (unless --quiet), record the summary."""
    from .report import record_summary
    from .study import run_transfer

    config = config_from_args(args)
    if args.results_to and Path(args.results_to).is_dir():
        raise UsageError(f"--results-to {args.results_to} is a folder; give a JSON file")
    result = run_transfer(config, args.out, device=args.device, threads=args.threads, progress=not args.quiet,
                          restart=args.restart, proxy_dir=args.proxy_dir)
    if args.results_to:
        record_summary(result, args.results_to, command_line(args), threads=args.threads)
        print(f"summary recorded in {args.results_to}", flush=True)
    return 0
