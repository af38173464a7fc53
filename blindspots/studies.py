"""Machinery shared by the studies in `benchmarks/`: resumable record stores, sharding across processes with
`torch.distributed`, the paper's pair protocol on top of the LST engine, mean +- std tables and a static HTML report.

A study is a set of LST *pairs* (model, round, source, target), run in deterministic *batches* of whole sources (all
rounds of a group of sources), so that per-source statistics (hull, attacks) are computed where that source's LST
outputs already are. Each pair gets a seed derived from (base seed, round, source), so its result does not depend on
which process or batch ran it. Results are appended record by record (one JSON line each, with the config and seed);
the LST outputs are saved per batch (safetensors) so per-source statistics can be recomputed on resume without
rerunning LST. A rerun into the same folder skips finished work; a batch with anything missing is rerun whole, so a
killed-and-resumed run ends with exactly the records of an uninterrupted one.

Under `torchrun` (WORLD_SIZE > 1) batches are dealt round-robin to ranks (gloo on CPU, nccl on GPU) and rank 0
gathers every record; the tables are computed from records sorted by key, so they equal the single-process ones.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .models import Classifier
from .traversal import LSTConfig, derangement_pairs, level_set_traversal
from .validation import check_images, check_labels

__all__ = [
    "DistInfo",
    "init_distributed",
    "finish_distributed",
    "gather_records",
    "pair_seed",
    "RecordStore",
    "ProtocolConfig",
    "PairMetric",
    "SourceMetric",
    "select_pool",
    "plan_batches",
    "run_pair_protocol",
    "summarize",
    "format_mean_std",
    "markdown_table",
    "write_csv",
    "write_html_report",
    "figure_to_png",
    "slug",
]

# ----------------------------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str | torch.device | None = None, backend: str | None = None) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), or run alone.

    Backend: nccl when the device is CUDA, gloo otherwise (unless given). With CUDA and no `device`, rank r uses
    cuda:LOCAL_RANK. An already-initialised group is reused (and not destroyed by `finish_distributed`).
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
        return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group=False)
    if world <= 1:
        return DistInfo(0, 1, device)
    dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group=True)


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
        return _dedup_sorted(records)
    parts: list[Any] | None = [None] * info.world if info.is_main else None
    dist.gather_object(records, parts, dst=0)
    if not info.is_main:
        return None
    return _dedup_sorted([r for part in parts for r in part])  # type: ignore[union-attr]


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    import torch.distributed as dist

    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sort_key(key: str) -> tuple:
    return tuple((0, int(p), "") if re.fullmatch(r"-?\d+", p) else (1, 0, p) for p in key.split("|"))


def _dedup_sorted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        seen.setdefault(r["key"], r)
    return [seen[k] for k in sorted(seen, key=_sort_key)]


# ----------------------------------------------------------------------------------------------- seeds, keys


def pair_seed(base_seed: int, round_index: int, source: int) -> int:
    """Seed of one LST pair, a function of (base seed, round, source index) only (independent of sharding)."""
    state = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, int(round_index), int(source)]).generate_state(
        2, np.uint32)
    return int((int(state[0]) << 30) ^ int(state[1])) & ((1 << 62) - 1)


def slug(name: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def pair_key(model: str, round_index: int, source: int, target: int) -> str:
    return f"lst|{model}|{round_index}|{source}|{target}"


def source_key(kind: str, model: str, source: int) -> str:
    return f"{kind}|{model}|{source}"


# ----------------------------------------------------------------------------------------------- the record store


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class RecordStore:
    """An output folder of one study: `study.json` (its settings), `records*.jsonl` (one line per finished unit of
    work, appended and flushed per batch; one file per rank), `arrays/` (tensors per batch, safetensors).

    Opening a folder that holds a run with different settings raises a `ValueError` instead of mixing the two.
    A torn last line (a run killed while writing) is ignored, so that unit is redone.
    """

    def __init__(self, folder: str | os.PathLike, settings: Mapping[str, Any] | None = None, *, rank: int = 0,
                 world: int = 1) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank, self.world = rank, world
        name = "records.jsonl" if world == 1 else f"records-rank{rank}-of{world}.jsonl"
        self.path = self.folder / name
        if settings is not None:
            self._check_settings(_jsonable(dict(settings)))
        self._drop_torn_tail()
        self._records = self._read()

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line off this rank's file, so that appended records start on a line of their own."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def _check_settings(self, settings: dict[str, Any]) -> None:
        manifest = self.folder / "study.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old != settings:
                diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise ValueError(f"{self.folder} holds a run with different settings (differing: {diff}); use "
                                 "another output folder or delete this one to start afresh")
        elif self.rank == 0:
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
            os.replace(tmp, manifest)

    def _read(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("records*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # torn last line: a run killed mid-write
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and "key" in rec:
                        out.setdefault(rec["key"], rec)
        return out

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All records (of one kind), sorted by key."""
        recs = [r for r in self._records.values() if kind is None or r.get("kind") == kind]
        return _dedup_sorted(recs)

    def append(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append records (each must have a unique 'key'), flushed and synced to disk; returns them as stored."""
        stored = [json.loads(json.dumps(_jsonable(r), allow_nan=False)) for r in records]
        if not stored:
            return stored
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in stored))
            fh.flush()
            os.fsync(fh.fileno())
        for r in stored:
            self._records.setdefault(r["key"], r)
        return stored

    def array_path(self, name: str) -> Path:
        return self.folder / "arrays" / f"{name}.safetensors"

    def save_arrays(self, name: str, tensors: Mapping[str, torch.Tensor]) -> str:
        """Write tensors atomically to arrays/<name>.safetensors; returns the path relative to the folder."""
        from safetensors.torch import save_file

        path = self.array_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
        return str(path.relative_to(self.folder))

    def load_arrays(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self.array_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: its records exist but its tensors do not (was the folder "
                                    "copied partially?); delete the folder's records of that batch or start afresh")
        return load_file(str(path))


# ----------------------------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class ProtocolConfig:
    """The pair protocol: `rounds` derangements of the pool (each source to a target of another class), the seed
    of the derangements and of the per-pair LST seeds, and how many pairs go through LST at once."""

    rounds: int = 5
    seed: int = 0
    pairs_per_batch: int = 20

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch must be >= 1, got {self.pairs_per_batch}")

    @property
    def sources_per_batch(self) -> int:
        return max(1, self.pairs_per_batch // self.rounds)


# A per-pair metric: (model, sources, outputs, targets, labels) -> {column: (n,) tensor}, stored in the pair record.
PairMetric = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]]
# A per-source metric: (model, sources (S,C,H,W), outputs (S,K,C,H,W), labels (S,), *, source_ids (S indices into
# the image set)) -> one dict per source.
SourceMetric = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], Sequence[Mapping[str, Any]]]


@torch.no_grad()
def select_pool(models: Sequence[Classifier], images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None,
                *, min_confidence: float = 0.0, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the images every model classifies correctly with confidence >= `min_confidence`, and the labels.

    Without labels, the first model's predictions serve as the labels (the pool is where all models agree).
    """
    check_images(images, "images")
    if not models:
        raise ValueError("select_pool needs at least one model")
    preds = []
    for m in models:
        dev = m.device if isinstance(m, Classifier) else next(m.parameters()).device
        cls, conf = m.predict(images.to(dev), batch_size) if isinstance(m, Classifier) else \
            _predict(m, images.to(dev), batch_size)
        preds.append((cls.cpu(), conf.cpu()))
    labels_t = preds[0][0].clone() if labels is None else check_labels(labels, images.shape[0], None)
    keep = torch.ones(images.shape[0], dtype=torch.bool)
    for cls, conf in preds:
        keep &= (cls == labels_t) & (conf >= min_confidence)
    return keep.nonzero().flatten(), labels_t


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .models import probing

    with probing(model):
        probs = torch.cat([model(images[i:i + batch_size]).float().softmax(-1)
                           for i in range(0, images.shape[0], batch_size)])
    conf, cls = probs.max(-1)
    return cls, conf


def plan_batches(pool: Sequence[int], sources_per_batch: int) -> list[list[int]]:
    """Split the pool (in its order) into consecutive groups of sources: the batches of the protocol."""
    pool = [int(i) for i in pool]
    return [pool[i:i + sources_per_batch] for i in range(0, len(pool), sources_per_batch)]


def run_pair_protocol(
    model: nn.Module,
    model_name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    pool: torch.Tensor | Sequence[int],
    targets: torch.Tensor,
    store: RecordStore,
    *,
    config: LSTConfig,
    protocol: ProtocolConfig,
    info: DistInfo | None = None,
    pair_metrics: Mapping[str, PairMetric] | None = None,
    source_metrics: Mapping[str, SourceMetric] | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run (or resume) LST on every pair of the protocol owned by this rank; return this rank's records.

    Args:
        images, labels: the whole image set (N, C, H, W) in [0, 1] and its labels (N,).
        pool: indices of the sources (correctly classified); targets: (rounds, len(pool)) indices into `pool`
            positions, as `derangement_pairs` returns them.
        store: where records and LST outputs go; finished pairs and per-source records are skipped.
        pair_metrics: extra per-pair columns, computed with the LST outputs (e.g. LPIPS, path confidence).
        source_metrics: per-source statistics from the K = rounds outputs of a source (e.g. hull statistics,
            minimal adversarial distance); each gives records of kind <name>.
        extra: fields added to every record (e.g. the backbone's description).
    """
    info = info or DistInfo()
    check_images(images, "images")
    pool_t = torch.as_tensor(pool).long().flatten()
    labels = check_labels(labels, images.shape[0], None)
    targets = torch.as_tensor(targets).long()
    if targets.shape != (protocol.rounds, pool_t.numel()):
        raise ValueError(f"targets must have shape (rounds={protocol.rounds}, pool={pool_t.numel()}), "
                         f"got {tuple(targets.shape)}")
    pair_metrics, source_metrics = dict(pair_metrics or {}), dict(source_metrics or {})
    position = {int(s): k for k, s in enumerate(pool_t.tolist())}
    base = {"model": model_name, "config": config.to_dict(), "protocol": asdict(protocol), **(extra or {})}
    batches = plan_batches(pool_t.tolist(), protocol.sources_per_batch)
    mine = [b for b in range(len(batches)) if b % info.world == info.rank]
    out: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    for b in tqdm(mine, disable=not progress, desc=f"{model_name} batches", unit="batch"):
        sources = batches[b]
        pairs = [(r, s, int(pool_t[targets[r, position[s]]])) for s in sources for r in range(protocol.rounds)]
        keys = [pair_key(model_name, r, s, t) for r, s, t in pairs]
        skeys = {kind: [source_key(kind, model_name, s) for s in sources] for kind in source_metrics}
        missing_pairs = [k not in store for k in keys]
        missing_src = {kind: [k not in store for k in ks] for kind, ks in skeys.items()}
        array_name = f"{slug(model_name)}/batch{b:05d}"
        outputs = None
        if any(missing_pairs):
            if log and not all(missing_pairs):
                log(f"  {model_name} batch {b}: {sum(missing_pairs)} of {len(pairs)} pairs missing; rerunning it whole")
            src_idx = torch.tensor([s for _, s, _ in pairs])
            tgt_idx = torch.tensor([t for _, _, t in pairs])
            xs, xt = images[src_idx], images[tgt_idx]
            ys, yt = labels[src_idx], labels[tgt_idx]
            seeds = [pair_seed(protocol.seed, r, s) for r, s, _ in pairs]
            res = level_set_traversal(model, xs, xt, ys, config, target_labels=yt, seed=seeds, device=info.device)
            outputs = res.images
            columns: dict[str, torch.Tensor] = {}
            for name, fn in pair_metrics.items():
                for col, val in fn(model, xs, outputs, xt, ys).items():
                    columns[col] = torch.as_tensor(val).flatten().cpu()
            rel = store.save_arrays(array_name, {"images": outputs})
            new = []
            for k, (rec, (r, s, t)) in enumerate(zip(res.records(), pairs)):
                if not missing_pairs[k]:
                    continue
                rec.pop("index")
                rec.update(base)
                rec.update({"key": keys[k], "kind": "lst", "round": r, "source": s, "target": t,
                            "source_label": int(ys[k]), "target_label": int(yt[k]), "array": rel, "array_index": k})
                rec.update({col: float(v[k]) for col, v in columns.items()})
                new.append(rec)
            store.append(new)
        if any(any(m) for m in missing_src.values()):
            if outputs is None:
                outputs = store.load_arrays(array_name)["images"]
            # pairs are ordered source-major, round-minor: outputs (S*K, ...) -> (S, K, ...)
            per_source = outputs.view(len(sources), protocol.rounds, *outputs.shape[1:])
            src_t = torch.tensor(sources)
            for kind, fn in source_metrics.items():
                if not any(missing_src[kind]):
                    continue
                rows = fn(model, images[src_t], per_source, labels[src_t], source_ids=sources)
                new = []
                for j, (s, row) in enumerate(zip(sources, rows)):
                    if missing_src[kind][j]:
                        new.append({**dict(row), **base, "key": skeys[kind][j], "kind": kind, "source": s,
                                    "source_label": int(labels[s])})
                store.append(new)
        out.extend(store.get(k) for k in keys)
        for ks in skeys.values():
            out.extend(store.get(k) for k in ks)
    return out


# ----------------------------------------------------------------------------------------------- tables


def summarize(records: Sequence[Mapping[str, Any]], by: Sequence[str], fields: Sequence[str]
              ) -> list[dict[str, Any]]:
    """Mean, std (population, ddof=0), median and count of each field per group, groups in order of first
    appearance. The median is there because a few stalled traversals can dominate a mean.

    Records missing a field (or holding None) are left out of that field's statistics. The records should come
    sorted (e.g. by key) so that sums run in the same order every time.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(b) for b in by), []).append(r)
    rows = []
    for gkey, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, gkey))
        row["n"] = len(recs)
        for f in fields:
            vals = np.array([r[f] for r in recs if r.get(f) is not None], dtype=np.float64)
            if vals.size:
                row[f"{f}_mean"] = float(vals.mean())
                row[f"{f}_std"] = float(vals.std())
                row[f"{f}_median"] = float(np.median(vals))
                row[f"{f}_n"] = int(vals.size)
        rows.append(row)
    return rows


