"""The starting points of one architecture and their clumpy / not-clumpy fine-tuning. The starting points, the
training loop, the galaxy-proxy encoder and its linear probe live in `experiments.galaxy_proxy.encoder` (shared with
the transfer study) and are re-exported here."""

from __future__ import annotations

import torch
from torch import nn

from blindspots import Classifier
from experiments.galaxy_proxy.encoder import (PROXY_NORMALISATION, build_backbone, encoder_features,  # noqa: F401
                                              linear_probe, pretrain_encoder, save_encoder, train)

__all__ = ["BACKBONES", "build_backbone", "fine_tune", "pretrain_encoder", "save_encoder", "encoder_features",
           "linear_probe"]

BACKBONES = {
    "imagenet": "ImageNet weights",
    "zoobot": "Zoobot encoder (local file)",
    "galaxy-proxy": "galaxy-proxy: trained here on simulated galaxy morphology (a proxy for Zoobot, not Zoobot)",
    "random": "random init",
}


def fine_tune(clf: Classifier, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch: int, lr: float,
              seed: int, device: torch.device, progress: bool = False) -> list[float]:
    """Clumpy / not-clumpy fine-tuning of the whole network (cross-entropy); the new head is initialised from
    `seed` too, so a seed fixes the whole fine-tuning run."""
    torch.manual_seed(seed)
    head = _head(clf.model)
    if head is not None:
        head.reset_parameters()
    return train(clf, images, labels, nn.functional.cross_entropy, epochs=epochs, batch=batch, lr=lr, seed=seed,
                 device=device, progress=progress, desc=f"fine-tune {clf.name}")


def _head(model: nn.Module) -> nn.Linear | None:
    if hasattr(model, "head") and isinstance(model.head, nn.Linear):
        return model.head
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Linear) else None
