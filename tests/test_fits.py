"""FITS cutouts with their WCS, the one host reader (`detectors.hosts`), survey-field hosts (`detectors.field`), the
field's libraries where they do the job (astropy's Lupton stretch, photutils' host measurement), and hostile inputs:
each bad file is one line naming the file and the problem. Every FITS file here is written by the test with astropy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import one_line as _one_line

astropy = pytest.importorskip("astropy", reason="astropy is a dependency of the FITS reader")
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from blindspots.cli import main  # noqa: E402
from blindspots.errors import InputError  # noqa: E402
from detectors.fits import PRESETS, band_of_file, read_fits, read_fits_bands  # noqa: E402
from detectors.hosts import HostList, add_host_options, load_hosts, sky_position_of_name  # noqa: E402
from detectors.render import asinh_rgb  # noqa: E402
from detectors.simulate import SimConfig, lupton_rgb, render_flux, sample_params  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "detectors.md"


def _wcs(ra: float = 150.0, dec: float = 2.2, scale: float = 0.262, size: int = 48) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]  # FITS pixels are 1-based: the image centre
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    return w


def _galaxy(size: int = 48, seed: int = 0) -> np.ndarray:
    """(3, size, size) noiseless g, r, i fluxes (nanomaggies) of a simulated host."""
    cfg = SimConfig(image_size=size, pixel_scale=0.262, disk_re=(1.5, 2.0), noise_scale=0.0, n_clumps=(2, 2))
    return render_flux(sample_params(np.random.default_rng(seed), cfg), cfg)


def _cube(path: Path, data: np.ndarray, bands: str = "grz", wcs: WCS | None = None, **header) -> Path:
    hdr = (wcs or _wcs(size=data.shape[-1])).to_header()
    hdr["BANDS"] = bands
    for k, b in enumerate(bands):
        hdr[f"BAND{k}"] = b
    for k, v in header.items():
        hdr[k] = v
    fits.PrimaryHDU(data.astype(np.float32), header=hdr).writeto(path, overwrite=True)
    return path


# --------------------------------------------------------------------------------------------------- stretch


class _Lupton2004:
    """astropy stretch object with Lupton et al. (2004)'s f(I) = asinh(Q I / stretch) / Q."""

    def __init__(self, q: float, stretch: float) -> None:
        self.q, self.stretch = q, stretch

    def __call__(self, values, clip=False, out=None):
        return np.arcsinh(self.q * np.asarray(values) / self.stretch) / self.q


def test_the_stretch_equals_astropys_make_lupton_rgb_to_1e_6():
    from astropy.visualization import make_lupton_rgb

    rng = np.random.default_rng(0)
    planes = rng.normal(0.05, 0.3, (3, 64, 64)) * np.exp(rng.normal(0, 2, (1, 64, 64)))  # faint, bright, negative
    for q, stretch in ((6.0, 0.4), (10.0, 0.5), (1.0, 5.0)):
        ours = asinh_rgb(planes, q, stretch)
        ref = make_lupton_rgb(*planes, stretch_object=_Lupton2004(q, stretch), minimum=0, output_dtype=np.float64)
        assert np.abs(ours - np.moveaxis(ref, -1, 0)).max() < 1e-6
    assert (planes.mean(0) <= 0).any() and (planes.max(0) > 5).any()  # both branches were exercised
    gri = _galaxy()
    cfg = SimConfig()
    rgb = np.stack([gri[2], gri[1], gri[0]]) * np.asarray(cfg.rgb_scales)[:, None, None]
    ref = make_lupton_rgb(*rgb, stretch_object=_Lupton2004(cfg.asinh_q, cfg.asinh_stretch), minimum=0,
                          output_dtype=np.float64)
    assert np.abs(lupton_rgb(gri, cfg) - np.moveaxis(ref, -1, 0)).max() < 1e-6


# --------------------------------------------------------------------------------------------------- FITS layouts


