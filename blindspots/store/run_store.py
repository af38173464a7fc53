"""The one resumable-run store: every job that resumes (demo rows, geometry stages, sensitivity stages, study
records, detector and adversarial training checkpoints) keeps its work in a `RunStore`.

A run folder holds `run.json`, the run's *key*: the job's name, a fingerprint of the model's weights, every
setting (NaN, +inf, -inf and None kept apart), and a fingerprint of every input tensor. Reopening the folder with the
same key resumes; with any part of the key changed it refuses with one line naming what changed, unless
`restart=True` discards the old work first. Saved numbers are therefore never stale:

- every stage and record carries its run's identity (a hash of the key) and a content hash written with it and
  checked on read: work of another run (a stage copied in, a folder whose run.json was deleted) is recomputed, and
  work edited or damaged on disk is refused, naming the file;
- stage and record names are plain names: nothing is written outside the folder;
- the store lists what the run wrote into its folder (`.outputs.json`: its own files, and every file or folder the
  job created or rewrote while it held the folder). A new run starts only in a folder that holds nothing else, and
  `restart` deletes only what the run wrote: a folder holding anything else (also among the stages) is refused,
  naming it.

Stages are safetensors files (tensors plus JSON metadata, never pickled code), records are JSON lines (one per
finished unit, flushed and fsynced). Every file is written through a uniquely named temporary file and renamed, so a
killed run leaves either the old file or the new one. While a store is open it holds an exclusive lock on the
folder: a second process pointed at the same folder is refused instead of mixing its results with the first one's.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from torch import nn

from ..errors import InputError, RunRefused
from .files import (atomic_write_text, check_record_key, check_stage_name, dataclass_from_saved,
                          dataclass_to_saved, fingerprint_data, jsonable, keyable, newest_mtime_ns, record_digest,
                          remove, run_id, stage_digest, temporary_path)

__all__ = ["RunStore", "RunChanged", "FolderInUse", "FolderNotEmpty", "StageRefused", "fingerprint_model",
           "fingerprint_tensor", "fingerprint_file", "fingerprint_data", "jsonable", "keyable", "atomic_write_text", "temporary_path", "record_sort_key"]

T = TypeVar("T")
KEY_FILE = "run.json"
LOCK_FILE = ".lock"
OUTPUTS_FILE = ".outputs.json"
STAGES = "stages"


class RunChanged(RunRefused):
    """The folder holds a run whose model, settings or inputs differ from this one."""


class FolderInUse(RunRefused, RuntimeError):
    """Another process holds the folder's lock."""


class FolderNotEmpty(RunRefused):
    """A new or restarted run's folder holds files that no run store wrote there."""


class StageRefused(RunRefused):
    """A saved stage or record was edited or damaged on disk, or does not fit this run."""


# --------------------------------------------------------------------------------------------- fingerprints


