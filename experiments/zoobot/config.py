"""The study's settings as one frozen dataclass, `ZoobotConfig`, checked when it is made (one line per problem,
before any folder is created or any training starts), and the named LST settings (`LST_SETTINGS`).

Everything in the config decides the results and goes into the run store's key; where the run is written, the
device, the thread count and progress bars are arguments of `run_zoobot`, not settings."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .data import MAX_CLUMP_FLUX
from blindspots.store import fingerprint_file
from detectors.simulate import simulator_fingerprint
from blindspots.errors import InputError

__all__ = ["ZoobotConfig", "LST_SETTINGS", "BACKBONE_KINDS", "MAX_CLUMP_FLUX", "MAX_SEED"]

BACKBONE_KINDS = ("imagenet", "zoobot", "galaxy-proxy", "random")
MAX_SEED = 2 ** 32 - 1  # pair seeds keep the low 32 bits of the base seed: larger seeds would collide
# Named LST settings: step (eta), iterations, threshold (delta), adversarial step. "study": the default, 10x fewer
# iterations than the paper with step x iterations kept at the paper's 4 (1e-2 x 400); "paper": the published ones.
LST_SETTINGS: dict[str, dict[str, float | int]] = {
    "study": {"lst_step": 0.1, "lst_iterations": 40, "lst_threshold": 0.2, "lst_adv_eps": 2e-3},
    "paper": {"lst_step": 1e-2, "lst_iterations": 400, "lst_threshold": 0.2, "lst_adv_eps": 2e-3},
}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ZoobotConfig:
    """Settings of the Zoobot vs ImageNet study (see `experiments.zoobot`).

    Backbones: `arch` (a timm architecture shared by all), `backbones` (kinds among BACKBONE_KINDS; the first
    non-ImageNet ones are compared with `imagenet`), `imagenet_weights` / `zoobot_weights` / `proxy_encoder`
    (local files; None: the offline ImageNet weights of efficientnet_lite0, no Zoobot, a proxy trained here).
    Fine-tuning: `seeds` (one fine-tuning run per backbone and seed), `train` / `test` simulated galaxies, `epochs`
    (`scratch_epochs` for random init), `lr`, `batch_size`; `min_accuracy`: a backbone below it at any seed, on the
    simulated test set or on the injected real hosts, is kept out of the verdict (reported).
    The proxy: `pretrain` galaxies x `pretrain_epochs`, `probe` held-out galaxies, `proxy_init`.
    Images: `size` pixels, simulated field `sim_fov` arcsec, clumpy = 2-8 clumps of `min_clump_flux`-8% flux.
    Pairs: `sim_pairs` simulated sources, `rounds` targets per source, `seed` (pairs, start noise, injections).
    Real hosts: `real` (host sources: folders, files, 'field'; None: `real_sources()`'s default, the cutouts of
    ../shared/data/galaxies beside the repository and the survey field's galaxies), `real_limit`
    (0: all), `crop` (central fraction kept), `injections` (clumpy versions per host, each its own draw).
    LST: `lst_step`, `lst_iterations`, `lst_threshold`, `lst_adv_eps` (`LST_SETTINGS`; `with_lst("paper")`),
    `lst_batch` pairs at once.
    """

    arch: str = "efficientnet_lite0"
    backbones: tuple[str, ...] = ("imagenet", "zoobot", "galaxy-proxy")
    seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0
    imagenet_weights: str | None = None
    zoobot_weights: str | None = None
    proxy_encoder: str | None = None
    size: int = 64
    sim_fov: float = 42.0
    min_clump_flux: float = 0.03
    crop: float = 0.5
    proxy_init: str = "imagenet"
    pretrain: int = 8192
    pretrain_epochs: int = 6
    probe: int = 768
    train: int = 1024
    test: int = 256
    epochs: int = 4
    scratch_epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    min_accuracy: float = 0.6
    real: str | tuple[str, ...] | None = None  # host sources (detectors.hosts): folders, FITS/image files, 'field'
    fits_preset: str | None = None  # stretch of FITS hosts (detectors.fits.PRESETS; None: by their bands)
    real_limit: int = 0
    injections: int = 2
    sim_pairs: int = 96
    rounds: int = 2
    lst_step: float = LST_SETTINGS["study"]["lst_step"]
    lst_iterations: int = LST_SETTINGS["study"]["lst_iterations"]
    lst_threshold: float = LST_SETTINGS["study"]["lst_threshold"]
    lst_adv_eps: float = LST_SETTINGS["study"]["lst_adv_eps"]
    lst_batch: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbones", tuple(self.backbones))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        _check_config(self)

    def with_lst(self, name: str, **overrides: Any) -> "ZoobotConfig":
        """This config with the named LST settings (`LST_SETTINGS`: 'study' or 'paper'), then `overrides`."""
        if name not in LST_SETTINGS:
            raise InputError(f"LST settings {name!r}: choose from {list(LST_SETTINGS)}")
        return replace(self, **{**LST_SETTINGS[name], **overrides})

    def lst_config(self):
        """The `LSTConfig` of every traversal of the study."""
        from blindspots import LSTConfig

        return LSTConfig(step_size=self.lst_step, iterations=self.lst_iterations, threshold=self.lst_threshold,
                         adv_eps=self.lst_adv_eps, channels_last=True)

    def lst_name(self) -> str:
        """'study', 'paper' or 'custom': which named LST settings this config uses."""
        mine = {k: getattr(self, k) for k in LST_SETTINGS["study"]}
        return next((n for n, s in LST_SETTINGS.items() if s == mine), "custom")

    def real_sources(self) -> tuple[str, ...]:
        """The real hosts' sources (`detectors.hosts.load_hosts`): `real`, or by default every host the toolkit can
        reach offline: the cutouts of ../shared/data/galaxies (where that folder exists) and the survey field's
        galaxies (`field`: the Hubble eXtreme Deep Field)."""
        from detectors.hosts import FIELD_SOURCE

        from .data import default_real

        if self.real:
            return (self.real,) if isinstance(self.real, str) else tuple(self.real)
        folder = default_real()
        return ((str(folder),) if folder.is_dir() else ()) + (FIELD_SOURCE,)

    def settings(self) -> dict[str, Any]:
        """What decides the results, for the run store's key: every field, weights files by content."""
        s = asdict(self)
        for name in ("zoobot_weights", "imagenet_weights", "proxy_encoder"):
            if s.get(name):
                s[name] = fingerprint_file(s[name])
        s["simulator"] = simulator_fingerprint()  # the task's simulated images
        s["real"] = [x if x.startswith("field") else str(Path(x).resolve()) for x in self.real_sources()]
        return {"study": "zoobot_vs_imagenet", **s}


def _check_config(c: ZoobotConfig) -> None:
    """One ValueError line per impossible setting; nothing is created or trained before these pass."""
    import timm

    if not isinstance(c.arch, str) or not _PLAIN_NAME.match(c.arch) or not timm.is_model(c.arch):
        raise InputError(f"arch {c.arch!r} is not a timm architecture name (e.g. efficientnet_lite0, convnext_nano, "
                         "resnet18)")
    kinds = list(c.backbones)
    unknown = [k for k in kinds if k not in BACKBONE_KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise InputError(f"backbones {','.join(map(str, kinds))!r}: choose distinct names from {list(BACKBONE_KINDS)}")
    if not c.seeds or len(set(c.seeds)) != len(c.seeds):
        raise InputError(f"seeds must be distinct integers, got {list(c.seeds)}")
    for name, value in [("seeds", s) for s in c.seeds] + [("seed", c.seed)]:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
            raise InputError(f"{name} must be integers in [0, 2**32 - 1], got {value!r}")
    for name in ("size", "pretrain", "pretrain_epochs", "probe", "train", "test", "epochs", "scratch_epochs",
                 "batch_size", "injections", "sim_pairs", "rounds", "lst_iterations", "lst_batch"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if c.size < 16:
        raise InputError(f"size must be at least 16 pixels (the simulator's smallest), got {c.size}")
    if isinstance(c.real_limit, bool) or not isinstance(c.real_limit, int) or c.real_limit < 0:
        raise InputError(f"real_limit must be 0 (all) or a positive integer, got {c.real_limit!r}")
    _in_range("min_accuracy", c.min_accuracy, 0.0, 1.0, "[0, 1]", lo_open=False, hi_open=False)
    _in_range("crop", c.crop, 0.0, 1.0, "(0, 1]", hi_open=False)
    _in_range("min_clump_flux", c.min_clump_flux, 0.0, MAX_CLUMP_FLUX, f"(0, {MAX_CLUMP_FLUX}]", hi_open=False)
    _in_range("lst_step", c.lst_step, 0.0, 1.0, "(0, 1]", hi_open=False)
    _in_range("lst_threshold", c.lst_threshold, 0.0, 1.0, "(0, 1)")
    _in_range("lst_adv_eps", c.lst_adv_eps, 0.0, 0.1, "[0, 0.1]", lo_open=False, hi_open=False)
    _in_range("lr", c.lr, 0.0, 1.0, "(0, 1]", hi_open=False)
    _in_range("sim_fov", c.sim_fov, 0.0, math.inf, "(0, inf)")
    if c.proxy_init not in ("imagenet", "random"):
        raise InputError(f"proxy_init must be 'imagenet' or 'random', got {c.proxy_init!r}")
    for name in ("zoobot_weights", "imagenet_weights", "proxy_encoder"):
        value = getattr(c, name)
        if value is not None and not Path(value).is_file():
            raise InputError(f"{name.replace('_', '-')} {value}: no such file")
    if c.real is not None:
        from detectors.hosts import check_host_sources

        check_host_sources(c.real)
    if c.fits_preset not in (None, "sdss", "legacy"):
        raise InputError(f"fits_preset must be 'sdss', 'legacy' or None, got {c.fits_preset!r}")


def _in_range(name: str, value: Any, lo: float, hi: float, text: str, lo_open: bool = True,
              hi_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise InputError(f"{name} must be a number in {text}, got {value!r}")
