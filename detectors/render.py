"""Rendering of the simulated galaxies: host and point-source profiles convolved with a Moffat PSF (in Fourier
space), sky and source noise, and the Lupton asinh stretch of (i, r, g) to RGB (with its inverse; the stretch equals
astropy's `make_lupton_rgb`, tests/test_fits.py)."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft


from .galaxy import (_BAND_FWHM_RATIO, _POINT_SIGMA_PX, _SERSIC_SOFTENING_PX, GalaxyParams, SimConfig,
                     _band_fluxes)

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


def asinh_rgb(planes: np.ndarray, q: float, stretch: float) -> np.ndarray:
    """The Lupton asinh stretch of (3, H, W) already-scaled R, G, B planes to RGB in [0, 1] (float64).

    Every channel is multiplied by asinh(q I / stretch) / (q I), I the mean of the three (colours kept); a pixel
    with I <= 0 is black; negative channels are clipped to 0; pixels whose largest channel exceeds 1 are scaled
    down, again keeping colours. Equal to astropy's `make_lupton_rgb` with the stretch f(I) = asinh(q I /
    stretch) / q (tests/test_fits.py checks 1e-6 parity); this is the faster of the two (benchmarks/astro_swaps.py).
    """
    planes = np.asarray(planes, dtype=np.float64)
    intensity = planes.mean(axis=0)
    positive = intensity > 0
    x = q * np.where(positive, intensity, 1.0) / stretch
    factor = np.where(positive, np.arcsinh(x) / (x * stretch), 0.0)  # asinh(q I / s) / (q I)
    out = np.clip(planes * factor, 0.0, None)
    peak = out.max(axis=0)
    return out / np.maximum(peak, 1.0)


def lupton_rgb(gri: np.ndarray, config: SimConfig = SimConfig()) -> np.ndarray:
    """Lupton et al. (2004) asinh stretch of a (3, H, W) g, r, i flux image to (3, H, W) RGB in [0, 1]:
    (R, G, B) = `config.rgb_scales` * (i, r, g) through `asinh_rgb` with `config.asinh_q` and `asinh_stretch`."""
    rgb = np.stack([gri[2], gri[1], gri[0]]) * np.asarray(config.rgb_scales, dtype=np.float64)[:, None, None]
    return asinh_rgb(rgb, config.asinh_q, config.asinh_stretch)


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




def render_flux_galsim(params: GalaxyParams, config: SimConfig = SimConfig(), *, host: bool = True,
                       sources: bool = True, shape: tuple[int, int] | None = None) -> np.ndarray:
    """`render_flux` drawn by GalSim instead (the reference the field trusts; tests/test_render_galsim.py holds the
    two to 1% in flux, 2% in clump flux fractions and half-light radius): an exponential disk and a Sersic bulge
    sheared to their axis ratios, Gaussian clumps and stars, each convolved with a Moffat PSF per band and sampled
    at pixel centres (`method='no_pixel'`, as `render_flux` samples). Needs GalSim (the `dev` extra)."""
    try:
        import galsim
    except ImportError as exc:  # pragma: no cover - depends on the install
        from blindspots.errors import MissingDependency

        raise MissingDependency("render_flux_galsim needs GalSim: pip install galsim") from exc
    h, w = (config.image_size, config.image_size) if shape is None else shape
    s = config.pixel_scale
    cx, cy = params.center
    beta = params.position_angle * galsim.radians
    out = np.zeros((3, h, w))
    disk_flux = _band_fluxes(params.flux_r * (1 - params.bulge_fraction), params.disk_g_r)
    bulge_flux = _band_fluxes(params.flux_r * params.bulge_fraction, params.bulge_g_r)
    amps = _band_fluxes(params.flux_r * params.flux_fraction, params.g_r) if params.num_sources else None
    for band in range(3):
        parts = []
        if host:
            q = params.axis_ratio  # GalSim's shear keeps the area: the major axis is hlr / sqrt(q)
            parts.append(galsim.Exponential(half_light_radius=params.disk_re * math.sqrt(q) * s,
                                            flux=disk_flux[band]).shear(q=q, beta=beta))
            if params.bulge_fraction > 0:
                qb = params.bulge_axis_ratio
                parts.append(galsim.Sersic(params.bulge_n, half_light_radius=params.bulge_re * math.sqrt(qb) * s,
                                           flux=bulge_flux[band]).shear(q=qb, beta=beta))
        if sources and params.num_sources:
            for k in range(params.num_sources):
                sig = max(float(params.sigma[k]), _POINT_SIGMA_PX) * s
                parts.append(galsim.Gaussian(sigma=sig, flux=float(amps[band, k]))
                             .shift((params.x[k] - cx) * s, (params.y[k] - cy) * s))
        if not parts:
            continue
        psf = galsim.Moffat(beta=params.psf_beta, fwhm=params.psf_fwhm * _BAND_FWHM_RATIO[band] * s)
        image = galsim.Convolve(galsim.Add(parts), psf).drawImage(
            nx=w, ny=h, scale=s, method="no_pixel", offset=(cx - w / 2, cy - h / 2))
        out[band] = image.array
    return out
