"""The `blindspots` command: a dispatcher over subcommands that packages register as entry points (group
`blindspots.commands` in `pyproject.toml`), so the core never imports its siblings to list them.

A subcommand is a module with `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. The options every
subcommand shares are spelled once here (`add_common_options`): `--model SPEC --weights FILE --out DIR --device
--seed --batch-size --quiet --restart`, plus `--iterations` where a command iterates. Every user error (a bad value,
path or file, a folder in use, a changed run: `blindspots.errors.InputError` and the run store's refusals, plus a
missing or unreadable file) prints one line `blindspots CMD: error: ...` and exits 2, before any long work where the
check can be made up front; anything else is a bug and keeps its traceback. Warnings print as one line
`blindspots CMD: warning: ...`. Set BLINDSPOTS_DEBUG=1 to get the traceback of a user error too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Iterator

from .errors import InputError, UsageError

__all__ = ["UsageError", "InputError", "Parser", "add_common_options", "recorded_command", "add_image_options", "load_images",
           "resolve_device", "positive_int", "non_negative_int", "seed_int", "is_user_error", "main", "OUT_ROOT"]

GROUP = "blindspots.commands"
OUT_ROOT = Path("blindspots-out")  # every command's default output folder lies under it (ignored by git)
SEED_MAX = 2**32 - 1  # numpy's SeedSequence and torch's generators both take every seed in [0, 2**32)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage block) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(text: str, low: int, what: str, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def seed_int(text: str) -> int:
    return _int_at_least(text, 0, f"a seed in [0, {SEED_MAX}]", SEED_MAX)


def add_common_options(parser: argparse.ArgumentParser, command: str, *, model: str | None = "imagenet-lite0",
                       iterations: int | None | bool = False, batch_size: int = 64, model_calls: bool = False) -> None:
    """The shared vocabulary. `model=None` makes --model optional without a default (e.g. read from a file);
    `iterations=False` leaves --iterations out (the command does not iterate); `model_calls` adds --amp,
    --channels-last and --compile (read them with `model_call_options`)."""
    from .zoo import model_names

    g = parser.add_argument_group("shared options")
    g.add_argument("--model", default=model, metavar="SPEC",
                   help=f"model: a registered name ({', '.join(model_names())}), timm:<name>, torchvision:<name>, "
                        "zoobot:<arch> (default: %(default)s)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="local .safetensors/.pth weights for --model (never unpickled)")
    g.add_argument("--out", default=str(OUT_ROOT / command), metavar="DIR",
                   help="output folder; a rerun resumes when nothing changed (default: %(default)s)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available)")
    g.add_argument("--seed", type=seed_int, default=0, help="random seed (default: %(default)s)")
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


def recorded_command(command: str, add_arguments, args: argparse.Namespace,
                     skip: tuple[str, ...] = ("quiet", "results_to", "restart")) -> str:
    """'blindspots COMMAND' with the options of `args` that differ from their defaults (`add_arguments` builds the
    command's parser), as a study's results file records the run (not where it writes: `skip`)."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    defaults = vars(p.parse_args([]))
    parts = [f"blindspots {command}"]
    for k, v in vars(args).items():
        if k in skip or v == defaults.get(k):
            continue
        v = " ".join(map(str, v)) if isinstance(v, list) else v
        parts.append(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}"))
    return " ".join(parts)


def add_image_options(parser: argparse.ArgumentParser, *, limit: bool = True) -> None:
    """The image set of a command that probes a model: a folder, bundled photos, or real MNIST digits (read them
    with `load_images`)."""
    from .data import DEMO_PHOTOS

    parser.add_argument("--images", default=None, help="folder of images to use instead of the bundled photos")
    parser.add_argument("--photos", default=None,
                        help=f"comma-separated scikit-image photo names (default: {','.join(DEMO_PHOTOS)})")
    parser.add_argument("--digits", type=positive_int, default=None, metavar="N",
                        help="N real MNIST test digits per class (the default set for one-channel 28 px models "
                             "such as mnist-cnn: 1)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="image size in pixels (default: the model's own, else 224; at least 32 for models "
                             "without a fixed size)")
    if limit:
        parser.add_argument("--limit", type=positive_int, default=None, help="use at most this many images")


def load_images(args: argparse.Namespace, model, device):
    """The image set of `add_image_options` as ((N, C, H, W) images, names), in the model's channel count and
    size, checked once against the model (one image through it) before any work."""
    from .data import DEMO_PHOTOS, demo_photos, load_image_folder, mnist_digits, prepare
    from .models import check_model_input, input_channels

    fixed = getattr(model, "input_size", None)
    if args.size is not None and fixed is None and args.size < 32:
        raise UsageError(f"--size {args.size} is too small for an ImageNet model (use at least 32)")
    size = args.size or (fixed[-1] if fixed is not None else 224)
    channels = input_channels(model) or 3
    chosen = [o for o, v in (("--images", args.images), ("--photos", args.photos), ("--digits", args.digits))
              if v is not None]
    if len(chosen) > 1:
        raise UsageError(f"choose one image set: {' and '.join(chosen)} were both given")
    if args.digits is not None or (not chosen and fixed == (1, 28, 28)):
        images, names = mnist_digits(args.digits or 1)
        if channels != 1:
            images = images.expand(-1, channels, -1, -1).contiguous()
        if size != images.shape[-1]:
            images = prepare(images, size, crop_fraction=1.0)
    elif args.images:
        images, names = load_image_folder(args.images, size=size, channels=channels, limit=getattr(args, "limit", None))
    else:
        photos = [p.strip() for p in (args.photos or ",".join(DEMO_PHOTOS)).split(",") if p.strip()]
        images, names = demo_photos(photos, size=size, channels=channels)
    if getattr(args, "limit", None) is not None:
        images, names = images[:args.limit], names[:args.limit]
    check_model_input(model, images, device)
    return images, names


def model_call_options(args: argparse.Namespace) -> dict[str, bool]:
    """--amp, --channels-last and --compile as `LSTConfig` fields (the attacks take amp and compile)."""
    return {"amp": args.amp, "channels_last": args.channels_last, "compile": args.compile}


def resolve_device(text: str | None):
    """The torch device for --device: CUDA when present by default; 'gpu' means cuda; refuses CUDA/MPS that this
    machine lacks, with one line (`blindspots.validation.check_device`)."""
    import torch

    from .validation import check_device

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device("cuda" + text[3:] if text.startswith("gpu") else text, "--device")


def commands() -> dict[str, str]:
    """name -> module path of every registered subcommand."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def _load(name: str, module_path: str) -> ModuleType:
    import importlib

    return importlib.import_module(module_path)


# OSErrors about a user's file or folder (missing, unreadable, no space, ...): one line naming the path
_FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_user_error(exc: BaseException) -> bool:
    """Whether the command line reports `exc` as one line (a user's mistake) rather than a traceback (a bug):
    the toolkit's `InputError` (run-store refusals included) and an OSError about a file or folder. Any other
    exception, a plain ValueError included, is a bug."""
    if isinstance(exc, InputError):
        return True
    return isinstance(exc, OSError) and (isinstance(exc, _FILE_ERRORS) or exc.filename is not None)


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"  # OSError's own str() adds "[Errno 2]" noise
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def one_line_warnings(name: str) -> Iterator[None]:
    """Show warnings as one line `blindspots NAME: warning: ...` (not file:line plus source) while a command runs."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' API
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"blindspots {name}: warning: {text}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def run_command(name: str, module: ModuleType, argv: list[str]) -> int:
    parser = Parser(prog=f"blindspots {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        with one_line_warnings(name):
            return int(module.run(args) or 0)
    except Exception as exc:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised)
        if os.environ.get("BLINDSPOTS_DEBUG") or not is_user_error(exc):
            raise
        print(f"blindspots {name}: error: {_message(exc)}", file=sys.stderr)
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
