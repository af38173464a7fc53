"""The tables study's settings as one frozen dataclass, `TablesConfig`, checked when it is made (one line per
problem, before any model loads or any folder is created).

Everything in the config decides the results; where the run is written, the device, progress bars and restart are
arguments of `run_tables`, not settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from blindspots import LSTConfig
from blindspots.errors import InputError

__all__ = ["TablesConfig", "MAX_SEED"]

MAX_SEED = 2 ** 31 - 1


@dataclass(frozen=True)
class TablesConfig:
    """Settings of `blindspots tables` (see `experiments.tables`).

    Models: `models` (specs, e.g. 'imagenet-lite0' or 'timm:resnet50'; a comma string is split) with `weights`
    (local files, one per model in order; None or '' keeps a spec's own; fewer than models: the rest None).
    Pool: `images` (a folder; None: scikit-image's photos) with `labels` (a 'file,label' CSV; None: the first
    model's predictions, so the pool is where all models agree), at most `limit` images at `size` pixels, the
    sources every model classifies correctly with confidence > `min_confidence` (strict; the paper: 0.6).
    Protocol: `rounds` derangements of the pool (each source to a target of another class), drawn from `seed`,
    `batch_size` pairs per batch, LST with `lst` (`LSTConfig.paper()` by default). Table 2 (`hull`, needs >= 2
    rounds) probes each triangle on a barycentric grid of `grid_step`; LPIPS with `lpips_weights` (ImageNet AlexNet
    weights as a local file; None: the column is skipped).
    """

    models: tuple[str, ...] = ("imagenet-lite0",)
    weights: tuple[str | None, ...] = ()
    images: str | None = None
    labels: str | None = None
    limit: int | None = None
    size: int = 224
    min_confidence: float = 0.0
    rounds: int = 5
    lst: LSTConfig = field(default_factory=LSTConfig.paper)
    hull: bool = True
    grid_step: float = 0.1
    lpips_weights: str | None = None
    seed: int = 0
    batch_size: int = 20

    def __post_init__(self) -> None:
        models = self.models.split(",") if isinstance(self.models, str) else list(self.models)
        object.__setattr__(self, "models", tuple(m.strip() for m in models if m and m.strip()))
        weights = [None if w in ("", "-", None) else str(w) for w in (self.weights or ())]
        if len(weights) > len(self.models):
            raise InputError(f"weights has {len(weights)} entries for {len(self.models)} models")
        object.__setattr__(self, "weights", tuple(weights + [None] * (len(self.models) - len(weights))))
        for name in ("images", "labels", "lpips_weights"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        _check(self)

    def with_(self, **changes: Any) -> "TablesConfig":
        return replace(self, **changes)

    def settings(self) -> dict[str, Any]:
        """The part of the run store's key that `run_tables` adds to `run_study`'s own (the models, their
        weights by content, the images by content, the protocol, the LST config, the pool and every Table
        setting): where the images came from, their size and the weight files named."""
        return {"images": self.images if self.images else "skimage", "size": self.size,
                "weights": [w or "" for w in self.weights]}


def _check(c: TablesConfig) -> None:
    """One InputError line per impossible setting; nothing is loaded or created before these pass."""
    if not c.models:
        raise InputError("models: give at least one model spec")
    for name in ("rounds", "size", "batch_size"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if c.limit is not None and (isinstance(c.limit, bool) or not isinstance(c.limit, int) or c.limit < 1):
        raise InputError(f"limit must be None or a positive integer, got {c.limit!r}")
    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed <= MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2**31 - 1], got {c.seed!r}")
    if not isinstance(c.hull, bool):
        raise InputError(f"hull must be True or False, got {c.hull!r}")
    if c.hull and c.rounds < 2:
        raise InputError(f"rounds {c.rounds}: the hull statistics (Table 2) need >= 2 rounds, two LST outputs per "
                         "source for a triangle; give --rounds >= 2 or --no-hull")
    if not _number(c.min_confidence) or not 0 <= c.min_confidence < 1:
        raise InputError(f"min_confidence must be a number in [0, 1), got {c.min_confidence!r}")
    if not _number(c.grid_step) or not 0 < c.grid_step <= 1:
        raise InputError(f"grid_step must be a number in (0, 1], got {c.grid_step!r}")
    if c.hull and abs(round(1 / c.grid_step) * c.grid_step - 1) > 1e-9:  # the hull's grid: refused here, not after LST
        raise InputError(f"grid_step must divide 1 exactly (1/n, e.g. 0.1 or 0.05), got {c.grid_step}")
    if not isinstance(c.lst, LSTConfig):
        raise InputError(f"lst must be an LSTConfig, got {type(c.lst).__name__}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
