"""What a Level Set Traversal returns: `LSTResult` (per-sample outcome, flags, save/load) and its `Trajectory`."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..errors import InputError
from .config import LSTConfig

__all__ = ["LSTResult", "Trajectory"]


@dataclass
class Trajectory:
    """Quantities logged every `log_every` iterations, each of shape (L, N) (snapshots: (L, N, C, H, W)).

    A sample that stopped early keeps its final values in later rows.
    """

    steps: torch.Tensor
    source_confidence: torch.Tensor
    target_confidence: torch.Tensor
    rms_to_target: torch.Tensor
    linf_to_target: torch.Tensor
    rms_to_source: torch.Tensor
    accepted: torch.Tensor
    snapshots: torch.Tensor | None = None


@dataclass
class LSTResult:
    """Per-sample outcome of a traversal; every tensor has the batch as its first dimension (on CPU).

    Two flags say an output means nothing about the source's level set (`flagged` is their union; leave such
    samples out of any figure that depends on the threshold): `unconstrained` (the source starts at or below the
    threshold) and `start_outside` (the noisy start already broke the acceptance rule: kept, as the published code
    keeps it, the traversal began outside the source's level set, and its output may lie past the threshold;
    `LSTConfig(start="redraw")` avoids it).
    """

    images: torch.Tensor
    labels: torch.Tensor
    initial_confidence: torch.Tensor
    final_confidence: torch.Tensor
    acceptance_rate: torch.Tensor
    iterations: torch.Tensor
    rms_l2: torch.Tensor
    linf: torch.Tensor
    ssim: torch.Tensor | None
    misclassified: torch.Tensor
    seeds: torch.Tensor
    start_rms_l2: torch.Tensor
    config: LSTConfig
    trajectory: Trajectory | None = None
    model_passes: torch.Tensor | None = None  # samples of this pair through the model (forwards, with or without
    #                                           a backward): its cost in model passes
    start_confidence: torch.Tensor | None = None  # p_y at the (noisy) start the traversal began from
    start_outside: torch.Tensor | None = None  # (N,) bool: that start already broke the acceptance rule, see below

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def unconstrained(self) -> torch.Tensor:
        """(N,) bool: sources whose confidence starts at or below the threshold. For them p0 - p < threshold holds
        for every p, so no step can be rejected and the output says nothing about the source's level set."""
        return self.initial_confidence <= self.config.threshold

    @property
    def flagged(self) -> torch.Tensor:
        """(N,) bool: outputs that say nothing about the source's level set, to be left out of any figure that
        depends on the threshold: `unconstrained` sources, and `start_outside` ones (the noisy start already broke
        the acceptance rule p0 - p < threshold: the traversal began outside the level set; see `LSTConfig.start`)."""
        outside = self.start_outside if self.start_outside is not None else torch.zeros_like(self.unconstrained)
        return self.unconstrained | outside.bool()

    def validate(self, n: int | None = None, image_shape: Sequence[int] | None = None) -> "LSTResult":
        """Check shapes, ranges and finiteness (a result read from disk); `n` samples of `image_shape` (C, H, W)
        when given. Raises one line naming the first problem; returns self."""
        from ..validation import check_images

        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            raise InputError(f"LST result images must be (N, C, H, W), got {getattr(self.images, 'shape', None)}")
        if n is not None and self.images.shape[0] != n:
            raise InputError(f"LST result holds {self.images.shape[0]} samples, expected {n}")
        if image_shape is not None and tuple(self.images.shape[1:]) != tuple(image_shape):
            raise InputError(f"LST result images are {tuple(self.images.shape[1:])}, expected {tuple(image_shape)}")
        check_images(self.images, "LST result images")
        m = self.images.shape[0]
        for name in ("labels", "initial_confidence", "final_confidence", "acceptance_rate", "iterations", "rms_l2",
                     "linf", "misclassified", "seeds", "start_rms_l2", "ssim", "model_passes", "start_confidence",
                     "start_outside"):
            v = getattr(self, name)
            if v is None and name in ("ssim", "model_passes", "start_confidence", "start_outside"):
                continue
            if not isinstance(v, torch.Tensor) or v.shape != (m,):
                raise InputError(f"LST result field {name} must hold one value per sample ({m},), got "
                                 f"{getattr(v, 'shape', type(v).__name__)}")
            if v.is_floating_point() and name != "ssim" and not bool(torch.isfinite(v).all()):
                raise InputError(f"LST result field {name} holds NaN or infinite values")
        for name in ("initial_confidence", "final_confidence", "acceptance_rate", "start_confidence"):
            v = getattr(self, name)
            if v is not None and not bool(((v >= 0) & (v <= 1)).all()):
                raise InputError(f"LST result field {name} must lie in [0, 1]")
        if not isinstance(self.config, LSTConfig):
            raise InputError(f"LST result config must be an LSTConfig, got {type(self.config).__name__}")
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as plain tensors and numbers (readable with `weights_only=True`, no pickled code)."""
        state = {k: getattr(self, k) for k in _RESULT_TENSORS}
        state["config"] = self.config.to_dict()
        if self.trajectory is not None:
            state["trajectory"] = {k: v for k, v in asdict(self.trajectory).items() if v is not None}
        torch.save(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LSTResult":
        """Read a result written by `save`, without executing pickled code; a missing, truncated or foreign file,
        or one whose contents do not make a result (shapes, ranges, finiteness), is refused naming it."""
        from ..weights import load_torch_file

        state = load_torch_file(path, "LST result file")
        try:
            if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
                raise InputError("it holds no LST config")
            trajectory = Trajectory(**state["trajectory"]) if "trajectory" in state else None
            result = cls(**{k: state.get(k) for k in _RESULT_TENSORS}, config=LSTConfig(**state["config"]),
                         trajectory=trajectory)
            return result.validate()
        except (InputError, TypeError, KeyError) as exc:
            raise InputError(f"{path} is not an LST result written by LSTResult.save ({exc})") from None

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per sample (JSON/CSV ready)."""
        out = []
        for i in range(len(self)):
            row = {
                "index": i,
                "label": int(self.labels[i]),
                "seed": int(self.seeds[i]),
                "misclassified": bool(self.misclassified[i]),
                "initial_confidence": float(self.initial_confidence[i]),
                "unconstrained": bool(self.unconstrained[i]),
                "start_outside": bool(self.start_outside[i]) if self.start_outside is not None else False,
                "final_confidence": float(self.final_confidence[i]),
                "acceptance_rate": float(self.acceptance_rate[i]),
                "iterations": int(self.iterations[i]),
                "start_rms_l2": float(self.start_rms_l2[i]),
                "rms_l2": float(self.rms_l2[i]),
                "linf": float(self.linf[i]),
            }
            if self.ssim is not None:
                row["ssim"] = float(self.ssim[i])
            if self.model_passes is not None:
                row["model_passes"] = int(self.model_passes[i])
            if self.start_confidence is not None:
                row["start_confidence"] = float(self.start_confidence[i])
            out.append(row)
        return out


_RESULT_TENSORS = ("images", "labels", "initial_confidence", "final_confidence", "acceptance_rate", "iterations",
                   "rms_l2", "linf", "ssim", "misclassified", "seeds", "start_rms_l2", "model_passes",
                   "start_confidence", "start_outside")
