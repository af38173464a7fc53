"""The paper's pair protocol on top of the LST engine: a pool of correctly classified sources, `rounds` derangements
(each source to a target of another class), per-pair seeds that depend only on (base seed, round, source), and
deterministic batches of whole sources so that per-source statistics run where the source's outputs already are.
Results go to a `RunStore` record by record; a batch with anything missing is rerun whole."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..models import Classifier, model_device
from ..store import RunStore
from ..traversal import LSTConfig, level_set_traversal
from ..validation import check_images, check_labels
from .distributed import DistInfo
from ..errors import InputError



def pair_seed(base_seed: int, round_index: int, source: int) -> int:
    """Seed of one LST pair, a function of (base seed, round, source index) only (independent of sharding)."""
    state = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, int(round_index), int(source)]).generate_state(
        2, np.uint32)
    return int((int(state[0]) << 30) ^ int(state[1])) & ((1 << 62) - 1)


def slug(name: str) -> str:
    """A file-name-safe version of a model name: a plain name (letters, digits, '_', '.', '-'; never '.' or '..',
    never starting with a dot)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "model"


def pair_key(model: str, round_index: int, source: int, target: int) -> str:
    return f"lst|{model}|{round_index}|{source}|{target}"


def source_key(kind: str, model: str, source: int) -> str:
    return f"{kind}|{model}|{source}"




@dataclass(frozen=True)
class ProtocolConfig:
    """The pair protocol: `rounds` derangements of the pool (each source to a target of another class), the seed
    of the derangements and of the per-pair LST seeds, and how many pairs go through LST at once."""

    rounds: int = 5
    seed: int = 0
    pairs_per_batch: int = 20

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise InputError(f"rounds must be >= 1, got {self.rounds}")
        if self.pairs_per_batch < 1:
            raise InputError(f"pairs_per_batch must be >= 1, got {self.pairs_per_batch}")

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
    """Indices of the images every model classifies correctly with confidence > `min_confidence` (strict, as the
    paper's p > 0.6), and the labels.

    Without labels, the first model's predictions serve as the labels (the pool is where all models agree).
    """
    check_images(images, "images")
    if not models:
        raise InputError("select_pool needs at least one model")
    preds = []
    for m in models:
        dev = model_device(m)
        cls, conf = m.predict(images.to(dev), batch_size) if isinstance(m, Classifier) else \
            _predict(m, images.to(dev), batch_size)
        preds.append((cls.cpu(), conf.cpu()))
    labels_t = preds[0][0].clone() if labels is None else check_labels(labels, images.shape[0], None)
    keep = torch.ones(images.shape[0], dtype=torch.bool)
    for cls, conf in preds:
        keep &= (cls == labels_t) & (conf > min_confidence)
    return keep.nonzero().flatten(), labels_t


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..models import probing

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
    store: RunStore,
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
    from tqdm.auto import tqdm

    info = info or DistInfo()
    check_images(images, "images")
    pool_t = torch.as_tensor(pool).long().flatten()
    labels = check_labels(labels, images.shape[0], None)
    targets = torch.as_tensor(targets).long()
    if targets.shape != (protocol.rounds, pool_t.numel()):
        raise InputError(f"targets must have shape (rounds={protocol.rounds}, pool={pool_t.numel()}), "
                         f"got {tuple(targets.shape)}")
    batch = _Batch(model, model_name, images, labels, store, config, protocol, info,
                   dict(pair_metrics or {}), dict(source_metrics or {}),
                   {"model": model_name, "config": config.to_dict(), "protocol": asdict(protocol), **(extra or {})},
                   log)
    position = {int(s): k for k, s in enumerate(pool_t.tolist())}
    batches = plan_batches(pool_t.tolist(), protocol.sources_per_batch)
    mine = [b for b in range(len(batches)) if b % info.world == info.rank]
    out: list[dict[str, Any]] = []
    for b in tqdm(mine, disable=not progress, desc=f"{model_name} batches", unit="batch"):
        sources = batches[b]
        pairs = [(r, s, int(pool_t[targets[r, position[s]]])) for s in sources for r in range(protocol.rounds)]
        out.extend(batch.run(b, sources, pairs))
    return out