def test_a_legacy_survey_cube_with_wcs_gives_rgb_ra_dec_and_pixel_scale(tmp_path):
    gri = _galaxy()
    path = _cube(tmp_path / "J100001.00+021200.0.fits", gri, "grz", _wcs(150.0, 2.2, 0.262))
    cut = read_fits(path)
    assert cut.preset.name == "legacy" and set(cut.fluxes) == {"g", "r", "z"}  # chosen by the bands
    assert cut.ra == pytest.approx(150.0, abs=1e-6) and cut.dec == pytest.approx(2.2, abs=1e-6)
    assert cut.pixel_scale == pytest.approx(0.262, rel=1e-6)
    assert cut.rgb.shape == (3, 48, 48) and 0 <= cut.rgb.min() and cut.rgb.max() <= 1
    # R, G, B = z, r, g times legacy's scales, through the same stretch
    p = PRESETS["legacy"]
    want = asinh_rgb(np.stack([gri[2] * p.scales[0], gri[1] * p.scales[1], gri[0] * p.scales[2]]), p.q, p.stretch)
    assert np.abs(cut.rgb - want).max() < 1e-5  # float32 storage
    with pytest.raises(InputError) as exc:  # a preset whose bands the file lacks
        read_fits(path, "sdss")
    _one_line(exc, str(path), "has g, r, z", "preset 'sdss' needs i, r, g")


def test_one_file_per_band_and_multi_extension_agree_with_the_cube(tmp_path):
    gri = _galaxy(seed=1)
    cube = read_fits(_cube(tmp_path / "cube.fits", gri, "gri", _wcs(10.0, -5.0, 0.396)))
    assert cube.preset.name == "sdss"
    hdr = _wcs(10.0, -5.0, 0.396).to_header()
    files = []
    for band, plane in zip("gri", gri):
        files.append(tmp_path / "per_band" / f"J004000.00-050000.0_{band}.fits")
        files[-1].parent.mkdir(exist_ok=True)
        fits.PrimaryHDU(plane.astype(np.float32), header=hdr).writeto(files[-1])
    per_band = read_fits_bands(files)
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(p.astype(np.float32), header=hdr) for p in gri]
    for h, band in zip(hdus[1:], "gri"):
        h.header["FILTER"] = band
    fits.HDUList(hdus).writeto(tmp_path / "mef.fits")
    mef = read_fits(tmp_path / "mef.fits")
    for other in (per_band, mef):
        assert np.array_equal(other.rgb, cube.rgb) and other.ra == pytest.approx(cube.ra)
    # the folder reader groups the per-band files into one host and carries its sky position and scale
    hosts = load_hosts([tmp_path / "per_band"], 32, crop=0.5)
    (info,) = hosts.hosts
    assert len(hosts) == 1 and "3 bands" in info.name and info.preset == "sdss"
    assert info.ra == pytest.approx(10.0) and info.dec == pytest.approx(-5.0)
    assert info.pixel_scale == pytest.approx(0.396 * 24 / 32)  # 24 native px resized to 32


def test_a_single_band_is_grey_and_its_zero_point_converts_to_nanomaggies(tmp_path):
    r = _galaxy()[1]
    fits.PrimaryHDU(r.astype(np.float32)).writeto(tmp_path / "r_nmgy.fits")
    zp = 30.0  # counts with an AB zero point of 30: 1 nanomaggy = 10**(0.4 * 7.5) counts
    hdr = fits.Header({"MAGZERO": zp})
    fits.PrimaryHDU((r * 10 ** (0.4 * (zp - 22.5))).astype(np.float32), header=hdr).writeto(tmp_path / "counts.fits")
    a, b = read_fits(tmp_path / "r_nmgy.fits"), read_fits(tmp_path / "counts.fits")
    assert np.allclose(a.rgb[0], a.rgb[1]) and np.allclose(a.rgb[1], a.rgb[2])  # grey
    assert np.allclose(a.rgb, b.rgb, atol=1e-5) and a.ra is None and a.pixel_scale is None


def test_band_names_from_files_and_sky_positions_from_names():
    assert [band_of_file(n) for n in ("J1_g.fits", "frame-r-001.fits", "cut.z.fits.gz", "galaxy.fits")] == \
        ["g", "r", "z", None]
    ra, dec = sky_position_of_name("J004544.11-005037.5.png")
    assert ra == pytest.approx(11.43379, abs=1e-4) and dec == pytest.approx(-0.84375, abs=1e-4)


# --------------------------------------------------------------------------------------------------- hostile FITS


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write(path: Path, hdus) -> Path:
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


