"""The galaxy model of the clump simulator: its settings (`SimConfig`), the drawn parameters of one image
(`GalaxyParams`) and the sampling of a host with its clumps and stars. Rendering is in `render`, the data set in
`simulate`, injection into real cutouts in `inject`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from blindspots.errors import InputError


CLUMP = 1  # a giant star-forming clump
ODD_CLUMP = 2  # an "odd clump": here, a foreground star
CLASS_NAMES = ("background", "clump", "odd_clump")

BANDS = ("g", "r", "i")
# Seeing is worse in the blue: FWHM in each band relative to r.
_BAND_FWHM_RATIO = np.array([1.06, 1.0, 0.95])
# Minimum Gaussian width (pixels) used to render point sources, so that sub-pixel positions stay exact.
_POINT_SIGMA_PX = 0.3
# Softening (pixels) of the cuspy Sersic centre when sampled at pixel centres.
_SERSIC_SOFTENING_PX = 0.3
_STREAM_SIMULATE = 0
_STREAM_INJECT = 1


def _r_minus_i(g_minus_r: np.ndarray | float) -> np.ndarray | float:
    """Approximate r - i colour from g - r (close to the galaxy and stellar loci for g - r < 1.4)."""
    return 0.45 * np.asarray(g_minus_r)


def _band_fluxes(flux_r: np.ndarray | float, g_minus_r: np.ndarray | float) -> np.ndarray:
    """(g, r, i) fluxes (leading axis 3) from the r-band flux and the g - r colour."""
    flux_r = np.asarray(flux_r, dtype=np.float64)
    gr = np.asarray(g_minus_r, dtype=np.float64)
    return np.stack([flux_r * 10 ** (-0.4 * gr), flux_r, flux_r * 10 ** (0.4 * _r_minus_i(gr))])


def _check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 integer: bool = False, strict_lo: bool = False) -> tuple:
    """Validate a (min, max) pair within [lo, hi]; return it as a tuple."""
    try:
        a, b = value
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a (min, max) pair, got {value!r}") from exc
    for v in (a, b):
        if integer and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"{name} must hold integers, got {value!r}")
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not math.isfinite(v):
            raise InputError(f"{name} must hold finite numbers, got {value!r}")
    if a > b:
        raise InputError(f"{name} must be (min, max) with min <= max, got {value!r}")
    if lo is not None and (a < lo or (strict_lo and a <= lo)):
        raise InputError(f"{name} must be {'>' if strict_lo else '>='} {lo}, got {value!r}")
    if hi is not None and b > hi:
        raise InputError(f"{name} must be <= {hi}, got {value!r}")
    return (a, b)


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, "
                         f"got {value!r}")


@dataclass(frozen=True)
class SimConfig:
    """Parameters of the simulated galaxies. Ranges are (min, max) pairs sampled uniformly per image or source
    unless noted. Angles in arcsec are converted with `pixel_scale`.

    Image: `image_size` (pixels, square), `pixel_scale` (arcsec/pixel, SDSS 0.396).
    Host: `host_mag` (r-band AB magnitude), `disk_re` (exponential-disk effective radius, arcsec), `axis_ratio`
        (b/a of the disk), `bulge_probability`, `bulge_fraction` (B/T), `bulge_re` (arcsec), `bulge_n` (Sersic
        index), `disk_g_r` and `bulge_g_r` (colours), `center_jitter` (pixels, host centre offset).
    Clumps: `n_clumps` (integer range, inclusive), `clump_radius` (distance from the centre in the disk plane, in
        disk effective radii), `clump_flux` (r-band flux as a fraction of the host's, log-uniform), `clump_sigma`
        (intrinsic Gaussian sigma, arcsec), `clump_g_r`, `min_separation` (between sources, in PSF FWHM; a clump
        that cannot be placed in 25 tries is dropped).
    Stars ("odd clumps"): `star_rate` (mean number per image, Poisson, capped at `max_stars`), `star_flux`
        (fraction of the host's r flux, log-uniform), `star_radius` (on-sky distance from the centre, in disk
        effective radii), `star_g_r`.
    PSF and noise: `psf_fwhm` (r-band FWHM, arcsec; g and i are 1.06x and 0.95x), `psf_beta` (Moffat beta),
        `sky_mag` (g, r, i sky brightness, mag/arcsec^2), `electrons_per_nmgy` (g, r, i), `noise_scale`
        (multiplies the noise; 0 = noiseless).
    Boxes: `box_size` (side of the square box, in r-band PSF FWHM).
    Colour: `rgb_scales` (multipliers of i, r, g before the stretch), `asinh_q` and `asinh_stretch` (Lupton's Q
        and linear-range stretch, nanomaggies).
    Units: fluxes are nanomaggies, `zero_point` the AB magnitude of one (22.5); `units()` lists them for records.
    """

    image_size: int = 128
    pixel_scale: float = 0.396
    host_mag: tuple[float, float] = (14.0, 17.7)
    disk_re: tuple[float, float] = (2.0, 8.0)
    axis_ratio: tuple[float, float] = (0.3, 1.0)
    bulge_probability: float = 0.5
    bulge_fraction: tuple[float, float] = (0.0, 0.4)
    bulge_re: tuple[float, float] = (0.5, 2.0)
    bulge_n: tuple[float, float] = (2.0, 4.0)
    disk_g_r: tuple[float, float] = (0.5, 0.7)
    bulge_g_r: tuple[float, float] = (0.75, 0.85)
    center_jitter: float = 1.0
    n_clumps: tuple[int, int] = (0, 8)
    clump_radius: tuple[float, float] = (0.3, 1.5)
    clump_flux: tuple[float, float] = (0.005, 0.08)
    clump_sigma: tuple[float, float] = (0.2, 0.5)
    clump_g_r: tuple[float, float] = (0.0, 0.3)
    min_separation: float = 2.0
    star_rate: float = 0.2
    max_stars: int = 2
    star_flux: tuple[float, float] = (0.01, 0.3)
    star_radius: tuple[float, float] = (0.3, 2.0)
    star_g_r: tuple[float, float] = (0.3, 1.4)
    psf_fwhm: tuple[float, float] = (1.30, 1.58)
    psf_beta: tuple[float, float] = (3.0, 4.5)
    sky_mag: tuple[float, float, float] = (21.9, 20.86, 20.2)
    electrons_per_nmgy: tuple[float, float, float] = (1000.0, 900.0, 700.0)
    noise_scale: float = 1.0
    box_size: tuple[float, float] = (2.0, 3.0)
    rgb_scales: tuple[float, float, float] = (0.8, 1.0, 1.6)
    asinh_q: float = 6.0
    asinh_stretch: float = 0.4
    zero_point: float = 22.5

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, (int, np.integer)) \
                or self.image_size < 16:
            raise InputError(f"image_size must be an integer >= 16, got {self.image_size!r}")
        _check_positive("pixel_scale", self.pixel_scale)
        _check_range("host_mag", self.host_mag, 5.0, 30.0)
        _check_range("disk_re", self.disk_re, 0.0, strict_lo=True)
        _check_range("axis_ratio", self.axis_ratio, 0.0, 1.0, strict_lo=True)
        if not 0.0 <= self.bulge_probability <= 1.0:
            raise InputError(f"bulge_probability must be in [0, 1], got {self.bulge_probability!r}")
        _check_range("bulge_fraction", self.bulge_fraction, 0.0, 1.0)
        if self.bulge_fraction[1] >= 1.0:
            raise InputError(f"bulge_fraction must stay below 1 (a disk is always present), got {self.bulge_fraction!r}")
        _check_range("bulge_re", self.bulge_re, 0.0, strict_lo=True)
        _check_range("bulge_n", self.bulge_n, 0.3, 10.0)
        _check_range("disk_g_r", self.disk_g_r, -1.0, 3.0)
        _check_range("bulge_g_r", self.bulge_g_r, -1.0, 3.0)
        _check_positive("center_jitter", self.center_jitter, allow_zero=True)
        _check_range("n_clumps", self.n_clumps, 0, 50, integer=True)
        _check_range("clump_radius", self.clump_radius, 0.0)
        _check_range("clump_flux", self.clump_flux, 0.0, 1.0, strict_lo=True)
        _check_range("clump_sigma", self.clump_sigma, 0.0)
        _check_range("clump_g_r", self.clump_g_r, -1.0, 3.0)
        _check_positive("min_separation", self.min_separation, allow_zero=True)
        _check_positive("star_rate", self.star_rate, allow_zero=True)
        if isinstance(self.max_stars, bool) or not isinstance(self.max_stars, (int, np.integer)) \
                or not 0 <= self.max_stars <= 20:
            raise InputError(f"max_stars must be an integer in [0, 20], got {self.max_stars!r}")
        _check_range("star_flux", self.star_flux, 0.0, 100.0, strict_lo=True)
        _check_range("star_radius", self.star_radius, 0.0)
        _check_range("star_g_r", self.star_g_r, -1.0, 3.0)
        _check_range("psf_fwhm", self.psf_fwhm, 0.0, strict_lo=True)
        _check_range("psf_beta", self.psf_beta, 1.0, strict_lo=True)
        for name, n_expected in (("sky_mag", 3), ("electrons_per_nmgy", 3), ("rgb_scales", 3)):
            value = getattr(self, name)
            if len(value) != n_expected:
                raise InputError(f"{name} must have {n_expected} values (one per band), got {value!r}")
        for v in self.sky_mag:
            if not math.isfinite(v):
                raise InputError(f"sky_mag must be finite, got {self.sky_mag!r}")
        for v in self.electrons_per_nmgy:
            _check_positive("electrons_per_nmgy", v)
        for v in self.rgb_scales:
            _check_positive("rgb_scales", v)
        _check_positive("noise_scale", self.noise_scale, allow_zero=True)
        _check_range("box_size", self.box_size, 0.0, strict_lo=True)
        _check_positive("asinh_q", self.asinh_q)
        _check_positive("asinh_stretch", self.asinh_stretch)
        _check_positive("zero_point", self.zero_point)

    @property
    def psf_fwhm_px(self) -> float:
        """Median r-band PSF FWHM in pixels (the centre of `psf_fwhm`), e.g. for the loose matching rule."""
        return 0.5 * (self.psf_fwhm[0] + self.psf_fwhm[1]) / self.pixel_scale

    def units(self) -> dict[str, Any]:
        """The physical units of the images, for records and reports."""
        return {"pixel_scale_arcsec_per_px": self.pixel_scale, "field_arcsec": self.pixel_scale * self.image_size,
                "psf_fwhm_arcsec": list(self.psf_fwhm), "psf_fwhm_px": round(self.psf_fwhm_px, 3),
                "flux_unit": "nanomaggy", "zero_point_ab": self.zero_point,
                "clump_flux": "fraction of the host's r-band flux; magnitude = host's - 2.5 log10(fraction)"}

    def replace(self, **changes: Any) -> "SimConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass
class GalaxyParams:
    """Everything drawn for one image (pixel units; positions in box coordinates, see the module docstring).

    Sources (clumps then stars) are arrays of equal length K: `x`, `y`, `sigma` (intrinsic Gaussian sigma, px),
    `flux_fraction` (r-band flux / host r-band flux), `g_r`, `label` (1 clump, 2 star), `box` (box side, px).
    """

    center: tuple[float, float]
    flux_r: float
    disk_re: float
    axis_ratio: float
    position_angle: float
    disk_g_r: float
    bulge_fraction: float
    bulge_re: float
    bulge_n: float
    bulge_axis_ratio: float
    bulge_g_r: float
    psf_fwhm: float
    psf_beta: float
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flux_fraction: np.ndarray = field(default_factory=lambda: np.zeros(0))
    g_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    box: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def num_sources(self) -> int:
        return int(self.x.shape[0])

    def select(self, keep: np.ndarray | Sequence[int] | Sequence[bool]) -> "GalaxyParams":
        """A copy keeping only some sources (an index list or boolean mask), e.g. to render a clump alone."""
        keep = np.asarray(keep)
        if keep.dtype == bool and keep.shape != (self.num_sources,):
            raise InputError(f"boolean mask must have {self.num_sources} entries, got {keep.shape}")
        return dataclasses.replace(self, **{k: getattr(self, k)[keep] for k in _SOURCE_FIELDS})


_SOURCE_FIELDS = ("x", "y", "sigma", "flux_fraction", "g_r", "label", "box")


def magnitudes(params: GalaxyParams, zero_point: float = 22.5) -> dict[str, Any]:
    """r-band AB magnitudes of the host and of each source (clumps, stars), and each source's magnitude
    difference to its host (-2.5 log10 of its flux fraction), for a flux scale with AB `zero_point` (22.5 for
    nanomaggies; NaN where the host's flux is not calibrated, e.g. measured on a colour cutout)."""
    host = zero_point - 2.5 * math.log10(params.flux_r) if params.flux_r > 0 else float("nan")
    delta = -2.5 * np.log10(np.asarray(params.flux_fraction, dtype=np.float64))
    return {"host_mag": host, "source_mag": (host + delta).tolist(), "delta_mag": delta.tolist()}



# --------------------------------------------------------------------------------------------------- sampling


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float], size: int | None = None) -> Any:
    return rng.uniform(lo_hi[0], lo_hi[1], size)


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float], size: int | None = None) -> Any:
    return np.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]), size))


