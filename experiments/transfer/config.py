"""The transfer study's settings as one frozen dataclass, `TransferConfig`, checked when it is made (one line per
problem, before any folder is created or any training starts); `TransferConfig.paper()` gives the paper's detector.

Everything in the config decides the results and goes into the run store's key; where the run is written, the
device, the thread count and progress bars are arguments of `run_transfer`, not settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from blindspots.errors import InputError
from experiments.galaxy_proxy import ProxyConfig
from blindspots.store import fingerprint_file
from detectors.simulate import simulator_fingerprint

__all__ = ["TransferConfig", "BACKBONES", "BODIES", "PAPER_SIZES", "default_hosts", "MAX_SEED"]

# The starting points of the detector's body. 'galaxy-proxy' is pretrained here on simulated galaxy morphology
# (experiments.galaxy_proxy: the Zoobot study's encoder file), a proxy for Zoobot, not Zoobot.
BACKBONES = {
    "imagenet": "ImageNet weights",
    "galaxy-proxy": "galaxy-proxy: pretrained here on simulated galaxy morphology (a proxy for Zoobot, not Zoobot)",
    "random": "random init",
    "zoobot": "Zoobot encoder (local file)",
}
GALAXY = ("zoobot", "galaxy-proxy")  # the galaxy-domain backbones compared with 'imagenet'
# The paper's two body settings: the body frozen, or its last k feature stages trainable (the paper: 3 of ResNet-50's
# conv1, layer1-4; here the same count of the encoder's stages, `TransferConfig.trainable`).
BODIES = ("frozen", "trainable")
PAPER_SIZES = (200, 600, 1200, 2400, 4800)  # the authors' learning curve spans 200 to 4,800 training images
MAX_SEED = 2 ** 31 - 1


def default_hosts() -> Path:
    """../shared/data/galaxies beside the repository."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "galaxies"


