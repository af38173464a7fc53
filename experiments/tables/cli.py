"""`blindspots tables`: the command line, which only parses into `run_tables`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from blindspots import LSTConfig
from blindspots import studies as st
from blindspots.cli import add_common_options, model_call_options, positive_int

from .metrics import TABLE1_FIELDS, table2_fields
from .study import run_tables

HELP = "the LST paper's Table 1 (distances, SSIM, confidence) and Table 2 (triangle hulls) for any models"

__all__ = ["HELP", "add_arguments", "open_unit_float", "run", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default=None, help="folder of images (default: scikit-image's bundled photos)")
    p.add_argument("--labels", default=None, help="CSV 'file,label' for --images (default: the first model's "
                                                  "predictions, i.e. the pool is where all models agree)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many images")
    p.add_argument("--size", type=positive_int, default=224)
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="pool: confidence above this (strict; paper: 0.6)")
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--threshold", type=open_unit_float, default=None, help="delta, in (0, 1) (paper: 0.2)")
    p.add_argument("--adv-eps", type=float, default=None)
    p.add_argument("--no-hull", action="store_true", help="skip Table 2")
    p.add_argument("--grid-step", type=float, default=0.1)
    p.add_argument("--lpips-weights", default=None, help="ImageNet AlexNet weights for LPIPS (torchvision's alexnet "
                   "checkpoint, or an lpips state dict)")
    add_common_options(p, "tables", iterations=None, batch_size=20, model_calls=True)


def open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("iterations", args.iterations), ("step_size", args.step_size),
                                   ("threshold", args.threshold), ("adv_eps", args.adv_eps)) if v is not None}
    weights = [w if w not in ("", "-") else None for w in args.weights.split(",")] if args.weights else None
    tables = run_tables(args.out, args.model, weights=weights, images=args.images, labels=args.labels,
                        limit=args.limit, size=args.size, min_confidence=args.min_confidence, rounds=args.rounds,
                        config=LSTConfig.paper(**overrides, **model_call_options(args)), hull=not args.no_hull,
                        grid_step=args.grid_step, lpips_weights=args.lpips_weights, seed=args.seed,
                        batch_size=args.batch_size, device=args.device, progress=not args.quiet, restart=args.restart)
    if tables is not None and not args.quiet:
        print(st.markdown_table(st.display_rows(tables["table1"], ["model"], TABLE1_FIELDS)))
        if tables["table2"]:
            print()
            print(st.markdown_table(st.display_rows(tables["table2"], ["model"], table2_fields(tables["table2"]))))
        print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from blindspots.cli import run_command

    return run_command("tables", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
