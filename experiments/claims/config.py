"""The study's settings as one frozen dataclass, `ClaimsConfig`, checked when it is made (one line per impossible
value, before any model loads or any folder is created).

Everything in the config decides the results; where the run is written, the device, progress bars, restart and
`results_to` are arguments of `run_claims`, not settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from blindspots import LSTConfig
from blindspots.errors import InputError

from .groups import GROUPS, Group

__all__ = ["ClaimsConfig"]


@dataclass(frozen=True)
class ClaimsConfig:
    """Settings of the paper-claims study (see `experiments.claims`).

    `groups`: names of `GROUPS` (`mnist`, `imagenet`) or `Group` objects (a group of one's own models, e.g. in a
    test; `run_claims(models=...)` gives its nets). `sources`: at most this many images per group before the
    confidence filter (None: all). `rounds`: derangement rounds, LST outputs per source (>= 2: a triangle needs two).
    `lst`: the LST settings (the paper's by default; bfloat16 `amp` is refused: the hull probes run in float32, so
    LST's confidences would not match them). `min_confidence`: the pool keeps sources with p above it (the paper's
    0.6, strict). `seed`: image subset, derangements, start noise and bootstrap. `batch_size`: pairs per batch.
    `photo_size`: the ImageNet photos' size in pixels (128 to fit a CPU; the paper uses 224). `matched`: also decide
    claim 3 with both models' outputs at matched distance (a second LST run).
    """

    groups: tuple[str | Group, ...] = ("mnist", "imagenet")
    sources: int | None = 60
    rounds: int = 5
    lst: LSTConfig = field(default_factory=LSTConfig.paper)
    min_confidence: float = 0.6
    seed: int = 0
    batch_size: int = 50
    photo_size: int = 128
    matched: bool = True

    def __post_init__(self) -> None:
        groups = (self.groups,) if isinstance(self.groups, (str, Group)) else tuple(self.groups)
        object.__setattr__(self, "groups", groups)
        _check(self)

    def with_(self, **changes: Any) -> "ClaimsConfig":
        return replace(self, **changes)

    @property
    def group_map(self) -> dict[str, Group]:
        """name -> Group, in the order given."""
        return {g.name: g for g in (GROUPS[g] if isinstance(g, str) else g for g in self.groups)}

    @property
    def threshold(self) -> float:
        """delta, LST's threshold: the claims' level set."""
        return self.lst.threshold

    def settings(self) -> dict[str, Any]:
        """What decided the results, as claims.json records them ("settings")."""
        return {"config": self.lst.to_dict(), "rounds": self.rounds, "sources": self.sources,
                "photo_size": self.photo_size, "min_confidence": self.min_confidence, "seed": self.seed,
                "groups": list(self.group_map), "matched": self.matched}


def _positive(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"{name} must be a positive integer, got {v!r}")


def _check(c: ClaimsConfig) -> None:
    """One InputError line per impossible setting; nothing loads or is written before these pass."""
    names = [g if isinstance(g, str) else getattr(g, "name", g) for g in c.groups]
    if not names or any(not isinstance(g, Group) and g not in GROUPS for g in c.groups) or len(set(names)) < len(names):
        raise InputError(f"groups {','.join(map(str, names))!r}: choose one or more of {', '.join(GROUPS)}")
    if c.sources is not None:
        _positive("sources", c.sources)
    if isinstance(c.rounds, bool) or not isinstance(c.rounds, int) or c.rounds < 2:
        raise InputError(f"rounds {c.rounds}: the claims need >= 2 rounds (a triangle needs two LST outputs per "
                         "source)")
    if not isinstance(c.lst, LSTConfig):
        raise InputError(f"lst must be an LSTConfig, got {type(c.lst).__name__}")
    if c.lst.amp:
        raise InputError("amp: refused for this study; LST under bfloat16 and the hull probes in float32 would judge "
                         "p >= p_src - delta by different numbers")
    if not 0 < c.lst.threshold < 1:
        raise InputError(f"threshold must lie in (0, 1), got {c.lst.threshold}")
    ok = isinstance(c.min_confidence, (int, float)) and not isinstance(c.min_confidence, bool)
    if not (ok and math.isfinite(c.min_confidence) and 0 <= c.min_confidence < 1):
        raise InputError(f"min_confidence must be a number in [0, 1), got {c.min_confidence!r}")
    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or c.seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {c.seed!r}")
    _positive("batch_size", c.batch_size)
    _positive("photo_size", c.photo_size)
    if not isinstance(c.matched, bool):
        raise InputError(f"matched must be True or False, got {c.matched!r}")