@dataclass(frozen=True)
class TransferConfig:
    """Settings of the transfer-learning study (see `experiments.transfer`).

    Detector: `arch` (the body's architecture, shared by every backbone), `preset` ('cpu' or 'paper', see
    `detectors.PRESETS`), `image_size` (simulated images, pixels) and `resize` (the detector's internal resize;
    None: none), `lr` (None: the preset's), `warmup` steps then cosine decay (the 'cpu' preset) or constant.
    Backbones (`BACKBONES`) x `bodies` (`BODIES`; 'trainable' trains the last `trainable` stages) x `sizes`
    (training-set sizes, nested prefixes of one simulated `pool`) x `seeds` (initialisation, order and flips).
    Budget rule, the same for every cell: `steps` optimiser steps of `batch_size` images, whatever the size.
    Scoring: the score threshold with the best clump F1 on `n_val` validation images (per detector), figures on
    `n_test` test images with matches at IoU >= `iou`; AP50 at IoU 0.5. Real hosts: every cutout of `hosts` (None:
    ../shared/data/galaxies) and its sub-folders, central `crop`, `injections` clumpy versions each.
    LST against the detectors of the largest size: `lst_sources` correctly classified test images (half clumpy),
    `lst_rounds` targets each, `lst_step` / `lst_iterations` / `lst_threshold` / `lst_adv_eps`.
    Files: `imagenet_weights` (None: the offline lite0 ones), `zoobot_weights` (a local Zoobot encoder of `arch`),
    `proxy_encoder` (None: the shared proxy, pretrained once with `proxy`'s settings). `data_seed`: the simulated
    pool, validation and test sets, injections and LST pairs.
    """

    arch: str = "efficientnet_lite0"
    preset: str = "cpu"
    backbones: tuple[str, ...] = ("imagenet", "galaxy-proxy", "random")
    bodies: tuple[str, ...] = BODIES
    trainable: int = 3
    sizes: tuple[int, ...] = (8, 32, 128)
    pool: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 40
    batch_size: int = 4
    lr: float | None = None
    warmup: int = 4
    image_size: int = 128
    resize: int | None = None
    n_val: int = 32
    n_test: int = 64
    iou: float = 0.3
    hosts: str | None = None
    crop: float = 0.5
    injections: int = 2
    lst_sources: int = 10
    lst_rounds: int = 1
    lst_step: float = 0.3
    lst_iterations: int = 12
    lst_threshold: float = 0.2
    lst_adv_eps: float = 2e-3
    imagenet_weights: str | None = None
    zoobot_weights: str | None = None
    proxy_encoder: str | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    data_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("backbones", "bodies", "sizes", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.zoobot_weights is not None and "zoobot" not in self.backbones:
            object.__setattr__(self, "backbones", self.backbones + ("zoobot",))
        _check(self)

    @classmethod
    def paper(cls, **overrides: Any) -> "TransferConfig":
        """The paper's detector: torchvision ResNet-50 FPN ('paper' preset: Adam 1e-4 constant, weight decay 5e-5,
        flips, 800-px internal resize, class-agnostic NMS 0.2), the central 200 px of SDSS cutouts, the authors'
        training-set sizes (200-4,800), 5 seeds, 6,000 steps of batch 4 per cell (5 epochs of the largest set).
        ImageNet and Zoobot ResNet-50 weights are local files (`imagenet_weights`, `zoobot_weights`)."""
        base = dict(arch="resnet50", preset="paper", image_size=200, resize=800, sizes=PAPER_SIZES, pool=4800,
                    seeds=(0, 1, 2, 3, 4), steps=6000, warmup=0, n_val=500, n_test=1000, injections=10,
                    lst_sources=40, lst_rounds=2, proxy=ProxyConfig(arch="resnet50", size=128, sim_fov=84.0))
        return cls(**{**base, **overrides})

    def with_(self, **changes: Any) -> "TransferConfig":
        return replace(self, **changes)

    @property
    def largest(self) -> int:
        return max(self.sizes)

    def host_folder(self) -> Path:
        return Path(self.hosts) if self.hosts else default_hosts()

    def cells(self) -> list[tuple[str, str, int, int]]:
        """(backbone, body, size, seed) of every training, in the order they run: seed by seed, so that a run cut
        short holds whole learning curves for its first seeds."""
        return [(b, body, n, s) for s in self.seeds for n in self.sizes for body in self.bodies
                for b in self.backbones]

    def settings(self) -> dict[str, Any]:
        """What decides the results, for the run store's key: every field, weights files by content."""
        s = asdict(self)
        for name in ("zoobot_weights", "imagenet_weights", "proxy_encoder"):
            if s.get(name):
                s[name] = fingerprint_file(s[name])
        if s["proxy"].get("imagenet_weights"):
            s["proxy"]["imagenet_weights"] = fingerprint_file(s["proxy"]["imagenet_weights"])
        s["hosts"] = str(self.host_folder().resolve())
        s["simulator"] = simulator_fingerprint()  # the cells' simulated training and test images
        return {"study": "transfer", **s}


def _check(c: TransferConfig) -> None:
    """One InputError line per impossible setting; nothing is created or trained before these pass."""
    from detectors.frcnn import PRESETS

    if c.preset not in PRESETS:
        raise InputError(f"preset must be one of {sorted(PRESETS)}, got {c.preset!r}")
    kinds = list(c.backbones)
    unknown = [k for k in kinds if k not in BACKBONES]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise InputError(f"backbones {','.join(map(str, kinds))!r}: choose distinct names from {list(BACKBONES)}")
    if "zoobot" in kinds and c.zoobot_weights is None:
        raise InputError("backbone zoobot needs zoobot_weights (--zoobot-weights FILE: a local copy of "
                         f"hf_hub:mwalmsley/zoobot-encoder-{c.arch})")
    bad = [b for b in c.bodies if b not in BODIES]
    if bad or not c.bodies or len(set(c.bodies)) != len(c.bodies):
        raise InputError(f"bodies {','.join(map(str, c.bodies))!r}: choose distinct names from {list(BODIES)}")
    for name in ("pool", "steps", "batch_size", "image_size", "n_val", "n_test", "injections", "lst_sources",
                 "lst_rounds", "lst_iterations", "trainable"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if not c.sizes:
        raise InputError("sizes: give at least one training-set size")
    for n in c.sizes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"training-set size {n!r} is not a positive integer (sizes must be >= 1)")
        if n > c.pool:
            raise InputError(f"training-set size {n} is larger than the simulated pool ({c.pool} images; --pool)")
    if len(set(c.sizes)) != len(c.sizes):
        raise InputError(f"sizes must be distinct, got {list(c.sizes)}")
    if len(c.seeds) < 2:
        raise InputError(f"seeds: the intervals treat seeds as a random effect and need at least 2, got "
                         f"{list(c.seeds)}")
    if len(set(c.seeds)) != len(c.seeds):
        raise InputError(f"seeds must be distinct, got {list(c.seeds)}")
    for v in list(c.seeds) + [c.data_seed]:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
            raise InputError(f"seeds must be integers in [0, 2**31 - 1], got {v!r}")
    if c.image_size < 16:
        raise InputError(f"image_size must be at least 16 pixels, got {c.image_size}")
    if c.resize is not None and (isinstance(c.resize, bool) or not isinstance(c.resize, int) or c.resize < 16):
        raise InputError(f"resize must be None or an integer >= 16, got {c.resize!r}")
    if isinstance(c.warmup, bool) or not isinstance(c.warmup, int) or c.warmup < 0:
        raise InputError(f"warmup must be a non-negative integer, got {c.warmup!r}")
    _in_range("iou", c.iou, 0.0, 1.0, "(0, 1]", hi_open=False)
    _in_range("crop", c.crop, 0.0, 1.0, "(0, 1]", hi_open=False)
    _in_range("lst_step", c.lst_step, 0.0, 1.0, "(0, 1]", hi_open=False)
    _in_range("lst_threshold", c.lst_threshold, 0.0, 1.0, "(0, 1)")
    _in_range("lst_adv_eps", c.lst_adv_eps, 0.0, 0.1, "[0, 0.1]", lo_open=False, hi_open=False)
    if c.lr is not None:
        _in_range("lr", c.lr, 0.0, 1.0, "(0, 1]", hi_open=False)
    for name in ("zoobot_weights", "imagenet_weights", "proxy_encoder"):
        v = getattr(c, name)
        if v is not None and not Path(v).is_file():
            raise InputError(f"{name} {v}: no such file")
    if c.hosts is not None and not Path(c.hosts).is_dir():
        raise InputError(f"hosts {c.hosts}: " + ("not a folder (give the folder that holds the cutouts)"
                                                  if Path(c.hosts).exists() else "no such folder"))
    if not isinstance(c.proxy, ProxyConfig):
        raise InputError(f"proxy must be a ProxyConfig, got {type(c.proxy).__name__}")
    if "galaxy-proxy" in kinds and c.proxy_encoder is None and c.proxy.arch != c.arch.rpartition(":")[2]:
        raise InputError(f"the galaxy-proxy is pretrained as {c.proxy.arch} but the body is {c.arch}; give "
                         f"proxy=ProxyConfig(arch={c.arch!r}, ...) or a proxy_encoder file of that architecture")


def _in_range(name: str, value: Any, lo: float, hi: float, text: str, lo_open: bool = True,
              hi_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise InputError(f"{name} must be a number in {text}, got {value!r}")