def _place_sources(rng: np.random.Generator, n: int, propose, taken: list[tuple[float, float]],
                   min_dist: float, shape: tuple[int, int]) -> list[tuple[float, float]]:
    """Up to n positions from `propose()`, inside the image and at least `min_dist` from each other and `taken`."""
    h, w = shape
    placed: list[tuple[float, float]] = []
    for _ in range(n):
        for _try in range(25):
            x, y = propose()
            if not (0.0 <= x < w and 0.0 <= y < h):
                continue
            if all((x - a) ** 2 + (y - b) ** 2 >= min_dist ** 2 for a, b in taken + placed):
                placed.append((x, y))
                break
    return placed


def _sample_sources(rng: np.random.Generator, c: SimConfig, center: tuple[float, float], disk_re: float,
                    q: float, pa: float, fwhm: float, shape: tuple[int, int],
                    n_clumps: int | None = None) -> dict[str, np.ndarray]:
    """Clumps (in the disk plane, projected) and stars (on the sky) around a host: the source arrays of
    `GalaxyParams`."""
    s = c.pixel_scale
    cx, cy = center
    min_dist = c.min_separation * fwhm
    cos_pa, sin_pa = math.cos(pa), math.sin(pa)

    def propose_clump() -> tuple[float, float]:
        r = _uniform(rng, c.clump_radius) * disk_re
        theta = rng.uniform(0.0, 2 * math.pi)
        u, v = r * math.cos(theta), r * math.sin(theta) * q  # disk plane -> sky, major axis along u
        return cx + u * cos_pa - v * sin_pa, cy + u * sin_pa + v * cos_pa

    def propose_star() -> tuple[float, float]:
        r = _uniform(rng, c.star_radius) * disk_re
        theta = rng.uniform(0.0, 2 * math.pi)
        return cx + r * math.cos(theta), cy + r * math.sin(theta)

    if n_clumps is None:
        n_clumps = int(rng.integers(c.n_clumps[0], c.n_clumps[1] + 1))
    clumps = _place_sources(rng, n_clumps, propose_clump, [], min_dist, shape)
    n_stars = min(int(rng.poisson(c.star_rate)), c.max_stars) if c.star_rate > 0 else 0
    stars = _place_sources(rng, n_stars, propose_star, clumps, min_dist, shape)
    k1, k2 = len(clumps), len(stars)
    xy = np.array(clumps + stars, dtype=np.float64).reshape(-1, 2)
    return dict(
        x=xy[:, 0], y=xy[:, 1],
        sigma=np.concatenate([_uniform(rng, c.clump_sigma, k1) / s, np.zeros(k2)]),
        flux_fraction=np.concatenate([_log_uniform(rng, c.clump_flux, k1), _log_uniform(rng, c.star_flux, k2)]),
        g_r=np.concatenate([_uniform(rng, c.clump_g_r, k1), _uniform(rng, c.star_g_r, k2)]),
        label=np.array([CLUMP] * k1 + [ODD_CLUMP] * k2, dtype=np.int64),
        box=_uniform(rng, c.box_size, k1 + k2) * fwhm,
    )


