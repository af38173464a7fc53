"""Hostile inputs on the surfaces of issues 26 and 28 (issue 29's "cases of your own"): FITS and image files through
every public entry (`load_hosts`, `load_cutouts`, `blindspots detect --hosts`, `blindspots zoobot --real`),
survey-field hosts (`field_hosts`, `detect_field_sources`), the stretch presets, and paths (unreadable folders and
files, symlink loops, empty files, files named like images that are not). Each case asserts the one-line error
naming the thing, or the right value. Every file is written by the test; nothing trains.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line as _one_line

pytest.importorskip("astropy", reason="astropy is a dependency of the FITS reader and the field's hosts")
pytest.importorskip("photutils", reason="photutils detects the field's galaxies")

from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from blindspots.cli import main  # noqa: E402
from blindspots.errors import InputError  # noqa: E402
from detectors.data import load_cutouts  # noqa: E402
from detectors.field import detect_field_sources, field_hosts  # noqa: E402
from detectors.fits import PRESETS, StretchPreset, read_fits  # noqa: E402
from detectors.hosts import load_hosts  # noqa: E402


def _pngs(folder: Path, n: int = 1, side: int = 40) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(side)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"h{i}.png")
    return folder


def _blob_fits(path: Path, **header) -> Path:
    yy, xx = np.mgrid[-8:8, -8:8]
    fits.PrimaryHDU(np.exp(-np.hypot(xx, yy) / 3.0), header=fits.Header(header)).writeto(path)
    return path


def _field(size: int = 200) -> np.ndarray:
    """A (size, size) field in [0, 1]: three large galaxies inside, one cut by the edge, four stars, faint noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    img = rng.normal(0, 0.01, (size, size))
    for x, y in ((60.0, 60.0), (140.0, 70.0), (100.0, 150.0), (2.0, 100.0)):
        img += 2.0 * np.exp(-np.hypot(xx - x, (yy - y) / 0.7) / 3.5)
    for x, y in ((30, 170), (170, 170), (20, 20), (180, 30)):
        img += 3.0 * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 0.8 ** 2)
    return (img - img.min()) / (img.max() - img.min())


def _sky_wcs(**override) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [100.5, 100.5]
    w.wcs.crval = override.get("crval", [53.16, -27.79])
    w.wcs.cdelt = override.get("cdelt", [-0.06 / 3600, 0.06 / 3600])
    return w


# --------------------------------------------------------------------------------------------------- paths


def test_an_empty_fits_file_through_load_cutouts_names_the_file(tmp_path):
    """Before: clear. An empty `x.fits` in a folder of good cutouts stops the read, naming it."""
    _pngs(tmp_path / "d")
    (tmp_path / "d" / "x.fits").write_bytes(b"")
    with pytest.raises(InputError) as exc:
        load_cutouts(tmp_path / "d", 32)
    _one_line(exc, "cannot read FITS", "x.fits")


@pytest.mark.parametrize("content", [b"", b"hello, not a picture " * 50], ids=["empty", "text"])
def test_a_file_named_like_an_image_that_is_not_one(tmp_path, content):
    """Before: clear (empty and text `.png` files)."""
    path = tmp_path / "galaxy.png"
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        load_hosts([path], 32)
    _one_line(exc, "cannot read image", "galaxy.png")


def test_a_symlink_loop_is_no_host_and_is_refused_as_a_source(tmp_path):
    """Before: clear. A link to itself inside a folder is not a host (the folder has none: one line); given as a
    source it is a missing file."""
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d" / "loop.png", tmp_path / "d" / "loop.png")
    with pytest.raises(InputError) as exc:
        load_hosts([tmp_path / "d"], 32)
    _one_line(exc, "0 usable host(s)", str(tmp_path / "d"))
    with pytest.raises(InputError) as exc:
        load_hosts([tmp_path / "d" / "loop.png"], 32)
    _one_line(exc, "no such folder or file", "loop.png")
    _pngs(tmp_path / "d")  # beside a real host the loop is simply not a file: the host is read
    assert load_hosts([tmp_path / "d"], 32).names == ["h0.png"]


def test_an_unreadable_subfolder_is_named_not_skipped(tmp_path, monkeypatch):
    """Before: silent (pathlib's rglob skips a folder it may not read: its hosts vanished without a word). The
    permission error is simulated (the suite may run as root, who reads everything)."""
    _pngs(tmp_path / "d")
    _pngs(tmp_path / "d" / "private", 2)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "private":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError) as exc:
        load_hosts([tmp_path / "d"], 32)
    _one_line(exc, "cannot read host folder", "private", "Permission denied")


