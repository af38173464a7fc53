"""The one resumable-run store: every job that resumes (demo rows, geometry stages, sensitivity stages, study
records, detector and adversarial training checkpoints) keeps its work in a `RunStore`.

A run folder holds `run.json`, the run's *key*: the job's name, a fingerprint of the model's weights, every
setting, and a fingerprint of every input tensor. Reopening the folder with the same key resumes (finished stages
and records are reused); with any part of the key changed it refuses with one line naming what changed, unless
`restart=True` discards the old work first. Saved numbers are therefore never stale.

Stages are safetensors files (tensors plus JSON metadata, never pickled code), records are JSON lines (one per
finished unit, flushed and fsynced). Every file is written through a uniquely named temporary file and renamed, so a
killed run leaves either the old file or the new one. While a store is open it holds an exclusive lock on the
folder: a second process pointed at the same folder is refused instead of mixing its results with the first one's.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from torch import nn

__all__ = ["RunStore", "RunChanged", "FolderInUse", "fingerprint_model", "fingerprint_tensor", "jsonable",
           "atomic_write_text", "temporary_path", "record_sort_key"]

T = TypeVar("T")
KEY_FILE = "run.json"
LOCK_FILE = ".lock"


class RunChanged(ValueError):
    """The folder holds a run whose model, settings or inputs differ from this one."""


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


# --------------------------------------------------------------------------------------------- fingerprints


def fingerprint_tensor(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and exact bytes (first 16 hex digits)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint_model(model: nn.Module) -> str:
    """sha256 over the class name and every parameter and buffer (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(fingerprint_tensor(value).encode())
    return h.hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Plain JSON types: dataclasses and mappings to dicts, tuples to lists, paths to str, tensors to lists,
    non-finite floats to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (os.PathLike,)):
        return str(value)
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        return jsonable(value.item())  # numpy scalars
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return jsonable(value.tolist())  # numpy arrays
    return value


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden, unique temporary name beside `path` (pid + random), so two writers never collide; written, then
    renamed into place with `os.replace`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text through a uniquely named temporary file and rename it into place."""
    path = Path(path)
    tmp = temporary_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _describe_change(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable list of what differs between two keys ('model weights', 'settings.step_size 0.01 -> 0.02')."""
    names = {"model": "model weights", "inputs": "input"}
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        label = f"{prefix}{k}"
        if not prefix and k == "model" and isinstance(a, Mapping) and isinstance(b, Mapping):
            out.append("model weights (" + ", ".join(m for m in sorted(set(a) | set(b)) if a.get(m) != b.get(m)) + ")")
        elif not prefix and k == "inputs" and isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(f"input {name}" for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name))
        elif isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_describe_change(a, b, prefix=f"{label}."))
        elif not prefix and k in names:
            out.append(names[k])
        else:
            out.append(f"{label} {json.dumps(a)} -> {json.dumps(b)}")
    return out


# ------------------------------------------------------------------------------------------------ the store