def sample_params(rng: np.random.Generator, config: SimConfig = SimConfig()) -> GalaxyParams:
    """Draw one galaxy's parameters (host, PSF, clumps, stars) from `config` with generator `rng`."""
    c = config
    s = c.pixel_scale
    size = c.image_size
    cx = size / 2 + rng.uniform(-c.center_jitter, c.center_jitter)
    cy = size / 2 + rng.uniform(-c.center_jitter, c.center_jitter)
    flux_r = 10 ** ((22.5 - _uniform(rng, c.host_mag)) / 2.5)  # nanomaggies
    disk_re = _uniform(rng, c.disk_re) / s
    q = _uniform(rng, c.axis_ratio)
    pa = rng.uniform(0.0, math.pi)
    disk_gr = _uniform(rng, c.disk_g_r)
    has_bulge = rng.random() < c.bulge_probability
    bt = _uniform(rng, c.bulge_fraction) if has_bulge else 0.0
    bulge_re = _uniform(rng, c.bulge_re) / s
    bulge_n = _uniform(rng, c.bulge_n)
    bulge_q = max(q, rng.uniform(0.7, 1.0))
    bulge_gr = _uniform(rng, c.bulge_g_r)
    fwhm = _uniform(rng, c.psf_fwhm) / s
    beta = _uniform(rng, c.psf_beta)
    sources = _sample_sources(rng, c, (cx, cy), disk_re, q, pa, fwhm, (size, size))
    return GalaxyParams(
        center=(cx, cy), flux_r=float(flux_r), disk_re=float(disk_re), axis_ratio=float(q), position_angle=pa,
        disk_g_r=float(disk_gr), bulge_fraction=float(bt), bulge_re=float(bulge_re), bulge_n=float(bulge_n),
        bulge_axis_ratio=float(bulge_q), bulge_g_r=float(bulge_gr), psf_fwhm=float(fwhm), psf_beta=float(beta),
        **sources,
    )


