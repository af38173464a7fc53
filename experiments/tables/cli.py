"""`blindspots tables`: the command line parses its options into a `TablesConfig` and calls `run_tables`; nothing
below this module sees the argparse namespace."""

from __future__ import annotations

import argparse
import re

from blindspots import LSTConfig
from blindspots import studies as st
from blindspots.cli import UsageError, add_common_options, model_call_options, positive_int

from .config import TablesConfig
from .metrics import TABLE1_FIELDS, table2_fields
from .study import run_tables

__all__ = ["add_arguments", "config_from_args", "open_unit_float", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TablesConfig()
    p.add_argument("--images", default=None, help="folder of images (default: scikit-image's bundled photos)")
    p.add_argument("--labels", default=None, help="CSV 'file,label' for --images (default: the first model's "
                                                  "predictions, i.e. the pool is where all models agree)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many images")
    p.add_argument("--size", type=positive_int, default=d.size)
    p.add_argument("--min-confidence", type=float, default=d.min_confidence,
                   help="pool: confidence above this (strict; paper: 0.6)")
    p.add_argument("--rounds", type=positive_int, default=d.rounds)
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--threshold", type=open_unit_float, default=None, help="delta, in (0, 1) (paper: 0.2)")
    p.add_argument("--adv-eps", type=float, default=None)
    p.add_argument("--no-hull", action="store_true", help="skip Table 2")
    p.add_argument("--grid-step", type=float, default=d.grid_step)
    p.add_argument("--lpips-weights", default=None, help="ImageNet AlexNet weights for LPIPS (torchvision's alexnet "
                   "checkpoint, or an lpips state dict)")
    add_common_options(p, "tables", model=",".join(d.models), iterations=None, batch_size=d.batch_size,
                       model_calls=True)


def open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


_FIELDS = {"images": "images", "labels": "labels", "limit": "limit", "size": "size",
           "min_confidence": "min_confidence", "rounds": "rounds", "grid_step": "grid_step",
           "lpips_weights": "lpips_weights", "seed": "seed", "batch_size": "batch_size"}  # option -> config field


def config_from_args(args: argparse.Namespace) -> TablesConfig:
    """The options as a checked TablesConfig; a bad value is one UsageError line naming its option."""
    overrides = {k: v for k, v in (("iterations", args.iterations), ("step_size", args.step_size),
                                   ("threshold", args.threshold), ("adv_eps", args.adv_eps)) if v is not None}
    try:
        lst = LSTConfig.paper(**overrides, **model_call_options(args))
    except ValueError as exc:  # LSTConfig names its field: name the option
        raise UsageError(re.sub(r"^(iterations|step_size|threshold|adv_eps)\b",
                                lambda m: "--" + m.group(1).replace("_", "-"), str(exc), count=1)) from None
    weights = tuple(w if w not in ("", "-") else None for w in args.weights.split(",")) if args.weights else ()
    try:
        return TablesConfig(models=args.model, weights=weights, lst=lst, hull=not args.no_hull,
                            **{f: getattr(args, o) for o, f in _FIELDS.items()})
    except ValueError as exc:  # name the option, not the field
        raise UsageError(re.sub(r"^([a-z_]+)\b", lambda m: _option(m.group(1)), str(exc), count=1)) from None


def _option(field: str) -> str:
    names = {"models": "model", "weights": "weights", "hull": "no-hull"}
    back = {f: o for o, f in _FIELDS.items()}
    if field in back or field in names:
        return "--" + names.get(field, back.get(field, field)).replace("_", "-")
    return field


def run(args: argparse.Namespace) -> int:
    """Parse into the config, run the study, print both tables (unless --quiet)."""
    config = config_from_args(args)
    result = run_tables(config, args.out, device=args.device, progress=not args.quiet, restart=args.restart)
    if result is not None and not args.quiet:
        print(st.markdown_table(st.display_rows(result.table1, ["model"], TABLE1_FIELDS)))
        if result.table2:
            print()
            print(st.markdown_table(st.display_rows(result.table2, ["model"], table2_fields(result.table2))))
        print(f"\nreport: {result.report}")
    return 0
