"""Real host galaxies for the studies, from wherever an astronomer keeps them: folders of colour cutouts (PNG/JPEG),
FITS cutouts (one band, one file per band, a cube, a multi-extension file; `detectors.fits`), and the galaxies of a
survey field (`field`, `field:FILE`; `detectors.field`). One reader (`load_hosts`) serves `load_cutouts`,
`blindspots detect --hosts`, `blindspots zoobot --real` and every study that takes real hosts (`add_host_options`,
`hosts_from_args`); each host carries its survey, source file, RA/Dec and pixel scale (`HostInfo`) into the records.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from blindspots.errors import InputError

from .fits import check_preset
from .hostlist import HostInfo, HostList

__all__ = ["HostInfo", "HostList", "MAX_UPSCALE", "load_hosts", "check_host_sources", "add_host_options",
           "hosts_from_args", "host_units", "sky_position_of_name", "FIELD_SOURCE"]

MAX_UPSCALE = 2.0  # a cutout enlarged more than 2x to reach the study's size is refused (too small to be a host)
FIELD_SOURCE = "field"  # `field`: the default survey field (skimage's Hubble eXtreme Deep Field); `field:FILE`: yours
_SURVEY_OF_FOLDER = {"sdss": "sdss", "decals": "legacy", "legacy": "legacy", "desi": "legacy", "hsc": "hsc"}


# --------------------------------------------------------------------------------------------------- sources


def sky_position_of_name(name: str) -> tuple[float, float] | None:
    """(RA, Dec) in degrees from an IAU-style name such as J004544.11-005037.5 (hhmmss.ss+ddmmss.s), else None."""
    m = re.search(r"J(\d{2})(\d{2})(\d{2}(?:\.\d+)?)([+-])(\d{2})(\d{2})(\d{2}(?:\.\d+)?)", name)
    if not m:
        return None
    h, mi, s, sign, d, dm, ds = m.groups()
    ra = 15.0 * (int(h) + int(mi) / 60 + float(s) / 3600)
    dec = (int(d) + int(dm) / 60 + float(ds) / 3600) * (-1 if sign == "-" else 1)
    return (ra, dec) if ra < 360 and abs(dec) <= 90 else None


def _is_field(source: str) -> bool:
    return str(source) == FIELD_SOURCE or str(source).startswith(FIELD_SOURCE + ":")


def check_host_sources(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[str, ...]:
    """Each source as a string, refusing (one line) one that is neither a file, a folder nor a field spec; an empty
    list is refused too."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out = tuple(str(s) for s in sources)
    if not out:
        raise InputError("no host source given (a folder, a FITS or image file, or 'field')")
    for s in out:
        if _is_field(s):
            path = s.partition(":")[2]
            if path and not Path(path).is_file():
                raise InputError(f"host source {s}: field image {path} not found")
        elif not Path(s).exists():
            raise InputError(f"host source {s}: no such folder or file")
        elif not os.access(s, os.R_OK | (os.X_OK if Path(s).is_dir() else 0)):
            raise InputError(f"host source {s}: permission denied (not readable)")
    return out


def host_units(folder: str | os.PathLike) -> list[list[Path]]:
    """The cutouts under `folder` (recursively, sorted): one list per host, holding its image file, its FITS file,
    or its FITS files of one band each (files whose names differ only by the band letter)."""
    from blindspots.data import IMAGE_SUFFIXES

    from .fits import band_of_file, is_fits

    folder = Path(folder)

    def _unreadable(exc: OSError) -> None:  # os.walk (unlike rglob) does not skip an unreadable subfolder silently
        raise InputError(f"cannot read host folder {exc.filename}: {exc.strerror or exc}")

    files = sorted(Path(root) / n for root, _, names in os.walk(folder, onerror=_unreadable) for n in names
                   if not n.startswith(".") and (Path(root) / n).is_file())
    units: dict[str, list[Path]] = {}
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            units[str(p)] = [p]
        elif is_fits(p):
            band = band_of_file(p)
            key = str(p)
            if band is not None:  # group by the name without its band letter
                key = str(p.parent / re.sub(rf"(^|[_\-.]){band}(?=$|[_\-.])", r"\1*", p.name, count=1))
            units.setdefault(key, []).append(p)
    return list(units.values())


