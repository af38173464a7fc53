"""The `blindspots` command. Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; this file only lists them, so a subcommand's imports cost nothing until it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("blindspots.demo", "LST on the offline ImageNet model and scikit-image's photos (no downloads)"),
    "detect": ("detectors.cli", "simulate clumpy galaxies, train a clump detector (resumable), evaluate and draw"),
    "geometry": ("blindspots.geometry_cli", "level-set geometry (paths, triangle hulls, tube width) of saved LST results"),
    "attack": ("attacks.cli", "over- vs under-sensitivity: minimal flipping budget (PGD bisection) beside LST, per image"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blindspots", description="Probe the blind spots of vision models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:  # import only the chosen subcommand's module
        name = argv[0]
        module, help_text = SUBCOMMANDS[name]
        mod = importlib.import_module(module)
        p = argparse.ArgumentParser(prog=f"blindspots {name}", description=help_text)
        mod.add_arguments(p)
        return int(mod.run(p.parse_args(argv[1:])) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