def format_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}g} ± {std:.{digits}g}" if std is not None else f"{mean:.{digits}g}"


def display_rows(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], fields: Mapping[str, str],
                 digits: int = 4) -> list[dict[str, str]]:
    """Rows of `summarize` turned into display strings: label columns as is, then 'mean ± std' per field (columns
    of fields absent from every row are dropped, never filled with made-up values)."""
    present = [f for f in fields if any(f"{f}_mean" in r for r in rows)]
    out = []
    for r in rows:
        d = {lab: str(r.get(lab, "")) for lab in labels}
        d["n"] = str(r.get("n", ""))
        for f in present:
            d[fields[f]] = format_mean_std(r.get(f"{f}_mean"), r.get(f"{f}_std"), digits)
        out.append(d)
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Rows (dicts) to CSV; the columns are the union of the keys in order of appearance; nested values as JSON."""
    path = Path(path)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: json.dumps(v) if isinstance(v, (dict, list)) else v for c, v in r.items()})
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(_jsonable(obj), indent=2))
    return path


# ----------------------------------------------------------------------------------------------- HTML report


def figure_to_png(fig: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG (Agg) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_html_report(path: str | os.PathLike, title: str, sections: Sequence[Mapping[str, Any]]) -> Path:
    """A self-contained static HTML page (figures embedded as base64 PNG, no server or network needed).

    Each section is a dict with optional 'heading', 'text' (plain text paragraphs), 'table' (list of dicts,
    shown as an HTML table), 'figure' (path to a PNG) and 'caption'.
    """
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
             ".cap{color:#444;font-size:90%}pre{background:#f6f6f6;padding:.5em}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for sec in sections:
        if sec.get("heading"):
            parts.append(f"<h2>{esc(str(sec['heading']))}</h2>")
        for para in str(sec.get("text") or "").split("\n\n"):
            if para.strip():
                parts.append(f"<p>{esc(para.strip())}</p>")
        if sec.get("pre"):
            parts.append(f"<pre>{esc(str(sec['pre']))}</pre>")
        table = sec.get("table")
        if table:
            cols: list[str] = []
            for r in table:
                cols += [c for c in r if c not in cols]
            parts.append("<table><tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in cols) + "</tr>")
            for r in table:
                parts.append("<tr>" + "".join(f"<td>{esc(str(r.get(c, '')))}</td>" for c in cols) + "</tr>")
            parts.append("</table>")
        fig = sec.get("figure")
        if fig and Path(fig).is_file():
            data = base64.b64encode(Path(fig).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{esc(Path(fig).name)}' src='data:image/png;base64,{data}'>")
            if sec.get("caption"):
                parts.append(f"<figcaption class='cap'>{esc(str(sec['caption']))}</figcaption>")
            parts.append("</figure>")
        elif sec.get("caption"):
            parts.append(f"<p class='cap'>{esc(str(sec['caption']))}</p>")
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
