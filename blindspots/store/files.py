"""File-level pieces of the run store (`blindspots.store`): plain names, content hashes, the key's JSON form, atomic
writes, the list of what a run wrote, and dataclasses as (tensors, metadata). Kept apart so `store` reads as the
store's rules only."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from ..errors import InputError

__all__ = ["jsonable", "keyable", "temporary_path", "atomic_write_text", "check_stage_name", "check_record_key",
           "stage_digest", "record_digest", "run_id", "newest_mtime_ns", "fingerprint_data", "dataclass_to_saved",
           "dataclass_from_saved"]

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def jsonable(value: Any, nonfinite: Callable[[float], Any] = lambda v: None) -> Any:
    """Plain JSON types: dataclasses and mappings to dicts, tuples to lists, paths to str, tensors to lists,
    non-finite floats to `nonfinite(v)` (None by default)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), nonfinite)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nonfinite) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist(), nonfinite)
    if isinstance(value, float) and not math.isfinite(value):
        return nonfinite(value)
    if isinstance(value, (os.PathLike,)):
        return str(value)
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        return jsonable(value.item(), nonfinite)  # numpy scalars
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return jsonable(value.tolist(), nonfinite)  # numpy arrays
    return value


def keyable(value: Any) -> Any:
    """`jsonable` for a run's key: NaN, +inf and -inf stay distinct from each other and from None."""
    return jsonable(value, lambda v: f"<float {v}>")


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden, unique temporary name beside `path` (pid + random), so two writers never collide; written, then
    renamed into place with `os.replace`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text through a uniquely named temporary file and rename it into place."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a folder at `path`, a full disk: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_stage_name(name: object) -> str:
    """A stage name is one or more plain names joined by '/' (letters, digits, '.', '_', '-', not starting with a
    dot): it can never reach outside the run folder."""
    if not isinstance(name, str) or len(name) > 200 or not all(_PLAIN.fullmatch(p) for p in name.split("/")):
        raise InputError(f"stage name {name!r} is not a plain name (letters, digits, '.', '_', '-', parts joined "
                         "by '/', none starting with a dot)")
    return name


def check_record_key(key: object) -> str:
    """A record key is a non-empty single-line string."""
    if not isinstance(key, str) or not key or len(key) > 1000 or any(ord(c) < 32 for c in key):
        raise InputError(f"record key {key!r} must be a non-empty single-line string")
    return key


def run_id(key: Mapping[str, Any]) -> str:
    """The short identity of a run's key, carried by each of its stages and records."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def stage_digest(name: str, run: str, meta: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a stage's name, run, metadata and every tensor (name, dtype, shape, bytes): a stage renamed,
    copied from another run or edited no longer matches."""
    h = hashlib.sha256(f"{name}\0{run}\0{meta}\0".encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def record_digest(run: str, record: Mapping[str, Any]) -> str:
    return hashlib.sha256(f"{run}\0{json.dumps(record, sort_keys=True, allow_nan=False)}".encode()).hexdigest()


def newest_mtime_ns(path: Path) -> int:
    """The newest modification time in `path` (a file, or a folder and everything in it)."""
    newest = path.lstat().st_mtime_ns
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, n)).st_mtime_ns)
                except OSError:
                    pass
    return newest


def remove(paths: Iterable[Path]) -> None:
    import shutil

    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def fingerprint_data(data: Any) -> str | None:
    """sha1 of a data set itself (not its type and length): (images, labels) tensors; a DataLoader's batch size and
    its dataset; a map-style Dataset read item by item (under forked RNGs, so that random transforms do not move
    the caller's random streams; data that reads differently each time never matches). None where the data cannot
    be read without consuming it (an iterable stream) or its items are not tensors, arrays or numbers."""
    if isinstance(data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in data):
        return _hash_items(data)
    extra = ""
    if isinstance(data, torch.utils.data.DataLoader):
        extra = f"loader:{data.batch_size}:{data.drop_last}:{type(data.sampler).__name__}|"
        data = data.dataset
    if isinstance(data, torch.utils.data.TensorDataset):
        return extra + _hash_items(data.tensors)
    if not isinstance(data, torch.utils.data.Dataset) or isinstance(data, torch.utils.data.IterableDataset) \
            or not hasattr(data, "__len__"):
        return None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            return extra + _hash_items(data[i] for i in range(len(data)))
    except TypeError:
        return None  # items that are not tensors, arrays or numbers
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _hash_items(items: Iterable[Any]) -> str:
    """sha1 over (nested tuples / lists / dicts of) tensors, arrays and numbers: types, shapes and bytes."""
    h = hashlib.sha1()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().contiguous()
            h.update(f"T{v.dtype}{tuple(v.shape)}".encode())
            h.update((v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy().tobytes())
        elif isinstance(v, np.ndarray):
            h.update(f"A{v.dtype}{v.shape}".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, (bool, int, float, str, np.generic)):
            h.update(f"N{type(v).__name__}{v!r}".encode())
        elif isinstance(v, (tuple, list)):
            h.update(f"L{len(v)}".encode())
            for x in v:
                feed(x)
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        else:
            raise TypeError(type(v).__name__)

    for item in items:
        feed(item)
    return h.hexdigest()


def dataclass_to_saved(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A dataclass of tensors, JSON values and nested dataclasses as (tensors, metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    tuples = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            tensors[f.name] = v
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            sub_t, sub_m = dataclass_to_saved(v)
            tensors.update({f"{f.name}.{k}": t for k, t in sub_t.items()})
            plain[f.name] = {"__dataclass__": sub_m}
        else:
            plain[f.name] = v
            if isinstance(v, tuple):
                tuples.append(f.name)
    return tensors, {"fields": plain, "tuples": tuples}


def dataclass_from_saved(cls: type, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                         nested: dict[str, type]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in tensors:
            kwargs[f.name] = tensors[f.name]
        elif f.name in meta["fields"]:
            v = meta["fields"][f.name]
            if isinstance(v, dict) and "__dataclass__" in v:
                prefix = f"{f.name}."
                sub = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
                v = dataclass_from_saved(nested[f.name], sub, v["__dataclass__"], {})
            elif f.name in meta["tuples"]:
                v = tuple(v)
            kwargs[f.name] = v
    return cls(**kwargs)
