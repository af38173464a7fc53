"""The LST paper's Tables 1 and 2 on any list of models and an image pool, resumable and shardable.

Protocol (Balasubramanian et al. 2023): the pool is the images every model classifies correctly (confidence >
`--min-confidence`, strict; 0.6 in the paper); 5 rounds, each a derangement sending every source to a target of another
class; LST with the paper's settings (`LSTConfig.paper()`: step 1e-2, 400 iterations, threshold 0.2, adversarial
step 2e-3). Table 1 per model: RMS-l2, l-inf, SSIM (and LPIPS with `--lpips-weights`) between LST outputs and
targets, and the final source confidence, mean +- std over rounds and sources. Table 2 per model: the triangle-hull
statistics of `blindspots.geometry.hull_statistics` over the 5 outputs of each source, mean +- std over sources.

    blindspots tables                                   # imagenet-lite0 on scikit-image's photos
    blindspots tables --iterations 40 --out blindspots-out/quick  # a quick look (not the paper's T)
    blindspots tables --model timm:resnet50,timm:deit_small_patch16_224 \\
        --weights resnet50.safetensors,deit_s.safetensors --images val_pool/ --labels val_pool/labels.csv \\
        --min-confidence 0.6
    torchrun --nproc-per-node 2 -m benchmarks.lst_tables --out blindspots-out/lst   # sharded; rank 0 writes

Output folder: run.json (the run store's key), records*.jsonl (one line per pair / per source, resumable), stages/
(LST outputs), table1.csv, table2.csv, tables.json, report.html (+ PNG figures).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from blindspots import LSTConfig, derangement_pairs, load_classifier
from blindspots import studies as st
from blindspots.errors import InputError

from .config import TablesConfig
from .metrics import TABLE1_FIELDS, hull_deltas, hull_metric, lpips_metric, ssim_paper_metric, table2_fields
from .report import write_report

__all__ = ["TablesResult", "run_study", "build_tables", "run_tables"]


def run_study(
    models: Sequence[tuple[str, nn.Module]],
    images: torch.Tensor,
    labels: torch.Tensor | None,
    out: str | Path,
    *,
    config: LSTConfig | None = None,
    protocol: st.ProtocolConfig | None = None,
    min_confidence: float = 0.0,
    hull: bool = True,
    grid_step: float = 0.1,
    lpips_weights: str | Path | None = None,
    image_names: Sequence[str] | None = None,
    info: st.DistInfo | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
    report: bool = True,
    restart: bool = False,
    pool: Sequence[int] | torch.Tensor | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) the protocol for every model into `out`; on rank 0 return the tables (None elsewhere).

    `models` are (name, classifier) pairs already on `info.device`. The run store's key holds every model's
    weights, the images, the protocol, the config and `settings` (e.g. the command line): a rerun with any of them
    changed into the same folder is refused naming what changed (`restart=True` discards the old run). `pool`:
    the source indices when the caller chose them (e.g. a second run on the same pool); by default the images
    every model classifies correctly with confidence > `min_confidence`.
    """
    config = config or LSTConfig.paper()
    protocol = protocol or st.ProtocolConfig()
    info = info or st.DistInfo()
    out = Path(out)
    if hull and protocol.rounds < 2:
        raise InputError(f"rounds {protocol.rounds}: the hull statistics (Table 2) need >= 2 rounds, two LST outputs "
                         "per source for a triangle; give --rounds >= 2 or --no-hull")
    chosen, labels_t = st.select_pool([m for _, m in models], images, labels, min_confidence=min_confidence)
    pool = chosen if pool is None else torch.as_tensor(pool).long().flatten()
    if pool.numel() < 2:
        raise InputError(f"only {pool.numel()} image(s) are classified correctly by every model (confidence > "
                         f"{min_confidence}); the protocol needs at least 2 of different classes")
    targets = derangement_pairs(labels_t[pool], protocol.rounds, protocol.seed)
    full_settings = {"study": "lst_tables", "models": [n for n, _ in models], "config": config.to_dict(),
                     "protocol": asdict(protocol),
                     "min_confidence": min_confidence, "hull": hull, "grid_step": grid_step,
                     "lpips": lpips_weights is not None, "pool": pool.tolist(), "labels": labels_t.tolist(),
                     **(settings or {})}
    store = st.open_run_store(out, "lst_tables", info, restart=restart, model=dict(models), settings=full_settings,
                              inputs={"images": images})
    try:
        return _run(store, models, images, labels_t, pool, targets, out, config, protocol, info, hull,
                    grid_step, lpips_weights, image_names, progress, report)
    finally:
        store.close()


