"""The simulator's renderer (`detectors.render.render_flux`, numpy FFTs) against GalSim on the same parameters: total
flux within 1%, each clump's flux fraction within 2%, half-light radius within 2%. GalSim is 6x slower for the
studies' batches (`python -m benchmarks.astro_swaps`), so the renderer stays and this test holds it to GalSim."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("galsim", reason="GalSim (the dev extra) is the reference renderer")

from detectors.render import render_flux, render_flux_galsim  # noqa: E402
from detectors.simulate import SimConfig, sample_params  # noqa: E402


def _r50(image: np.ndarray, center: tuple[float, float]) -> float:
    """Radius of the circle around `center` holding half the image's flux (pixel centres at j + 0.5)."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r = np.hypot(xx - center[0], yy - center[1]).ravel()
    order = np.argsort(r)
    cum = np.cumsum(image.ravel()[order])
    k = np.searchsorted(cum, cum[-1] / 2)
    # interpolate between the two radii that bracket half the flux
    return float(np.interp(cum[-1] / 2, cum[max(k - 1, 0):k + 1], r[order][max(k - 1, 0):k + 1]))


def test_the_renderer_matches_galsim_in_flux_clump_fractions_and_half_light_radius():
    cfg = SimConfig(noise_scale=0.0, bulge_probability=0.7, n_clumps=(3, 8), star_rate=1.0)
    bulges = clumps = 0
    for seed in range(6):
        p = sample_params(np.random.default_rng(seed), cfg)
        ours, ref = render_flux(p, cfg), render_flux_galsim(p, cfg)
        for band in range(3):
            assert ours[band].sum() == pytest.approx(ref[band].sum(), rel=0.01), (seed, band)
        assert _r50(ours[1], p.center) == pytest.approx(_r50(ref[1], p.center), rel=0.02), seed
        host_ours = render_flux(p, cfg, sources=False)[1].sum()
        host_ref = render_flux_galsim(p, cfg, sources=False)[1].sum()
        for k in range(p.num_sources):
            alone = p.select([k])
            frac_ours = render_flux(alone, cfg, host=False)[1].sum() / host_ours
            frac_ref = render_flux_galsim(alone, cfg, host=False)[1].sum() / host_ref
            assert frac_ours == pytest.approx(frac_ref, rel=0.02), (seed, k)
        bulges += p.bulge_fraction > 0
        clumps += p.num_sources
    assert bulges >= 2 and clumps >= 15  # the cases were exercised


def test_a_wrong_renderer_fails_the_comparison():
    """The comparison can fail: a disk drawn with the wrong half-light convention (major axis = hlr, no sqrt(q))
    misses GalSim's radius by more than 2%."""
    cfg = SimConfig(noise_scale=0.0, n_clumps=(0, 0), star_rate=0.0, bulge_probability=0.0, axis_ratio=(0.4, 0.4))
    p = sample_params(np.random.default_rng(0), cfg)
    ref = render_flux_galsim(p, cfg)[1]
    wrong = render_flux(p.__class__(**{**p.__dict__, "disk_re": p.disk_re / np.sqrt(0.4)}), cfg)[1]
    assert abs(_r50(wrong, p.center) / _r50(ref, p.center) - 1) > 0.02
