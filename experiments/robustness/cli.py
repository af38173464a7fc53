"""`blindspots robust`: the command line parses its options into a `RobustConfig` (`--zoo`: a `ZooRobustConfig`)
and calls `run_robust` (`run_zoo_robustness`); nothing below this module sees the argparse namespace.

    blindspots robust --model mnist-cnn-at                 # the zoo's 1,000 held-out digits, l-inf eps 0.3
    blindspots robust --model mnist-vit-at --norm l2       # l2 eps 2.0
    blindspots robust --model imagenet-lite0 --images DIR --eps 0.0157   # labels: the model's predictions
    blindspots robust --zoo --threads 2                    # every MNIST zoo model, both budgets -> mnist_robustness.json
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from blindspots.cli import UsageError, add_common_options, positive_int, recorded_command

from .config import DEFAULT_EPS, DEFAULT_MODEL, RobustConfig, ZooRobustConfig

__all__ = ["add_arguments", "config_from_args", "run", "command_line"]

_D = RobustConfig()
# config field -> option, where they differ beyond '_' -> '-'
_OPTIONS = {"models": "model", "checks": "no-checks"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--norm", choices=("linf", "l2"), default=None, help="threat model (default: linf)")
    p.add_argument("--eps", type=float, default=None,
                   help="budget in [0, 1] pixel units (default: 0.3 l-inf / 2.0 l2 for MNIST models, 4/255 / 0.5 else)")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images, labelled by the model's predictions (default: the zoo's held-out digits "
                        "for MNIST models, else the demo photos)")
    p.add_argument("--size", type=positive_int, default=_D.size, help="--images are resized and centre-cropped to this")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="the first N samples only (the held-out digits are in seeded random order)")
    p.add_argument("--attacks", default="standard",
                   help="'standard' or a comma list of apgd-ce, apgd-t, fab-t, square (run in that order)")
    b = p.add_argument_group("budget (default: APGD-CE 100 steps, 3 target classes, Square 1,000 queries)")
    b.add_argument("--full", action="store_true",
                   help="AutoAttack's standard budget: 9 target classes, 5,000 Square queries (about 4x slower)")
    b.add_argument("--apgd-steps", type=positive_int, default=None, help="APGD-CE and APGD-T steps")
    b.add_argument("--target-classes", type=positive_int, default=None, help="APGD-T and FAB-T target classes")
    b.add_argument("--fab-steps", type=positive_int, default=None, help="FAB-T steps")
    b.add_argument("--square-queries", type=positive_int, default=None, help="Square queries per sample")
    b.add_argument("--restarts", type=positive_int, default=None, help="restarts of every attack")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--check-samples", type=positive_int, default=None,
                   help=f"images the checks rerun attacks on (default: {_D.check_samples})")
    p.add_argument("--twin", default=None, metavar="SPEC",
                   help="normal twin for the transfer check (default: mnist-X for mnist-X-at)")
    p.add_argument("--zoo", action="store_true",
                   help="every MNIST zoo model at l-inf 0.3 and l2 2.0, written to --results-to (--model, --norm, "
                        "--eps: that model, that threat model only; needs --results-to)")
    p.add_argument("--results-to", type=Path, default=None,
                   help="--zoo: the results file (default: blindspots/zoo/weights/mnist_robustness.json)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    add_common_options(p, "robust", model=None, batch_size=_D.batch_size, model_calls=True)
    for action in p._actions:  # None tells --zoo whether --model was given; the default is DEFAULT_MODEL
        if action.dest == "model":
            action.help = action.help.replace("%(default)s", DEFAULT_MODEL)


def config_from_args(args: argparse.Namespace) -> RobustConfig | ZooRobustConfig:
    """The options as a checked config (`--zoo`: a ZooRobustConfig); a bad value is one UsageError line naming its
    option."""
    common = dict(limit=args.limit, full=args.full, apgd_steps=args.apgd_steps, target_classes=args.target_classes,
                  fab_steps=args.fab_steps, square_queries=args.square_queries, restarts=args.restarts,
                  checks=not args.no_checks, seed=args.seed, batch_size=args.batch_size, amp=args.amp,
                  compile=args.compile)
    if args.check_samples is not None:
        common["check_samples"] = args.check_samples
    if args.zoo:
        ignored = [flag for flag, given in (("--attacks", args.attacks != "standard"),
                                            ("--images", args.images is not None),
                                            ("--weights", args.weights is not None),
                                            ("--twin", args.twin is not None)) if given]
        if ignored:
            raise UsageError(f"--zoo measures the standard ensemble on the held-out digits with the shipped weights "
                             f"(and twins); leave out {', '.join(ignored)}")
        if args.norm is not None or args.eps is not None:
            norm = args.norm or "linf"
            common["threats"] = ((norm, args.eps if args.eps is not None else DEFAULT_EPS["mnist"][norm]),)
        make, fields = ZooRobustConfig, dict(models=None if args.model is None else (args.model,), **common)
    else:
        attacks = None if args.attacks == "standard" else tuple(t.strip() for t in args.attacks.split(",")
                                                                 if t.strip())
        make, fields = RobustConfig, dict(model=args.model or DEFAULT_MODEL, weights=args.weights,
                                          norm=args.norm or "linf", eps=args.eps, size=args.size, attacks=attacks,
                                          images=None if args.images is None else str(args.images), twin=args.twin,
                                          **common)
    try:
        return make(**fields)
    except ValueError as exc:  # name the option, not the field
        raise UsageError(re.sub(r"^([a-z_]+)\b", lambda m: _option(m.group(1)), str(exc), count=1)) from None


def _option(field: str) -> str:
    if field in RobustConfig.__dataclass_fields__ or field in ZooRobustConfig.__dataclass_fields__:
        return "--" + _OPTIONS.get(field, field).replace("_", "-")
    return field


def command_line(args: argparse.Namespace) -> str:
    """The command that ran, as the zoo's results file records it: 'blindspots robust --zoo' and every option whose
    value differs from its default (not where it writes: --out, --results-to, --restart)."""
    return recorded_command("robust --zoo", add_arguments, args, skip=("zoo", "out", "results_to", "restart"))


def run(args: argparse.Namespace) -> int:
    """Parse into the config, run the study, print the record(s) (unless --quiet)."""
    from .report import format_record, format_result
    from .study import ZOO_RESULTS, check_results_file, run_robust, run_zoo_robustness

    config = config_from_args(args)
    runtime = dict(device=args.device, threads=args.threads, progress=not args.quiet, restart=args.restart)
    if isinstance(config, ZooRobustConfig):
        if not config.is_full and args.results_to is None:
            raise UsageError("--zoo with --model, --norm or --eps measures part of the zoo's table: give --results-to "
                             "FILE (the shipped table is written only by the full run)")
        results_to = check_results_file(args.results_to or ZOO_RESULTS, "--results-to")

        def show(name: str, norm: str, rec: dict) -> None:
            print(format_record(f"{name}, {norm} eps {rec['eps']:g}", rec), flush=True)

        run_zoo_robustness(config, args.out, results_to=results_to, command=command_line(args),
                           on_record=None if args.quiet else show, **runtime)
        if not args.quiet:
            print(f"wrote {results_to}")
        return 0
    result = run_robust(config, args.out, **runtime)
    if not args.quiet:
        print(format_result(result))
        print(f"wrote {result.path} (per-sample worst cases: {result.worst_cases})")
    return 0
