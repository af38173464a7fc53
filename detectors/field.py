"""Real hosts from a survey field: detect and deblend the galaxies of a field image with photutils, reject stars,
edge blends, bright neighbours and galaxies too small for the study's image size, and cut the rest out centred with
astropy's `Cutout2D` (keeping the WCS when the field has one). The default field ships with every install:
scikit-image's colour image of the Hubble eXtreme Deep Field (872 x 1000 px, no WCS)."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspots.errors import InputError

from .hostlist import HostInfo, HostList

__all__ = ["MIN_HALF_LIGHT_FRACTION", "STAR_SIZE_FACTOR", "FieldSource", "detect_field_sources", "field_hosts",
           "contact_sheet", "DEFAULT_FIELD"]

DEFAULT_FIELD = "hubble_deep_field"
# The smallest simulated host has a disk half-light radius of 2 arcsec in a 42-arcsec field: 1/20 of the image
# side. A field galaxy whose half-light radius is below this share of the cutout is too small to be a host.
MIN_HALF_LIGHT_FRACTION = 1 / 20
# A source whose half-light radius is under this multiple of the point-spread function's is a star (a point
# source); the PSF's half-light radius is the median of the 10 most compact bright sources.
STAR_SIZE_FACTOR = 1.3
DETECT_SIGMA = 3.0  # detection threshold above the background, in background standard deviations
DETECT_PIXELS = 10  # connected pixels above the threshold that make a source
DEBLEND_CONTRAST = 0.005  # photutils deblending: the flux fraction a component needs to be split off


@dataclass
class FieldSource:
    """One detected source: its segment `label`, centroid (`x`, `y`, pixels, (0, 0) the centre of the first
    pixel), `r50` (half-light radius, px), `flux` (segment flux above the background), and `reason` it was rejected
    ("" for a host)."""

    label: int
    x: float
    y: float
    r50: float
    flux: float
    reason: str = ""


def _check_size(size: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InputError(f"size must be an integer >= 8, got {size!r}")


def _check_wcs(wcs: Any) -> None:
    """Refuse (one line) a `wcs` that is not an astropy WCS with celestial axes, finite reference and scale."""
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    if not isinstance(wcs, WCS):
        raise InputError(f"wcs must be an astropy WCS with celestial axes, got {type(wcs).__name__}")
    try:
        scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0) if wcs.has_celestial else None
    except Exception:  # noqa: BLE001 - wcslib's errors span lines; refused below, one line
        scale = math.nan
    if scale is None:
        raise InputError("wcs has no celestial axes (RA/Dec)")
    if not (math.isfinite(scale) and scale > 0) or not np.isfinite(wcs.wcs.crval).all():
        raise InputError(f"the field's WCS is broken or not finite (pixel scale {scale} arcsec/px, reference "
                         f"{[float(v) for v in wcs.wcs.crval]})")


def _detection_image(field: np.ndarray) -> np.ndarray:
    if np.asarray(field).dtype.kind not in "biuf":
        raise InputError(f"a field image must hold numbers, got {np.asarray(field).dtype} pixels")
    arr = np.asarray(field, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=-1) if arr.shape[-1] in (3, 4) else arr.mean(axis=0)
    if arr.ndim != 2:
        raise InputError(f"a field image must be (H, W), (H, W, 3) or (3, H, W), got shape {np.shape(field)}")
    if not np.isfinite(arr).all():
        raise InputError(f"the field image has {int((~np.isfinite(arr)).sum())} NaN or infinite pixel(s)")
    return arr


def detect_field_sources(field: np.ndarray, size: int) -> tuple[list[FieldSource], Any]:
    """Detect (photutils `detect_sources` on the smoothed, background-subtracted image) and deblend
    (`deblend_sources`) every source of a field; measure them (`SourceCatalog`: centroid, segment flux, 50% flux
    radius) and give each one rejected as a `size`-px host its reason. Returns the sources and the segmentation."""
    from astropy.convolution import convolve
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel
    from photutils.utils.exceptions import NoDetectionsWarning

    _check_size(size)
    data = _detection_image(field)
    h, w = data.shape
    if min(h, w) < size:
        raise InputError(f"the field ({w}x{h} px) is smaller than one {size}-px cutout")
    _, median, std = sigma_clipped_stats(data, sigma=3.0)
    if not std > 0:
        raise InputError("the field image is flat (no background noise, no source)")
    data = data - median
    smooth = convolve(data, make_2dgaussian_kernel(2.0, size=5))
    with warnings.catch_warnings():  # photutils warns when nothing is found; the error below says so
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(smooth, DETECT_SIGMA * std, n_pixels=DETECT_PIXELS)
    if segm is None:
        raise InputError(f"no source above {DETECT_SIGMA:g} sigma in the field image")
    segm = deblend_sources(smooth, segm, n_pixels=DETECT_PIXELS, n_levels=32, contrast=DEBLEND_CONTRAST,
                           progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=smooth)
    r50 = np.asarray(cat.flux_radius(0.5).value, dtype=np.float64)
    flux = np.asarray(cat.segment_flux, dtype=np.float64)
    xs, ys = np.asarray(cat.x_centroid, dtype=np.float64), np.asarray(cat.y_centroid, dtype=np.float64)
    peak = np.asarray(cat.max_value, dtype=np.float64) / np.maximum(flux, 1e-12)
    bright = np.argsort(-flux)[:max(20, len(flux) // 5)]
    compact = bright[np.argsort(-peak[bright])[:10]]
    psf_r50 = float(np.nanmedian(r50[compact]))
    half = size / 2
    sources = []
    for k, label in enumerate(cat.labels):
        x, y = float(xs[k]), float(ys[k])
        bbox = cat.bbox[k]
        reason = ""
        if not (np.isfinite(r50[k]) and flux[k] > 0):
            reason = "no flux"
        elif r50[k] < MIN_HALF_LIGHT_FRACTION * size:
            reason = f"too small (half-light radius {r50[k]:.1f} px < {MIN_HALF_LIGHT_FRACTION * size:.1f} px)"
        elif r50[k] < STAR_SIZE_FACTOR * psf_r50:
            reason = f"star (half-light radius {r50[k]:.1f} px, PSF {psf_r50:.1f} px)"
        elif bbox.ixmin == 0 or bbox.iymin == 0 or bbox.ixmax >= w or bbox.iymax >= h:
            reason = "blended with the field's edge"
        elif x - half < -0.5 or y - half < -0.5 or x + half > w - 0.5 or y + half > h - 0.5:
            reason = f"a {size}-px cutout would leave the field"
        sources.append(FieldSource(int(label), x, y, float(r50[k]), float(flux[k]), reason))
    for s in sources:  # a brighter source inside the cutout: the host would not be the galaxy of the image
        if not s.reason:
            other = next((o for o in sources if o is not s and o.flux > s.flux
                          and abs(o.x - s.x) < half and abs(o.y - s.y) < half), None)
            if other is not None:
                s.reason = f"a brighter neighbour (source {other.label}) in the cutout"
    return sources, segm


def _default_field() -> np.ndarray:
    from blindspots.data import bundled_photo

    return bundled_photo(DEFAULT_FIELD)


def field_hosts(field: str | os.PathLike | np.ndarray | None = None, size: int = 64, *, preset: str | None = None,
                wcs: Any = None, survey: str | None = None, limit: int | None = None) -> HostList:
    """The usable host galaxies of a field as `size`-px cutouts centred on each (see the module docstring).

    `field`: None (scikit-image's Hubble eXtreme Deep Field), a FITS file (stretched with `preset`; its WCS gives
    each host's RA/Dec and pixel scale), an image file, or an (H, W, 3) / (3, H, W) RGB array in [0, 1] or uint8
    (with `wcs`, an astropy WCS, if you have one). Hosts are ordered by flux, brightest first; `skipped` gives each
    rejected source's reason."""
    from astropy.nddata import Cutout2D
    from astropy.wcs.utils import proj_plane_pixel_scales

    from blindspots.data import read_image, to_tensor

    from .fits import is_fits, read_fits

    from .fits import check_preset

    _check_size(size)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    check_preset(preset)
    if wcs is not None:
        _check_wcs(wcs)
    source_name, scale = DEFAULT_FIELD, None
    if field is None:
        rgb = to_tensor(_default_field(), DEFAULT_FIELD).numpy()
        survey = survey or "hst-xdf"
    elif isinstance(field, (str, os.PathLike)):
        source_name = str(field)
        if is_fits(field):
            cut = read_fits(field, preset)
            rgb, wcs, survey, scale = cut.rgb, cut.wcs, survey or cut.survey, cut.pixel_scale
            preset = cut.preset.name
        else:
            rgb = read_image(Path(field), 3).numpy()
            survey = survey or "unknown"
    else:
        arr = np.asarray(field)
        rgb = to_tensor(arr if arr.ndim == 2 or arr.shape[-1] in (3, 4) else np.moveaxis(arr, 0, -1), "field").numpy()
        source_name, survey = "array", survey or "unknown"
    if wcs is not None and scale is None:
        scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)
    sources, _ = detect_field_sources(rgb.mean(axis=0), size)
    hosts = sorted((s for s in sources if not s.reason), key=lambda s: -s.flux)
    if limit is not None:
        hosts = hosts[:limit]
    images, infos = [], []
    plane = np.moveaxis(rgb, 0, -1)
    for s in hosts:
        cx, cy = int(round(s.x)), int(round(s.y))
        cut = Cutout2D(plane[..., 0], (cx, cy), (size, size), wcs=None if wcs is None else wcs.celestial,
                       mode="strict")
        (y0, y1), (x0, x1) = ((sl.start, sl.stop) for sl in cut.slices_original)
        images.append(torch.from_numpy(np.ascontiguousarray(rgb[:, y0:y1, x0:x1], dtype=np.float32)))
        ra = dec = None
        if cut.wcs is not None:
            ra, dec = (float(v) for v in cut.wcs.all_pix2world([[(size - 1) / 2, (size - 1) / 2]], 0)[0])
        infos.append(HostInfo(f"{Path(source_name).stem}@{cx},{cy}", survey, f"{source_name} [{x0}:{x1}, {y0}:{y1}]",
                              ra, dec, scale, preset if is_fits(source_name) else None, size))
    skipped = {f"source {s.label} at ({s.x:.0f}, {s.y:.0f})": s.reason for s in sources if s.reason}
    if not images:
        raise InputError(f"no usable {size}-px host in {source_name} ({len(sources)} sources, all rejected)")
    return HostList(torch.stack(images), infos, skipped)


def contact_sheet(hosts: HostList, path: str | os.PathLike, columns: int = 10, title: str | None = None) -> Path:
    """A PNG grid of the hosts with their names (a look at what a study will inject clumps into)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(hosts)
    if n == 0:
        raise InputError("no host to draw")
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, info in zip(axes.flat, hosts.images, hosts.hosts):
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(info.name.split("@")[-1], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