class _Batch:
    """One batch of whole sources: its LST pairs (rerun whole if any is missing) and its per-source metrics."""

    def __init__(self, model, model_name, images, labels, store, config, protocol, info, pair_metrics,
                 source_metrics, base, log) -> None:
        self.model, self.name, self.images, self.labels, self.store = model, model_name, images, labels, store
        self.config, self.protocol, self.info, self.base, self.log = config, protocol, info, base, log
        self.pair_metrics, self.source_metrics = pair_metrics, source_metrics

    def run(self, b: int, sources: list[int], pairs: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
        keys = [pair_key(self.name, r, s, t) for r, s, t in pairs]
        skeys = {kind: [source_key(kind, self.name, s) for s in sources] for kind in self.source_metrics}
        array_name = f"{slug(self.name)}/batch{b:05d}"
        outputs = None
        missing = [k not in self.store for k in keys]
        if any(missing):
            if self.log and not all(missing):
                self.log(f"  {self.name} batch {b}: {sum(missing)} of {len(pairs)} pairs missing; rerunning it whole")
            outputs = self._pairs(pairs, keys, missing, array_name)
        missing_src = {kind: [k not in self.store for k in ks] for kind, ks in skeys.items()}
        if any(any(m) for m in missing_src.values()):
            if outputs is None:
                outputs = self._saved_outputs(array_name, len(pairs))
            self._sources(sources, outputs, skeys, missing_src)
        return [self.store.get(k) for k in keys] + [self.store.get(k) for ks in skeys.values() for k in ks]

    def _saved_outputs(self, array_name: str, n: int) -> torch.Tensor:
        """A batch's saved LST outputs, checked against the batch (shape, finite values in [0, 1])."""
        from ..store import StageRefused

        outputs = self.store.load(array_name)[0].get("images")
        expected = (n, *self.images.shape[1:])
        try:
            if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != expected:
                raise InputError(f"images {tuple(getattr(outputs, 'shape', ()))}, expected {expected}")
            check_images(outputs, "images")
        except (InputError, TypeError) as exc:
            raise StageRefused(f"saved stage {self.store.stage_path(array_name)} does not fit this run ({exc}); "
                               "rerun with --restart") from None
        return outputs

    def _pairs(self, pairs, keys, missing, array_name) -> torch.Tensor:
        """LST on every pair of the batch, their pair metrics, and the records of the missing ones."""
        src_idx = torch.tensor([s for _, s, _ in pairs])
        tgt_idx = torch.tensor([t for _, _, t in pairs])
        xs, xt = self.images[src_idx], self.images[tgt_idx]
        ys, yt = self.labels[src_idx], self.labels[tgt_idx]
        seeds = [pair_seed(self.protocol.seed, r, s) for r, s, _ in pairs]
        res = level_set_traversal(self.model, xs, xt, ys, self.config, target_labels=yt, seed=seeds,
                                  device=self.info.device)
        columns: dict[str, torch.Tensor] = {}
        for fn in self.pair_metrics.values():
            for col, val in fn(self.model, xs, res.images, xt, ys).items():
                columns[col] = torch.as_tensor(val).flatten().cpu()
        rel = str(self.store.save(array_name, {"images": res.images}).relative_to(self.store.folder))
        new = []
        for k, (rec, (r, s, t)) in enumerate(zip(res.records(), pairs)):
            if not missing[k]:
                continue
            rec.pop("index")
            rec.update(self.base)
            rec.update({"key": keys[k], "kind": "lst", "round": r, "source": s, "target": t,
                        "source_label": int(ys[k]), "target_label": int(yt[k]), "array": rel, "array_index": k})
            rec.update({col: float(v[k]) for col, v in columns.items()})
            new.append(rec)
        self.store.append(new)
        return res.images

    def _sources(self, sources, outputs, skeys, missing_src) -> None:
        """Per-source metrics from the K = rounds outputs of each source (pairs are source-major, round-minor)."""
        per_source = outputs.view(len(sources), self.protocol.rounds, *outputs.shape[1:])
        src_t = torch.tensor(sources)
        for kind, fn in self.source_metrics.items():
            if not any(missing_src[kind]):
                continue
            rows = fn(self.model, self.images[src_t], per_source, self.labels[src_t], source_ids=sources)
            self.store.append([{**dict(row), **self.base, "key": skeys[kind][j], "kind": kind, "source": s,
                                "source_label": int(self.labels[s])}
                               for j, (s, row) in enumerate(zip(sources, rows)) if missing_src[kind][j]])
