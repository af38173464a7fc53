"""The study's settings as frozen dataclasses, checked when they are made (one line per problem, before any model is
loaded or any folder is created): `RobustConfig` (one model, one threat model) and `ZooRobustConfig` (the MNIST
zoo's table: models x threat models). Both share the ensemble's settings (`EnsembleSettings`: the budget, the
gradient-masking checks, seed, batch size, the model-call options).

Everything in a config decides the results and goes into the run store's key (`settings()`); where the run is
written, the device, the thread count, progress bars, restart and the results file are arguments of the run
functions (`experiments.robustness.study`), not settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from attacks.budget import check_budget_in_norm
from attacks.ensemble import ATTACKS, EnsembleBudget
from attacks.masking import CHECK_SAMPLES
from blindspots.errors import InputError
from blindspots.zoo import MNIST_MODELS

__all__ = ["EnsembleSettings", "RobustConfig", "ZooRobustConfig", "DEFAULT_MODEL", "DEFAULT_EPS", "ZOO_THREATS",
           "MNIST_SHAPE", "NORMS", "default_eps", "twin_of"]

DEFAULT_MODEL = "mnist-cnn-at"
NORMS = ("linf", "l2")
# default budgets in [0, 1] pixel units: MNIST's customary ones for the zoo's digit models, 4/255 and 0.5 (the
# RobustBench ImageNet/CIFAR ones) for any other model
DEFAULT_EPS = {"mnist": {"linf": 0.3, "l2": 2.0}, "other": {"linf": 4 / 255, "l2": 0.5}}
MNIST_SHAPE = (1, 28, 28)
# the zoo table's threat models: MNIST's customary l-inf budget (Madry et al.) and the l2 budget most MNIST papers
# report (Croce & Hein's FAB and AutoAttack papers, Rony et al.'s DDN): 2.0, about a tenth of the l2 size of a digit
ZOO_THREATS = (("linf", 0.3), ("l2", 2.0))
_BUDGET_FIELDS = ("apgd_steps", "target_classes", "fab_steps", "square_queries", "restarts")
_SEED_MAX = 2 ** 32 - 1


def default_eps(model: str, norm: str) -> float:
    """The default budget of `model` under `norm`: 0.3 l-inf / 2.0 l2 for the MNIST zoo models, 4/255 / 0.5 else."""
    return DEFAULT_EPS["mnist" if model in MNIST_MODELS else "other"][norm]


def twin_of(name: str) -> str | None:
    """The normal twin of an adversarially trained zoo model ("mnist-cnn-at" -> "mnist-cnn"), else None."""
    return name[:-3] if name.endswith("-at") and name[:-3] in MNIST_MODELS else None


@dataclass(frozen=True)
class EnsembleSettings:
    """The settings every robustness run shares.

    Data: `limit` (the first N samples only; None: all). Budget: AutoAttack's standard one with `full`, else the
    default `attacks.EnsembleBudget`; `apgd_steps`, `target_classes`, `fab_steps`, `square_queries`, `restarts`
    override it (None: the budget's own; `budget()` gives the result). Checks: the gradient-masking checks
    (`checks`) rerun attacks on `check_samples` images. `seed` (the attacks' random starts and queries),
    `batch_size` (samples per model pass), `amp` (bfloat16 autocast), `compile` (torch.compile).
    """

    limit: int | None = None
    full: bool = False
    apgd_steps: int | None = None
    target_classes: int | None = None
    fab_steps: int | None = None
    square_queries: int | None = None
    restarts: int | None = None
    checks: bool = True
    check_samples: int = CHECK_SAMPLES
    seed: int = 0
    batch_size: int = 250
    amp: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        _check_ensemble(self)

    def budget(self) -> EnsembleBudget:
        """The `attacks.EnsembleBudget` these settings give."""
        budget = EnsembleBudget.autoattack() if self.full else EnsembleBudget()
        return replace(budget, **{k: getattr(self, k) for k in _BUDGET_FIELDS if getattr(self, k) is not None})

    def settings(self) -> dict[str, Any]:
        """What decides the results, for the run store's key: every field."""
        return asdict(self)


@dataclass(frozen=True)
class RobustConfig(EnsembleSettings):
    """One model under one threat model (see `experiments.robustness`), with the ensemble's settings
    (`EnsembleSettings`).

    `model`: a model spec (`blindspots.load_classifier`), with local `weights` (None: its own). `norm` ('linf' or
    'l2') and `eps` (in [0, 1] pixel units; None: `default_eps(model, norm)`, resolved when the config is made).
    Data: the MNIST zoo models take the zoo's held-out digits (true labels); any other model the images of the
    folder `images` (None: the demo photos), resized and centre-cropped to `size`, labelled by its predictions.
    `attacks`: a subset of the ensemble (None: all of it, AutoAttack's order). `twin`: the normal twin of the
    transfer check (None: mnist-X for mnist-X-at, when no `weights` are given).
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    norm: str = "linf"
    eps: float | None = None
    images: str | None = None
    size: int = 224
    attacks: tuple[str, ...] | None = None
    twin: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.images, Path):
            object.__setattr__(self, "images", str(self.images))
        if isinstance(self.weights, Path):
            object.__setattr__(self, "weights", str(self.weights))
        if self.attacks == "standard":
            object.__setattr__(self, "attacks", None)
        elif isinstance(self.attacks, str):
            object.__setattr__(self, "attacks", (self.attacks,))
        elif self.attacks is not None:
            object.__setattr__(self, "attacks", tuple(self.attacks))
        super().__post_init__()
        _check_robust(self)
        if self.eps is None:
            object.__setattr__(self, "eps", default_eps(self.model, self.norm))
        if self.attacks is not None:
            object.__setattr__(self, "attacks", tuple(sorted(set(self.attacks), key=ATTACKS.index)))

    @property
    def is_mnist(self) -> bool:
        """Whether the model is an MNIST zoo model (it takes the zoo's held-out digits)."""
        return self.model in MNIST_MODELS

    def twin_spec(self) -> str | None:
        """The normal twin of the transfer check: `twin`, else the zoo's normal twin of an AT model (none when
        `weights` are given: they may be another model)."""
        return self.twin or (twin_of(self.model) if self.weights is None else None)

    def settings(self) -> dict[str, Any]:
        return {"study": "robust", **asdict(self)}


@dataclass(frozen=True)
class ZooRobustConfig(EnsembleSettings):
    """The MNIST zoo's robustness table (see `experiments.robustness`): each of `models` (MNIST zoo models) under
    each of `threats` ((norm, eps) pairs, one per norm) on the zoo's held-out digits, with the ensemble's settings
    (`EnsembleSettings`; the whole ensemble always) and, for an AT model, its normal twin in the transfer check.
    The shipped table is the default config's (`is_full`)."""

    models: tuple[str, ...] | None = None  # None: every MNIST zoo model
    threats: tuple[tuple[str, float], ...] = ZOO_THREATS

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", MNIST_MODELS if self.models is None else
                           (self.models,) if isinstance(self.models, str) else tuple(self.models))
        object.__setattr__(self, "threats", tuple(tuple(t) if isinstance(t, (list, tuple)) else t
                                                  for t in self.threats))
        super().__post_init__()
        _check_zoo(self)

    @property
    def is_full(self) -> bool:
        """Every zoo model under the table's threat models: the run that writes the shipped table."""
        return self.models == MNIST_MODELS and self.threats == ZOO_THREATS

    def settings(self) -> dict[str, Any]:
        return {"study": "robust-zoo", **asdict(self)}


# ------------------------------------------------------------------------------------------------- checks


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _check_ensemble(c: EnsembleSettings) -> None:
    if c.limit is not None and not _positive_int(c.limit):
        raise InputError(f"limit must be a positive integer or None, got {c.limit!r}")
    for name in _BUDGET_FIELDS:
        value = getattr(c, name)
        if value is not None and not _positive_int(value):
            raise InputError(f"{name} must be a positive integer or None (the budget's own), got {value!r}")
    for name in ("check_samples", "batch_size"):
        if not _positive_int(getattr(c, name)):
            raise InputError(f"{name} must be a positive integer, got {getattr(c, name)!r}")
    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed <= _SEED_MAX:
        raise InputError(f"seed must be an integer in [0, 2**32 - 1], got {c.seed!r}")
    for name in ("full", "checks", "amp", "compile"):
        if not isinstance(getattr(c, name), bool):
            raise InputError(f"{name} must be True or False, got {getattr(c, name)!r}")


def _check_eps(eps: Any, norm: str, shape: tuple[int, ...] | None) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InputError(f"eps must be > 0, got {eps!r}")
    if not math.isfinite(eps):
        raise InputError(f"eps must be a finite number, got {eps!r}")
    check_budget_in_norm(float(eps), norm, shape)  # "eps ... is beyond ..."


def _check_robust(c: RobustConfig) -> None:
    if not isinstance(c.model, str) or not c.model:
        raise InputError(f"model must be a model spec (a registered name, timm:<name>, ...), got {c.model!r}")
    if c.norm not in NORMS:
        raise InputError(f"norm must be 'linf' or 'l2', got {c.norm!r}")
    is_mnist = c.model in MNIST_MODELS
    if c.eps is not None:
        _check_eps(c.eps, c.norm, MNIST_SHAPE if is_mnist else None)
    if c.images is not None:
        if is_mnist:
            raise InputError("images: the MNIST zoo models take 28 px one-channel digits; they are evaluated on the "
                             "zoo's held-out digits (leave the images out)")
        if not Path(c.images).is_dir():
            raise InputError(f"images {c.images}: no such folder")
    if not _positive_int(c.size) or (not is_mnist and c.size < 8):
        raise InputError(f"size must be an integer >= 8, got {c.size!r}")
    if c.attacks is not None:
        names = list(c.attacks)
        bad = [str(t) for t in names if t not in ATTACKS]
        if bad or not names:
            raise InputError(f"attacks: unknown {', '.join(bad) or 'empty list'}; use 'standard' or a comma list of "
                             f"{', '.join(ATTACKS)}")
    for name in ("weights", "twin"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f"{name} must be a non-empty string or None, got {value!r}")
    if c.weights is not None and not Path(c.weights).is_file():
        raise InputError(f"weights {c.weights}: no such file")


def _check_zoo(c: ZooRobustConfig) -> None:
    bad = [m for m in c.models if m not in MNIST_MODELS]
    if bad or not c.models:
        raise InputError(f"models: {', '.join(map(str, bad)) or 'none given'} is not an MNIST zoo model "
                         f"({', '.join(MNIST_MODELS)})")
    if len(set(c.models)) != len(c.models):
        raise InputError(f"models must be distinct, got {list(c.models)}")
    norms = [t[0] if isinstance(t, tuple) and len(t) == 2 else None for t in c.threats]
    if not c.threats or any(n not in NORMS for n in norms) or len(set(norms)) != len(norms):
        raise InputError(f"threats must be (norm, eps) pairs, one per norm of {NORMS}, got {list(c.threats)}")
    for norm, eps in c.threats:
        _check_eps(eps, norm, MNIST_SHAPE)
