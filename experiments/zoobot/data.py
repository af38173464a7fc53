"""The study's data: simulated SDSS-like galaxies (`detectors.simulate`) for the clumpy / not-clumpy task and for the
proxy's pretraining (their simulated morphology), real cutouts, and the pairs LST walks along."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from blindspots.store import temporary_path
from experiments.galaxy_proxy.encoder import MORPHOLOGY, pretraining_set, sim_config  # noqa: F401 (re-exported)
from blindspots.errors import InputError

__all__ = ["MAX_CLUMP_FLUX", "MORPHOLOGY", "sim_config", "simulated_set", "pretraining_set", "cached",
           "default_real", "real_targets", "sim_targets"]

MAX_CLUMP_FLUX = 0.08  # the simulator's default upper clump flux (fraction of the host's r-band flux)


def simulated_set(n: int, size: int, seed: int, *, fov: float = 42.0, min_clump_flux: float = 0.03
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """n simulated galaxies for the clumpy task, classes interleaved: half with no clumps (label 0), half with 2-8
    clumps of `min_clump_flux`-8% of the host's flux each (label 1). Images (N, 3, size, size) in [0, 1], labels."""
    from detectors.simulate import simulate

    if not 0 < min_clump_flux <= MAX_CLUMP_FLUX:
        raise InputError(f"min_clump_flux must be in (0, {MAX_CLUMP_FLUX}], got {min_clump_flux}")
    cfg = sim_config(size, fov)
    half = n // 2
    parts = [simulate(half, cfg.replace(n_clumps=(0, 0)), seed=seed),
             simulate(n - half, cfg.replace(n_clumps=(2, 8), clump_flux=(min_clump_flux, MAX_CLUMP_FLUX)),
                      seed=seed + 1)]
    images = torch.cat([p.images for p in parts]).clamp(0, 1)
    labels = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(n - half, dtype=torch.long)])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return images[order].contiguous(), labels[order]


def cached(path: Path, make: Callable[[], dict[str, torch.Tensor]], is_main: bool = True,
           barrier: Callable[[], None] = lambda: None) -> dict[str, torch.Tensor]:
    """Tensors from `path` (safetensors), made by the main process with `make` and saved atomically the first time.
    The folder's RunStore key pins the settings that made them."""
    from safetensors.torch import load_file, save_file

    if is_main and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
        save_file({k: v.contiguous() for k, v in make().items()}, str(tmp))
        os.replace(tmp, path)
    barrier()
    return load_file(str(path))


def default_real() -> Path:
    """../shared/data/galaxies beside the repository."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "galaxies"


def sim_targets(labels: torch.Tensor, rounds: int, seed: int) -> torch.Tensor:
    """(rounds, N) target positions: each simulated source to a galaxy of the other (true) class."""
    from blindspots import derangement_pairs

    return derangement_pairs(labels, rounds, seed)


def real_targets(consensus: torch.Tensor, rounds: int, seed: int) -> torch.Tensor:
    """(rounds, N) target positions for the real cutouts: every source to a cutout of another *predicted* class
    (`consensus`: the majority prediction over every backbone and seed) where one exists, else to another cutout;
    the targets of a source differ between rounds where the pool allows."""
    lab = torch.as_tensor(consensus).long().numpy()
    n = lab.size
    if n < 2:
        raise InputError("real pairs need at least 2 cutouts")
    rng = np.random.default_rng([int(seed), 7])
    out = np.empty((rounds, n), dtype=np.int64)
    for i in range(n):
        other = [j for j in range(n) if lab[j] != lab[i]]
        same = [j for j in range(n) if j != i and lab[j] == lab[i]]
        order = list(rng.permutation(other)) + list(rng.permutation(same))  # other class first
        for r in range(rounds):
            out[r, i] = order[r % len(order)] if r < len(other) or not other else other[r % len(other)]
    return torch.from_numpy(out)