def _survey_of(path: Path) -> str:
    for part in reversed(path.parts[:-1]):
        if part.lower() in _SURVEY_OF_FOLDER:
            return _SURVEY_OF_FOLDER[part.lower()]
    return "unknown"


def _read_unit(unit: Sequence[Path], preset: str | None) -> tuple[torch.Tensor, HostInfo]:
    """(3, H, W) RGB in [0, 1] and the host's info (native pixel scale) of one cutout."""
    from blindspots.data import read_image

    from .fits import is_fits, read_fits_bands

    if is_fits(unit[0]):
        cut = read_fits_bands(unit, preset)
        pos = (cut.ra, cut.dec) if cut.ra is not None else sky_position_of_name(unit[0].name)
        scale = cut.pixel_scale if cut.pixel_scale is not None else None
        info = HostInfo("", cut.survey if cut.survey != "unknown" else _survey_of(unit[0]), cut.source,
                        pos[0] if pos else None, pos[1] if pos else None, scale, cut.preset.name)
        return torch.from_numpy(cut.rgb.astype(np.float32)), info
    image = read_image(unit[0], 3)
    pos = sky_position_of_name(unit[0].name)
    return image, HostInfo("", _survey_of(unit[0]), str(unit[0]), pos[0] if pos else None,
                           pos[1] if pos else None)


def _digest(unit: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in unit:
        try:
            h.update(p.read_bytes())
        except OSError as exc:
            raise InputError(f"cannot read host file {p}: {exc.strerror or exc}") from None
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------- loading


def load_hosts(sources: str | os.PathLike | Iterable[str | os.PathLike], size: int | None, crop: float = 1.0,
               limit: int | None = None, preset: str | None = None, *, min_hosts: int = 1,
               field_options: dict[str, Any] | None = None) -> HostList:
    """Every host of `sources` (folders, read recursively; image or FITS files; `field` / `field:FILE`, the
    galaxies of a survey field, `detectors.field.field_hosts`) as a `HostList` of `size`-px images.

    Cutouts are centre-cropped to `crop` of their shorter side and resized to `size` (antialiased; None keeps the
    cropped size, which must then agree); field hosts are
    cut at `size` px around each galaxy, unresized. A cutout that would be enlarged more than `MAX_UPSCALE` times is
    left out, as is a file met twice (the same path or the same bytes: a folder given twice counts once); each with
    its reason in `skipped` (and a warning). `limit` keeps the first hosts of the folders and files (sorted).
    FITS cutouts are stretched with `preset` (`detectors.fits.PRESETS`; None: by their bands). Fewer than
    `min_hosts` usable hosts is an error naming why the others were left out."""
    from blindspots.data import prepare

    sources = check_host_sources(sources)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise InputError(f"size must be an integer >= 8 or None, got {size!r}")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0.0 < crop <= 1.0:
        raise InputError(f"crop must be in (0, 1], got {crop!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    check_preset(preset)
    if unknown := sorted(set(field_options or {}) - {"wcs", "survey", "limit"}):
        raise InputError(f"field_options: unknown option(s) {', '.join(unknown)} (known: wcs, survey, limit)")
    units: list[tuple[list[Path], Path | None]] = []  # (files, folder they came from)
    fields: list[str] = []
    seen_dirs: set[Path] = set()
    skipped: dict[str, str] = {}
    for s in sources:
        if _is_field(s):
            if s in fields:
                skipped[s] = "given twice"
            else:
                fields.append(s)
        elif Path(s).is_dir():
            real = Path(s).resolve()
            if real in seen_dirs:
                skipped[s] = "folder given twice"
                continue
            seen_dirs.add(real)
            units += [(u, Path(s)) for u in host_units(s)]
        else:
            units.append(([Path(s)], None))
    images, infos = [], []
    seen: dict[str, str] = {}
    names: set[str] = set()
    for unit, folder in units:
        if limit is not None and len(infos) >= limit:
            break
        label = str(unit[0]) if len(unit) == 1 else ";".join(map(str, unit))
        digest = _digest(unit)
        if digest in seen:
            skipped[label] = f"the same file(s) as {seen[digest]}"
            continue
        seen[digest] = label
        image, info = _read_unit(unit, preset)
        side = min(image.shape[-2:])
        kept = max(1, int(round(side * crop)))
        out = kept if size is None else size
        if out / kept > MAX_UPSCALE:
            skipped[label] = (f"too small: {image.shape[-1]}x{image.shape[-2]} px (crop {crop:g}: {kept} px) would "
                              f"be enlarged {out / kept:.1f}x to {out} px (at most {MAX_UPSCALE:g}x)")
            continue
        square = image.shape[-1] == image.shape[-2]
        x = image if (kept == out and side == out and square) else prepare(image, out, crop)
        name = str(unit[0].relative_to(folder)) if folder is not None else unit[0].name
        if len(unit) > 1:
            name = re.sub(r"\.fits?(\.gz)?$", "", name) + f" ({len(unit)} bands)"
        while name in names:
            name += "'"
        names.add(name)
        scale = None if info.pixel_scale is None else info.pixel_scale * kept / out
        infos.append(HostInfo(name, info.survey, info.source, info.ra, info.dec, scale, info.preset, kept))
        images.append(x.clamp(0, 1))
    if fields and size is None:
        raise InputError("field hosts need a cutout size (size=None keeps each file's own size)")
    for spec in fields:
        from .field import field_hosts

        path = spec.partition(":")[2] or None
        got = field_hosts(path, size, preset=preset, **(field_options or {}))
        for h, img in zip(got.hosts, got.images):
            if limit is not None and len(infos) >= limit:
                break
            infos.append(h)
            images.append(img)
        skipped.update({f"{spec} {k}": v for k, v in got.skipped.items() if not k.startswith("source ")})
    for what, why in skipped.items():
        if "given twice" in why or "the same file" in why or "too small" in why:
            warnings.warn(f"host {what} left out: {why}", stacklevel=2)
    if len(infos) < min_hosts:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:4])
        raise InputError(f"{len(infos)} usable host(s) in {', '.join(sources)} (need {min_hosts})"
                         + (f"; left out: {reasons}" if reasons else ""))
    shapes = sorted({tuple(x.shape) for x in images})
    if len(shapes) > 1:
        raise InputError(f"cutouts in {', '.join(sources)} have different sizes {shapes[:4]}; give a size to resize them")
    return HostList(torch.stack(images) if images else torch.zeros(0, 3, size or 8, size or 8), infos, skipped)


