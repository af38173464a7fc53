"""`blindspots detect`: simulate clumpy galaxies, train a clump detector (resumable), evaluate it and draw detections.

Everything has embedded defaults sized for a few minutes on 2 CPU cores: 128-px simulated SDSS-like galaxies, the
`cpu` preset on the offline ImageNet efficientnet_lite0 backbone. Re-running with the same --out resumes training
where it stopped. Outputs in --out: train/ (checkpoints), metrics.json, detections_<i>.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspots.cli import OUT_ROOT, add_common_options, non_negative_int, positive_int, resolve_device
from blindspots.store import RunStore
from blindspots.errors import InputError

from .hosts import add_host_options

__all__ = ["DetectRun", "run_detection", "add_arguments", "run", "HELP"]

HELP = "simulate clumpy galaxies, train a clump detector (resumable), evaluate and draw"


@dataclass
class DetectRun:
    """Settings of one simulate -> train -> evaluate run (the CLI's defaults)."""

    out: str = str(OUT_ROOT / "detect")
    backbone: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    weights_file: str | None = None
    preset: str = "cpu"
    image_size: int = 128
    n_train: int = 400
    n_test: int = 100
    n_val: int = 0  # > 0: choose the score threshold on this many validation images (best F1)
    hosts: tuple[str, ...] = ()  # real hosts (folders, FITS/image files, 'field'): completeness of injected clumps
    fits_preset: str | None = None  # stretch of FITS hosts (detectors.fits.PRESETS; None: by their bands)
    injections: int = 10  # injected copies of each real host (different clumps)
    host_crop: float = 0.5  # centre crop of the real cutouts before resizing (the paper: 0.5 of 400 px)
    epochs: int = 3
    batch_size: int = 4
    lr: float | None = None
    seed: int = 0
    minutes: float | None = None
    iou: float = 0.3
    min_flux: float = 0.03
    n_draw: int = 4
    progress: bool = True
    device: str | None = None
    cpu_clock: bool = False  # budget `minutes` in this process's CPU time per core (fair on a shared machine)
    restart: bool = False  # discard a different earlier run in `out` instead of refusing it


def run_detection(cfg: DetectRun) -> dict[str, Any]:
    """Simulate (train: `SimulatedClumps(n_train, seed)`, validation: `simulate(n_val, seed + 20_000)`, test:
    `simulate(n_test, seed + 10_000)`), train with checkpoints in ``out/train`` (resuming), detect on the test set,
    and score clumps (label 1) with IoU >= `iou`: completeness of clumps with flux fraction >= `min_flux`, purity of
    all clump detections (against every true clump), the completeness-vs-flux curve and AP50.

    The score threshold is the preset's (0.3, the paper's) unless `n_val` > 0: then it is the threshold with the
    best clump F1 on the validation images (from the preset's up to 0.95 in steps of 0.05), and the test figures at
    the preset's threshold are reported beside it. Returns (and writes to ``out/metrics.json``) the summary."""

    from .hosts import load_hosts

    _check_run(cfg)
    if cfg.hosts and (isinstance(cfg.injections, bool) or not isinstance(cfg.injections, int) or cfg.injections < 1):
        raise InputError(f"injections must be a positive int (copies of each real host), got {cfg.injections!r}")
    # the hosts are read and checked before any training (a bad file stops the run now, not after an hour)
    hosts = None
    if cfg.hosts:
        from .inject import measurable_hosts
        from .simulate import SimConfig

        hosts = measurable_hosts(load_hosts(cfg.hosts, cfg.image_size, cfg.host_crop, preset=cfg.fits_preset),
                                 SimConfig(image_size=cfg.image_size, star_rate=0.0))
    out = Path(cfg.out)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "device", "restart", "minutes")}
    inputs = {"hosts": hosts.images} if hosts is not None else None
    with RunStore(out, "detect", settings=settings, inputs=inputs, restart=cfg.restart):
        return _run_detection(cfg, out, hosts)


