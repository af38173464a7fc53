"""SDSS-like clumpy galaxies with exact clump boxes: the training and test data of the clump detectors.

Each image is an exponential disk plus an optional Sersic bulge (random inclination and position angle), 0-8 blue
Gaussian clumps at 0.3-1.5 disk effective radii, each a chosen fraction of the host's r-band flux, and optional
foreground stars (the "odd clump" class). The g, r and i bands are modelled in nanomaggies, convolved with a Moffat
PSF (r-band FWHM about 1.43 arcsec at 0.396 arcsec/pixel), given sky and source Poisson noise, and mapped to RGB in
[0, 1] by a Lupton asinh stretch of (i, r, g) -> (R, G, B).

Image `i` of `simulate(n, config, seed)` depends only on `(seed, i)` (its own random stream), so a data set can be
regenerated, extended or sharded: `SimulatedClumps(n, config, seed)[i]` is the same image.

Boxes are squares of 2-3 r-band PSF FWHM centred on each source, in torchvision detection convention: float xyxy
pixel coordinates with (0, 0) at the top-left corner of the image (pixel j spans [j, j + 1)).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.fft
import torch

__all__ = [
    "SimConfig",
    "GalaxyParams",
    "SimulatedBatch",
    "SimulatedClumps",
    "simulate",
    "simulate_one",
    "sample_params",
    "render_flux",
    "lupton_rgb",
    "inverse_lupton",
    "make_target",
    "HostMeasurement",
    "measure_host",
    "inject_clumps",
    "inject_batch",
    "CLUMP",
    "ODD_CLUMP",
    "CLASS_NAMES",
]

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
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from exc
    for v in (a, b):
        if integer and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"{name} must hold integers, got {value!r}")
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} must hold finite numbers, got {value!r}")
    if a > b:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {value!r}")
    if lo is not None and (a < lo or (strict_lo and a <= lo)):
        raise ValueError(f"{name} must be {'>' if strict_lo else '>='} {lo}, got {value!r}")
    if hi is not None and b > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")
    return (a, b)


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, "
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

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, (int, np.integer)) \
                or self.image_size < 16:
            raise ValueError(f"image_size must be an integer >= 16, got {self.image_size!r}")
        _check_positive("pixel_scale", self.pixel_scale)
        _check_range("host_mag", self.host_mag, 5.0, 30.0)
        _check_range("disk_re", self.disk_re, 0.0, strict_lo=True)
        _check_range("axis_ratio", self.axis_ratio, 0.0, 1.0, strict_lo=True)
        if not 0.0 <= self.bulge_probability <= 1.0:
            raise ValueError(f"bulge_probability must be in [0, 1], got {self.bulge_probability!r}")
        _check_range("bulge_fraction", self.bulge_fraction, 0.0, 1.0)
        if self.bulge_fraction[1] >= 1.0:
            raise ValueError(f"bulge_fraction must stay below 1 (a disk is always present), got {self.bulge_fraction!r}")
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
            raise ValueError(f"max_stars must be an integer in [0, 20], got {self.max_stars!r}")
        _check_range("star_flux", self.star_flux, 0.0, 100.0, strict_lo=True)
        _check_range("star_radius", self.star_radius, 0.0)
        _check_range("star_g_r", self.star_g_r, -1.0, 3.0)
        _check_range("psf_fwhm", self.psf_fwhm, 0.0, strict_lo=True)
        _check_range("psf_beta", self.psf_beta, 1.0, strict_lo=True)
        for name, n_expected in (("sky_mag", 3), ("electrons_per_nmgy", 3), ("rgb_scales", 3)):
            value = getattr(self, name)
            if len(value) != n_expected:
                raise ValueError(f"{name} must have {n_expected} values (one per band), got {value!r}")
        for v in self.sky_mag:
            if not math.isfinite(v):
                raise ValueError(f"sky_mag must be finite, got {self.sky_mag!r}")
        for v in self.electrons_per_nmgy:
            _check_positive("electrons_per_nmgy", v)
        for v in self.rgb_scales:
            _check_positive("rgb_scales", v)
        _check_positive("noise_scale", self.noise_scale, allow_zero=True)
        _check_range("box_size", self.box_size, 0.0, strict_lo=True)
        _check_positive("asinh_q", self.asinh_q)
        _check_positive("asinh_stretch", self.asinh_stretch)

    @property
    def psf_fwhm_px(self) -> float:
        """Median r-band PSF FWHM in pixels (the centre of `psf_fwhm`), e.g. for the loose matching rule."""
        return 0.5 * (self.psf_fwhm[0] + self.psf_fwhm[1]) / self.pixel_scale

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
            raise ValueError(f"boolean mask must have {self.num_sources} entries, got {keep.shape}")
        return dataclasses.replace(self, **{k: getattr(self, k)[keep] for k in _SOURCE_FIELDS})


_SOURCE_FIELDS = ("x", "y", "sigma", "flux_fraction", "g_r", "label", "box")


@dataclass
class SimulatedBatch:
    """Images (N, 3, H, W) float in [0, 1]; `targets[i]` has "boxes" (K, 4) float32 xyxy pixels, "labels" (K,)
    int64 (1 clump, 2 odd clump / star) and "flux_fraction" (K,) float32; `params[i]` the drawn parameters."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    params: list[GalaxyParams]
    config: SimConfig
    seed: int

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------------------------------- sampling


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
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


