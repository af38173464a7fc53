"""Simulated clumps injected into real galaxy cutouts, with exact boxes: completeness on real hosts. The host is
measured on the linearised cutout (`measure_host`), then clumps drawn as in the simulator are rendered with its PSF
and added in flux space before the stretch is reapplied."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


from .galaxy import (_check_positive, _sample_sources, _uniform, _STREAM_INJECT, GalaxyParams, SimConfig, _check_seed, _rng)
from .render import (inverse_lupton, lupton_rgb, render_flux)
from .simulate import SimulatedBatch, make_target
from blindspots.errors import InputError

__all__ = ["HostMeasurement", "measure_host", "measurable_hosts", "inject_clumps", "inject_batch"]

_MIN_SEGMENT_PIXELS = 5  # connected pixels above the threshold that make a source
_DEBLEND_CONTRAST = 0.01  # flux share a component needs to be split off (neighbours, not the host's own clumps)

# --------------------------------------------------------------------------------------------------- injection


@dataclass
class HostMeasurement:
    """A real host measured on the linearised cutout: r-like (G channel) flux above the background inside the
    segment containing the centre, flux-weighted centroid (box coordinates), elliptical half-light radius (major
    axis, pixels), axis ratio and position angle from the second moments, background noise, and the segment."""

    flux: float
    center: tuple[float, float]
    half_light_radius: float
    axis_ratio: float
    position_angle: float
    noise: float
    mask: np.ndarray


def measure_host(image: torch.Tensor | np.ndarray, config: SimConfig = SimConfig(), threshold: float = 3.0
                 ) -> HostMeasurement:
    """Segment and measure the central galaxy of a (3, H, W) RGB cutout in [0, 1] (see `HostMeasurement`) with
    photutils, as survey pipelines do.

    The cutout is linearised with `inverse_lupton` (assuming the simulator's stretch); the background and its noise
    are the sigma-clipped median and standard deviation of a border frame (astropy `sigma_clipped_stats`); sources
    are the regions above `threshold` times the smoothed image's noise (`detect_sources` on a 2-px FWHM Gaussian
    smoothing), split by `deblend_sources`; the host is the segment containing (or nearest to) the centre, measured
    by `SourceCatalog`: centroid, segment flux, axis ratio and orientation from the second moments, and the
    half-light radius (`flux_radius(0.5)`, circular) turned into the major axis's as r50 / sqrt(q)."""
    from astropy.convolution import convolve
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel
    from photutils.utils.exceptions import NoDetectionsWarning

    rgb = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    lin = inverse_lupton(rgb, config)
    r = lin[1] / config.rgb_scales[1]
    h, w = r.shape
    b = max(2, min(h, w) // 10)
    frame = np.zeros((h, w), dtype=bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    _, bkg, noise = (float(v) for v in sigma_clipped_stats(r[frame], sigma=3.0))
    signal = r - bkg
    smooth = convolve(signal, make_2dgaussian_kernel(2.0, size=5), boundary="extend")
    smooth_noise = float(sigma_clipped_stats(smooth[frame], sigma=3.0)[2])
    level = threshold * max(smooth_noise, 1e-12)
    with warnings.catch_warnings():  # photutils warns when nothing is found; the error below says so
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(smooth, level, n_pixels=_MIN_SEGMENT_PIXELS)
    if segm is None:
        raise InputError("no galaxy found in the cutout (nothing above the background); is it a galaxy image?")
    cy, cx = h // 2, w // 2

    def central(data: np.ndarray) -> int:  # the segment at the centre, else the nearest one
        if data[cy, cx]:
            return int(data[cy, cx])
        yy, xx = np.nonzero(data)
        k = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        return int(data[yy[k], xx[k]])

    # deblend the central segment only (the others are not measured): neighbours blended with the host split off
    segm = deblend_sources(smooth, segm, n_pixels=_MIN_SEGMENT_PIXELS, n_levels=32, contrast=_DEBLEND_CONTRAST,
                           labels=[central(segm.data)], progress_bar=False)
    label = central(segm.data)
    cat = SourceCatalog(signal, segm, convolved_data=smooth).select_label(label)
    flux = float(cat.segment_flux)
    if not flux > 0:
        raise InputError("the central galaxy has no flux above the background")
    a, b_ = float(cat.semimajor_axis.value), float(cat.semiminor_axis.value)
    q = min(max(b_ / a if a > 0 else 1.0, 0.1), 1.0)
    pa = float(np.deg2rad(cat.orientation.value) % np.pi)
    r50 = float(cat.flux_radius(0.5).value)
    re = r50 / math.sqrt(q) if math.isfinite(r50) else 1.0
    # photutils' centroids are in pixel-centre coordinates ((0, 0) the centre of the first pixel): + 0.5 for boxes
    center = (float(cat.x_centroid) + 0.5, float(cat.y_centroid) + 0.5)
    return HostMeasurement(flux, center, max(re, 1.0), q, pa, noise, segm.data == label)


_MEASURED: dict[tuple, HostMeasurement] = {}


def _measure_once(image: torch.Tensor, config: SimConfig, threshold: float) -> HostMeasurement:
    """`measure_host`, remembered per image content and stretch: injecting K versions of a host measures it once."""
    import hashlib

    rgb = image.detach().cpu().numpy()
    key = (hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest(), rgb.shape, config.asinh_q,
           config.asinh_stretch, tuple(config.rgb_scales), float(threshold))
    if key not in _MEASURED:
        if len(_MEASURED) > 256:
            _MEASURED.clear()
        _MEASURED[key] = measure_host(rgb, config, threshold)
    return _MEASURED[key]


def measurable_hosts(hosts, config: SimConfig = SimConfig(), threshold: float = 3.0):
    """The hosts of a `detectors.hosts.HostList` whose galaxy `measure_host` finds; each other one is left out
    with its reason in `skipped` (e.g. a frame filled by a star's glare has no background to find it against).
    Run before any training, so a study's real hosts are settled up front."""
    keep, left_out = [], {}
    for i, (image, info) in enumerate(zip(hosts.images, hosts.hosts)):
        try:
            _measure_once(image, config, threshold)
            keep.append(i)
        except InputError as exc:
            left_out[info.name] = f"not measurable: {exc}"
    if not keep:
        raise InputError(f"no measurable host among {len(hosts)}: " + "; ".join(
            f"{k}: {v}" for k, v in list(left_out.items())[:3]))
    return hosts.select(keep, left_out)


def inject_clumps(image: torch.Tensor, config: SimConfig = SimConfig(), seed: int = 0, *, index: int = 0,
                  n_clumps: int | None = None, psf_fwhm_px: float | None = None, threshold: float = 3.0
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor], GalaxyParams]:
    """Add simulated clumps (and stars, per `config.star_rate`) to a real (3, H, W) cutout in [0, 1].

    The host is measured with `measure_host`; clumps are drawn like the simulator's, at `config.clump_radius`
    measured half-light radii in the host's disk plane, each `flux_fraction` of the host's measured r-like flux,
    convolved with a Moffat PSF of FWHM `psf_fwhm_px` pixels (default: drawn from `config.psf_fwhm` at
    `config.pixel_scale`; pass the cutout's own value when its pixels are not 0.396 arcsec), given Poisson noise,
    and composited in the linearised (inverse asinh) space before restretching. Pixels the clumps do not touch
    keep their values. Returns (image, target, params); the randomness depends only on (seed, index).

    Flux fractions are relative to the host light measured after undoing the simulator's stretch, so on cutouts
    made with another stretch they are approximate.
    """
    from blindspots.validation import check_images

    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise InputError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    check_images(image[None], "image", channels=3)
    if psf_fwhm_px is not None:
        _check_positive("psf_fwhm_px", psf_fwhm_px)
    if n_clumps is not None and (isinstance(n_clumps, bool) or not isinstance(n_clumps, (int, np.integer))
                                 or not 0 <= n_clumps <= 50):
        raise InputError(f"n_clumps must be an integer in [0, 50] or None, got {n_clumps!r}")
    rng = _rng(_check_seed(seed), _check_seed(index, "index"), _STREAM_INJECT)
    host = _measure_once(image, config, threshold)
    h, w = image.shape[-2:]
    fwhm = float(psf_fwhm_px) if psf_fwhm_px is not None else _uniform(rng, config.psf_fwhm) / config.pixel_scale
    beta = _uniform(rng, config.psf_beta)
    sources = _sample_sources(rng, config, host.center, host.half_light_radius, host.axis_ratio,
                              host.position_angle, fwhm, (h, w), n_clumps)
    params = GalaxyParams(
        center=host.center, flux_r=host.flux, disk_re=host.half_light_radius, axis_ratio=host.axis_ratio,
        position_angle=host.position_angle, disk_g_r=float("nan"), bulge_fraction=0.0, bulge_re=1.0,
        bulge_n=1.0, bulge_axis_ratio=1.0, bulge_g_r=float("nan"), psf_fwhm=fwhm, psf_beta=beta, **sources)
    rgb = image.detach().cpu().numpy().astype(np.float64)
    if params.num_sources == 0:
        return image.clone(), make_target(params, (h, w)), params
    added = render_flux(params, config, host=False, shape=(h, w)).astype(np.float64)
    if config.noise_scale > 0:
        gain = np.asarray(config.electrons_per_nmgy)[:, None, None]
        added += config.noise_scale * np.sqrt(np.maximum(added, 0.0) / gain) * rng.standard_normal(added.shape)
    lin = inverse_lupton(rgb, config)  # (R, G, B) = scales * (i, r, g)
    scales = np.asarray(config.rgb_scales, dtype=np.float64)
    gri = lin[::-1] / scales[::-1, None, None]
    out = lupton_rgb(gri + added, config)
    # leave the pixels alone where the clumps add < 0.1% of the background noise (FFT round-off, far wings)
    touched = np.abs(added).max(axis=0) > 1e-3 * max(host.noise, 1e-12)
    out = np.where(touched[None], out, rgb)
    return torch.from_numpy(out.astype(np.float32)).to(image.device), make_target(params, (h, w)), params


def inject_batch(images: torch.Tensor, config: SimConfig = SimConfig(), seed: int = 0, *,
                 n_clumps: int | None = None, psf_fwhm_px: float | None = None, threshold: float = 3.0
                 ) -> SimulatedBatch:
    """`inject_clumps` on each image of an (N, 3, H, W) batch (image i uses index i), e.g. the cutouts of
    `detectors.data.load_cutouts`, for completeness measured on real hosts."""
    from blindspots.validation import check_images

    check_images(images, "images", channels=3)
    out, targets, params = [], [], []
    for i in range(images.shape[0]):
        x, t, p = inject_clumps(images[i], config, seed, index=i, n_clumps=n_clumps, psf_fwhm_px=psf_fwhm_px,
                                threshold=threshold)
        out.append(x)
        targets.append(t)
        params.append(p)
    return SimulatedBatch(torch.stack(out), targets, params, config, seed)