def _run(store, models, images, labels_t, pool, targets, out, config, protocol, info, hull, grid_step,
         lpips_weights, image_names, progress, report) -> dict[str, Any] | None:
    if lpips_weights is None and info.is_main:
        print("skipped: LPIPS (no --lpips-weights given)")
    pair_metrics = {"ssim_paper": ssim_paper_metric}
    if lpips_weights is not None:
        pair_metrics["lpips"] = lpips_metric(lpips_weights)
    source_metrics = {"hull": hull_metric(grid_step, hull_deltas(config.threshold))} if hull else {}
    mine: list[dict[str, Any]] = []
    for name, model in models:
        mine += st.run_pair_protocol(model, name, images, labels_t, pool, targets, store, config=config,
                                     protocol=protocol, info=info, pair_metrics=pair_metrics,
                                     source_metrics=source_metrics, progress=progress)
    records = st.gather_records(mine, info)
    if records is None:
        return None
    tables = build_tables(records, [n for n, _ in models])
    tables["pool"] = {"indices": pool.tolist(), "labels": labels_t[pool].tolist(),
                      "names": [image_names[i] for i in pool.tolist()] if image_names else None}
    tables["labels"] = labels_t.tolist()  # of every image: the classes the protocol used
    tables["targets"] = targets.tolist()  # (rounds, pool) positions in the pool: the pairs
    tables["skipped"] = [s for s, missing in (("hull statistics (--no-hull)", not hull),
                                              ("LPIPS (no weights given)", lpips_weights is None)) if missing]
    st.write_json(tables, out / "tables.json")
    st.write_csv(tables["table1"], out / "table1.csv")
    if tables["table2"]:
        st.write_csv(tables["table2"], out / "table2.csv")
    st.write_csv(records, out / "records.csv")
    if report:
        write_report(out, tables, records, images, [n for n, _ in models])
    return tables


def build_tables(records: Sequence[dict[str, Any]], model_order: Sequence[str]) -> dict[str, Any]:
    """Table 1 and 2 (mean, std and n per column and model) from the records; deterministic given the records."""
    records = st.dedup_sorted(records)
    order = {m: i for i, m in enumerate(model_order)}
    lst = [r for r in records if r["kind"] == "lst"]
    hull = [r for r in records if r["kind"] == "hull"]
    t1 = sorted(st.summarize(lst, ["model"], list(TABLE1_FIELDS)), key=lambda r: order.get(r["model"], 1 << 30))
    t2 = sorted(st.summarize(hull, ["model"], list(table2_fields(hull))), key=lambda r: order.get(r["model"], 1 << 30))
    return {"table1": t1, "table2": t2, "pairs": len(lst), "hull_sources": len(hull)}


def _read_labels(path: str | Path, names: Sequence[str]) -> torch.Tensor:
    """A CSV of 'file,label' lines (header optional) -> labels in the order of `names`."""
    table: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
                    table[row[0].strip()] = int(row[1])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read labels file {path}: not a UTF-8 CSV of 'file,label' lines ({exc})") from None
    missing = [n for n in names if n not in table]
    if missing:
        raise InputError(f"{path} has no label for {len(missing)} images, e.g. {missing[:3]}")
    return torch.tensor([table[n] for n in names])


@dataclass
class TablesResult:
    """What a run found: `tables` (as `run_study` returns them: 'table1', 'table2' (mean, std and n per column and
    model), 'pairs', 'hull_sources', 'pool', 'labels', 'targets', 'skipped'), and the files written: `files`
    (tables.json, table1.csv, table2.csv when Table 2 ran, records.csv) and `report` (report.html)."""

    config: TablesConfig
    out: Path
    tables: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None

    @property
    def table1(self) -> list[dict[str, Any]]:
        return self.tables["table1"]

    @property
    def table2(self) -> list[dict[str, Any]]:
        return self.tables["table2"]

    @property
    def pairs(self) -> int:
        return self.tables["pairs"]

    @property
    def skipped(self) -> list[str]:
        return self.tables["skipped"]


def run_tables(config: TablesConfig, out: str | Path, *, device: str | None = None, progress: bool = True,
               restart: bool = False) -> TablesResult | None:
    """The `blindspots tables` study from Python: `config`'s models (with local weight files), its image folder
    (with a 'file,label' CSV) or scikit-image's photos, the protocol and LST settings (`LSTConfig.paper()` by
    default), run (or resumed) into `out`. Returns the result on rank 0 (None on other ranks of torchrun)."""
    from blindspots.data import demo_photos, load_image_folder

    protocol = st.ProtocolConfig(rounds=config.rounds, seed=config.seed, pairs_per_batch=config.batch_size)
    out = Path(out)
    info = st.init_distributed(device)
    try:
        nets = [(spec, load_classifier(spec, weights=w or None, device=info.device))
                for spec, w in zip(config.models, config.weights)]
        if config.images:
            x, names = load_image_folder(config.images, config.size, config.limit)
        else:
            x, names = demo_photos(size=config.size)
            x, names = x[:config.limit], names[:config.limit]
        y = _read_labels(config.labels, names) if config.labels else None
        tables = run_study(nets, x, y, out, config=config.lst, protocol=protocol,
                           min_confidence=config.min_confidence, hull=config.hull, grid_step=config.grid_step,
                           lpips_weights=config.lpips_weights, image_names=names, info=info,
                           settings=config.settings(), progress=progress, restart=restart)
    finally:
        st.finish_distributed(info)
    if tables is None:
        return None
    files = {name: out / name for name in ("tables.json", "table1.csv", "table2.csv", "records.csv")
             if (out / name).is_file() and (name != "table2.csv" or tables["table2"])}
    return TablesResult(config=config, out=out, tables=tables, files=files, report=out / "report.html")
