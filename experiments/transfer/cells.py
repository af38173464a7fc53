"""One cell of the study: its name, its detector before training (the same initialisation for every backbone at a
seed), its training set (a fixed number of steps over a nested prefix of the pool) and its trained detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from blindspots.errors import InputError

from .config import TransferConfig

__all__ = ["Repeated", "cell_name", "build_cell_detector", "load_cell_detector"]


class Repeated(torch.utils.data.Dataset):
    """`length` items cycling over a SimulatedBatch (item i is image i mod n): one 'epoch' of it is the whole
    fixed-step budget, each image visited equally often (within one) whatever the training-set size."""

    def __init__(self, batch: Any, n: int, length: int) -> None:
        self.batch, self.n, self.length = batch, n, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        j = int(i) % self.n
        return self.batch.images[j], self.batch.targets[j]


def cell_name(backbone: str, body: str, size: int, seed: int) -> str:
    return f"{backbone}-{body}-n{size}-s{seed}"


def _weights(kind: str, config: TransferConfig, proxy_file: str | None) -> str | None:
    if kind == "imagenet":
        if config.imagenet_weights:
            return f"imagenet:{config.imagenet_weights}"
        if config.arch == "efficientnet_lite0":
            return "imagenet"
        raise InputError(f"backbone imagenet for {config.arch} needs imagenet_weights (--imagenet-weights FILE); only "
                         "efficientnet_lite0 has offline ImageNet weights")
    if kind == "galaxy-proxy":
        return f"zoobot:{proxy_file}"
    if kind == "zoobot":
        return f"zoobot:{config.zoobot_weights}"
    return None


def build_cell_detector(kind: str, body: str, seed: int, config: TransferConfig, proxy_file: str | None,
                        device: Any = None):
    """The detector of one cell before training. The same seed gives every backbone the same FPN and head
    initialisation (the body's own init is drawn, then overwritten by its weights, the same way for each)."""
    from detectors.backbones import build_backbone
    from detectors.frcnn import PRESETS, build_detector

    preset = PRESETS[config.preset]
    weights = _weights(kind, config, proxy_file)
    torch.manual_seed(seed)
    try:
        bb = build_backbone(config.arch, weights, 0 if body == "frozen" else config.trainable,
                            fpn_channels=preset.fpn_channels)
    except (InputError, ValueError, OSError, RuntimeError) as exc:
        what = {"zoobot": f"zoobot weights {config.zoobot_weights}", "imagenet": "imagenet weights",
                "galaxy-proxy": f"galaxy-proxy encoder {proxy_file}"}.get(kind, kind)
        raise InputError(f"{what} cannot be the {config.arch} body: {str(exc).splitlines()[0]}") from None
    size = config.resize or config.image_size
    return build_detector(bb, 3, preset, min_size=size, max_size=size, device=device)


def load_cell_detector(cell, config: TransferConfig, out: Path, proxy_file, device):
    """A finished cell's trained detector (its final weights from train/<cell>/model.safetensors)."""
    from blindspots.models import load_weights

    det = build_cell_detector(cell[0], cell[1], cell[3], config, proxy_file, device)
    load_weights(det, out / "train" / cell_name(*cell) / "model.safetensors")
    return det.eval()
