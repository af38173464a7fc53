"""Weight and result files, read without ever executing pickled code (`.safetensors`, or `torch.load` with
`weights_only=True`); every unreadable, damaged or foreign file is refused with one line naming it."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .errors import InputError

__all__ = ["load_torch_file", "load_state_dict_file", "load_weights"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params")


def load_torch_file(path: str | os.PathLike, what: str = "file") -> Any:
    """`torch.load(path, weights_only=True)` on CPU with one-line errors naming the file: missing, a folder,
    truncated, not a torch file, or holding pickled objects beyond tensors and plain containers (never run)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's messages do not name the file and span many lines
        named = _offending_global(str(exc), path)
        if named:  # a class or function beyond tensors and plain containers: name it, never quote torch's advice
            raise InputError(f"{path} holds pickled objects ({named}) whose loading would run code: refused; "
                             "re-save the weights as plain tensors or .safetensors") from exc
        if isinstance(exc, pickle.UnpicklingError):  # garbage, or a plain pickle the safe reader cannot follow
            raise InputError(f"{path} is not a torch.save file of tensors (corrupt, or a pickle the safe reader "
                             "cannot follow); re-save the weights as plain tensors or .safetensors") from exc
        raise InputError(f"{path} is not a readable torch file (truncated or corrupt?): {_first_line(exc)}") from exc


_SAFE_GLOBALS = ("torch._utils._rebuild", "torch.storage", "collections.OrderedDict", "torch._tensor._rebuild",
                 "torch.serialization._get_layout", "builtins.set", "builtins.frozenset", "_codecs.encode")


def _offending_global(message: str, path: Path) -> str | None:
    """The class or function a pickle would import, from torch's refusal ("Unsupported global: GLOBAL x.Y") or,
    when torch does not say, from the pickle's own opcodes (read with `pickletools`, never executed)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    for name in _pickle_globals(path):
        if not name.startswith(_SAFE_GLOBALS) and not re.fullmatch(r"torch\.\w*(Storage|dtype|device|Size)", name):
            return name
    return None


def _pickle_globals(path: Path) -> list[str]:
    """Every 'module.name' a pickle (a plain one, or a torch zip's data.pkl) would import, in order."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(member) if member else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile):
        return []
    names, strings, memo = [], [], {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                strings.append(arg)
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
    except Exception:  # noqa: BLE001 - a damaged pickle: whatever was read before the damage
        pass
    return names


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch file, never executing pickled code.

    Torch files are read with `weights_only=True`; a checkpoint that wraps the weights (`{"state_dict": ...}`,
    `{"model": ...}`) is unwrapped, and a `module.` prefix from DataParallel is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError does not name the file
            raise InputError(f"{path} is not a readable .safetensors file (truncated or corrupt?): "
                             f"{_first_line(exc)}") from exc
    else:
        state = load_torch_file(path, "weights file")
    for _ in range(3):
        if isinstance(state, Mapping) and not _is_state_dict(state):
            inner = next((state[k] for k in _WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)), None)
            if inner is None:
                break
            state = inner
    if not _is_state_dict(state):
        raise InputError(f"{path} does not hold a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    """The telling line of a library error: torch's weights-only detail (never its advice to turn the safety off),
    else the first non-empty line."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # torch's detail follows this marker, on its line or the next
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0].strip()
        if detail:
            return detail.splitlines()[0][:200]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0][:200] if lines else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_weights(
    module: nn.Module,
    state: Mapping[str, torch.Tensor] | str | os.PathLike,
    *,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Load `state` (or a file) into `module`, reporting every missing, unexpected, mis-shaped or mistyped key.

    Keys starting with a prefix in `allow_missing` / `allow_unexpected` are tolerated (e.g. a classifier head that
    the file does not hold); anything else raises an `InputError` that names the keys. Integer tensors are never
    cast into floating parameters (nor floats into integer buffers): such a file is not the model's weights.
    Returns (missing, unexpected).
    """
    if not isinstance(state, Mapping):
        state = load_state_dict_file(state)
    own = module.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise InputError(f"{len(mismatched)} tensors have the wrong shape for {type(module).__name__}: "
                         + "; ".join(mismatched[:5]))
    mistyped = [f"{k}: file {v.dtype} vs model {own[k].dtype}" for k, v in state.items()
                if k in own and isinstance(v, torch.Tensor) and v.is_floating_point() != own[k].is_floating_point()]
    if mistyped:
        raise InputError(f"{len(mistyped)} tensors have the wrong kind of dtype for {type(module).__name__} "
                         "(integers for floats or the reverse): " + "; ".join(mistyped[:5]))
    result = module.load_state_dict(state, strict=False)
    # str.startswith(()) is False, so empty allowances tolerate nothing
    missing = [k for k in result.missing_keys
               if not k.startswith(tuple(allow_missing)) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(tuple(allow_unexpected))]
    if missing or unexpected:
        raise InputError(f"weights do not match {type(module).__name__}: {len(missing)} missing keys "
                         f"{missing[:6]}, {len(unexpected)} unexpected keys {unexpected[:6]}")
    return list(result.missing_keys), list(result.unexpected_keys)
