"""The `blindspots` command: a dispatcher over subcommands that packages register as entry points (group
`blindspots.commands` in `pyproject.toml`), so the core never imports its siblings to list them.

A subcommand is a module with `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. The options every
subcommand shares are spelled once here (`add_common_options`): `--model SPEC --weights FILE --out DIR --device
--seed --batch-size --quiet --restart`, plus `--iterations` where a command iterates. Every user error (a bad value,
path or file, a folder in use, a changed run) prints one line `blindspots CMD: error: ...` and exits 2, before any
long work where the check can be made up front. Set BLINDSPOTS_DEBUG=1 to get the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

__all__ = ["UsageError", "Parser", "add_common_options", "resolve_device", "positive_int", "main", "OUT_ROOT"]

GROUP = "blindspots.commands"
OUT_ROOT = Path("blindspots-out")  # every command's default output folder lies under it (ignored by git)


class UsageError(ValueError):
    """A user error that the command line reports as one line and exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage block) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_common_options(parser: argparse.ArgumentParser, command: str, *, model: str | None = "imagenet-lite0",
                       iterations: int | None | bool = False, batch_size: int = 64, model_calls: bool = False) -> None:
    """The shared vocabulary. `model=None` makes --model optional without a default (e.g. read from a file);
    `iterations=False` leaves --iterations out (the command does not iterate); `model_calls` adds --amp,
    --channels-last and --compile (read them with `model_call_options`)."""
    g = parser.add_argument_group("shared options")
    g.add_argument("--model", default=model, metavar="SPEC",
                   help="model: imagenet-lite0, imagenet-mobilenetv2, mnist-cnn[-at], mnist-vit[-at], "
                        "timm:<name>, torchvision:<name>, zoobot:<arch> (default: %(default)s)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="local .safetensors/.pth weights for --model (never unpickled)")
    g.add_argument("--out", default=str(OUT_ROOT / command), metavar="DIR",
                   help="output folder; a rerun resumes when nothing changed (default: %(default)s)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N",
                   help="samples per model pass (default: %(default)s)")
    if iterations is not False:
        g.add_argument("--iterations", type=positive_int, default=iterations, metavar="N",
                       help="LST iterations (default: %(default)s, the mode's own)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    g.add_argument("--restart", action="store_true", help="discard a different earlier run in --out")
    if model_calls:
        g.add_argument("--amp", action="store_true",
                       help="run the model under bfloat16 autocast (CPU and CUDA; steps stay float32)")
        g.add_argument("--channels-last", action="store_true",
                       help="feed LST's model calls channels_last tensors (the attacks always do)")
        g.add_argument("--compile", action="store_true", help="torch.compile the model's forward and backward")


def model_call_options(args: argparse.Namespace) -> dict[str, bool]:
    """--amp, --channels-last and --compile as `LSTConfig` fields (the attacks take amp and compile)."""
    return {"amp": args.amp, "channels_last": args.channels_last, "compile": args.compile}


def resolve_device(text: str | None):
    """The torch device for --device: CUDA when present by default; 'gpu' means cuda; refuses CUDA/MPS that this
    machine lacks, with one line."""
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = "cuda" + text[3:] if text.startswith("gpu") else text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text!r} is not a device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {text}: MPS is not available on this machine")
    return device


def commands() -> dict[str, str]:
    """name -> module path of every registered subcommand."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def _load(name: str, module_path: str) -> ModuleType:
    import importlib

    return importlib.import_module(module_path)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .store import FolderInUse, RunChanged

    return (UsageError, RunChanged, FolderInUse, ValueError, TypeError, OSError, ImportError)


def run_command(name: str, module: ModuleType, argv: list[str]) -> int:
    parser = Parser(prog=f"blindspots {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except _user_errors() as exc:
        if os.environ.get("BLINDSPOTS_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"blindspots {name}: error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    registered = commands()
    if argv and argv[0] in registered:
        return run_command(argv[0], _load(argv[0], registered[argv[0]]), argv[1:])
    parser = Parser(prog="blindspots", description="Probe the blind spots of vision models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, path in sorted(registered.items()):
        sub.add_parser(name, help=_load(name, path).HELP, add_help=False)
    if not registered:
        print("blindspots: no subcommands are registered: reinstall the package (pip install -e .)", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
