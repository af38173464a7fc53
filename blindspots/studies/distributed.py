"""Sharding a study across processes with `torch.distributed` (torchrun): gloo on CPU, nccl on GPU. Batches are
dealt round-robin to ranks and rank 0 gathers every record, sorted by key, so tables equal the single-process ones."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from ..store import RunStore, record_sort_key


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run. `in_group`: a process group is in use (always with
    more than one process; with one when a backend was asked for, so its collectives run and can be tested)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False
    in_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1 or self.in_group


def study_device(device: str | torch.device | None = None, threads: int | None = None) -> torch.device:
    """The preamble of a study's run function: torch's CPU `threads` set (None: torch's own; anything but a positive
    integer is one line) and the device resolved (None: CUDA when present; 'gpu' means cuda; one this machine lacks is
    one line), before anything runs."""
    from ..cli import resolve_device
    from ..errors import InputError

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    device = resolve_device(None if device is None else str(device))
    if threads:
        torch.set_num_threads(threads)
    return device


def init_distributed(device: str | torch.device | None = None, backend: str | None = None) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), or run alone.

    Backend: nccl when the device is CUDA, gloo otherwise (unless given). With CUDA and no `device`, rank r uses
    cuda:LOCAL_RANK. An already-initialised group is reused (and not destroyed by `finish_distributed`). A single
    process runs alone, unless `backend` is given under torchrun: then it joins a group of one.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group=False, in_group=True)
    if world <= 1 and (backend is None or "MASTER_ADDR" not in os.environ):
        return DistInfo(0, 1, device)
    dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group=True, in_group=True)


def finish_distributed(info: DistInfo) -> None:
    """Destroy the process group if `init_distributed` created it."""
    import torch.distributed as dist

    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.distributed:
        dist.barrier()


def gather_records(records: list[dict[str, Any]], info: DistInfo) -> list[dict[str, Any]] | None:
    """Every rank's records, merged and sorted by key, on rank 0 (None on the other ranks)."""
    import torch.distributed as dist

    if not info.distributed:
        return dedup_sorted(records)
    parts: list[Any] | None = [None] * info.world if info.is_main else None
    dist.gather_object(records, parts, dst=0)
    if not info.is_main:
        return None
    return dedup_sorted([r for part in parts for r in part])  # type: ignore[union-attr]


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    import torch.distributed as dist

    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]




def dedup_sorted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with one per key (the first seen), sorted by key."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        seen.setdefault(r["key"], r)
    return [seen[k] for k in sorted(seen, key=record_sort_key)]


def open_run_store(folder, job: str, info: DistInfo, *, restart: bool = False, **key: Any) -> RunStore:
    """The study's `RunStore` on every rank: rank 0 opens it first (taking the lock, checking or writing the key,
    discarding the old run on `restart`), then the other ranks open it for their own records files."""
    if info.is_main:
        store = RunStore(folder, job, restart=restart, rank=info.rank, world=info.world, **key)
    barrier(info)
    if not info.is_main:
        store = RunStore(folder, job, rank=info.rank, world=info.world, **key)
    return store