@pytest.mark.parametrize("make, needles", [
    (lambda p: _write(p, [fits.PrimaryHDU(np.where(np.eye(8) > 0, np.nan, 1.0))]), ["8 NaN or infinite"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.full((8, 8), np.inf))]), ["NaN or infinite"]),
    (lambda p: _write(p, [fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(3))])]), ["no image data", "BinTableHDU"]),
    (lambda p: _write(p, [fits.PrimaryHDU()]), ["no image data"]),
    (lambda p: _bytes(p, b"SIMPLE  =                    T / broken\n" + b"\x00" * 100),
     ["cannot read FITS"]),
    (lambda p: _bytes(p, b"PNG not a fits file at all" * 200), ["cannot read FITS"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.ones((3, 8, 8)))]), ["cube of 3 planes without band names"]),
    (lambda p: _cube(p, np.ones((2, 8, 8)), "gu"), ["no usable band set", "preset 'sdss' needs i, r, g"]),
    (lambda p: _write(p, [fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8)), header=fits.Header({"FILTER": "g"})),
                          fits.ImageHDU(np.ones((9, 9)), header=fits.Header({"FILTER": "r"}))]),
     ["bands of different sizes"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.ones(16))]), ["expected a 2-D image"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.zeros((8, 8)))]), ["no positive flux"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.ones((8, 8)), header=fits.Header({"MAGZERO": "bright"}))]),
     ["MAGZERO", "not a number"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.ones((8, 8)), header=fits.Header(
        {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 95.0, "CDELT1": 0.0,
         "CDELT2": 0.0}))]), ["broken WCS"]),
    (lambda p: _write(p, [fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8)), header=fits.Header({"FILTER": "g"})),
                          fits.ImageHDU(np.ones((8, 8)), header=fits.Header({"FILTER": "g"}))]), ["band g given twice"]),
    (lambda p: _write(p, [fits.PrimaryHDU(np.ones((2, 3, 8, 8)))]), ["expected a 2-D image or a (bands, H, W) cube"]),
], ids=["nan", "inf", "table-only", "empty-primary", "broken-header", "not-fits", "cube-unnamed", "no-usable-band",
        "band-sizes", "1d", "all-zero", "bad-zero-point", "broken-wcs", "band-twice", "4d"])
def test_a_bad_fits_file_is_one_line_naming_the_file_and_the_problem(tmp_path, make, needles):
    path = make(tmp_path / "bad.fits")
    with pytest.raises(InputError) as exc:
        read_fits(path)
    _one_line(exc, str(path), *needles)
    with pytest.raises(InputError) as exc:  # the same through the host reader every study uses
        load_hosts([path], 8)
    _one_line(exc, "bad.fits")


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.fits"):
        read_fits(tmp_path / "nowhere.fits")
    path = _cube(tmp_path / "c.fits", _galaxy(), "gri")
    with pytest.raises(InputError, match="unknown stretch preset 'hst'; choose from sdss, legacy"):
        read_fits(path, preset="hst")


# --------------------------------------------------------------------------------------------------- hosts


def _pngs(folder: Path, n: int, side: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(side)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"h{i}.png")
    return folder


def test_hosts_below_the_minimum_size_are_refused(tmp_path):
    """ISSUE29: two 8x8 PNGs upscaled to 64 px are not hosts."""
    folder = _pngs(tmp_path / "tiny", 2, 8)
    with pytest.raises(InputError) as exc, pytest.warns(UserWarning, match="too small"):
        load_hosts([folder], 64)
    _one_line(exc, "0 usable host(s)", "too small: 8x8 px", "enlarged 8.0x to 64 px")
    mixed = _pngs(tmp_path / "mixed", 1, 40)
    (mixed / "small.png").write_bytes((folder / "h0.png").read_bytes())
    with pytest.warns(UserWarning, match="small.png left out: too small"):
        hosts = load_hosts([mixed], 64)
    assert hosts.names == ["h0.png"] and "too small" in hosts.skipped[str(mixed / "small.png")]


