"""The host list every study takes: host images with one `HostInfo` each (survey, source, RA/Dec, pixel scale,
stretch preset). Made by `detectors.hosts.load_hosts` and `detectors.field.field_hosts`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["HostInfo", "HostList"]


@dataclass(frozen=True)
class HostInfo:
    """Where one host comes from: `name` (unique in its list), `survey`, `source` (file(s), or field and position),
    `ra`, `dec` (degrees, J2000/ICRS; None when unknown), `pixel_scale` (arcsec per pixel of the image as the study
    sees it, after crop and resize; None when unknown), `preset` (the stretch that made a FITS host's RGB; None for
    colour images made elsewhere), `native_px` (side of the cutout before resizing)."""

    name: str
    survey: str
    source: str
    ra: float | None = None
    dec: float | None = None
    pixel_scale: float | None = None
    preset: str | None = None
    native_px: int | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HostList:
    """Host images (N, 3, S, S) in [0, 1] with one `HostInfo` each; `skipped` {source: reason} names what was left
    out while loading (too small, a duplicate, a rejected field source) so nothing disappears silently."""

    images: torch.Tensor
    hosts: list[HostInfo]
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per host (name, survey, source, ra, dec, pixel_scale, preset, native_px)."""
        return [h.record() for h in self.hosts]

    def select(self, keep: Sequence[int], left_out: dict[str, str] | None = None) -> "HostList":
        """The hosts at positions `keep`, with `left_out` {name: reason} added to `skipped`."""
        keep = list(keep)
        return HostList(self.images[keep], [self.hosts[i] for i in keep], {**self.skipped, **(left_out or {})})

    def summary(self) -> dict[str, Any]:
        """Counts per survey and the skipped sources, for reports."""
        surveys: dict[str, int] = {}
        for h in self.hosts:
            surveys[h.survey] = surveys.get(h.survey, 0) + 1
        return {"n_hosts": len(self), "surveys": surveys, "skipped": dict(self.skipped)}
