"""Building a `Classifier` from a spec: `load_classifier`, the one entry point for models. A spec is a registered name
(`blindspots.registry`; the named models live in `blindspots.zoo`), a family and architecture (``timm:<name>``,
``torchvision:<name>``, ``zoobot:<arch>``) or a module. The names this module always exported (`Classifier`,
`probing`, the weight loaders, the ImageNet constants) stay importable from here.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .classifier import Classifier, OutputSelector, check_model_input, input_channels, model_device, probing
from .errors import DownloadUnavailable, InputError
from .registry import MODELS
from .weights import load_state_dict_file, load_torch_file, load_weights
from .zoo import IMAGENET_MEAN, IMAGENET_STD, imagenet_class_names, imagenet_lite0_state_dict, model_names

__all__ = [
    "Classifier",
    "load_classifier",
    "model_names",
    "create_timm_model",
    "load_state_dict_file",
    "load_torch_file",
    "load_weights",
    "probing",
    "model_device",
    "input_channels",
    "check_model_input",
    "imagenet_class_names",
    "imagenet_lite0_state_dict",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


def create_timm_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """`timm.create_model` with clear errors: an unknown name, or pretrained weights that cannot be downloaded.

    Offline, pretrained weights that are not cached fail at once (not after a minute of hub retries): the hub's
    host (or the weights' URL host) is probed with one TCP connection and a 3 s timeout, and HF_HUB_OFFLINE=1 is
    honoured, before timm tries to download.
    """
    import timm

    if pretrained:
        from .validation import timm_download_blocked

        reason = timm_download_blocked(name)
        if reason:
            raise DownloadUnavailable(f"cannot get pretrained weights for timm:{name}: {reason}; download them elsewhere "
                               "and pass weights=PATH to a local .safetensors/.pth file")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise InputError(f"timm has no model {name!r} (see timm.list_models())") from exc
        raise
    except OSError as exc:  # huggingface_hub / urllib errors when offline
        raise DownloadUnavailable(f"could not download pretrained weights for {name} (offline?); download them elsewhere "
                           f"and pass weights=PATH to a local .safetensors/.pth file: {exc}") from exc


def _timm(arch: str, weights, pretrained: bool, num_classes: int | None) -> Classifier:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = create_timm_model(arch, pretrained=pretrained and weights is None, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    n = model.num_classes
    names = imagenet_class_names() if n == 1000 else None
    return Classifier(model, mean, std, class_names=names, name=f"timm:{arch}")


def _torchvision(arch: str, weights, pretrained: bool, num_classes: int | None) -> Classifier:
    import torchvision

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained and weights is None else None,
                                             **kwargs)
    except ValueError as exc:
        raise InputError(f"torchvision has no model {arch!r} (see torchvision.models.list_models())") from exc
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise DownloadUnavailable(f"could not download pretrained weights for torchvision:{arch} (offline?); pass "
                           f"weights=PATH to a local .pth/.safetensors file instead: {exc}") from exc
    if weights is not None:
        load_weights(model, weights)
    n = num_classes or 1000
    names = imagenet_class_names() if n == 1000 else None
    return Classifier(model, IMAGENET_MEAN, IMAGENET_STD, class_names=names, name=f"torchvision:{arch}")


class ZoobotClassifier(nn.Sequential):
    """A Zoobot encoder (timm model without head, pooled features) followed by a linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)
        self.num_classes = num_classes


def _zoobot(arch: str, weights, pretrained: bool, num_classes: int | None) -> Classifier:
    """Zoobot encoder (`hf_hub:mwalmsley/zoobot-encoder-<arch>`) + linear head; inputs [0, 1], no mean/std."""
    if weights is None and not pretrained:
        raise InputError(f"zoobot:{arch} needs weights=PATH (a local copy of hf_hub:mwalmsley/zoobot-encoder-{arch},"
                         " .safetensors or .bin/.pth) or pretrained=True when online")
    if weights is None:
        encoder = create_timm_model(f"hf_hub:mwalmsley/zoobot-encoder-{arch}", pretrained=True, num_classes=0)
    else:
        encoder = create_timm_model(arch, num_classes=0)
    if weights is not None:
        # Zoobot files hold the encoder only; tolerate a head in the file (fine-tuned checkpoints) but nothing else.
        head = getattr(encoder, "pretrained_cfg", {}).get("classifier", "head")
        load_weights(encoder, weights, allow_unexpected=(f"{head}.", "head.", "fc.", "classifier."))
    model = ZoobotClassifier(encoder, num_classes or 2)
    return Classifier(model, None, None, name=f"zoobot:{arch}")


_FAMILIES: dict[str, Callable[..., Classifier]] = {"timm": _timm, "torchvision": _torchvision, "zoobot": _zoobot}


def load_classifier(
    spec: str | nn.Module | Classifier,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    output: OutputSelector = None,
) -> Classifier:
    """Build a `Classifier` from a spec: the one entry point for models.

    Specs: a registered name (`model_names()`, e.g. ``"imagenet-lite0"``, the default: timm efficientnet_lite0 with
    offline ImageNet weights; see `blindspots.zoo`), ``"timm:<name>"``, ``"torchvision:<name>"``, ``"zoobot:<arch>"`` (a Zoobot encoder from a local file), or an
    ``nn.Module`` used as is (give its `mean`/`std` if it expects normalised inputs).

    `weights` is a local `.safetensors`/`.pth` file (loaded without unpickling code; for a module or Classifier
    spec, into its module); `pretrained=True` uses the library's own download, which fails with a clear error when
    offline. A timm/torchvision spec with neither has random weights, and says so in a warning. `mean`/`std`
    override the normalisation (of a Classifier spec too). `device` must exist on this machine.
    """
    if device is not None:
        from .validation import check_device

        device = check_device(device)
    if isinstance(spec, nn.Module) and num_classes is not None:
        raise InputError("num_classes applies to named specs only; a module keeps its own head")
    if isinstance(spec, Classifier):
        clf = spec
        if weights is not None:
            load_weights(clf.model, weights)
        if mean is not None or std is not None:
            clf = Classifier(clf.model, mean, std, output=output if output is not None else clf.output,
                             class_names=clf.class_names, name=clf.name, input_size=clf.input_size)
    elif isinstance(spec, nn.Module):
        if weights is not None:
            load_weights(spec, weights)
        clf = Classifier(spec, mean, std, output=output)
    elif not isinstance(spec, str):
        raise TypeError(f"spec must be a string or an nn.Module, got {type(spec).__name__}")
    elif spec in MODELS:
        clf = MODELS[spec].load(weights, num_classes)
    else:
        kind, _, arch = spec.partition(":")
        if kind not in _FAMILIES or not arch:
            raise InputError(f"unknown model spec {spec!r}: use a registered name ({', '.join(MODELS)}), "
                             "'timm:<name>', 'torchvision:<name>', 'zoobot:<arch>' or pass an nn.Module")
        clf = _FAMILIES[kind](arch, weights, pretrained, num_classes)
        if kind in ("timm", "torchvision") and weights is None and not pretrained:
            warnings.warn(f"{spec} has random weights (no --weights FILE / weights= given, and pretrained=False): "
                          "its answers say nothing about a trained model", stacklevel=2)
    if isinstance(spec, str) and (mean is not None or std is not None):
        clf = Classifier(clf.model, mean, std, output=output, class_names=clf.class_names, name=clf.name,
                         input_size=clf.input_size, num_classes=clf._num_classes)
    elif output is not None and clf.output is None:
        clf.output = output
    clf.eval()
    if device is not None:
        clf.to(device)
    return clf
