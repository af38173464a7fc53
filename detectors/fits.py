"""FITS cutouts in, with their WCS: one band, one file per band, a cube or a multi-extension file, read with
astropy and turned into the RGB the models see by a named Lupton asinh preset (`PRESETS`).

Bands are named by the header (`BAND`/`FILTER`; for cubes `BANDS` = "grz" or `BAND0`, `BAND1`, ... as the Legacy
Survey cutout service writes them) or, for one file per band, by a band letter in the file name (`x_g.fits`,
`frame-r-...fits`). Pixels are taken as nanomaggies (SDSS frames, Legacy Survey images) unless the header gives an AB
zero point (`MAGZERO`/`MAGZP`/`ZP`/`ZEROPT`), which converts them. The WCS, when the header has a celestial one,
gives the cutout centre's RA/Dec and the pixel scale. Anything that cannot be read right is one `InputError` line
naming the file and the problem.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from blindspots.errors import InputError

from .render import asinh_rgb

__all__ = ["FITS_SUFFIXES", "StretchPreset", "PRESETS", "FitsCutout", "read_fits", "read_fits_bands",
           "band_of_file", "is_fits", "asinh_rgb", "NANOMAGGY_ZERO_POINT", "check_preset"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
NANOMAGGY_ZERO_POINT = 22.5  # AB magnitude of 1 nanomaggy
_BANDS = "ugrizy"
_ZP_KEYS = ("MAGZERO", "MAGZP", "ZP", "ZEROPT")


@dataclass(frozen=True)
class StretchPreset:
    """A Lupton et al. (2004) asinh colour stretch: `bands` shown as (R, G, B), each multiplied by its `scales`
    entry, then every channel times asinh(q I / stretch) / (q I), I their mean (fluxes in nanomaggies)."""

    name: str
    bands: tuple[str, str, str]
    scales: tuple[float, float, float]
    q: float
    stretch: float
    pixel_scale: float  # arcsec/px of the survey's images (used when a file has no WCS)
    survey: str

    def __post_init__(self) -> None:
        numbers = {"scales": self.scales, "q": (self.q,), "stretch": (self.stretch,), "pixel_scale": (self.pixel_scale,)}
        for field, values in numbers.items():
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in values) or len(values) != (3 if field == "scales" else 1):
                raise InputError(f"stretch preset {self.name!r}: {field} must be positive finite number(s), got "
                                 f"{getattr(self, field)!r}")
        if len(self.bands) != 3 or not all(isinstance(b, str) and b in _BANDS for b in self.bands):
            raise InputError(f"stretch preset {self.name!r}: bands must be 3 of {', '.join(_BANDS)}, got {self.bands!r}")

    def record(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, StretchPreset] = {
    # the simulator's own stretch (`SimConfig` defaults): i, r, g as R, G, B, as the SDSS gri composites Galaxy Zoo
    # showed; so clumps injected into an 'sdss' host are added in exact flux space
    "sdss": StretchPreset("sdss", ("i", "r", "g"), (0.8, 1.0, 1.6), 6.0, 0.4, 0.396, "sdss"),
    # the Legacy Surveys' z, r, g composite with legacypipe's band weights (z 2.2, r 3.4, g 6.0) relative to r
    "legacy": StretchPreset("legacy", ("z", "r", "g"), (2.2 / 3.4, 1.0, 6.0 / 3.4), 10.0, 0.5, 0.262, "legacy"),
}


@dataclass
class FitsCutout:
    """A FITS cutout read and stretched: `rgb` (3, H, W) in [0, 1], the linear `fluxes` {band: (H, W)} in
    nanomaggies, the `preset` used, and from the header: `ra`, `dec` (degrees, the cutout centre), `pixel_scale`
    (arcsec/px; None without WCS), `wcs` (astropy celestial WCS or None), `survey`, `source` (file names)."""

    rgb: np.ndarray
    fluxes: dict[str, np.ndarray]
    preset: StretchPreset
    ra: float | None
    dec: float | None
    pixel_scale: float | None
    wcs: Any
    survey: str
    source: str


def is_fits(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in FITS_SUFFIXES)


def band_of_file(path: str | os.PathLike) -> str | None:
    """The band letter a file name names (`J1234_g.fits`, `frame-r-0012.fits`, `cut.z.fits`), or None."""
    stem = Path(path).name
    for suffix in FITS_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    found = re.findall(rf"(?:^|[_\-.])([{_BANDS}])(?=$|[_\-.])", stem)
    return found[-1] if len(found) == 1 or len(set(found)) == 1 else None


def _band_of_header(header: Any) -> str | None:
    for key in ("BAND", "FILTER", "FILTNAM", "FILTER1"):
        value = str(header.get(key, "")).strip()
        if value:
            letter = value[0].lower() if len(value) == 1 else value.lower().split()[0].rstrip("'")[-1:]
            if letter in _BANDS:
                return letter
    return None


def _cube_bands(header: Any, n: int, path: Path) -> list[str]:
    names = [str(header.get(f"BAND{k}", "")).strip().lower() for k in range(n)]
    if all(len(b) == 1 and b in _BANDS for b in names):
        return names
    bands = str(header.get("BANDS", "")).strip().lower().replace(",", "").replace(" ", "")
    if len(bands) == n and all(b in _BANDS for b in bands):
        return list(bands)
    raise InputError(f"{path}: a cube of {n} planes without band names (give BANDS = 'grz' or BAND0, BAND1, ... "
                     "in its header)")


def _open(path: Path) -> Any:
    from astropy.io import fits

    if path.is_dir():
        raise InputError(f"{path} is a folder, not a FITS file")
    if not path.is_file():
        raise FileNotFoundError(f"FITS file not found: {path}")
    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("exception")
        for hdu in hdul:
            _ = hdu.header, hdu.data  # force the read: a truncated file fails here
    except Exception as exc:  # noqa: BLE001 - astropy's messages do not name the file, and span lines
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read FITS {path}: {reason[:200]} (broken header, truncated or not FITS?)") from exc
    return hdul


def _image_hdus(path: Path, hdul: Any) -> list[Any]:
    from astropy.io import fits

    images = [h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
              and h.data is not None and h.data.size > 0]
    if not images:
        kinds = ", ".join(f"{h.name or '?'} ({type(h).__name__}{'' if h.data is not None else ', empty'})"
                          for h in hdul)
        raise InputError(f"{path}: no image data in any HDU ({kinds})")
    return images


def _planes(path: Path, hdu: Any) -> tuple[list[str | None], np.ndarray]:
    """Bands (None when unnamed) and (P, H, W) float64 planes of one image HDU."""
    data = np.asarray(hdu.data)
    if data.dtype.kind not in "uif":
        raise InputError(f"{path} HDU {hdu.name}: {data.dtype} pixels are not an image")
    data = data.astype(np.float64)
    data = data.reshape([s for s in data.shape if s != 1] or [1])  # drop degenerate axes (1, H, W)
    if data.ndim == 2:
        return [_band_of_header(hdu.header)], data[None]
    if data.ndim == 3 and data.shape[0] <= 10:
        return list(_cube_bands(hdu.header, data.shape[0], path)), data
    raise InputError(f"{path} HDU {hdu.name}: expected a 2-D image or a (bands, H, W) cube, got shape {data.shape}")


def _zero_point(path: Path, header: Any) -> float:
    for key in _ZP_KEYS:
        if key in header:
            try:
                zp = float(header[key])
            except (TypeError, ValueError):
                raise InputError(f"{path}: header {key} = {header[key]!r} is not a number") from None
            if not 0 < zp < 50:
                raise InputError(f"{path}: header {key} = {zp} is not an AB zero point")
            return zp
    return NANOMAGGY_ZERO_POINT


def _wcs(path: Path, header: Any, shape: tuple[int, int]) -> tuple[Any, float | None, float | None, float | None]:
    """(celestial WCS or None, RA, Dec of the image centre, pixel scale arcsec/px)."""
    if not any(k.startswith("CTYPE") for k in header):
        return None, None, None, None
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2, fix=True).celestial
        if not wcs.has_celestial:
            return None, None, None, None
        h, w = shape
        ra, dec = (float(v) for v in wcs.all_pix2world([[(w - 1) / 2, (h - 1) / 2]], 0)[0])
        scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    except Exception as exc:  # noqa: BLE001 - astropy.wcs errors span lines and do not name the file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: broken WCS in the header: {reason[:200]}") from exc
    if not (math.isfinite(ra) and math.isfinite(dec) and math.isfinite(scale) and scale > 0):
        raise InputError(f"{path}: broken WCS in the header (centre RA/Dec {ra}, {dec}, pixel scale {scale})")
    return wcs, ra, dec, scale


def _survey(headers: Sequence[Any], preset: StretchPreset) -> str:
    for key in ("SURVEY", "TELESCOP"):
        for header in headers:
            value = str(header.get(key, "")).strip()
            if value:
                return value.lower()
    return "unknown"


def check_preset(preset: Any) -> None:
    """Refuse (one line) a `preset` that is neither None, a `StretchPreset` nor a name in `PRESETS`: checked before
    any file is read, so a typo is not ignored where no FITS file happens to need it."""
    if preset is not None and not isinstance(preset, StretchPreset) and (not isinstance(preset, str)
                                                                         or preset not in PRESETS):
        raise InputError(f"unknown stretch preset {preset!r}; choose from {', '.join(PRESETS)}")


def _choose_preset(preset: str | StretchPreset | None, bands: Sequence[str]) -> StretchPreset:
    check_preset(preset)
    if isinstance(preset, StretchPreset):
        return preset
    if preset is None:
        return PRESETS["legacy" if "z" in bands and "i" not in bands else "sdss"]
    return PRESETS[preset]


def read_fits_bands(paths: Sequence[str | os.PathLike], preset: str | StretchPreset | None = None) -> FitsCutout:
    """One cutout from one or more FITS files (one band each, a cube, or a multi-extension file; see the module
    docstring), stretched with `preset` ('sdss', 'legacy', or None: 'legacy' when the bands have z and no i, else
    'sdss'). A single band becomes a grey RGB."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no FITS file given")
    fluxes: dict[str, np.ndarray] = {}
    unnamed: list[tuple[Path, np.ndarray]] = []
    first_header, first_path, wcs_info = None, paths[0], (None, None, None, None)
    for path in paths:
        with _open(path) as hdul:
            for hdu in _image_hdus(path, hdul):
                bands, planes = _planes(path, hdu)
                if bands == [None] and len(paths) > 1:
                    bands = [band_of_file(path)]
                if not np.isfinite(planes).all():
                    bad = int((~np.isfinite(planes)).sum())
                    raise InputError(f"{path} HDU {hdu.name}: {bad} NaN or infinite pixel(s); mask or fill them first")
                planes = planes * 10 ** ((NANOMAGGY_ZERO_POINT - _zero_point(path, hdu.header)) / 2.5)
                if first_header is None:
                    first_header, first_path = [hdul[0].header, hdu.header], path
                    wcs_info = _wcs(path, hdu.header, planes.shape[-2:])
                for band, plane in zip(bands, planes):
                    if band is None:
                        unnamed.append((path, plane))
                    elif band in fluxes:
                        raise InputError(f"{path}: band {band} given twice")
                    else:
                        fluxes[band] = plane
    shapes = {p.shape for p in fluxes.values()} | {p.shape for _, p in unnamed}
    if len(shapes) > 1:
        raise InputError(f"{', '.join(map(str, paths))}: bands of different sizes {sorted(shapes)}")
    if (h_w := next(iter(shapes)))[0] < 2 or h_w[1] < 2:
        raise InputError(f"{first_path}: image of {h_w[0]}x{h_w[1]} pixels is too small")
    if unnamed and (fluxes or len(unnamed) > 1):
        raise InputError(f"{unnamed[0][0]}: an image plane without a band name (give BAND/FILTER in its header or "
                         "the band in the file name, e.g. cutout_g.fits)")
    if unnamed:  # a single band: grey
        plane = unnamed[0][1]
        chosen = _choose_preset(preset, ())
        planes = np.stack([plane, plane, plane])
        bands_used: dict[str, np.ndarray] = {"band": plane}
    else:
        chosen = _choose_preset(preset, list(fluxes))
        if len(fluxes) == 1:
            (band, plane), = fluxes.items()
            planes = np.stack([plane, plane, plane])
        else:
            missing = [b for b in chosen.bands if b not in fluxes]
            if missing:
                raise InputError(f"{first_path}: no usable band set: it has {', '.join(sorted(fluxes)) or 'none'}, "
                                 f"preset {chosen.name!r} needs {', '.join(chosen.bands)}")
            planes = np.stack([fluxes[b] * s for b, s in zip(chosen.bands, chosen.scales)])
        bands_used = fluxes
    if not np.any(planes.mean(axis=0) > 0):
        raise InputError(f"{first_path}: no positive flux in the image (an empty or all-negative cutout)")
    rgb = asinh_rgb(planes, chosen.q, chosen.stretch)
    wcs, ra, dec, scale = wcs_info
    return FitsCutout(rgb, bands_used, chosen, ra, dec, scale, wcs, _survey(first_header, chosen),
                      ";".join(str(p) for p in paths))


def read_fits(path: str | os.PathLike, preset: str | StretchPreset | None = None) -> FitsCutout:
    """One FITS file (a single band, a cube or a multi-extension file) as a `FitsCutout`."""
    return read_fits_bands([path], preset)
