"""The field's libraries beside the toolkit's own code, measured side by side in one run: the Lupton stretch
(ours vs astropy's `make_lupton_rgb`), galaxy rendering (ours vs GalSim), host measurement for injection (photutils
now vs the hand-written moments it replaced), `simulate(n, SimConfig())` with the stretch now vs before, and the
survey field's usable hosts at 64 and 128 px (with a contact sheet).

Targets (exit 1 when one is missed): the kept stretch and renderer are at least as fast as the library they are
tested against (else the library should replace them); injection into the real hosts stays within 5x of before.

    python -m benchmarks.astro_swaps                      # all, simulate(4000)
    python -m benchmarks.astro_swaps --simulate 300 --sheet out/   # quicker; contact sheets in out/
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from blindspots.cli import Parser

__all__ = ["main"]

MAX_INJECT_SLOWDOWN = 5.0


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _legacy_lupton(gri: np.ndarray, config) -> np.ndarray:
    """The stretch before this change (hand-written; kept colours where the mean intensity is negative)."""
    rgb = np.stack([gri[2], gri[1], gri[0]]) * np.asarray(config.rgb_scales, dtype=np.float64)[:, None, None]
    x = config.asinh_q * rgb.mean(axis=0) / config.asinh_stretch
    small = np.abs(x) < 1e-6
    factor = np.where(small, 1.0, np.arcsinh(x) / np.where(small, 1.0, x)) / config.asinh_stretch
    out = rgb * factor
    return np.clip(out / np.maximum(out.max(axis=0), 1.0), 0.0, 1.0)


def _legacy_measure_host(image, config, threshold: float = 3.0):
    """The host measurement before photutils (hand-written): border-frame median/MAD, scipy labels of the smoothed
    image, flux-weighted centroid and second moments, elliptical half-light radius."""
    from scipy import ndimage

    from detectors.inject import HostMeasurement
    from detectors.render import inverse_lupton

    rgb = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    r = inverse_lupton(rgb, config)[1] / config.rgb_scales[1]
    h, w = r.shape
    b = max(2, min(h, w) // 10)
    frame = np.concatenate([r[:b].ravel(), r[-b:].ravel(), r[:, :b].ravel(), r[:, -b:].ravel()])
    bkg = float(np.median(frame))
    noise = float(1.4826 * np.median(np.abs(frame - bkg)))
    signal = r - bkg
    segments, _ = ndimage.label(ndimage.gaussian_filter(signal, 1.0) > threshold * max(noise, 1e-12) / 2.0)
    cy, cx = h // 2, w // 2
    label = segments[cy, cx]
    if label == 0:
        yy, xx = np.nonzero(segments)
        k = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        label = segments[yy[k], xx[k]]
    mask = segments == label
    weights = np.where(mask, np.maximum(signal, 0.0), 0.0)
    flux = float(weights.sum())
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    mx, my = float((weights * xs).sum() / flux), float((weights * ys).sum() / flux)
    dx, dy = xs - mx, ys - my
    cxx, cyy, cxy = ((weights * dx * dx).sum() / flux, (weights * dy * dy).sum() / flux,
                     (weights * dx * dy).sum() / flux)
    evals, evecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    q = min(max(float(np.sqrt(max(evals[0], 1e-12) / max(evals[1], 1e-12))), 0.1), 1.0)
    pa = float(np.arctan2(evecs[1, 1], evecs[0, 1]) % np.pi)
    u = dx * math.cos(pa) + dy * math.sin(pa)
    v = -dx * math.sin(pa) + dy * math.cos(pa)
    r_ell = np.sqrt(u * u + (v / q) ** 2)[mask]
    order = np.argsort(r_ell)
    cum = np.cumsum(weights[mask][order])
    re = float(r_ell[order][np.searchsorted(cum, 0.5 * cum[-1])])
    return HostMeasurement(flux, (mx, my), max(re, 1.0), q, pa, noise, mask)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m benchmarks.astro_swaps", description=__doc__.split("\n\n")[0])
    p.add_argument("--simulate", type=int, default=4000, help="images of simulate(n, SimConfig()) (0: skip)")
    p.add_argument("--render", type=int, default=40, help="galaxies rendered by each renderer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sheet", default=None, metavar="DIR", help="also draw the field's hosts as contact sheets here")
    p.add_argument("--hosts", default=None, metavar="DIR", help="real cutouts (default ../shared/data/galaxies)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements; 0 when every target is met."""
    args = _parse(argv)
    import torch

    from astropy.visualization import make_lupton_rgb

    import detectors.render as render
    import detectors.simulate as simulate_module
    from detectors.field import contact_sheet, field_hosts
    from detectors.hosts import load_hosts
    from detectors.inject import inject_batch, measurable_hosts, measure_host
    from detectors.simulate import SimConfig, sample_params

    torch.set_num_threads(1)
    ok = True
    cfg = SimConfig()

    # stretch
    class Lupton2004:
        def __call__(self, values, clip=False, out=None):
            return np.arcsinh(cfg.asinh_q * np.asarray(values) / cfg.asinh_stretch) / cfg.asinh_q

    rng = np.random.default_rng(0)
    planes = rng.normal(0.05, 0.3, (3, 128, 128)) * np.exp(rng.normal(0, 2, (1, 128, 128)))
    ours = _best(lambda: [render.asinh_rgb(planes, cfg.asinh_q, cfg.asinh_stretch) for _ in range(100)], args.repeats)
    theirs = _best(lambda: [make_lupton_rgb(*planes, stretch_object=Lupton2004(), minimum=0, output_dtype=np.float64)
                            for _ in range(100)], args.repeats)
    diff = np.abs(render.asinh_rgb(planes, cfg.asinh_q, cfg.asinh_stretch) - np.moveaxis(make_lupton_rgb(
        *planes, stretch_object=Lupton2004(), minimum=0, output_dtype=np.float64), -1, 0)).max()
    print(f"stretch, 128 px: ours {1e3 * ours / 100:.2f} ms, astropy {1e3 * theirs / 100:.2f} ms: astropy/ours "
          f"{theirs / ours:.2f}x; largest difference {diff:.1e}")
    ok &= theirs / ours >= 1.0

    # rendering
    params = [sample_params(np.random.default_rng(s), cfg) for s in range(args.render)]
    try:
        t_gs = _best(lambda: [render.render_flux_galsim(p, cfg) for p in params], 1)
        t_ours = _best(lambda: [render.render_flux(p, cfg) for p in params], args.repeats)
        print(f"render, {args.render} galaxies at 128 px (3 bands): ours {1e3 * t_ours / args.render:.1f} ms, GalSim "
              f"{1e3 * t_gs / args.render:.1f} ms per galaxy: GalSim/ours {t_gs / t_ours:.2f}x")
        ok &= t_gs / t_ours >= 1.0
    except ImportError:
        print("render: GalSim not installed (the dev extra); skipped")

    # host measurement and injection into the real cutouts
    folder = Path(args.hosts) if args.hosts else Path(__file__).resolve().parents[2] / "shared" / "data" / "galaxies"
    if folder.is_dir():
        hosts = measurable_hosts(load_hosts([folder], 128, 0.5), cfg)
        imgs = hosts.images
        for name, why in hosts.skipped.items():
            print(f"  left out: {name}: {why}")
        new = _best(lambda: [measure_host(x, cfg) for x in imgs], args.repeats)
        old = _best(lambda: [_legacy_measure_host(x, cfg) for x in imgs], args.repeats)
        now_m = [measure_host(x, cfg) for x in imgs]
        old_m = [_legacy_measure_host(x, cfg) for x in imgs]
        shifts = [math.dist(a.center, b.center) for a, b in zip(now_m, old_m)]
        print(f"measure_host, {len(imgs)} real hosts: photutils {1e3 * new / len(imgs):.1f} ms, hand-written "
              f"{1e3 * old / len(imgs):.1f} ms per host ({new / old:.2f}x); photutils/hand-written medians: "
              f"centroid shift {np.median(shifts):.2f} px, flux "
              f"{np.median([a.flux / b.flux for a, b in zip(now_m, old_m)]):.3f}, half-light radius "
              f"{np.median([a.half_light_radius / b.half_light_radius for a, b in zip(now_m, old_m)]):.3f}, "
              f"axis ratio {np.median([a.axis_ratio / b.axis_ratio for a, b in zip(now_m, old_m)]):.3f}")
        import detectors.inject as inject_module

        inj_cfg = cfg.replace(star_rate=0.0)
        copies = 10  # blindspots detect --hosts injects each host 10 times

        def injections() -> None:
            inject_module._MEASURED.clear()
            for k in range(copies):
                inject_batch(imgs, inj_cfg, seed=k)

        t_new = _best(injections, args.repeats)
        saved = inject_module._measure_once
        inject_module._measure_once = _legacy_measure_host  # before: measured by hand, at every copy
        try:
            t_old = _best(injections, args.repeats)
        finally:
            inject_module._measure_once = saved
        print(f"injection, {len(imgs)} real hosts x {copies} copies: now {t_new:.2f} s, before {t_old:.2f} s: "
              f"now/before {t_new / t_old:.2f}x")
        ok &= t_new / t_old <= MAX_INJECT_SLOWDOWN
    else:
        print(f"measure_host: no real cutouts at {folder}; skipped")

    # simulate(n): now and before in alternating chunks, so that other work on the machine slows both alike
    if args.simulate > 0:
        simulate_module.simulate(5, cfg, seed=123)
        saved = simulate_module.lupton_rgb
        chunk = min(500, args.simulate)
        t_now = t_before = 0.0
        for start in range(0, args.simulate, chunk):
            n = min(chunk, args.simulate - start)
            t_now += _best(lambda: simulate_module.simulate(n, cfg, seed=0, start=start), 1)
            simulate_module.lupton_rgb = _legacy_lupton
            try:
                t_before += _best(lambda: simulate_module.simulate(n, cfg, seed=0, start=start), 1)
            finally:
                simulate_module.lupton_rgb = saved
        print(f"simulate({args.simulate}, SimConfig()): now {t_now:.1f} s ({args.simulate / t_now:.0f} images/s), "
              f"before {t_before:.1f} s: now/before {t_now / t_before:.2f}x (alternating chunks of {chunk})")

    # the survey field
    for size in (64, 128):
        got = field_hosts(None, size)
        reasons: dict[str, int] = {}
        for why in got.skipped.values():
            key = why.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        print(f"Hubble eXtreme Deep Field: {len(got)} usable hosts at {size} px; rejected: "
              + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
        if args.sheet:
            path = contact_sheet(got, Path(args.sheet) / f"xdf_hosts_{size}.png",
                                 title=f"Hubble eXtreme Deep Field: {len(got)} hosts at {size} px")
            print(f"  contact sheet: {path}")
    print(f"targets (stretch and renderer not slower than the library; injection within {MAX_INJECT_SLOWDOWN:g}x of "
          f"before): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
