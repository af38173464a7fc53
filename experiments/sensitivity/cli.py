"""`blindspots attack`: the command line parses its options into a `SensitivityConfig` and calls
`run_sensitivity`; nothing below this module sees the argparse namespace."""

from __future__ import annotations

import argparse
import re

from blindspots.cli import UsageError, add_common_options, add_image_options, non_negative_int, positive_int

from .config import NORMS, SensitivityConfig

__all__ = ["add_arguments", "config_from_args", "run"]

_RUNTIME = ("out", "device", "quiet", "restart")  # options that are not settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    from attacks import registry  # the package imports every attack module, so the registry is full

    ATTACKS = registry.ATTACKS
    d = SensitivityConfig()

    add_image_options(p)
    listed = "; ".join(f"{e.name} ({e.budget} budget, {'/'.join(e.norms)}): {e.description}"
                       for e in ATTACKS.values())
    p.add_argument("--attack", choices=list(ATTACKS), default=d.attack, metavar="NAME",
                   help=f"the attack (default: %(default)s): {listed}")
    p.add_argument("--eps", type=float, default=None,
                   help="budget of a fixed-budget attack ([0, 1] pixel units; required by those, refused by others)")
    p.add_argument("--norm", choices=NORMS, default=d.norm, help="norm of the flipping budget")
    p.add_argument("--max-eps", type=float, default=None,
                   help="minimal-epsilon: largest budget searched (default 0.1 for linf, 10 for l2; [0, 1] pixels)")
    p.add_argument("--rtol", type=float, default=None,
                   help="minimal-epsilon: relative precision of the budget search (log-scale bisection; default "
                        "0.05)")
    p.add_argument("--search-steps", type=positive_int, default=None, help="minimal-epsilon: cap on bisection rounds")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="iterations of the attack (PGD steps per budget for minimal-epsilon: 20; Square: queries; "
                        "default: the attack's own)")
    p.add_argument("--rounds", type=non_negative_int, default=d.rounds, help="LST targets per image (0: skip LST)")
    p.add_argument("--redraw-start", action="store_true",
                   help="redraw LST's noisy start where it already breaks the threshold (default: keep and flag it)")
    add_common_options(p, "attack", model=d.model, iterations=None, batch_size=d.batch_size, model_calls=True)


def config_from_args(args: argparse.Namespace) -> SensitivityConfig:
    """The options as a checked SensitivityConfig; a bad value is one UsageError line naming its option."""
    fields = {k: v for k, v in vars(args).items() if k not in _RUNTIME}
    try:
        return SensitivityConfig(**fields)
    except ValueError as exc:  # name the option, not the field (the attack's own messages name theirs)
        raise UsageError(re.sub(r"^([a-z_]+)(?= must )", lambda m: "--" + m.group(1).replace("_", "-"), str(exc),
                                count=1)) from None


def run(args: argparse.Namespace) -> int:
    """Parse into the config, run the study, print the per-image table (unless --quiet)."""
    from .report import text_table
    from .study import run_sensitivity

    config = config_from_args(args)
    result = run_sensitivity(config, args.out, device=args.device, progress=not args.quiet, restart=args.restart)
    if args.quiet:
        return 0
    print(text_table(result.rows, config.norm))
    print(f"wrote {result.csv}, {result.json}, {result.figure}")
    return 0
