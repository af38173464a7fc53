"""The sensitivity study's settings as one frozen dataclass, `SensitivityConfig`, checked when it is made (one line
per problem, before any model loads or any folder is created).

Everything in the config decides the results and goes into the run store's key (`settings()`); where the run is
written, the device, progress bars and restart are arguments of `run_sensitivity`, not settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from blindspots.errors import InputError
from blindspots.traversal import LSTConfig

__all__ = ["SensitivityConfig", "NORMS", "MAX_SEED"]

NORMS = ("linf", "l2")
MAX_SEED = 2 ** 31 - 1


@dataclass(frozen=True)
class SensitivityConfig:
    """Settings of `blindspots attack` (see `experiments.sensitivity`).

    Model: `model` (a spec, e.g. 'imagenet-lite0' or 'mnist-cnn') with `weights` (a local file; None: the spec's
    own). Images (one set): `images` (a folder), `photos` (comma list of scikit-image photo names) or `digits`
    (real MNIST test digits per class); none: the demo photos (MNIST digits for a 28 px one-channel model), at
    `size` pixels (None: the model's own, else 224), at most `limit` of them.
    Over-sensitivity: `attack` (a registered attack, `attacks.registry`; default 'minimal-epsilon', the budget
    search) in `norm`, `eps` (the budget of a fixed-budget attack; refused by the others), `max_eps` / `rtol` /
    `search_steps` (minimal-epsilon's search: largest budget, relative precision, bisection rounds), `steps` (the
    attack's iterations; None: its own). Under-sensitivity: `rounds` LST targets per image (0: skip LST), with
    `LSTConfig.adaptive()` (`iterations`: None for its own; `redraw_start`: redraw a noisy start that already
    breaks the threshold). `batch_size` images per model pass, `seed` both sides; `amp`, `channels_last`, `compile`:
    how the model is called (see `lst_config`).
    """

    model: str = "imagenet-lite0"
    weights: str | None = None
    images: str | None = None
    photos: str | None = None
    digits: int | None = None
    size: int | None = None
    limit: int | None = None
    attack: str = "minimal-epsilon"
    eps: float | None = None
    norm: str = "linf"
    max_eps: float | None = None
    rtol: float | None = None
    search_steps: int | None = None
    steps: int | None = None
    rounds: int = 1
    redraw_start: bool = False
    iterations: int | None = None
    batch_size: int = 64
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("weights", "images"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        _check(self)

    def with_(self, **changes: Any) -> "SensitivityConfig":
        return replace(self, **changes)

    def lst_config(self) -> LSTConfig:
        """LST's settings: `LSTConfig.adaptive()` with the batch size, model-call options, start and iterations."""
        return LSTConfig.adaptive(batch_size=self.batch_size, amp=self.amp, channels_last=self.channels_last,
                                  compile=self.compile, start="redraw" if self.redraw_start else "keep",
                                  **({"iterations": self.iterations} if self.iterations else {}))

    def attack_options(self) -> dict[str, Any]:
        """More keyword arguments of the attack: the model-call options it takes."""
        return {"amp": self.amp, "compile": self.compile}

    def settings(self) -> dict[str, Any]:
        """What decides the results, for the run store's key: every field (the same key the command line wrote
        before the config existed, so earlier output folders resume)."""
        return asdict(self)


def _check(c: SensitivityConfig) -> None:
    """One InputError line per impossible setting; nothing is loaded or created before these pass."""
    import torch

    from attacks.registry import attack_entry

    if not isinstance(c.model, str) or not c.model.strip():
        raise InputError(f"model must be a model spec, got {c.model!r}")
    if c.norm not in NORMS:
        raise InputError(f"norm must be one of {', '.join(NORMS)}, got {c.norm!r}")
    for name in ("digits", "size", "limit", "search_steps", "steps", "iterations"):
        v = getattr(c, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InputError(f"{name} must be None or a positive integer, got {v!r}")
    if isinstance(c.batch_size, bool) or not isinstance(c.batch_size, int) or c.batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {c.batch_size!r}")
    if isinstance(c.rounds, bool) or not isinstance(c.rounds, int) or c.rounds < 0:
        raise InputError(f"rounds must be a non-negative integer, got {c.rounds!r}")
    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed <= MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2**31 - 1], got {c.seed!r}")
    for name in ("redraw_start", "amp", "channels_last", "compile"):
        if not isinstance(getattr(c, name), bool):
            raise InputError(f"{name} must be True or False, got {getattr(c, name)!r}")
    if c.rtol is not None and not (_number(c.rtol) and 0 < c.rtol < 1):
        raise InputError(f"rtol must lie in (0, 1), got {c.rtol}")
    for name in ("max_eps", "eps"):
        v = getattr(c, name)
        if v is not None and not (_number(v) and v > 0):
            raise InputError(f"{name} must be a finite number > 0, got {v}")
    # the attack's own checks (fixed budget needs eps, a norm it supports, settings it takes), on a stand-in model
    attack_entry(c.attack).make(torch.nn.Identity(), norm=c.norm, eps=c.eps, steps=c.steps, max_eps=c.max_eps,
                                rtol=c.rtol, search_steps=c.search_steps)
    c.lst_config()  # LST's own checks


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
