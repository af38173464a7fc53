"""The model convention: every probe sees a `Classifier` taking float NCHW images in [0, 1] and returning logits (N, C).

Normalisation (per-channel mean/std) lives inside the `Classifier`, so all geometry (LST steps, attack budgets,
distances) is measured in [0, 1] pixel space whatever the model expects. Building one from a name or spec is
`blindspots.models.load_classifier`; the named models are in the registry (`blindspots.registry`, `blindspots.zoo`).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import InputError

__all__ = ["Classifier", "OutputSelector", "probing", "model_device", "input_channels", "check_model_input"]

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
        num_classes: the number of logits the model must return (a registered model's); a network that returns
            another number is refused at its first forward instead of answering for classes it does not have.
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
        num_classes: int | None = None,
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
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
        self._num_classes = num_classes
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
        if self._num_classes is not None:
            return self._num_classes
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
        if self._num_classes is not None and out.shape[1] != self._num_classes:
            raise InputError(f"{self.name} has {self._num_classes} classes but its network returns {out.shape[1]} "
                             "logits")
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