# --------------------------------------------------------------------------------------------------- rendering


class _Canvas:
    """Padded pixel grid of an (H, W) image, wide enough for a PSF of FWHM `max_fwhm` pixels (cached)."""

    def __init__(self, height: int, width: int, max_fwhm: float) -> None:
        self.height, self.width = height, width
        self.pad = int(math.ceil(4.0 * max_fwhm)) + 2
        self.full_h = scipy.fft.next_fast_len(height + 2 * self.pad, real=True)
        self.full_w = scipy.fft.next_fast_len(width + 2 * self.pad, real=True)
        # Coordinates of the pixel centres of the padded grid, in image (box) coordinates.
        self.xs = np.arange(self.full_w, dtype=np.float64) - self.pad + 0.5
        self.ys = np.arange(self.full_h, dtype=np.float64) - self.pad + 0.5
        self.kernel_radius = self.pad - 1
        offsets = np.arange(-self.kernel_radius, self.kernel_radius + 1, dtype=np.float64)
        self.kernel_r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2

    @property
    def shape(self) -> tuple[int, int]:
        return self.full_h, self.full_w

    def crop(self, a: np.ndarray) -> np.ndarray:
        return a[..., self.pad:self.pad + self.height, self.pad:self.pad + self.width]


_CANVASES: dict[tuple, _Canvas] = {}


def _canvas(height: int, width: int, max_fwhm: float) -> _Canvas:
    key = (int(height), int(width), int(math.ceil(4.0 * max_fwhm)))
    if key not in _CANVASES:
        if len(_CANVASES) > 32:
            _CANVASES.clear()
        _CANVASES[key] = _Canvas(int(height), int(width), max_fwhm)
    return _CANVASES[key]


def _moffat_otf(canvas: _Canvas, fwhm_px: np.ndarray, beta: float) -> np.ndarray:
    """Real FFTs (3, F, F//2+1) of unit-sum Moffat kernels, one per band, centred on pixel (0, 0)."""
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    k = (1.0 + canvas.kernel_r2[None] / alpha[:, None, None] ** 2) ** (-beta)
    k /= k.sum(axis=(1, 2), keepdims=True)
    r = canvas.kernel_radius
    full = np.zeros((3,) + canvas.shape, dtype=np.float32)
    full[:, :r + 1, :r + 1] = k[:, r:, r:]
    full[:, :r + 1, -r:] = k[:, r:, :r]
    full[:, -r:, :r + 1] = k[:, :r, r:]
    full[:, -r:, -r:] = k[:, :r, :r]
    return scipy.fft.rfft2(full, workers=1)