def test_an_unreadable_folder_or_file_is_one_line(tmp_path, monkeypatch):
    """Before: a folder without read permission gave '0 usable hosts' (no reason), a file a PermissionError
    traceback. Real permissions when not root; otherwise the refusal is simulated."""
    folder, file = _pngs(tmp_path / "locked"), _pngs(tmp_path / "open") / "h0.png"
    if os.geteuid() != 0:
        folder.chmod(0)
        try:
            with pytest.raises(InputError) as exc:
                load_hosts([folder], 32)
        finally:
            folder.chmod(0o755)
        _one_line(exc, "permission denied", "locked")
    real_access, real_read = os.access, Path.read_bytes
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p).name != "locked" and real_access(p, mode, **k))
    with pytest.raises(InputError) as exc:
        load_hosts([folder], 32)
    _one_line(exc, "permission denied", "locked")

    def read_bytes(self):
        if self.name == "h0.png" and self.parent.name == "open":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(InputError) as exc:
        load_hosts([file], 32)
    _one_line(exc, "cannot read host file", "h0.png", "Permission denied")


# --------------------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("loader", ["load_hosts", "load_cutouts", "field_hosts"])
@pytest.mark.parametrize("preset", ["hst", 3])
def test_an_unknown_preset_is_refused_before_any_file_is_read(tmp_path, loader, preset):
    """Before: silent. `preset='hst'` was only checked when a FITS file needed it: a folder of PNGs or an array
    field ran with the typo ignored."""
    folder = _pngs(tmp_path / "d")
    call = {"load_hosts": lambda: load_hosts([folder], 32, preset=preset),
            "load_cutouts": lambda: load_cutouts(folder, 32, preset=preset),
            "field_hosts": lambda: field_hosts(_field(), 48, preset=preset)}[loader]
    with pytest.raises(InputError) as exc:
        call()
    _one_line(exc, f"unknown stretch preset {preset!r}", "sdss, legacy")


@pytest.mark.parametrize("field, value", [("q", float("nan")), ("stretch", 0.0), ("q", 0.0), ("scales", (1.0, np.inf, 1.0))])
def test_a_stretch_preset_with_a_nan_or_zero_parameter_is_refused(tmp_path, field, value):
    """Before: silent. A preset with q NaN or 0, or stretch 0, turned every pixel NaN (the read 'succeeded')."""
    settings = PRESETS["sdss"].record() | {"name": "mine", field: value}
    with pytest.raises(InputError) as exc:
        StretchPreset(**settings)
    _one_line(exc, "stretch preset 'mine'", field, "positive finite")
    good = read_fits(_blob_fits(tmp_path / "b.fits"), StretchPreset(**(PRESETS["sdss"].record() | {"name": "ok"})))
    assert np.isfinite(good.rgb).all() and good.rgb.max() > 0


def test_a_nan_zero_point_is_refused(tmp_path):
    """Before: clear. MAGZERO = 'NAN' (FITS headers cannot hold a float NaN) names the file and the keyword."""
    path = _blob_fits(tmp_path / "zp.fits", MAGZERO="NAN")
    with pytest.raises(InputError) as exc:
        load_hosts([path], 16)
    _one_line(exc, "zp.fits", "MAGZERO = nan is not an AB zero point")


# --------------------------------------------------------------------------------------------------- field


@pytest.mark.parametrize("field, words", [
    (np.full((200, 200), "a"), "must hold numbers, got <U1"),
    (np.ones((200, 200), dtype=object), "object pixels have no known range"),
    (np.ones((200, 200), dtype=complex), "complex128 pixels have no known range"),
    (np.ones((200, 200, 3), dtype=np.int64), "int64 pixels have no known range"),
], ids=["str", "object", "complex", "int64"])
def test_a_field_of_the_wrong_dtype_is_one_line(field, words):
    """Before: str pixels gave numpy's ValueError traceback in detect_field_sources; the others were clear."""
    with pytest.raises(InputError) as exc:
        detect_field_sources(field, 48) if field.dtype.kind == "U" else field_hosts(field, 48)
    _one_line(exc, words)


def test_a_grey_field_and_its_rgb_give_the_same_hosts():
    """Before: right. A 2-D grey field, its (H, W, 3) and (3, H, W) RGB and its 16-bit copy find the same three
    galaxies; the stars and the galaxy cut by the edge are not hosts."""
    grey = _field()
    found = [field_hosts(f, 48).names for f in (grey, np.stack([grey] * 3, -1), np.stack([grey] * 3),
                                                (grey * 65535).round().astype(np.uint16))]
    assert sorted(found[0]) == ["array@100,150", "array@140,70", "array@60,60"], found[0]
    assert all(f == found[0] for f in found[1:]), found


@pytest.mark.parametrize("size", [0, -5, 4, float("nan"), 48.0, True])
def test_detect_field_sources_refuses_a_size_that_is_no_cutout(size):
    """Before: silent. size 0, -5, 4, NaN or True ran and judged every source against a cutout of no size (no
    source 'too small', none leaving the field)."""
    with pytest.raises(InputError) as exc:
        detect_field_sources(_field(), size)
    _one_line(exc, "size must be an integer >= 8", repr(size))


@pytest.mark.parametrize("size, words", [(10 ** 12, "smaller than one 1000000000000-px cutout"),
                                         (-5, "size must be an integer >= 8"), (240, "smaller than one 240-px")])