# --------------------------------------------------------------------------------------------------- command line


def _host_source(text: str) -> str:
    try:
        return check_host_sources([text])[0]
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_host_options(parser: argparse.ArgumentParser, flag: str = "--hosts", *, help: str | None = None,
                     default: Sequence[str] | None = None) -> None:
    """Add `flag` (one or more DIR | FILE | field | field:FILE; each checked to exist when parsed, so a missing one
    or a bare flag stops the command before any work) and, once per parser, `--fits-preset` (the stretch of FITS
    hosts). Read them back with `hosts_from_args`."""
    parser.add_argument(flag, nargs="+", default=list(default) if default else None, type=_host_source,
                        metavar="DIR|FILE|field[:FILE]",
                        help=help or "real host galaxies: folders of cutouts (PNG/JPEG/FITS), FITS or image files, "
                                     "or 'field' (the galaxies of the Hubble eXtreme Deep Field) / 'field:FILE'")
    if not any("--fits-preset" in a.option_strings for a in parser._actions):
        parser.add_argument("--fits-preset", choices=("sdss", "legacy"), default=None,
                            help="stretch of FITS hosts to RGB (default: by their bands; legacy for g, r, z)")


def hosts_from_args(args: argparse.Namespace, size: int, crop: float = 1.0, *, flag: str = "--hosts",
                    limit: int | None = None) -> HostList | None:
    """The `HostList` the options of `add_host_options` name (None when `flag` was not given), read and checked
    now, before any training."""
    sources = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    if not sources:
        return None
    return load_hosts(sources, size, crop, limit, getattr(args, "fits_preset", None))
