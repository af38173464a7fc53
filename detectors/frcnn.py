"""Faster R-CNN for clumps: 3 classes (background, clump, odd clump), two presets, class-agnostic NMS at inference.

``preset="paper"`` is Popp et al. (2024): torchvision's Faster R-CNN defaults (resize to 800-1333 px, anchors 32-512,
2000/1000 proposals), Adam lr 1e-4, weight decay 5e-5, random horizontal and vertical flips, class-agnostic NMS at
IoU 0.2 and score threshold 0.3 on a ResNet-50 FPN. ``preset="cpu"`` keeps the inference rules and optimiser but
runs at the image's own size (128 px, no resize), with anchors matched to ~7-11 px clumps, a 64-channel FPN, a
256-d box head and a few hundred proposals, so a small backbone trains in minutes on 2 CPU cores; its Adam step is
3e-4 with 100 warm-up steps and cosine decay to 0 over the run (choices for short CPU budgets, not from the paper:
with a constant 3e-4, 1,100 and 2,350 steps both gave purity 0.75 at the paper's threshold and AP50 0.88-0.90;
2,000 steps with the decay gave 0.78 and 0.93).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, nms

from blindspots.models import model_device

from .backbones import build_backbone
from blindspots.errors import InputError

__all__ = ["DetectorPreset", "PRESETS", "ClumpDetector", "build_detector", "detect", "agnostic_nms", "CLASS_NAMES"]

CLASS_NAMES = ("background", "clump", "odd clump")


@dataclass(frozen=True)
class DetectorPreset:
    """Every setting of a detector and of its training, in one place (see `PRESETS`)."""

    backbone: str = "resnet50"
    fpn_channels: int = 256
    min_size: int = 800
    max_size: int = 1333
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    representation_size: int = 1024
    box_detections_per_img: int = 100
    score_threshold: float = 0.3
    nms_iou: float = 0.2  # per class (torchvision) and then across classes (agnostic_nms_iou)
    agnostic_nms_iou: float | None = 0.2
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine" (see detectors.train.lr_factor)
    warmup_steps: int = 0
    weight_decay: float = 5e-5
    hflip: bool = True
    vflip: bool = True

    def replace(self, **changes: Any) -> "DetectorPreset":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, DetectorPreset] = {
    "paper": DetectorPreset(),
    "cpu": DetectorPreset(
        backbone="imagenet-lite0", fpn_channels=64, min_size=128, max_size=128,
        anchor_sizes=((8, 12), (16, 24), (32, 48), (64, 96), (128, 192)), aspect_ratios=(1.0,),
        rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_train=300,
        rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=128,
        representation_size=256, box_detections_per_img=50, lr=3e-4, lr_schedule="cosine",
        warmup_steps=100),
}


class ClumpDetector(FasterRCNN):
    """torchvision `FasterRCNN` whose eval-mode detections also go through class-agnostic NMS.

    torchvision's post-processing runs NMS per class, so a clump and an "odd clump" box on the same source both
    survive; the paper suppresses across classes (IoU 0.2), which `forward` does here as a final step.
    Attributes `preset` (the `DetectorPreset`) and `class_names` describe it; `backbone.image_mean/std` hold the
    input normalisation used by `transform`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, preset: DetectorPreset, **kwargs: Any) -> None:
        super().__init__(backbone, num_classes=None, **kwargs)
        self.preset = preset
        self.agnostic_nms_iou = preset.agnostic_nms_iou
        self.num_classes = num_classes
        self.class_names = list(CLASS_NAMES[:num_classes]) if num_classes <= len(CLASS_NAMES) else None

    def forward(self, images, targets=None):  # noqa: D401 - same contract as FasterRCNN.forward
        out = super().forward(images, targets)
        if self.training or self.agnostic_nms_iou is None or not isinstance(out, list):
            return out
        return [agnostic_nms(d, self.agnostic_nms_iou) for d in out]


def agnostic_nms(detections: dict[str, torch.Tensor], iou: float) -> dict[str, torch.Tensor]:
    """Keep the highest-scoring box among any overlapping (IoU > `iou`) boxes, whatever their classes."""
    keep = nms(detections["boxes"], detections["scores"], iou)
    return {k: v[keep] if isinstance(v, torch.Tensor) and v.shape[:1] == detections["scores"].shape[:1] else v
            for k, v in detections.items()}