def test_field_hosts_refuses_a_huge_negative_or_too_large_size(size, words):
    """Before: clear."""
    with pytest.raises(InputError) as exc:
        field_hosts(_field(), size)
    _one_line(exc, words)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_field_hosts_refuses_a_limit_that_is_not_a_positive_integer(limit):
    """Before: -1 silently dropped the faintest host (a slice), 0 said 'all rejected' of a field with hosts, 1.5
    was a TypeError traceback, True kept one host."""
    with pytest.raises(InputError) as exc:
        field_hosts(_field(), 48, limit=limit)
    _one_line(exc, "limit must be a positive integer or None", repr(limit))
    assert len(field_hosts(_field(), 48, limit=1)) == 1


def test_load_hosts_checks_its_field_options():
    """Before: a limit of -1 in field_options was the silent slice above; an unknown option a TypeError traceback."""
    with pytest.raises(InputError) as exc:
        load_hosts(["field"], 64, field_options={"limit": -1})
    _one_line(exc, "limit must be a positive integer", "-1")
    with pytest.raises(InputError) as exc:
        load_hosts(["field"], 64, field_options={"bogus": 1})
    _one_line(exc, "field_options", "bogus")


@pytest.mark.parametrize("wcs, words", [
    (_sky_wcs(cdelt=[float("nan"), float("nan")]), "broken or not finite"),
    (_sky_wcs(crval=[10.0, float("nan")]), "broken or not finite"),
    ("RA---TAN", "must be an astropy WCS"),
], ids=["nan-scale", "nan-reference", "a-string"])
def test_a_non_finite_or_foreign_wcs_is_one_line(wcs, words):
    """Before: wcslib's multi-line InvalidTransformError traceback (NaN scale or NaN reference) and an
    AttributeError traceback (a string)."""
    with pytest.raises(InputError) as exc:
        field_hosts(_field(), 48, wcs=wcs)
    _one_line(exc, words)
    hosts = field_hosts(_field(), 48, wcs=_sky_wcs())  # a good one: finite positions and the pixel scale
    assert all(np.isfinite([h.ra, h.dec]).all() and h.pixel_scale == pytest.approx(0.06) for h in hosts.hosts)


def test_a_non_image_file_as_field_is_one_line(tmp_path):
    """Before: clear (`field:notes.txt`, `field:FOLDER`, a missing field file)."""
    (tmp_path / "notes.txt").write_text("not a field")
    with pytest.raises(InputError) as exc:
        load_hosts([f"field:{tmp_path / 'notes.txt'}"], 64)
    _one_line(exc, "cannot read image", "notes.txt")
    with pytest.raises(InputError) as exc:
        load_hosts([f"field:{tmp_path}"], 64)
    _one_line(exc, "field image", "not found")
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        field_hosts(tmp_path / "nowhere.png", 64)


# --------------------------------------------------------------------------------------------------- commands


def test_detect_hosts_refuses_an_empty_fits_file_and_an_unknown_preset(tmp_path, monkeypatch, capsys):
    """Before: clear. `blindspots detect --hosts empty.fits` stops before training with one line naming the file;
    `--fits-preset hst` is argparse's exit 2."""
    import importlib

    monkeypatch.setattr(importlib.import_module("detectors.train"), "train",
                        lambda *a, **k: pytest.fail("training started before the hosts were checked"))
    (tmp_path / "empty.fits").write_bytes(b"")
    code = main(["detect", "--hosts", str(tmp_path / "empty.fits"), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "empty.fits" in err[0] and "cannot read FITS" in err[0], err
    with pytest.raises(SystemExit) as exc:
        main(["detect", "--hosts", "field", "--fits-preset", "hst", "--quiet"])
    assert exc.value.code == 2 and "invalid choice: 'hst'" in capsys.readouterr().err


def test_zoobot_real_refuses_a_missing_field_file_and_a_negative_limit(tmp_path, capsys):
    """Before: clear. `--real field:missing.fits` is exit 2 when parsed; `--real-limit -3` one line naming it."""
    import argparse

    from experiments.zoobot.cli import add_arguments, config_from_args

    p = argparse.ArgumentParser(prog="blindspots zoobot")
    add_arguments(p)
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["--real", f"field:{tmp_path / 'missing.fits'}"])
    assert exc.value.code == 2 and "missing.fits not found" in capsys.readouterr().err
    with pytest.raises(InputError) as err:
        config_from_args(p.parse_args(["--real", str(_pngs(tmp_path / "d")), "--real-limit", "-3"]))
    _one_line(err, "--real-limit", "-3")


def test_no_warning_escapes_from_a_good_read(tmp_path):
    """The checks above refuse nothing good: a PNG folder, a FITS blob and the array field read without warnings."""
    folder = _pngs(tmp_path / "d", 2)
    _blob_fits(folder / "b.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hosts = load_hosts([folder], 16, preset="sdss")
        assert len(hosts) == 3 and hosts.images.shape == (3, 3, 16, 16)
        assert len(field_hosts(_field(), 48, preset="legacy", limit=2)) == 2