def test_the_same_folder_twice_counts_its_hosts_once(tmp_path):
    """ISSUE29: `--hosts DIR DIR` (or a copy of a file) does not count hosts twice."""
    folder = _pngs(tmp_path / "a", 3, 32)
    with pytest.warns(UserWarning, match="given twice"):
        twice = load_hosts([folder, folder, str(folder) + "/"], 32)
    assert len(twice) == 3
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.png").write_bytes((folder / "h1.png").read_bytes())
    with pytest.warns(UserWarning, match="the same file"):
        both = load_hosts([folder, tmp_path / "b"], 32)
    assert both.names == ["h0.png", "h1.png", "h2.png"]


def test_host_options_refuse_a_bare_flag_and_a_missing_source(capsys):
    """ISSUE29: `--hosts` with no folder is an error, not a run with real_hosts null."""
    import argparse

    p = argparse.ArgumentParser(prog="x")
    add_host_options(p, "--hosts")
    for argv, words in ((["--hosts"], "expected at least one argument"), (["--hosts", "/no/such"], "no such folder")):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(argv)
        assert exc.value.code == 2 and words in capsys.readouterr().err
    assert p.parse_args([]).hosts is None and p.parse_args(["--hosts", "field"]).hosts == ["field"]
    with pytest.raises(SystemExit) as exc:  # the real command: the same refusal
        main(["detect", "--hosts", "--quiet"])
    assert exc.value.code == 2
    assert "expected at least one argument" in capsys.readouterr().err


