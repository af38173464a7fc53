"""`blindspots paper`: the command line parses its options into a `ClaimsConfig` and calls `run_claims`; nothing
below this module sees the argparse namespace.

    blindspots paper                          # MNIST: mnist-cnn[-at], mnist-vit[-at]; ImageNet: lite0, MobileNetV2
    blindspots paper --groups mnist --sources 100 --iterations 400
    blindspots paper --results-to docs/results/claims.json     # the file docs/studies.md's claims block is made from
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from blindspots import LSTConfig
from blindspots import studies as st
from blindspots.cli import UsageError, add_common_options, model_call_options, positive_int, resolve_device

from ..tables import open_unit_float
from .config import ClaimsConfig
from .groups import GROUPS

__all__ = ["add_arguments", "config_from_args", "run"]

# config field (or LST setting) -> the option that sets it, for naming the option in an error
_OPTIONS = {"groups": "--groups", "sources": "--sources", "rounds": "--rounds", "min_confidence": "--min-confidence",
            "photo_size": "--photo-size", "seed": "--seed", "batch_size": "--batch-size", "threshold": "--threshold",
            "iterations": "--iterations", "amp": "--amp", "channels_last": "--channels-last", "compile": "--compile"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ClaimsConfig()
    p.add_argument("--groups", default=",".join(map(str, d.groups)), help="comma-separated: mnist, imagenet")
    p.add_argument("--sources", type=positive_int, default=d.sources,
                   help="images per group before the pool filter (claim 2's Wilson bound needs >= 35 sources to "
                        "reach 0.9 at all)")
    p.add_argument("--rounds", type=positive_int, default=d.rounds,
                   help="derangement rounds (LST outputs per source; >= 2)")
    p.add_argument("--min-confidence", type=float, default=d.min_confidence,
                   help="pool: confidence above this (the paper's 0.6)")
    p.add_argument("--photo-size", type=positive_int, default=d.photo_size,
                   help="ImageNet photos' size in pixels (the paper: 224, about 3x longer)")
    p.add_argument("--threshold", type=open_unit_float, default=None, help="delta, in (0, 1) (the paper's 0.2)")
    p.add_argument("--no-matched", action="store_true", help="skip claim 3 at matched distance (a second LST run)")
    p.add_argument("--results-to", default=None, metavar="FILE", help="also copy claims.json to FILE")
    p.add_argument("--figure-to", default=None, metavar="FILE",
                   help="also copy the triangle figure to FILE (the docs' docs/paper_claims_triangles.png)")
    add_common_options(p, "paper", model=None, iterations=None, batch_size=d.batch_size, model_calls=True)


def config_from_args(args: argparse.Namespace) -> ClaimsConfig:
    """The options as a checked ClaimsConfig (LST: the paper's settings, --iterations, --threshold, --amp,
    --channels-last and --compile override them); a bad value is one UsageError line naming its option."""
    if args.model is not None or args.weights is not None:
        raise UsageError("--model/--weights: this study probes its fixed model groups (see --groups)")
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    if not groups or any(g not in GROUPS for g in groups):
        raise UsageError(f"--groups {args.groups!r}: choose one or more of {', '.join(GROUPS)}")
    overrides = {k: v for k, v in (("iterations", args.iterations), ("threshold", args.threshold)) if v}
    try:
        return ClaimsConfig(groups=groups, sources=args.sources, rounds=args.rounds,
                            lst=LSTConfig.paper(**overrides, **model_call_options(args)),
                            min_confidence=args.min_confidence, seed=args.seed, batch_size=args.batch_size,
                            photo_size=args.photo_size, matched=not args.no_matched)
    except ValueError as exc:  # name the option, not the field
        raise UsageError(re.sub(r"^([a-z_]+)\b", lambda m: _OPTIONS.get(m.group(1), m.group(1)), str(exc),
                                count=1)) from None


def run(args: argparse.Namespace) -> int:
    """Parse into the config, run the study, print the claims table and findings (unless --quiet)."""
    from .report import claims_table, findings
    from .study import run_claims

    config = config_from_args(args)
    result = run_claims(config, args.out, device=resolve_device(args.device), progress=not args.quiet,
                        restart=args.restart, results_to=args.results_to, figure_to=args.figure_to,
                        log=(lambda s: None) if args.quiet else print)
    if not args.quiet:
        print(st.markdown_table(claims_table(result.claims)))
        print("\n" + "\n".join(findings(result.data)))
        print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0