def _host_shapes(params: GalaxyParams, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit-sum disk and bulge profiles on the padded grid (bulge None when absent)."""
    dx = canvas.xs[None, :] - params.center[0]
    dy = canvas.ys[:, None] - params.center[1]
    cos_pa, sin_pa = math.cos(params.position_angle), math.sin(params.position_angle)
    u = dx * cos_pa + dy * sin_pa
    v = -dx * sin_pa + dy * cos_pa
    h = params.disk_re / 1.6783  # exponential scale length from the effective radius
    disk = np.exp(-np.sqrt(u * u + (v / params.axis_ratio) ** 2) / h)
    disk /= disk.sum()
    if params.bulge_fraction <= 0.0:
        return disk, None
    n = params.bulge_n
    b_n = 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n * n)
    r = np.sqrt(u * u + (v / params.bulge_axis_ratio) ** 2 + _SERSIC_SOFTENING_PX ** 2)
    bulge = np.exp(-b_n * (r / params.bulge_re) ** (1.0 / n))
    bulge /= bulge.sum()
    return disk, bulge


def _source_images(params: GalaxyParams, canvas: _Canvas, amplitudes: np.ndarray) -> np.ndarray:
    """(3, F, F) sum of unit-sum Gaussian sources scaled by `amplitudes` (3, K); separable, so O(K F) exps."""
    if params.num_sources == 0:
        return np.zeros((3,) + canvas.shape)
    sig = np.maximum(params.sigma, _POINT_SIGMA_PX)[:, None]
    gx = np.exp(-0.5 * ((canvas.xs[None, :] - params.x[:, None]) / sig) ** 2)
    gy = np.exp(-0.5 * ((canvas.ys[None, :] - params.y[:, None]) / sig) ** 2)
    gx /= gx.sum(axis=1, keepdims=True)
    gy /= gy.sum(axis=1, keepdims=True)
    return np.einsum("bk,kh,kw->bhw", amplitudes, gy, gx, optimize=True)


def render_flux(params: GalaxyParams, config: SimConfig = SimConfig(), *, host: bool = True,
                sources: bool = True, psf: bool = True, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Noiseless (3, H, W) g, r, i image in nanomaggies; `host` / `sources` switch the components on and off.

    (H, W) is `shape`, default `config.image_size` square. Profiles are normalised on a grid padded by four PSF
    FWHM, so the total flux of each component equals its parameter up to what falls outside the image.
    """
    h, w = (config.image_size, config.image_size) if shape is None else shape
    canvas = _canvas(h, w, params.psf_fwhm * _BAND_FWHM_RATIO.max())
    total = np.zeros((3,) + canvas.shape)
    if host:
        disk, bulge = _host_shapes(params, canvas)
        bt = params.bulge_fraction
        total += _band_fluxes(params.flux_r * (1 - bt), params.disk_g_r)[:, None, None] * disk
        if bulge is not None:
            total += _band_fluxes(params.flux_r * bt, params.bulge_g_r)[:, None, None] * bulge
    if sources and params.num_sources:
        amps = _band_fluxes(params.flux_r * params.flux_fraction, params.g_r)  # (3, K)
        total += _source_images(params, canvas, amps)
    if psf:
        otf = _moffat_otf(canvas, params.psf_fwhm * _BAND_FWHM_RATIO, params.psf_beta)
        # single precision FFTs: half the cost, and 1e-7 relative error is far below the noise
        spectrum = scipy.fft.rfft2(total.astype(np.float32), workers=1) * otf
        total = scipy.fft.irfft2(spectrum, s=total.shape[-2:], workers=1)
    return np.ascontiguousarray(canvas.crop(total))


def _add_noise(flux: np.ndarray, config: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Sky-subtracted image with sky and source Poisson noise (Gaussian approximation)."""
    if config.noise_scale == 0:
        return flux
    pix_area = config.pixel_scale ** 2
    sky = 10 ** ((22.5 - np.asarray(config.sky_mag)) / 2.5) * pix_area  # nanomaggies per pixel
    gain = np.asarray(config.electrons_per_nmgy)
    var = (sky[:, None, None] + np.maximum(flux, 0.0)) / gain[:, None, None].astype(flux.dtype)
    return flux + config.noise_scale * np.sqrt(var) * rng.standard_normal(flux.shape, dtype=np.float32)


def lupton_rgb(gri: np.ndarray, config: SimConfig = SimConfig()) -> np.ndarray:
    """Lupton et al. (2004) asinh stretch of a (3, H, W) g, r, i flux image to (3, H, W) RGB in [0, 1].

    (R, G, B) = scales * (i, r, g); every channel is multiplied by asinh(Q I / stretch) / (Q I) with I their mean,
    which keeps colours; pixels whose largest channel exceeds 1 are scaled down, again keeping colours.
    """
    rgb = np.stack([gri[2], gri[1], gri[0]]) * np.asarray(config.rgb_scales, dtype=np.float64)[:, None, None]
    intensity = rgb.mean(axis=0)
    q, stretch = config.asinh_q, config.asinh_stretch
    x = q * intensity / stretch
    small = np.abs(x) < 1e-6
    factor = np.where(small, 1.0, np.arcsinh(x) / np.where(small, 1.0, x)) / stretch  # asinh(x) / (Q I)
    out = rgb * factor
    peak = out.max(axis=0)
    out = out / np.maximum(peak, 1.0)
    return np.clip(out, 0.0, 1.0)


def inverse_lupton(rgb: np.ndarray, config: SimConfig = SimConfig()) -> np.ndarray:
    """Approximate inverse of `lupton_rgb`: (3, H, W) RGB in [0, 1] -> linear (3, H, W) R, G, B fluxes (the
    scaled i, r, g of the stretch). Exact for unclipped pixels of `lupton_rgb` images; for other cutouts, a
    linearisation that assumes a similar asinh stretch."""
    rgb = np.asarray(rgb, dtype=np.float64)
    q, stretch = config.asinh_q, config.asinh_stretch
    m = rgb.mean(axis=0)  # = asinh(x) / Q * (I / stretch) / x ... = asinh(Q I / stretch) / Q
    intensity = np.sinh(q * m) * stretch / q
    factor = np.where(m > 1e-8, intensity / np.maximum(m, 1e-8), stretch)
    return rgb * factor


# --------------------------------------------------------------------------------------------------- public API


def make_target(params: GalaxyParams, size: int | tuple[int, int]) -> dict[str, torch.Tensor]:
    """torchvision-style target of the sources in `params`: square boxes of side `params.box` centred on each
    source, clipped to an image of `size` (H, W or one int)."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    half = params.box / 2
    boxes = np.stack([params.x - half, params.y - half, params.x + half, params.y + half], axis=-1).reshape(-1, 4)
    boxes = np.clip(boxes, 0.0, [w, h, w, h])
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32),
        "labels": torch.as_tensor(params.label, dtype=torch.int64),
        "flux_fraction": torch.as_tensor(params.flux_fraction, dtype=torch.float32),
    }


