"""SDSS-like clumpy galaxies with exact clump boxes: the training and test data of the clump detectors.

Each image is an exponential disk plus an optional Sersic bulge (random inclination and position angle), 0-8 blue
Gaussian clumps at 0.3-1.5 disk effective radii, each a chosen fraction of the host's r-band flux, and optional
foreground stars (the "odd clump" class). The g, r and i bands are modelled in nanomaggies, convolved with a Moffat
PSF (r-band FWHM about 1.43 arcsec at 0.396 arcsec/pixel), given sky and source Poisson noise, and mapped to RGB in
[0, 1] by a Lupton asinh stretch of (i, r, g) -> (R, G, B).

Image `i` of `simulate(n, config, seed)` depends only on `(seed, i)` (its own random stream), so a data set can be
regenerated, extended or sharded: `SimulatedClumps(n, config, seed)[i]` is the same image.

Boxes are squares of 2-3 r-band PSF FWHM centred on each source, in torchvision detection convention: float xyxy
pixel coordinates with (0, 0) at the top-left corner of the image (pixel j spans [j, j + 1)).

The galaxy model (settings, parameters, sampling) is in `detectors.galaxy`, the rendering in `detectors.render`,
injection of simulated clumps into real cutouts in `detectors.inject`; this module holds the data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


from .galaxy import (CLASS_NAMES, CLUMP, ODD_CLUMP, _STREAM_SIMULATE, GalaxyParams, SimConfig, _check_seed, _rng, sample_params)
from .render import (_add_noise, inverse_lupton, lupton_rgb, render_flux)
from blindspots.errors import InputError

__all__ = ["SimConfig", "GalaxyParams", "SimulatedBatch", "SimulatedClumps", "simulate", "simulate_one", "make_target",
           "sample_params", "render_flux", "lupton_rgb", "inverse_lupton", "simulator_fingerprint", "CLUMP",
           "ODD_CLUMP", "CLASS_NAMES"]


@dataclass
class SimulatedBatch:
    """Images (N, 3, H, W) float in [0, 1]; `targets[i]` has "boxes" (K, 4) float32 xyxy pixels, "labels" (K,)
    int64 (1 clump, 2 odd clump / star) and "flux_fraction" (K,) float32; `params[i]` the drawn parameters."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    params: list[GalaxyParams]
    config: SimConfig
    seed: int

    def __len__(self) -> int:
        return int(self.images.shape[0])



# --------------------------------------------------------------------------------------------------- public API


def make_target(params: GalaxyParams, size: int | tuple[int, int]) -> dict[str, torch.Tensor]:
    """torchvision-style target of the sources in `params`: square boxes of side `params.box` centred on each
    source, clipped to an image of `size` (H, W or one int)."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    half = params.box / 2
    boxes = np.stack([params.x - half, params.y - half, params.x + half, params.y + half], axis=-1).reshape(-1, 4)
    boxes = np.clip(boxes, 0.0, [w, h, w, h])
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32),
        "labels": torch.as_tensor(params.label, dtype=torch.int64),
        "flux_fraction": torch.as_tensor(params.flux_fraction, dtype=torch.float32),
    }


def _simulate_array(index: int, config: SimConfig, seed: int) -> tuple[np.ndarray, GalaxyParams]:
    rng = _rng(seed, index, _STREAM_SIMULATE)
    params = sample_params(rng, config)
    flux = _add_noise(render_flux(params, config), config, rng)
    return lupton_rgb(flux, config), params


def simulate_one(index: int, config: SimConfig = SimConfig(), seed: int = 0
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], GalaxyParams]:
    """Image `index` of the data set `(config, seed)`: (3, H, W) float32 RGB in [0, 1], its target, its params."""
    if not isinstance(config, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
    image, params = _simulate_array(_check_seed(index, "index"), config, _check_seed(seed))
    return torch.from_numpy(image.astype(np.float32)), make_target(params, config.image_size), params


def simulate(n: int, config: SimConfig = SimConfig(), seed: int = 0, *, start: int = 0,
             progress: bool = False) -> SimulatedBatch:
    """Images `start .. start + n - 1` of the data set `(config, seed)` as a `SimulatedBatch`."""
    if not isinstance(config, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer (number of images), got {n!r}")
    seed = _check_seed(seed)
    start = _check_seed(start, "start")
    from tqdm.auto import tqdm

    images = np.empty((n, 3, config.image_size, config.image_size), dtype=np.float32)  # numpy: one thread
    targets, params = [], []
    for j in tqdm(range(n), disable=not progress, desc="simulate"):
        images[j], p = _simulate_array(start + j, config, seed)
        targets.append(make_target(p, config.image_size))
        params.append(p)
    return SimulatedBatch(torch.from_numpy(images), targets, params, config, seed)


def simulator_fingerprint() -> str:
    """sha256 (first 16 hex digits) of a few small simulated images and their targets in a fixed setting that
    exercises every part of the simulator (host, clumps, stars, PSF, noise, stretch). Work made from simulated images
    (a pretrained encoder, a study's training sets) keys on it: a change in what the simulator draws is then never
    taken for the same data; images are rounded to 1e-6 so that the last bit of a float sum does not count."""
    import hashlib

    batch = simulate(4, SimConfig(image_size=32, n_clumps=(2, 4), star_rate=2.0), seed=0)
    h = hashlib.sha256(np.round(batch.images.numpy().astype(np.float64), 6).tobytes())
    for t in batch.targets:
        h.update(np.round(t["boxes"].numpy().astype(np.float64), 4).tobytes() + t["labels"].numpy().tobytes())
    return h.hexdigest()[:16]


class SimulatedClumps(torch.utils.data.Dataset):
    """A map-style dataset of `n` simulated images: item i is `(image (3, H, W), target)`, generated on demand and
    depending only on `(seed, i)`, so workers and shards agree. Use `detectors.data.collate` in a DataLoader."""

    def __init__(self, n: int, config: SimConfig = SimConfig(), seed: int = 0) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n must be a positive integer (number of images), got {n!r}")
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
        self.n = int(n)
        self.config = config
        self.seed = _check_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} simulated images")
        image, target, _ = simulate_one(index % self.n, self.config, self.seed)
        return image, target


