"""Differentiable clump confidences wrapped as `blindspots.Classifier`, so `level_set_traversal` (and the attacks)
run unchanged against the detector and against its backbone.

* Backbone -> a clumpy / not-clumpy classifier: global average pool of the encoder's deepest map + a linear head
  (2 logits: not clumpy, clumpy), with the backbone's own input normalisation.
* Detector -> "is there a clump in this region": the detector's second stage scores every RPN proposal; with p_i the
  clump probability (softmax over background/clump/odd clump) of proposal i whose centre lies in the region, the
  confidence is the soft maximum  s = sum_i p_i w_i,  w = softmax(p / temperature)  (a weighted mean that tends to
  max_i p_i as temperature -> 0, always in [0, 1], and differentiable in the image through the backbone, the RoI
  features and the box head). The logits are [log(1 - s), log(s)], so class 1's softmax probability is exactly s.
  Proposals (RPN top-k + NMS) are piecewise constant in the image, as in any detector; gradients flow through the
  scores, not through which proposals were kept. Without proposals in the region the confidence is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Sequence

import torch
from torch import nn

from blindspots.models import Classifier, model_device, probing
from blindspots.errors import InputError

__all__ = ["as_classifier", "fit_head", "clumpy_labels", "BackboneClumpNet", "DetectorRegionScore"]

_HEADS = {"clump": (1,), "odd": (2,), "any": (1, 2)}


class BackboneClumpNet(nn.Module):
    """Encoder body -> global average pool of its deepest feature map -> `head` (default: linear, 2 logits)."""

    def __init__(self, body: nn.Module, channels: int, head: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.head = head if head is not None else nn.Linear(channels, 2)
        self.num_classes = getattr(self.head, "out_features", 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool of the deepest feature map: (N, C)."""
        return _deepest(self.body(x)).mean((-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _deepest(feats: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    """The last (deepest) map of an encoder's feature dict or list."""
    return list(feats.values())[-1] if isinstance(feats, Mapping) else feats[-1]


class DetectorRegionScore(nn.Module):
    """2 logits [log(1 - s), log(s)] per image, s the soft maximum of the clump scores of the proposals in a region.

    Args:
        detector: a torchvision two-stage detector (`transform`, `backbone`, `rpn`, `roi_heads`), e.g. from
            `detectors.build_detector`; images go in as [0, 1] (its transform normalises them).
        classes: which classes count as the score (1: clump, 2: odd clump; their probabilities are summed).
        region: (x0, y0, x1, y1) in input pixels, shared by every image; None: the whole image.
        temperature: of the soft maximum (smaller: closer to the max, sparser gradients).
    """

    def __init__(self, detector: nn.Module, classes: Sequence[int] = (1,), region: Sequence[float] | None = None,
                 temperature: float = 0.05, eps: float = 1e-6) -> None:
        super().__init__()
        if not temperature > 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        if region is not None:
            region = [float(v) for v in region]
            if len(region) != 4 or not (region[0] < region[2] and region[1] < region[3]):
                raise InputError(f"region must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {region}")
        self.detector = detector
        self.classes = list(classes)
        self.region = region
        self.temperature = float(temperature)
        self.eps = eps
        self.num_classes = 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        det = self.detector
        h, w = images.shape[-2:]
        image_list, _ = det.transform(list(images))
        features = det.backbone(image_list.tensors)
        proposals, _ = det.rpn(image_list, features)
        rh = det.roi_heads
        box_features = rh.box_head(rh.box_roi_pool(features, proposals, image_list.image_sizes))
        class_logits, _ = rh.box_predictor(box_features)
        probs = class_logits.softmax(-1)[:, self.classes].sum(-1)
        scores = []
        for p, boxes, (th, tw) in zip(probs.split([len(b) for b in proposals]), proposals, image_list.image_sizes):
            cx = (boxes[:, 0] + boxes[:, 2]) * (0.5 * w / tw)
            cy = (boxes[:, 1] + boxes[:, 3]) * (0.5 * h / th)
            if self.region is not None:
                x0, y0, x1, y1 = self.region
                inside = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
                p = p[inside]
            if p.numel() == 0:
                scores.append(probs.sum() * 0.0)  # no proposal in the region: confidence 0 (keeps the graph)
            else:
                scores.append((p * (p / self.temperature).softmax(0)).sum())
        s = torch.stack(scores).clamp(self.eps, 1 - self.eps)
        return torch.stack([torch.log1p(-s), torch.log(s)], 1)


def as_classifier(
    model: nn.Module,
    head: nn.Module | str | None = None,
    *,
    region: Sequence[float] | None = None,
    temperature: float = 0.05,
    name: str | None = None,
) -> Classifier:
    """Wrap a detector or a backbone as a 2-class `blindspots.Classifier` (class 1 = clump / clumpy).

    Args:
        model: a detector from `build_detector` (anything with `rpn` and `roi_heads`), or a backbone from
            `build_backbone` (anything with `body` and `body_channels`; a detector's `.backbone` works).
        head: for a detector, which score: "clump" (default), "odd" or "any"; for a backbone, the module mapping
            pooled features (N, C) to 2 logits (default: a fresh `nn.Linear(C, 2)` to be trained).
            Train a new head with `fit_head` (a linear probe on the frozen backbone).
        region: detector only: (x0, y0, x1, y1) in pixels where the clump is sought (default: the whole image).
        temperature: detector only: temperature of the soft maximum over proposals.

    The Classifier is returned in eval mode, which the detector needs (its training mode wants targets).
    """
    if hasattr(model, "rpn") and hasattr(model, "roi_heads"):
        key = head or "clump"
        if key not in _HEADS:
            raise InputError(f"for a detector, head must be one of {sorted(_HEADS)}, got {head!r}")
        net = DetectorRegionScore(model, _HEADS[key], region, temperature)
        clf = Classifier(net, class_names=["no " + ("clump" if key != "odd" else "odd clump"),
                                           "clump" if key != "odd" else "odd clump"],
                         name=name or f"detector:{key}")
    elif hasattr(model, "body"):
        if region is not None:
            raise InputError("region applies to a detector; a backbone classifier sees the whole image")
        if isinstance(head, str):
            raise TypeError("for a backbone, head must be an nn.Module (or None for a new linear head)")
        channels = getattr(model, "body_channels", None)
        if channels is None:
            with torch.no_grad():
                channels = _deepest(model.body(torch.zeros(1, 3, 64, 64, device=model_device(model)))).shape[1]
        net = BackboneClumpNet(model.body, int(channels), head)
        mean, std = getattr(model, "image_mean", None), getattr(model, "image_std", None)
        if mean is not None and all(m == 0 for m in mean) and all(s == 1 for s in std):
            mean = std = None  # Zoobot: [0, 1] inputs as they are
        clf = Classifier(net, mean, std, class_names=["not clumpy", "clumpy"],
                         name=name or f"backbone:{getattr(model, 'arch', type(model).__name__)}")
    else:
        raise TypeError(f"as_classifier needs a detector (with rpn and roi_heads) or a backbone (with body), got "
                        f"{type(model).__name__}")
    return clf.eval()


def clumpy_labels(targets: Sequence[Mapping], min_flux: float = 0.03) -> torch.Tensor:
    """1 for an image with at least one clump (label 1) of flux fraction >= `min_flux`, else 0 (Clump Scout's
    relaxed 3% limit by default): labels for a clumpy / not-clumpy head, from simulated or injected targets."""
    out = []
    for i, t in enumerate(targets):
        if "labels" not in t or "flux_fraction" not in t:
            raise InputError(f"targets[{i}] needs 'labels' and 'flux_fraction' (simulated or injected targets)")
        out.append(bool(((t["labels"] == 1) & (t["flux_fraction"] >= min_flux)).any()))
    return torch.tensor(out, dtype=torch.int64)


def fit_head(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 200,
             lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 64, seed: int = 0,
             progress: bool = True) -> list[float]:
    """Train the head of `as_classifier(backbone)` on the frozen backbone (a linear probe): the pooled features of
    `images` are computed once, then the head alone is fit by Adam on cross-entropy. The backbone is untouched, so
    LST then probes the blind spots of the backbone's own features. Returns the mean loss of every epoch.

    Args:
        classifier: from `as_classifier(backbone)` (its model is a `BackboneClumpNet`).
        images: (N, 3, H, W) in [0, 1]; labels: (N,) class indices of the head (e.g. `clumpy_labels(targets)`).
    """
    from tqdm.auto import tqdm

    from blindspots.validation import check_images, check_labels

    net = classifier.model if isinstance(classifier, Classifier) else None
    if not isinstance(net, BackboneClumpNet):
        raise TypeError("fit_head needs a classifier from as_classifier(backbone); a detector's score has no head")
    check_images(images, "images")
    labels = check_labels(labels, images.shape[0], net.num_classes)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive int, got {v!r}")
    device = model_device(classifier)
    with torch.no_grad(), probing(classifier):
        feats = []
        for i in range(0, images.shape[0], batch_size):
            feats.append(net.features(classifier.normalize(images[i:i + batch_size].to(device))))
        feats = torch.cat(feats)
    labels = labels.to(device)
    head = net.head
    head.train()
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in tqdm(range(epochs), disable=not progress, desc="fit head", unit="epoch"):
        order = torch.randperm(feats.shape[0], generator=gen).to(device)
        total = 0.0
        for i in range(0, feats.shape[0], batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / feats.shape[0])
    classifier.eval()
    return history