def test_detect_reads_and_checks_hosts_before_training(tmp_path, monkeypatch, capsys):
    """ISSUE29: the hosts are read before any training: a bad host fails the command at once."""
    import importlib

    train_module = importlib.import_module("detectors.train")

    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("training started before the hosts"))
    folder = _pngs(tmp_path / "tiny", 2, 8)
    code = main(["detect", "--hosts", str(folder), "--size", "64", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error:" in line]
    assert code == 2 and len(errors) == 1 and "too small" in errors[0], err  # the warnings name each file first
    (tmp_path / "bad").mkdir()
    bad = _write(tmp_path / "bad" / "x.fits", [fits.PrimaryHDU(np.full((64, 64), np.nan))])
    code = main(["detect", "--hosts", str(bad.parent), "--out", str(tmp_path / "run2"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "x.fits" in err[0] and "NaN" in err[0], err
    assert not (tmp_path / "run2" / "train").exists()


def test_zoobot_real_takes_several_sources_and_refuses_a_bare_flag(tmp_path, capsys):
    from experiments.zoobot.cli import add_arguments, config_from_args
    import argparse

    p = argparse.ArgumentParser(prog="blindspots zoobot")
    add_arguments(p)
    folder = _pngs(tmp_path / "a", 2, 40)
    config = config_from_args(p.parse_args(["--real", str(folder), "field", "--fits-preset", "legacy"]))
    assert config.real_sources() == (str(folder), "field") and config.fits_preset == "legacy"
    assert config.settings()["real"] == [str(folder.resolve()), "field"]
    with pytest.raises(SystemExit):
        p.parse_args(["--real"])
    assert "expected at least one argument" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- field


def _field(size: int = 200, wcs: bool = True, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A (size, size) flux field: 3 large galaxies inside, one cut by the edge, 4 stars, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    img = rng.normal(0, 0.01, (size, size))
    galaxies = [(60.0, 60.0), (140.0, 70.0), (100.0, 150.0)]
    for x, y in galaxies:
        img += 2.0 * np.exp(-np.hypot(xx - x, (yy - y) / 0.7) / 3.5)
    img += 2.0 * np.exp(-np.hypot(xx - 2, yy - 100) / 3.5)  # cut by the left edge
    for x, y in ((30, 170), (170, 170), (20, 20), (180, 30)):
        img += 3.0 * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 0.8 ** 2)
    return img, galaxies


def test_field_hosts_keep_the_galaxies_and_reject_stars_edges_and_small_sources(tmp_path):
    from detectors.field import detect_field_sources, field_hosts

    img, galaxies = _field()
    sources, _ = detect_field_sources(img, 48)
    kept = sorted((round(s.x), round(s.y)) for s in sources if not s.reason)
    assert kept == sorted((round(x), round(y)) for x, y in galaxies)
    reasons = " | ".join(s.reason for s in sources)
    assert "edge" in reasons and reasons.count("too small") + reasons.count("star") == 4
    hdr = _wcs(53.16, -27.79, 0.06, size=200).to_header()
    hdr["FILTER"] = "r"
    fits.PrimaryHDU(img.astype(np.float32), header=hdr).writeto(tmp_path / "field.fits")
    hosts = field_hosts(tmp_path / "field.fits", 48)
    assert isinstance(hosts, HostList) and len(hosts) == 3 and hosts.images.shape == (3, 3, 48, 48)
    w = _wcs(53.16, -27.79, 0.06, size=200)
    for info in hosts.hosts:  # each cutout's centre is its galaxy's sky position (Cutout2D kept the WCS)
        x, y = (int(v) for v in info.name.split("@")[1].split(","))
        ra, dec = w.all_pix2world([[x - 0.5, y - 0.5]], 0)[0]
        assert info.ra == pytest.approx(ra, abs=1e-6) and info.dec == pytest.approx(dec, abs=1e-6)
        assert info.pixel_scale == pytest.approx(0.06, rel=1e-9) and info.survey == "unknown"
    # the same field through the one reader, pooled with a folder
    pooled = load_hosts([f"field:{tmp_path / 'field.fits'}", _pngs(tmp_path / "pngs", 2, 48)], 48)
    assert len(pooled) == 5 and {h.survey for h in pooled.hosts} == {"unknown"}


@pytest.mark.parametrize("field, words", [
    (np.full((100, 100), np.nan), "NaN or infinite"),
    (np.ones((100, 100)), "flat"),
    (np.ones((20, 20)), "smaller than one 48-px cutout"),
    (np.ones((4, 100, 100, 2)), "expected an HxW, HxWx3 or HxWx4 image"),
])
def test_a_bad_field_is_one_line(field, words):
    from detectors.field import field_hosts

    with pytest.raises(InputError) as exc:
        field_hosts(field if field.ndim != 2 else field[None].repeat(3, 0) * 0.5, 48)
    _one_line(exc, words)


def test_a_field_without_usable_host_names_the_rejections():
    from detectors.field import field_hosts

    rng = np.random.default_rng(1)
    img = rng.normal(0.1, 0.01, (100, 100))
    yy, xx = np.mgrid[0:100, 0:100]
    img += 0.5 * np.exp(-0.5 * ((xx - 50) ** 2 + (yy - 50) ** 2))  # one star
    with pytest.raises(InputError) as exc:
        field_hosts(np.clip(img, 0, 1), 48)
    _one_line(exc, "no usable 48-px host")


# --------------------------------------------------------------------------------------------------- photutils


def test_measure_host_recovers_a_known_galaxy():
    """photutils' measurement against the truth of a simulated host (no clumps): centre, axis ratio, position
    angle, half-light radius and flux."""
    from detectors.inject import measure_host

    cfg = SimConfig(image_size=96, noise_scale=1.0, n_clumps=(0, 0), star_rate=0.0, bulge_probability=0.0,
                    disk_re=(4.0, 4.0), axis_ratio=(0.5, 0.5), host_mag=(15.0, 15.0))
    from detectors.simulate import simulate_one

    image, _, p = simulate_one(0, cfg, seed=4)
    host = measure_host(image, cfg)
    assert host.center == pytest.approx(p.center, abs=0.5)
    assert host.axis_ratio == pytest.approx(p.axis_ratio, abs=0.1)
    d_pa = abs((host.position_angle - p.position_angle + np.pi / 2) % np.pi - np.pi / 2)
    assert d_pa < np.deg2rad(8)
    assert host.half_light_radius == pytest.approx(p.disk_re, rel=0.2)  # PSF-broadened, segment-limited
    assert host.flux == pytest.approx(p.flux_r, rel=0.15)  # light outside the segment is lost


# --------------------------------------------------------------------------------------------------- docs example


def test_the_docs_fits_example_runs(tmp_path, monkeypatch):
    text = DOCS.read_text()
    block = re.search(r"<!-- fits-example -->\n```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, "docs/detectors.md lost its FITS example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), str(DOCS), "exec"), scope)  # noqa: S102 - our own docs
    hosts = scope["hosts"]
    assert len(hosts) == 1 and hosts.hosts[0].ra == pytest.approx(150.1234, abs=1e-4)
    assert hosts.hosts[0].preset == "legacy" and hosts.images.shape == (1, 3, 64, 64)
    assert torch.isfinite(hosts.images).all()
