"""The study as a function: `run_transfer(config, out) -> TransferResult`. Every cell (backbone, body setting,
training-set size, seed) trains one detector in its own stage of the run store (checkpoints every quarter of the
run, so a kill loses at most part of one training and resumes to the same weights), picks its score threshold on the
validation images and is scored on the same simulated test images and injected real hosts; then LST walks the same
pairs from the same start noise against every largest-size detector; `analysis` turns it all into verdicts."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspots import studies as st
from blindspots.cli import OUT_ROOT
from blindspots.errors import InputError
from blindspots.store import RunStore, fingerprint_file

from . import rules as rl
from .cells import Repeated, build_cell_detector, cell_name, load_cell_detector
from .config import TransferConfig

__all__ = ["TransferResult", "run_transfer", "load_hosts", "build_cell_detector", "load_cell_detector", "cell_name",
           "Repeated", "THRESHOLDS", "FLUX_CUTS", "PAPER_THRESHOLD"]

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))  # candidates for the validated score threshold
PAPER_THRESHOLD = 0.3
FLUX_CUTS = (0.03, 0.08)  # Clump Scout's relaxed and strict clump / host flux limits


@dataclass
class TransferResult:
    """What a run found: `cells` (one dict per trained detector: settings, threshold, figures), `analysis` (the
    verdicts and estimates, see `analysis.analyse`), `lst` (records), `hosts` (names used and left out),
    `report` (report.html), `seconds` (this invocation's wall time)."""

    config: TransferConfig
    out: Path
    cells: list[dict[str, Any]]
    analysis: dict[str, Any]
    lst: list[dict[str, Any]] = field(default_factory=list)
    hosts: dict[str, Any] = field(default_factory=dict)
    proxy: dict[str, Any] | None = None
    report: Path | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def verdicts(self) -> dict[str, Any]:
        return self.analysis["verdicts"]


# ------------------------------------------------------------------------------------------------- inputs


def load_hosts(config: TransferConfig) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """The real host cutouts of `config.host_folder()` (PNG/JPEG/FITS, sub-folders included) through the toolkit's
    one host reader (`detectors.hosts.load_hosts`: central `crop`, resized to the study's image size, cutouts that
    would be enlarged more than 2x or given twice left out), then those whose central galaxy cannot be measured left
    out too, each named with its reason."""
    from detectors.hosts import load_hosts as read_hosts
    from detectors.inject import measurable_hosts
    from detectors.simulate import SimConfig

    root = config.host_folder()
    try:
        hosts = measurable_hosts(read_hosts([root], config.image_size, config.crop),
                                 SimConfig(image_size=config.image_size))
    except InputError as exc:
        raise InputError(f"hosts {root}: no usable galaxy image ({exc})") from None
    return hosts.images, hosts.names, dict(hosts.skipped)


def _data(config: TransferConfig, hosts: torch.Tensor) -> dict[str, Any]:
    """The simulated pool (training sets are its prefixes), validation and test sets, and the real hosts with
    injected clumps (no stars: their own features carry no labels); every draw from `data_seed`."""
    from detectors.inject import inject_batch
    from detectors.simulate import SimConfig, SimulatedBatch, simulate

    sim = SimConfig(image_size=config.image_size)
    s = config.data_seed
    injected = [inject_batch(hosts, dataclasses.replace(sim, star_rate=0.0), seed=s + 30_000 + k)
                for k in range(config.injections)]
    half = 3 * max(1, config.lst_sources // 2)  # LST candidates: galaxies without clumps and with 2-8 of >= 3%
    plain = simulate(half, dataclasses.replace(sim, n_clumps=(0, 0)), s + 40_000)
    clumpy = simulate(half, dataclasses.replace(sim, n_clumps=(2, 8), clump_flux=(0.03, 0.08)), s + 50_000)
    lst = SimulatedBatch(torch.cat([plain.images, clumpy.images]), plain.targets + clumpy.targets,
                         plain.params + clumpy.params, sim, s + 40_000)
    return {"pool": simulate(config.pool, sim, s), "val": simulate(config.n_val, sim, s + 20_000), "lst": lst,
            "test": simulate(config.n_test, sim, s + 10_000),
            "real_images": torch.cat([b.images for b in injected]),
            "real_targets": [t for b in injected for t in b.targets],
            "real_units": np.tile(np.arange(hosts.shape[0]), config.injections)}


# ------------------------------------------------------------------------------------------------ detectors


def _train_cell(det, cell: tuple, config: TransferConfig, data: dict[str, Any], folder: Path, device, progress: bool):
    from detectors.train import train

    kind, body, size, seed = cell
    ds = Repeated(data["pool"], size, config.steps * config.batch_size)
    return train(det, ds, 1, folder, config.batch_size, lr=config.lr, warmup_steps=config.warmup, seed=seed,
                 checkpoint_every=max(10, config.steps // 4), progress=progress, device=device)


def _evaluate(det, config: TransferConfig, data: dict[str, Any], device) -> tuple[dict, dict]:
    """Threshold on the validation images (best clump F1), then per-image counts on the test images and the real
    hosts (at that threshold and at the paper's 0.3) and every test detection for AP50. -> (tensors, meta)."""
    from detectors.evaluate import (STRICT, MatchRule, average_precision, detection_table, image_counts,
                                    select_threshold)
    from detectors.frcnn import detect

    rule = MatchRule(config.iou)
    preds = {k: detect(det, data[k].images, device=device, score_floor=0.0) for k in ("val", "test")}
    threshold, _ = select_threshold(preds["val"], data["val"].targets, THRESHOLDS, rule, label=1)
    real = detect(det, data["real_images"], device=device, score_floor=0.0)
    arrays, meta = {}, {"threshold": threshold}
    for name, p, t in (("test", preds["test"], data["test"].targets), ("real", real, data["real_targets"])):
        c = image_counts(p, t, rule, (threshold, PAPER_THRESHOLD), label=1, flux_cuts=FLUX_CUTS)
        for k, at in (("chosen", 0), ("paper", 1)):
            counts = rl.Counts(c["tp"][at], c["n_true"], c["n_pred"][at], c["tp>=0.03"][at], c["n>=0.03"],
                               c["tp>=0.08"][at], c["n>=0.08"])
            arrays.update(counts.arrays(f"{name}.{k}"))
    arrays.update(rl.Detections(**detection_table(preds["test"], data["test"].targets, STRICT, label=1))
                  .arrays("ap"))
    meta["ap50"] = average_precision(preds["test"], data["test"].targets, STRICT, label=1)
    return {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}, meta


def _figures(arrays: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """A cell's point figures (every unit weighted once)."""
    one = None
    out = {"threshold": meta["threshold"], "ap50": meta["ap50"]}
    for name in ("test", "real"):
        for k in ("chosen", "paper"):
            c = rl.Counts.from_arrays(arrays, f"{name}.{k}")
            one = np.ones((1, c.tp.size))
            tag = f"{name}_{k}"
            out[f"{tag}_completeness"] = float(rl.completeness(c, one)[0])
            out[f"{tag}_completeness3"] = float(rl.completeness(c, one, "3")[0])
            out[f"{tag}_completeness8"] = float(rl.completeness(c, one, "8")[0])
            out[f"{tag}_purity"] = float(rl.purity(c, one)[0])
            out[f"{tag}_f1"] = float(rl.f1(c, one)[0])
    return out


def _run_cell(cell, config, data, store: RunStore, out: Path, proxy_file, device, progress) -> dict[str, Any]:
    """Train (or resume) one cell and score it; the stage `cell-<name>` holds its counts and figures."""
    name = cell_name(*cell)
    stage = f"cell-{name}"
    if store.has(stage):
        arrays, meta = store.load(stage)
        return {"arrays": {k: v.numpy() for k, v in arrays.items()}, "meta": meta}
    kind, body, size, seed = cell
    det = build_cell_detector(kind, body, seed, config, proxy_file, device)
    folder = out / "train" / name
    t0 = time.perf_counter()
    result = _train_cell(det, cell, config, data, folder, device, progress)
    arrays, meta = _evaluate(det, config, data, device)
    meta.update(backbone=kind, body=body, size=size, seed=seed, steps=result.step,
                train_seconds=round(result.seconds, 1), seconds=round(time.perf_counter() - t0, 1),
                final_loss=(result.history[-1] if result.history else {}).get("loss"))
    meta["figures"] = _figures({k: v.numpy() for k, v in arrays.items()}, meta)
    store.save(stage, arrays, meta)
    for p in folder.glob("ckpt-*"):  # the final weights stay (model.safetensors); the resume state goes
        p.unlink()
    arrays, meta = store.load(stage)  # a fresh cell reads back exactly what a resumed run reads (NaN -> None)
    f = {k: (math.nan if v is None else v) for k, v in meta["figures"].items()}
    print(f"{name}: F1 {f['test_chosen_f1']:.3f} (threshold {meta['threshold']:.2f}), AP50 "
          f"{math.nan if meta['ap50'] is None else meta['ap50']:.3f}, real-host completeness "
          f"{f['real_chosen_completeness3']:.3f} ({meta['seconds']:.0f} s)", flush=True)
    return {"arrays": {k: v.numpy() for k, v in arrays.items()}, "meta": meta}


# --------------------------------------------------------------------------------------------------- the run


def run_transfer(config: TransferConfig, out: str | Path = OUT_ROOT / "transfer", *, device: Any = None,
                 threads: int | None = None, progress: bool = True, restart: bool = False,
                 proxy_dir: str | Path | None = None, report: bool = True) -> TransferResult:
    """Run (or resume) the study into `out` and return its result.

    `device`: 'cpu', 'cuda', ... (default: CUDA when present); `threads`: torch CPU threads; `proxy_dir`: where the
    galaxy-proxy is kept (default blindspots-out/zoobot-proxy/<arch>-<key>, shared with `blindspots zoobot`);
    `restart`: discard a different earlier run in `out`. Every input is checked (hosts, weights files) before any
    training starts."""
    from experiments.galaxy_proxy import ensure_proxy

    device = st.study_device(device, threads)
    started, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    for kind in config.backbones:  # a missing or foreign weights file: one line, before anything is trained
        if kind in ("imagenet", "zoobot") or (kind == "galaxy-proxy" and config.proxy_encoder):
            build_cell_detector(kind, config.bodies[0], 0, config, config.proxy_encoder, "cpu")
    hosts, host_names, skipped = load_hosts(config)
    proxy_file, proxy_log = config.proxy_encoder, None
    if "galaxy-proxy" in config.backbones and proxy_file is None:
        proxy_file, proxy_log = ensure_proxy(_proxy_config(config), device, proxy_dir, progress=progress)
    key = config.settings()
    if proxy_file and not config.proxy_encoder:  # the proxy pretrained here: its weights decide the cells
        key["proxy_encoder"] = fingerprint_file(proxy_file)
    with RunStore(out, "transfer", settings=key, inputs={"hosts": hosts}, restart=restart) as store:
        data = _data(config, hosts)
        cells = {}
        bar = __import__("tqdm.auto", fromlist=["tqdm"]).tqdm(config.cells(), disable=not progress, desc="cells",
                                                                unit="detector")
        for cell in bar:
            cells[cell] = _run_cell(cell, config, data, store, out, proxy_file, device, progress=False)
        from .lst import run_lst

        lst = run_lst(config, data, store, out, proxy_file, device, progress)
        from .analysis import analyse

        analysis = analyse(config, cells, lst, data)
        result = TransferResult(config, out, [dict(c["meta"]) for c in cells.values()], analysis, lst,
                                {"used": host_names, "left_out": skipped, "folder": str(config.host_folder()),
                                 "injections": config.injections}, proxy_log)
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu
        if report:
            from .report import write_report

            result.report = write_report(result, data, proxy_file, device, quiet=not progress)
        return result


def _proxy_config(config: TransferConfig):
    """The proxy's settings; an ImageNet file given for the study's architecture is the proxy's start too."""
    p = config.proxy
    if p.imagenet_weights is None and config.imagenet_weights and p.arch == config.arch:
        p = dataclasses.replace(p, imagenet_weights=config.imagenet_weights)
    return p
