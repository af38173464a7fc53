"""`blindspots zoobot`: the command line parses its options into a `ZoobotConfig` and calls `run_zoobot`; nothing
below this module sees the argparse namespace."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from blindspots.cli import UsageError, add_common_options, positive_int, recorded_command
from detectors.hosts import add_host_options

from .backbones import BACKBONES
from .config import LST_SETTINGS, ZoobotConfig

__all__ = ["add_arguments", "config_from_args", "run", "command_line"]

_RUNTIME = ("out", "device", "threads", "quiet", "restart", "proxy_dir", "results_to")  # not settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ZoobotConfig.__dataclass_fields__

    def default(name: str) -> Any:
        return d[name].default

    p.add_argument("--arch", default=default("arch"), help="timm architecture shared by all backbones")
    p.add_argument("--backbones", default=",".join(default("backbones")),
                   help=f"comma list of {', '.join(BACKBONES)} (zoobot needs --zoobot-weights)")
    p.add_argument("--seeds", default=",".join(map(str, default("seeds"))),
                   help="fine-tuning seeds, comma list (pooled as a random effect: at least 2; a full run: 0,1,2,3,4)")
    p.add_argument("--imagenet-weights", default=None, metavar="FILE",
                   help="ImageNet weights of --arch (timm layout; default for efficientnet_lite0: offline ones)")
    p.add_argument("--zoobot-weights", default=None, metavar="FILE",
                   help="Zoobot encoder file (a local copy of hf_hub:mwalmsley/zoobot-encoder-<arch>)")
    p.add_argument("--proxy-encoder", default=None, metavar="FILE", help="use this galaxy-proxy encoder file")
    p.add_argument("--proxy-dir", default=None, metavar="DIR",
                   help="where the proxy is pretrained and kept for reuse (default: blindspots-out/zoobot-proxy/KEY)")
    p.add_argument("--size", type=positive_int, default=default("size"))
    p.add_argument("--sim-fov", type=float, default=default("sim_fov"),
                   help="field of view of the simulated images, arcsec")
    p.add_argument("--min-clump-flux", type=float, default=default("min_clump_flux"),
                   help="clumpy class: 2-8 clumps each of at least this fraction of the host's flux (up to 0.08)")
    p.add_argument("--crop", type=float, default=default("crop"), help="central fraction of the real cutouts kept")
    p.add_argument("--proxy-init", choices=("imagenet", "random"), default=default("proxy_init"),
                   help="the proxy's start before its galaxy training (imagenet: the same ImageNet weights)")
    p.add_argument("--pretrain", type=positive_int, default=default("pretrain"),
                   help="simulated galaxies for the proxy")
    p.add_argument("--pretrain-epochs", type=positive_int, default=default("pretrain_epochs"))
    p.add_argument("--probe", type=positive_int, default=default("probe"),
                   help="held-out galaxies of the proxy's linear probe")
    p.add_argument("--train", type=positive_int, default=default("train"), help="simulated galaxies for fine-tuning")
    p.add_argument("--test", type=positive_int, default=default("test"),
                   help="held-out simulated galaxies (accuracy, pairs)")
    p.add_argument("--epochs", type=positive_int, default=default("epochs"),
                   help="fine-tuning epochs of pretrained backbones")
    p.add_argument("--scratch-epochs", type=positive_int, default=default("scratch_epochs"),
                   help="fine-tuning epochs of 'random'")
    p.add_argument("--lr", type=float, default=default("lr"), help="AdamW peak learning rate (warm-up, cosine decay)")
    p.add_argument("--min-accuracy", type=float, default=default("min_accuracy"),
                   help="accuracy floor in [0, 1] (simulated test set and injected real hosts, every seed): a "
                        "backbone below it is reported and kept out of the verdict")
    add_host_options(p, "--real", help="real host galaxies: folders of PNG/JPEG/FITS cutouts, FITS or image files, "
                     "'field' (the Hubble eXtreme Deep Field's galaxies), 'field:FILE'; several pool (default: every "
                     "host reachable offline: ../shared/data/galaxies beside the repository, where present, and "
                     "'field')")
    p.add_argument("--real-limit", type=int, default=default("real_limit"), help="real cutouts used (0: all)")
    p.add_argument("--injections", type=positive_int, default=default("injections"),
                   help="clumpy versions of each real host (simulated clumps injected into it)")
    p.add_argument("--sim-pairs", type=positive_int, default=default("sim_pairs"),
                   help="held-out simulated sources (half per class)")
    p.add_argument("--rounds", type=positive_int, default=default("rounds"), help="targets per source")
    p.add_argument("--lst", choices=tuple(LST_SETTINGS), default="study",
                   help="named LST settings: study (step 0.1, 40 iterations, threshold 0.2) or paper (step 0.01, "
                        "400 iterations, threshold 0.2); --step-size, --iterations, --threshold override them")
    p.add_argument("--step-size", type=float, default=None,
                   help="LST step (default: the --lst settings'; with 'study' and --iterations, 4 / iterations)")
    p.add_argument("--threshold", type=float, default=None, help="LST threshold delta (default: the --lst settings')")
    p.add_argument("--lst-batch", type=positive_int, default=default("lst_batch"), help="LST pairs per batch")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--results-to", default=None, metavar="FILE",
                   help="also record this run's summary in FILE (JSON, one entry per command; the docs' "
                        "Zoobot block is rendered from docs/results/zoobot.json)")
    add_common_options(p, "zoobot", model=None, iterations=None, batch_size=default("batch_size"))


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--seeds must be a comma list of integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def config_from_args(args: argparse.Namespace) -> ZoobotConfig:
    """The options as a checked ZoobotConfig; a bad value is one UsageError line naming its option."""
    arch, zoobot_weights = args.arch, args.zoobot_weights
    if args.model is not None:  # the shared --model/--weights name the Zoobot encoder
        kind, _, arch = args.model.partition(":")
        if kind != "zoobot" or not arch or args.weights is None:
            raise UsageError("--model here must be zoobot:<arch> with --weights FILE (or use --arch and "
                             "--zoobot-weights)")
        zoobot_weights = args.weights
    elif args.weights is not None:
        raise UsageError("--weights needs --model zoobot:<arch> (or use --zoobot-weights)")
    lst = dict(LST_SETTINGS[args.lst])
    if args.iterations is not None:
        lst["lst_iterations"] = args.iterations
        if args.lst == "study":  # step x iterations kept at the paper's 4
            lst["lst_step"] = min(4.0 / args.iterations, 0.25)
    if args.step_size is not None:
        lst["lst_step"] = args.step_size
    if args.threshold is not None:
        lst["lst_threshold"] = args.threshold
    try:
        return ZoobotConfig(
            arch=arch, backbones=tuple(k for k in args.backbones.split(",") if k), seeds=_seeds(args.seeds),
            seed=args.seed, imagenet_weights=args.imagenet_weights, zoobot_weights=zoobot_weights,
            proxy_encoder=args.proxy_encoder, size=args.size, sim_fov=args.sim_fov,
            min_clump_flux=args.min_clump_flux, crop=args.crop, proxy_init=args.proxy_init, pretrain=args.pretrain,
            pretrain_epochs=args.pretrain_epochs, probe=args.probe, train=args.train, test=args.test,
            epochs=args.epochs, scratch_epochs=args.scratch_epochs, lr=args.lr, batch_size=args.batch_size,
            min_accuracy=args.min_accuracy, real=tuple(args.real) if args.real else None,
            fits_preset=args.fits_preset, real_limit=args.real_limit, injections=args.injections,
            sim_pairs=args.sim_pairs, rounds=args.rounds, lst_batch=args.lst_batch, **lst)
    except ValueError as exc:  # name the option, not the field
        raise UsageError(re.sub(r"^([a-z_]+)\b", lambda m: _option(m.group(1)), str(exc), count=1)) from None


def _option(field: str) -> str:
    names = {"lst_step": "step-size", "lst_iterations": "iterations", "lst_threshold": "threshold",
             "zoobot_weights": "zoobot-weights", "backbones": "backbones"}
    if field in ZoobotConfig.__dataclass_fields__:
        return "--" + names.get(field, field).replace("_", "-")
    return field


def command_line(args: argparse.Namespace) -> str:
    """'blindspots zoobot' with the options that differ from their defaults (not --quiet or --results-to)."""
    return recorded_command("zoobot", add_arguments, args)


def run(args: argparse.Namespace) -> int:
    """Parse into the config, run the study, print the verdict (unless --quiet), record the summary."""
    from .report import record_summary
    from .study import run_zoobot

    config = config_from_args(args)
    if args.results_to and Path(args.results_to).is_dir():
        raise UsageError(f"--results-to {args.results_to} is a folder; give a JSON file")
    result = run_zoobot(config, args.out, device=args.device, threads=args.threads, progress=not args.quiet,
                        restart=args.restart, proxy_dir=args.proxy_dir)
    if result is not None and args.results_to:
        record_summary(result, args.results_to, command_line(args), threads=args.threads)
        print(f"summary recorded in {args.results_to}", flush=True)
    return 0