def build_detector(
    backbone: nn.Module | str | None = None,
    num_classes: int = 3,
    preset: str | DetectorPreset = "paper",
    *,
    weights: str | None = None,
    trainable_layers: int | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> ClumpDetector:
    """Build the clump detector.

    Args:
        backbone: a module from `build_backbone` (anything with `out_channels`, and ideally `image_mean`/`image_std`),
            or an architecture name for `build_backbone` (default: the preset's, "resnet50" for the paper,
            "imagenet-lite0" for cpu).
        num_classes: including background (3: background, clump, odd clump).
        preset: "paper", "cpu" or a `DetectorPreset`; keyword `overrides` replace any of its fields
            (e.g. ``min_size=200``, ``score_threshold=0.05``).
        weights, trainable_layers: passed to `build_backbone` when `backbone` is a name.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if not isinstance(preset, DetectorPreset):
        raise TypeError(f"preset must be a name or a DetectorPreset, got {type(preset).__name__}")
    if not (backbone is None or isinstance(backbone, (str, nn.Module))):
        raise TypeError(f"backbone must be a name or a module from build_backbone, got {type(backbone).__name__}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DetectorPreset)}
    if unknown:
        raise TypeError(f"unknown detector settings {sorted(unknown)}; see detectors.DetectorPreset")
    if isinstance(backbone, str) or backbone is None:
        overrides.setdefault("backbone", backbone or preset.backbone)
    else:  # record what was actually used
        overrides.setdefault("backbone", str(getattr(backbone, "arch", type(backbone).__name__)))
    preset = preset.replace(**overrides)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an int >= 2 (background + at least one class), got {num_classes!r}")
    if not isinstance(backbone, nn.Module):
        backbone = build_backbone(preset.backbone, weights, trainable_layers, fpn_channels=preset.fpn_channels)
    elif weights is not None or trainable_layers is not None:
        raise InputError("weights/trainable_layers apply only when the backbone is given by name")
    if not isinstance(getattr(backbone, "out_channels", None), int):
        raise TypeError("backbone must be an nn.Module with an int `out_channels` (see detectors.build_backbone)")
    n_levels = len(preset.anchor_sizes)
    anchors = AnchorGenerator(preset.anchor_sizes, (preset.aspect_ratios,) * n_levels)
    # RoI pooling over the FPN levels (not the P6 'pool' level), as torchvision does
    names = [str(i) for i in range(n_levels - 1)]
    roi_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    c = backbone.out_channels
    box_head = TwoMLPHead(c * 7 * 7, preset.representation_size)
    model = ClumpDetector(
        backbone, num_classes, preset,
        min_size=preset.min_size, max_size=preset.max_size,
        image_mean=list(getattr(backbone, "image_mean", (0.485, 0.456, 0.406))),
        image_std=list(getattr(backbone, "image_std", (0.229, 0.224, 0.225))),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=preset.rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=preset.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=preset.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=preset.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=preset.rpn_batch_size_per_image,
        box_roi_pool=roi_pool, box_head=box_head,
        box_predictor=FastRCNNPredictor(preset.representation_size, num_classes),
        box_score_thresh=preset.score_threshold, box_nms_thresh=preset.nms_iou,
        box_detections_per_img=preset.box_detections_per_img,
        box_batch_size_per_image=preset.box_batch_size_per_image,
    )
    if device is not None:
        model.to(device)
    return model


@torch.no_grad()
def detect(detector: nn.Module, images: torch.Tensor, batch_size: int = 16,
           device: str | torch.device | None = None, score_floor: float | None = None
           ) -> list[dict[str, torch.Tensor]]:
    """Run the detector in eval mode on float (N, 3, H, W) images in [0, 1]; one dict of "boxes", "scores",
    "labels" per image, on CPU. The detector's training mode is restored afterwards.

    `score_floor` replaces the detector's own score cut for this call (0.0: every scored box, as the average
    precision needs); the figures at an operating point then filter by their own threshold."""
    from blindspots.validation import check_images

    check_images(images, "images")
    device = torch.device(device) if device is not None else model_device(detector)
    was_training = detector.training
    heads = getattr(detector, "roi_heads", None)
    kept_floor = getattr(heads, "score_thresh", None)
    if score_floor is not None:
        if heads is None:
            raise InputError("score_floor needs a torchvision detector (with roi_heads)")
        heads.score_thresh = float(score_floor)
    detector.eval()
    try:
        out = []
        for i in range(0, images.shape[0], batch_size):
            batch = [im.to(device) for im in images[i:i + batch_size]]
            out += [{k: v.cpu() for k, v in d.items()} for d in detector(batch)]
    finally:
        detector.train(was_training)
        if score_floor is not None:
            heads.score_thresh = kept_floor
    return out