def fingerprint_tensor(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and exact bytes (first 16 hex digits)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (first 16 hex digits): weights files are keyed by content, not by name."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def fingerprint_model(model: nn.Module) -> str:
    """sha256 over the class name and every parameter and buffer (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(fingerprint_tensor(value).encode())
    return h.hexdigest()[:16]


def _is_store_file(name: str) -> bool:
    """The store's own entries: key, lock, output list, stages, records, and leftover temporary files."""
    return (name in (KEY_FILE, LOCK_FILE, OUTPUTS_FILE, STAGES) or fnmatch.fnmatch(name, "records*.jsonl")
            or (name.startswith(".") and name.endswith(".tmp")))


def _is_stage_file(path: Path) -> bool:
    """A file the store wrote under stages/: a leftover temporary file, or a safetensors file whose header carries
    a run and a content hash (read from its first bytes, without loading it)."""
    if path.is_symlink() or not path.is_file():
        return False
    if path.name.startswith(".") and path.name.endswith(".tmp"):
        return True
    if not path.name.endswith(".safetensors"):
        return False
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size)) if 0 < size <= 10_000_000 else {}
    except (OSError, ValueError):
        return False
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(meta, dict) and "run" in meta and "sha256" in meta


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
            raise InputError(f"output folder {self.folder} is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create output folder {self.folder}: {exc.strerror or exc}") from None
        self.rank, self.world = rank, world
        if rank == 0:
            self._take_lock()
        if isinstance(model, Mapping):
            fingerprint: Any = {name: fingerprint_model(m) for name, m in model.items()}
        else:
            fingerprint = fingerprint_model(model) if model is not None else None
        self.key = {"job": job, "model": fingerprint,
                    "settings": keyable(dict(settings or {})),
                    "inputs": {k: fingerprint_tensor(v) for k, v in (inputs or {}).items()}}
        self.run = run_id(self.key)
        try:
            self._check_key(restart)
        except BaseException:
            self.close()
            raise
        name = "records.jsonl" if world == 1 else f"records-rank{rank}-of{world}.jsonl"
        self.records_path = self.folder / name
        self._drop_torn_tail()
        self._records = self._read_records()

    # -- lock, key and the list of what the run wrote
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
        # anything created, or rewritten from now on (the file system's clock), while the lock is held is the run's
        self._since_ns = os.fstat(fh.fileno()).st_mtime_ns
        self._present = {p.name for p in self.folder.iterdir()}

    def _outputs(self) -> set[str]:
        try:
            return set(json.loads((self.folder / OUTPUTS_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return set()

    def _foreign(self) -> list[str]:
        """Entries of the folder that neither the store nor a run of it wrote (inside `stages/` too: a stage is a
        safetensors file carrying its run and content hash; anything else there is someone else's)."""
        mine = self._outputs()
        foreign = [p.name for p in self.folder.iterdir() if not _is_store_file(p.name) and p.name not in mine]
        stages = self.folder / STAGES
        if stages.is_dir() and not stages.is_symlink():
            foreign += [p.relative_to(self.folder).as_posix() for p in stages.rglob("*")
                        if not (p.is_dir() and not p.is_symlink()) and not _is_stage_file(p)]
        elif stages.exists() or stages.is_symlink():
            foreign.append(STAGES)
        return sorted(foreign)

    def _claim(self, rewritten: bool = False) -> None:
        """Add to the output list every entry the job created while this store held the folder, and with
        `rewritten` (at close: it walks the entries) every older one it rewrote."""
        if self._lock_fh is None:
            return
        listed = self._outputs()
        new = {p.name for p in self.folder.iterdir() if not _is_store_file(p.name) and p.name not in listed
               and (p.name not in self._present or (rewritten and newest_mtime_ns(p) >= self._since_ns))}
        if new:
            atomic_write_text(self.folder / OUTPUTS_FILE, json.dumps(sorted(listed | new), indent=0))

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
        foreign = self._foreign()
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise FolderNotEmpty(f"output folder {self.folder} holds files that no run wrote there ({shown}); "
                                 "choose a new or empty --out, or move them away")
        # a new run, or a restart: everything an earlier run wrote here goes (never anything else)
        remove(self.folder / n for n in sorted(self._outputs()) + [p.name for p in self.folder.iterdir()
                                                                    if _is_store_file(p.name) and p.name != LOCK_FILE])
        self._present = {p.name for p in self.folder.iterdir()}
        atomic_write_text(path, json.dumps(self.key, indent=1, sort_keys=True))

    def close(self) -> None:
        if self._lock_fh is not None:
            try:
                self._claim(rewritten=True)
            finally:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
                self._lock_fh.close()
                self._lock_fh = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- stages: tensors + JSON metadata
    def stage_path(self, name: str) -> Path:
        return self.folder / STAGES / f"{check_stage_name(name)}.safetensors"

    def has(self, name: str) -> bool:
        return self.stage_path(name).is_file()

    def save(self, name: str, tensors: Mapping[str, torch.Tensor] | None = None, meta: Any = None) -> Path:
        """Write a stage atomically: tensors (safetensors) and JSON-able metadata, with the run and a content hash."""
        from safetensors.torch import save_file

        path = self.stage_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
        data = {k: v.detach().cpu().contiguous().clone() for k, v in (tensors or {}).items()}
        text = json.dumps(jsonable(meta))
        save_file(data, str(tmp), metadata={"meta": text, "run": self.run,
                                            "sha256": stage_digest(name, self.run, text, data)})
        os.replace(tmp, path)
        self._claim()
        return path

    def load(self, name: str) -> tuple[dict[str, torch.Tensor], Any]:
        """A saved stage's (tensors, metadata). A damaged or edited file, or one written by another run, is refused
        with one line naming it."""
        tensors, meta, run = self._read_stage(name)
        if run != self.run:
            raise StageRefused(f"saved stage {self.stage_path(name)} belongs to another run; rerun with --restart")
        return tensors, meta

    def _read_stage(self, name: str) -> tuple[dict[str, torch.Tensor], Any, str]:
        from safetensors import safe_open

        path = self.stage_path(name)
        try:
            with safe_open(str(path), framework="pt") as fh:
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
                header = fh.metadata() or {}
            text, run, digest = header["meta"], header["run"], header["sha256"]
            meta = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise StageRefused(f"saved stage {path} is damaged or not a stage of this toolkit "
                               f"({type(exc).__name__}); rerun with --restart") from None
        if stage_digest(name, run, text, tensors) != digest:
            raise StageRefused(f"saved stage {path} was modified since it was written (its content hash does not "
                               "match); rerun with --restart")
        return tensors, meta, run

    def saved(self, name: str) -> tuple[dict[str, torch.Tensor], Any] | None:
        """Stage `name` as (tensors, metadata) if this run saved it; None if absent or written by another run (to
        be recomputed). An edited or damaged one is refused, naming it."""
        if not self.has(name):
            return None
        tensors, meta, run = self._read_stage(name)
        return (tensors, meta) if run == self.run else None

    def stage(self, name: str, compute: Callable[[], T], *, to_saved: Callable[[T], tuple[dict, Any]],
              from_saved: Callable[[dict, Any], T], check: Callable[[T], Any] | None = None) -> T:
        """Load stage `name` if this run saved it, else compute and save it. A stage of another run is recomputed;
        an edited or damaged one is refused, and so is one that `check` (e.g. shapes and finiteness against this
        run's inputs; it raises ValueError) finds wrong."""
        if self.has(name):
            tensors, meta, run = self._read_stage(name)
            if run == self.run:
                try:
                    value = from_saved(tensors, meta)
                    if check is not None:
                        check(value)
                except (ValueError, TypeError, KeyError) as exc:
                    raise StageRefused(f"saved stage {self.stage_path(name)} does not fit this run ({exc}); rerun "
                                       "with --restart") from None
                return value
        value = compute()
        self.save(name, *to_saved(value))
        return value

    def dataclass_stage(self, name: str, cls: type[T], compute: Callable[[], T], *,
                        nested: Mapping[str, type] | None = None, check: Callable[[T], Any] | None = None) -> T:
        """`stage` for a dataclass whose fields are tensors, JSON values or dataclasses of those (named with their
        class in `nested`, e.g. {"config": LSTConfig, "trajectory": Trajectory}); tuples come back as tuples."""
        return self.stage(name, compute, to_saved=dataclass_to_saved,
                          from_saved=lambda t, m: dataclass_from_saved(cls, t, m, dict(nested or {})), check=check)

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
        """This run's records; lines of another run are left out (their work is redone), an edited line refused."""
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("records*.jsonl")):
            with open(path, encoding="utf-8", errors="replace") as fh:
                for number, line in enumerate(fh, 1):
                    if not line.endswith("\n"):
                        break
                    try:
                        entry = json.loads(line)
                        run, digest, rec = entry["run"], entry["sha256"], entry["record"]
                        ok = record_digest(run, rec) == digest and isinstance(rec.get("key"), str)
                    except (ValueError, KeyError, TypeError, AttributeError):
                        ok = False
                    if not ok:
                        raise StageRefused(f"line {number} of {path} was modified since it was written (or is not "
                                           "a record of this toolkit); rerun with --restart")
                    if run == self.run:
                        out.setdefault(rec["key"], rec)
        return out

    @classmethod
    def reader(cls, folder: str | os.PathLike) -> "RunStore":
        """A finished run's folder opened for reading only (no lock, no key check): `records()`, `load()`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
        try:
            key = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise RunRefused(f"{folder} holds no readable run ({KEY_FILE} is missing or damaged)") from None
        reader = cls.__new__(cls)
        reader._lock_fh = None
        reader.folder, reader.key, reader.run = folder, key, run_id(key)
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
        """Append records (each with a unique plain 'key'), flushed and fsynced; returns them as stored."""
        stored = [json.loads(json.dumps(jsonable(r), allow_nan=False)) for r in records]
        for r in stored:
            check_record_key(r.get("key"))
        if stored:
            lines = [json.dumps({"run": self.run, "sha256": record_digest(self.run, r), "record": r},
                                allow_nan=False) + "\n" for r in stored]
            with open(self.records_path, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
            for r in stored:
                self._records.setdefault(r["key"], r)
            self._claim()
        return stored


def record_sort_key(key: str) -> tuple:
    """Order of record keys ('lst|model|round|source|target'): numeric parts as numbers."""
    return tuple((0, int(p), "") if p.lstrip("-").isdigit() else (1, 0, p) for p in key.split("|"))