def _simulate_array(index: int, config: SimConfig, seed: int) -> tuple[np.ndarray, GalaxyParams]:
    rng = _rng(seed, index, _STREAM_SIMULATE)
    params = sample_params(rng, config)
    flux = _add_noise(render_flux(params, config), config, rng)
    return lupton_rgb(flux, config), params


def simulate_one(index: int, config: SimConfig = SimConfig(), seed: int = 0
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], GalaxyParams]:
    """Image `index` of the data set `(config, seed)`: (3, H, W) float32 RGB in [0, 1], its target, its params."""
    if not isinstance(config, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
    image, params = _simulate_array(_check_seed(index, "index"), config, _check_seed(seed))
    return torch.from_numpy(image.astype(np.float32)), make_target(params, config.image_size), params


def simulate(n: int, config: SimConfig = SimConfig(), seed: int = 0, *, start: int = 0,
             progress: bool = False) -> SimulatedBatch:
    """Images `start .. start + n - 1` of the data set `(config, seed)` as a `SimulatedBatch`."""
    if not isinstance(config, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of images), got {n!r}")
    seed = _check_seed(seed)
    start = _check_seed(start, "start")
    from tqdm.auto import tqdm

    images = np.empty((n, 3, config.image_size, config.image_size), dtype=np.float32)  # numpy: one thread
    targets, params = [], []
    for j in tqdm(range(n), disable=not progress, desc="simulate"):
        images[j], p = _simulate_array(start + j, config, seed)
        targets.append(make_target(p, config.image_size))
        params.append(p)
    return SimulatedBatch(torch.from_numpy(images), targets, params, config, seed)


class SimulatedClumps(torch.utils.data.Dataset):
    """A map-style dataset of `n` simulated images: item i is `(image (3, H, W), target)`, generated on demand and
    depending only on `(seed, i)`, so workers and shards agree. Use `detectors.data.collate` in a DataLoader."""

    def __init__(self, n: int, config: SimConfig = SimConfig(), seed: int = 0) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer (number of images), got {n!r}")
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
        self.n = int(n)
        self.config = config
        self.seed = _check_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} simulated images")
        image, target, _ = simulate_one(index % self.n, self.config, self.seed)
        return image, target


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
    """Segment and measure the central galaxy of a (3, H, W) RGB cutout in [0, 1] (see `HostMeasurement`).

    The cutout is linearised with `inverse_lupton` (assuming the simulator's stretch); the background and its noise
    are the median and MAD of a border frame; the segment is the connected region above `threshold` sigma that
    contains (or is nearest to) the centre."""
    from scipy import ndimage

    rgb = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    lin = inverse_lupton(rgb, config)
    r = lin[1] / config.rgb_scales[1]
    h, w = r.shape
    b = max(2, min(h, w) // 10)
    frame = np.concatenate([r[:b].ravel(), r[-b:].ravel(), r[:, :b].ravel(), r[:, -b:].ravel()])
    bkg = float(np.median(frame))
    noise = float(1.4826 * np.median(np.abs(frame - bkg)))
    signal = r - bkg
    smooth = ndimage.gaussian_filter(signal, 1.0)
    segments, n = ndimage.label(smooth > threshold * max(noise, 1e-12) / 2.0)  # smoothing lowers the noise ~2x
    if n == 0:
        raise ValueError("no galaxy found in the cutout (nothing above the background); is it a galaxy image?")
    cy, cx = h // 2, w // 2
    label = segments[cy, cx]
    if label == 0:  # nearest segment pixel to the centre
        yy, xx = np.nonzero(segments)
        k = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        label = segments[yy[k], xx[k]]
    mask = segments == label
    weights = np.where(mask, np.maximum(signal, 0.0), 0.0)
    flux = float(weights.sum())
    if flux <= 0:
        raise ValueError("the central galaxy has no flux above the background")
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    mx, my = float((weights * xs).sum() / flux), float((weights * ys).sum() / flux)
    dx, dy = xs - mx, ys - my
    cxx, cyy, cxy = ((weights * dx * dx).sum() / flux, (weights * dy * dy).sum() / flux,
                     (weights * dx * dy).sum() / flux)
    evals, evecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    q = float(np.sqrt(max(evals[0], 1e-12) / max(evals[1], 1e-12)))
    q = min(max(q, 0.1), 1.0)
    pa = float(np.arctan2(evecs[1, 1], evecs[0, 1]) % np.pi)
    u = dx * math.cos(pa) + dy * math.sin(pa)
    v = -dx * math.sin(pa) + dy * math.cos(pa)
    r_ell = np.sqrt(u * u + (v / q) ** 2)[mask]
    order = np.argsort(r_ell)
    cum = np.cumsum(weights[mask][order])
    re = float(r_ell[order][np.searchsorted(cum, 0.5 * cum[-1])])
    return HostMeasurement(flux, (mx, my), max(re, 1.0), q, pa, noise, mask)


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
        raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    check_images(image[None], "image", channels=3)
    if psf_fwhm_px is not None:
        _check_positive("psf_fwhm_px", psf_fwhm_px)
    if n_clumps is not None and (isinstance(n_clumps, bool) or not isinstance(n_clumps, (int, np.integer))
                                 or not 0 <= n_clumps <= 50):
        raise ValueError(f"n_clumps must be an integer in [0, 50] or None, got {n_clumps!r}")
    rng = _rng(_check_seed(seed), _check_seed(index, "index"), _STREAM_INJECT)
    host = measure_host(image, config, threshold)
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
