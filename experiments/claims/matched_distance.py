"""Claim 3 at matched distance: the triangle hulls of a normal and an AT model compared with every LST output of the
two models taken at the same RMS-l2 to its target.

At the paper's settings the two models' outputs end at different distances from their targets, so their triangles
(source, b_i, b_j) differ in size and "AT keeps more of the hull confident" is confounded with "AT's triangles are
smaller". Here each pair (round, source, target) is traversed again by both models with the main run's seeds (the
same paths), recording the path every `LOG_EVERY` steps; the pair's matched distance is the larger of the two models'
final RMS-l2 to the target, and each model's output for the pair is its first recorded point at or below that
distance (for the model that ended there, its final output). The hull statistics then run on these outputs. Records
(one 'lst' per pair with the distance reached and the confidence there, one 'hull' per source with the triangles'
sides) go to a `RunStore` in `out`, so a rerun reuses them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from blindspots import LSTConfig, level_set_traversal
from blindspots import studies as st

from ..tables.metrics import hull_deltas, hull_metric
from blindspots.errors import InputError

__all__ = ["LOG_EVERY", "matched_hull_records"]

LOG_EVERY = 4  # steps between recorded path points: each matched output lies within 4 steps of the distance


def matched_hull_records(models: Sequence[tuple[str, nn.Module]], images: torch.Tensor, labels: torch.Tensor,
                         pool: torch.Tensor, targets: torch.Tensor, out: str | Path, *, config: LSTConfig,
                         protocol: st.ProtocolConfig, grid_step: float = 0.1, restart: bool = False,
                         settings: dict[str, Any] | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Records of the matched-distance comparison of two models (normal, AT) on the protocol's pairs (`targets`:
    (rounds, len(pool)) positions in `pool`, as `derangement_pairs` gives them)."""
    if len(models) != 2:
        raise InputError(f"matched distance compares two models, got {len(models)}")
    cfg = replace(config, log_every=LOG_EVERY, log_snapshots=True, stop_rms=None)
    pool = torch.as_tensor(pool).long()
    store = st.open_run_store(out, "matched_distance", st.DistInfo(), restart=restart, model=dict(models),
                              settings={"config": config.to_dict(), "log_every": LOG_EVERY, "pool": pool.tolist(),
                                        "targets": targets.tolist(), "protocol": protocol.__dict__,
                                        "grid_step": grid_step, **(settings or {})}, inputs={"images": images})
    metric = hull_metric(grid_step, hull_deltas(config.threshold))
    try:
        batches = st.plan_batches(pool.tolist(), protocol.sources_per_batch)
        for sources in tqdm(batches, disable=not progress, desc="matched distance", unit="batch"):
            if all(st.source_key("hull", m, s) in store for m, _ in models for s in sources):
                continue
            store.append(_batch(models, images, labels, pool, targets, sources, cfg, protocol, metric))
        return store.records()
    finally:
        store.close()


def _batch(models, images, labels, pool, targets, sources, cfg, protocol, metric) -> list[dict[str, Any]]:
    position = {int(s): k for k, s in enumerate(pool.tolist())}
    pairs = [(r, s, int(pool[targets[r, position[s]]])) for s in sources for r in range(protocol.rounds)]
    src = torch.tensor([s for _, s, _ in pairs])
    tgt = torch.tensor([t for _, _, t in pairs])
    seeds = [st.pair_seed(protocol.seed, r, s) for r, s, _ in pairs]
    runs = {name: level_set_traversal(net, images[src], images[tgt], labels[src], cfg, target_labels=labels[tgt],
                                      seed=seeds) for name, net in models}
    final = torch.stack([res.trajectory.rms_to_target[-1] for res in runs.values()])  # (2, pairs)
    matched = final.max(0).values
    records: list[dict[str, Any]] = []
    for (name, net), res in zip(models, runs.values()):
        tr = res.trajectory
        reached = tr.rms_to_target <= matched[None] * (1 + 1e-6)  # (L, pairs); the last row reaches for one model
        row = reached.float().argmax(0)  # the first recorded point at or below the matched distance
        idx = torch.arange(len(pairs))
        outputs = tr.snapshots[row, idx]
        for k, (r, s, t) in enumerate(pairs):
            records.append({"key": f"lst|{name}|{r}|{s}|{t}", "kind": "lst", "model": name, "round": r,
                            "source": s, "target": t, "rms_l2": float(tr.rms_to_target[row[k], k]),
                            "matched_rms_l2": float(matched[k]), "step": int(tr.steps[row[k]]),
                            "initial_confidence": float(res.initial_confidence[k]),
                            "final_confidence": float(tr.source_confidence[row[k], k])})
        per_source = outputs.view(len(sources), protocol.rounds, *outputs.shape[1:])
        rows = metric(net, images[torch.tensor(sources)], per_source, labels[torch.tensor(sources)])
        records += [{**row_, "key": st.source_key("hull", name, s), "kind": "hull", "model": name, "source": s}
                    for s, row_ in zip(sources, rows)]
    return records