class RunStore:
    """A resumable run's folder, keyed by content (see the module docstring).

    `RunStore(folder, job, model=..., settings={...}, inputs={"images": x})` opens or creates the folder, takes its
    lock and checks the key. Use it as a context manager (or call `close()`) to release the lock. In a distributed
    run only rank 0 takes the lock and writes the key; each rank appends to its own records file.
    """

    def __init__(self, folder: str | os.PathLike, job: str, *, model: nn.Module | Mapping[str, nn.Module] | None = None,
                 settings: Mapping[str, Any] | None = None, inputs: Mapping[str, torch.Tensor] | None = None,
                 restart: bool = False, rank: int = 0, world: int = 1) -> None:
        self._lock_fh = None
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"output folder {self.folder} is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create output folder {self.folder}: {exc.strerror or exc}") from None
        self.rank, self.world = rank, world
        if rank == 0:
            self._take_lock()
        if isinstance(model, Mapping):
            fingerprint: Any = {name: fingerprint_model(m) for name, m in model.items()}
        else:
            fingerprint = fingerprint_model(model) if model is not None else None
        self.key = {"job": job, "model": fingerprint,
                    "settings": jsonable(dict(settings or {})),
                    "inputs": {k: fingerprint_tensor(v) for k, v in (inputs or {}).items()}}
        try:
            self._check_key(restart)
        except BaseException:
            self.close()
            raise
        name = "records.jsonl" if world == 1 else f"records-rank{rank}-of{world}.jsonl"
        self.records_path = self.folder / name
        self._drop_torn_tail()
        self._records = self._read_records()

    # -- lock and key
    def _take_lock(self) -> None:
        fh = open(self.folder / LOCK_FILE, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise FolderInUse(f"output folder {self.folder} is in use by another run ({holder}); wait for it or "
                              "choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def _check_key(self, restart: bool) -> None:
        path = self.folder / KEY_FILE
        if path.exists() and not restart:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise RunChanged(f"{path} is damaged; rerun with --restart to start this folder afresh") from None
            if old != self.key:
                changed = ", ".join(_describe_change(old, self.key)) or "its key"
                raise RunChanged(f"{self.folder} holds a different run (changed: {changed}); use another --out, "
                                 "or --restart to discard the old one")
            return
        if self.rank != 0:
            return
        if restart and path.exists():
            self._clear()
        atomic_write_text(path, json.dumps(self.key, indent=1, sort_keys=True))

    def _clear(self) -> None:
        for child in self.folder.iterdir():
            if child.name == LOCK_FILE:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def close(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- stages: tensors + JSON metadata
    def stage_path(self, name: str) -> Path:
        return self.folder / "stages" / f"{name}.safetensors"

    def has(self, name: str) -> bool:
        return self.stage_path(name).is_file()

    def save(self, name: str, tensors: Mapping[str, torch.Tensor] | None = None, meta: Any = None) -> Path:
        """Write a stage atomically: tensors (safetensors) and JSON-able metadata."""
        from safetensors.torch import save_file

        path = self.stage_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
        data = {k: v.detach().cpu().contiguous().clone() for k, v in (tensors or {}).items()}
        save_file(data, str(tmp), metadata={"meta": json.dumps(jsonable(meta))})
        os.replace(tmp, path)
        return path

    def load(self, name: str) -> tuple[dict[str, torch.Tensor], Any]:
        """A saved stage's (tensors, metadata); a damaged file raises one line naming it."""
        from safetensors import safe_open

        path = self.stage_path(name)
        try:
            with safe_open(str(path), framework="pt") as fh:
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
                meta = json.loads((fh.metadata() or {}).get("meta", "null"))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise OSError(f"saved stage {path} is damaged ({type(exc).__name__}); rerun with --restart") from None
        return tensors, meta

    def stage(self, name: str, compute: Callable[[], T], *, to_saved: Callable[[T], tuple[dict, Any]],
              from_saved: Callable[[dict, Any], T]) -> T:
        """Load stage `name` if saved, else compute and save it."""
        if self.has(name):
            return from_saved(*self.load(name))
        value = compute()
        self.save(name, *to_saved(value))
        return value

    def dataclass_stage(self, name: str, cls: type[T], compute: Callable[[], T], *,
                        nested: Mapping[str, type] | None = None) -> T:
        """`stage` for a dataclass whose fields are tensors, JSON values or dataclasses of those (named with their
        class in `nested`, e.g. {"config": LSTConfig, "trajectory": Trajectory}); tuples come back as tuples."""
        return self.stage(name, compute, to_saved=_dataclass_to_saved,
                          from_saved=lambda t, m: _dataclass_from_saved(cls, t, m, dict(nested or {})))

    # -- records: one JSON line per finished unit of work
    def _drop_torn_tail(self) -> None:
        """Cut a torn last line (a run killed mid-write) so that appended records start on a line of their own."""
        if not self.records_path.exists():
            return
        with open(self.records_path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def _read_records(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("records*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and "key" in rec:
                        out.setdefault(rec["key"], rec)
        return out

    @classmethod
    def reader(cls, folder: str | os.PathLike) -> "RunStore":
        """A finished run's folder opened for reading only (no lock, no key check): `records()`, `load()`."""
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
        reader = cls.__new__(cls)
        reader._lock_fh = None
        reader.folder = Path(folder)
        reader._records = reader._read_records()
        return reader

    @staticmethod
    def read_records(folder: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
        """The records of a run folder, read without opening the run (no lock, no key check)."""
        return RunStore.reader(folder).records(kind)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All records (of one kind), sorted by key."""
        recs = [r for r in self._records.values() if kind is None or r.get("kind") == kind]
        return sorted(recs, key=lambda r: record_sort_key(r["key"]))

    def append(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append records (each with a unique 'key'), flushed and fsynced; returns them as stored."""
        stored = [json.loads(json.dumps(jsonable(r), allow_nan=False)) for r in records]
        if stored:
            with open(self.records_path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in stored))
                fh.flush()
                os.fsync(fh.fileno())
            for r in stored:
                self._records.setdefault(r["key"], r)
        return stored


def record_sort_key(key: str) -> tuple:
    """Order of record keys ('lst|model|round|source|target'): numeric parts as numbers."""
    return tuple((0, int(p), "") if p.lstrip("-").isdigit() else (1, 0, p) for p in key.split("|"))


def _dataclass_to_saved(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    tuples = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            tensors[f.name] = v
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            sub_t, sub_m = _dataclass_to_saved(v)
            tensors.update({f"{f.name}.{k}": t for k, t in sub_t.items()})
            plain[f.name] = {"__dataclass__": sub_m}
        else:
            plain[f.name] = v
            if isinstance(v, tuple):
                tuples.append(f.name)
    return tensors, {"fields": plain, "tuples": tuples}


def _dataclass_from_saved(cls: type, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
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
                v = _dataclass_from_saved(nested[f.name], sub, v["__dataclass__"], {})
            elif f.name in meta["tuples"]:
                v = tuple(v)
            kwargs[f.name] = v
    return cls(**kwargs)