def _check_run(cfg: DetectRun) -> None:
    """Every setting that cannot be meant, refused before any simulation or training (one line each)."""
    from blindspots.validation import check_count

    from .evaluate import MatchRule

    if cfg.minutes is not None and not (isinstance(cfg.minutes, (int, float)) and math.isfinite(cfg.minutes)
                                        and cfg.minutes > 0):
        raise InputError(f"minutes (the training time budget) must be a positive number or None, got {cfg.minutes!r}")
    if not (isinstance(cfg.min_flux, (int, float)) and 0 <= cfg.min_flux < 1):  # NaN fails too
        raise InputError(f"min_flux (flux fraction of a bright clump) must lie in [0, 1), got {cfg.min_flux!r}")
    if cfg.lr is not None and not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise InputError(f"lr must be a positive finite number or None, got {cfg.lr!r}")
    MatchRule(cfg.iou)
    for name in ("n_draw", "n_val"):
        check_count(getattr(cfg, name), name)
    for name in ("n_train", "n_test", "epochs", "batch_size", "image_size"):
        check_count(getattr(cfg, name), name, 1)


def _run_detection(cfg: DetectRun, out: Path, hosts: Any = None) -> dict[str, Any]:
    from .evaluate import MatchRule, ap50, completeness_vs_flux, draw_detections, select_threshold
    from .frcnn import build_detector, detect
    from .simulate import SimConfig, SimulatedClumps, simulate
    from .train import train

    sim = SimConfig(image_size=cfg.image_size)
    torch.manual_seed(cfg.seed)  # the detector's initial weights
    det = build_detector(cfg.backbone, preset=cfg.preset, weights=_weights(cfg), min_size=cfg.image_size,
                         max_size=cfg.image_size, device=cfg.device)
    result = train(det, SimulatedClumps(cfg.n_train, sim, cfg.seed), cfg.epochs, out / "train", cfg.batch_size,
                   lr=cfg.lr, seed=cfg.seed, max_seconds=None if cfg.minutes is None else 60 * cfg.minutes,
                   checkpoint_every=50, progress=cfg.progress, device=cfg.device,
                   clock=_cpu_clock if cfg.cpu_clock else time.perf_counter)
    rule = MatchRule(cfg.iou)
    preset_threshold = det.preset.score_threshold
    threshold, validation = preset_threshold, None
    if cfg.n_val > 0:
        val = simulate(cfg.n_val, sim, cfg.seed + 20_000, progress=cfg.progress)
        candidates = np.round(np.arange(preset_threshold, max(preset_threshold, 0.95) + 1e-9, 0.05), 4)
        threshold, sweep = select_threshold(detect(det, val.images, batch_size=16, device=cfg.device), val.targets,
                                            candidates, rule, label=1)
        validation = {"n_images": cfg.n_val, **{k: [_num(v) for v in sweep[k]]
                                                for k in ("threshold", "completeness", "purity", "f1")}}
    test = simulate(cfg.n_test, sim, cfg.seed + 10_000, progress=cfg.progress)
    t0 = time.perf_counter()
    preds = detect(det, test.images, batch_size=16, device=cfg.device, score_floor=0.0)  # every score: true AP
    eval_seconds = time.perf_counter() - t0
    curve = completeness_vs_flux(preds, test.targets, None, rule, score_threshold=threshold, label=1)
    summary = {
        "settings": asdict(cfg),
        "backbone": det.backbone.arch, "weights": det.backbone.weights,
        "train": {"steps": result.step, "epochs": result.epoch, "completed": result.completed,
                  "seconds": round(result.seconds, 1), "history": result.history},
        "rule": str(rule), "score_threshold": threshold,
        "threshold_from": "preset" if validation is None else f"best F1 on {cfg.n_val} validation images",
        **_figures(preds, test.targets, rule, threshold, cfg.min_flux),
        "at_preset_threshold": {"score_threshold": preset_threshold,
                                **_figures(preds, test.targets, rule, preset_threshold, cfg.min_flux)},
        "validation": validation,
        "curve": {**{k: [_num(v) for v in curve[k]] for k in ("bin_edges", "completeness", "lower", "upper")},
                  "n_true": [int(v) for v in curve["n_true"]]},
        "ap50": ap50(preds, test.targets, score_floor=0.0),
        "eval_seconds_per_image": eval_seconds / cfg.n_test,
        "units": sim.units(),
        "real_hosts": _real_host_completeness(det, cfg, sim, rule, threshold, hosts) if hosts is not None else None,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    for i in range(min(cfg.n_draw, cfg.n_test)):
        draw_detections(test.images[i], test.targets[i], preds[i], out / f"detections_{i}.png",
                        score_threshold=threshold, title=f"test {i}: {det.backbone.arch} ({det.backbone.weights})")
    return summary


def _real_host_completeness(det: Any, cfg: DetectRun, sim: Any, rule: Any, threshold: float,
                            hosts: Any) -> dict[str, Any]:
    """Completeness of simulated clumps injected (`cfg.injections` times, no stars) into the real hosts of
    `cfg.hosts` (a `detectors.hosts.HostList`: cutouts centre-cropped to `cfg.host_crop` and resized to the training
    size, field galaxies cut at it). Purity is not measured on real hosts: their own clumps carry no labels, so a
    detection of one would count as false."""
    import dataclasses

    from .evaluate import completeness_vs_flux
    from .frcnn import detect
    from .inject import inject_batch

    cutouts = hosts.images
    inject_sim = dataclasses.replace(sim, star_rate=0.0)
    batches = [inject_batch(cutouts, inject_sim, seed=cfg.seed + 30_000 + k) for k in range(cfg.injections)]
    images = torch.cat([b.images for b in batches])
    targets = [t for b in batches for t in b.targets]
    preds = detect(det, images, batch_size=16, device=cfg.device)
    bright = completeness_vs_flux(preds, targets, [cfg.min_flux, 1.0], rule, score_threshold=threshold, label=1)
    curve = completeness_vs_flux(preds, targets, None, rule, score_threshold=threshold, label=1)
    return {"n_hosts": int(cutouts.shape[0]), "n_images": int(images.shape[0]), "hosts": hosts.records(),
            "skipped": dict(hosts.skipped),
            "completeness_bright": _num(bright["completeness"][0]), "n_bright": int(bright["n_true"][0]),
            "curve": {**{k: [_num(v) for v in curve[k]] for k in ("bin_edges", "completeness")},
                      "n_true": [int(v) for v in curve["n_true"]]}}


def _figures(preds: list, targets: list, rule: Any, threshold: float, min_flux: float) -> dict[str, Any]:
    """Clump completeness above `min_flux`, purity, overall completeness and F1 at one score threshold."""
    from .evaluate import completeness_vs_flux, evaluate_detections

    scores = evaluate_detections(preds, targets, rule, score_threshold=threshold, label=1)
    bright = completeness_vs_flux(preds, targets, [min_flux, 1.0], rule, score_threshold=threshold, label=1)
    return {"completeness_bright": _num(bright["completeness"][0]), "n_bright": int(bright["n_true"][0]),
            "purity": _num(scores.purity), "completeness_all": _num(scores.completeness), "f1": _num(scores.f1),
            "n_true": scores.n_true, "n_pred": scores.n_pred}


def _cpu_clock() -> float:
    """CPU time of this process divided by torch's thread count: wall time on an otherwise idle machine."""
    return time.process_time() / torch.get_num_threads()


def _weights(cfg: DetectRun) -> str | None:
    if cfg.weights in (None, "none", "random"):
        return None
    if cfg.weights_file:
        return f"{cfg.weights}:{cfg.weights_file}"
    return cfg.weights


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def format_summary(s: dict[str, Any]) -> str:
    """A few human-readable lines: the headline figures and the completeness-vs-flux curve."""
    def figures(f: dict[str, Any]) -> str:
        return (f"score >= {f['score_threshold']:g}: completeness (flux >= {100 * s['settings']['min_flux']:g}%) "
                f"{_fmt(f['completeness_bright'])} of {f['n_bright']}, purity {_fmt(f['purity'])} of {f['n_pred']} "
                f"detections, completeness (all) {_fmt(f['completeness_all'])}, F1 {_fmt(f['f1'])}")

    lines = [f"{s['backbone']} ({s['weights']}): {s['train']['steps']} steps, {s['train']['epochs']} epochs, "
             f"{s['train']['seconds']:.0f} s training{'' if s['train']['completed'] else ' (time budget reached)'}",
             f"  {s['rule']}, {figures(s)} [threshold: {s['threshold_from']}]"]
    if s["validation"] is not None:
        lines.append(f"  at the preset's threshold, {figures(s['at_preset_threshold'])}")
    floor = s["ap50"].get("score_floor", 0.0)
    lines.append(f"  AP50{f' of detections with score >= {floor:g} (a lower bound)' if floor else ''} clump "
                 f"{_fmt(s['ap50'].get('clump'))}, odd clump {_fmt(s['ap50'].get('odd_clump'))}")
    real = s.get("real_hosts")
    if real is not None:
        lines.append(f"  clumps injected into {real['n_hosts']} real hosts ({real['n_images']} images): completeness "
                     f"(flux >= {100 * s['settings']['min_flux']:g}%) {_fmt(real['completeness_bright'])} of "
                     f"{real['n_bright']}")
        surveys: dict[str, int] = {}
        for h in real.get("hosts", []):
            surveys[h["survey"]] = surveys.get(h["survey"], 0) + 1
        if surveys:
            lines.append("    hosts by survey: " + ", ".join(f"{k} {v}" for k, v in sorted(surveys.items()))
                         + (f"; {len(real['skipped'])} left out while loading" if real.get("skipped") else ""))
    units = s.get("units")
    if units:
        lines.append(f"  images: {units['pixel_scale_arcsec_per_px']:g} arcsec/px ({units['field_arcsec']:.1f} arcsec "
                     f"across), PSF FWHM {units['psf_fwhm_arcsec'][0]:g}-{units['psf_fwhm_arcsec'][1]:g} arcsec, "
                     f"fluxes in nanomaggies (AB zero point {units['zero_point_ab']:g})")
    lines.append("  completeness vs clump/host flux, as a fraction and as magnitudes fainter than the host (at the "
                 "threshold above)" + (": simulated | injected into real hosts" if real is not None else ":"))
    c = s["curve"]
    for i, comp in enumerate(c["completeness"]):
        lo, hi = c["bin_edges"][i], c["bin_edges"][i + 1]
        line = (f"    {100 * lo:5.2f}-{100 * hi:5.2f}% ({_delta_mag(hi):.2f}-{_delta_mag(lo):.2f} mag): {_fmt(comp)} "
                f"(n={c['n_true'][i]})")
        if real is not None and real["curve"]["bin_edges"] == c["bin_edges"]:
            line += f" | {_fmt(real['curve']['completeness'][i])} (n={real['curve']['n_true'][i]})"
        lines.append(line)
    return "\n".join(lines)


def _delta_mag(fraction: float) -> float:
    """How many magnitudes fainter than its host a source of this flux fraction is."""
    return -2.5 * math.log10(fraction) if fraction > 0 else math.inf


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DetectRun()
    parser.add_argument("--preset", default=d.preset, choices=["cpu", "paper"])
    parser.add_argument("--size", type=positive_int, default=d.image_size, help="image size in pixels")
    parser.add_argument("--n-train", type=positive_int, default=d.n_train, help="simulated training images")
    parser.add_argument("--n-test", type=positive_int, default=d.n_test, help="simulated test images")
    parser.add_argument("--n-val", type=non_negative_int, default=d.n_val,
                        help="validation images to choose the score threshold on (best F1); 0: the preset's")
    parser.add_argument("--epochs", type=positive_int, default=d.epochs)
    parser.add_argument("--lr", type=float, default=None, help="default: the preset's")
    parser.add_argument("--minutes", type=float, default=None, help="training time budget of the run (total)")
    parser.add_argument("--iou", type=float, default=d.iou, help="IoU for a match")
    parser.add_argument("--min-flux", type=float, default=d.min_flux, help="flux fraction of 'bright' clumps")
    parser.add_argument("--n-draw", type=non_negative_int, default=d.n_draw, help="test images drawn with their detections")
    add_host_options(parser, "--hosts", help="real host galaxies (folders of PNG/JPEG/FITS cutouts, FITS or image "
                     "files, 'field' for the Hubble eXtreme Deep Field's galaxies, 'field:FILE'): also measure the "
                     "completeness of clumps injected into them")
    parser.add_argument("--injections", type=positive_int, default=d.injections,
                        help="injected copies of each real host")
    add_common_options(parser, "detect", batch_size=d.batch_size)


def run(args: argparse.Namespace) -> int:
    from .backbones import backbone_spec

    arch, weights, weights_file = backbone_spec(args.model, args.weights)
    device = resolve_device(args.device)
    cfg = DetectRun(out=args.out, backbone=arch, weights=weights, weights_file=weights_file,
                    preset=args.preset, image_size=args.size, n_train=args.n_train, n_test=args.n_test,
                    n_val=args.n_val, hosts=tuple(args.hosts or ()), fits_preset=args.fits_preset, injections=args.injections, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    minutes=args.minutes, iou=args.iou, min_flux=args.min_flux, n_draw=args.n_draw,
                    progress=not args.quiet, device=str(device), restart=args.restart)
    summary = run_detection(cfg)
    if not args.quiet:
        print(format_summary(summary))
        print(f"metrics and figures in {Path(cfg.out).resolve()}")
    return 0
