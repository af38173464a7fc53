"""The toolkit's first interval helpers, kept importable: `wilson_interval` now lives in `blindspots.verdicts`;
`bootstrap_interval` is the plain percentile bootstrap over samples, which under-covers at small n and treats
dependent samples as independent: decisions use `blindspots.verdicts.unit_interval` instead."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import InputError
from .verdicts import wilson_interval

__all__ = ["wilson_interval", "bootstrap_interval"]


def bootstrap_interval(values, statistic: Callable[[np.ndarray], float] = np.mean, *, level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over the samples in `values` (1-D; NaNs are refused)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return float("nan"), float("nan")
    if not np.all(np.isfinite(v)):
        raise InputError("bootstrap_interval: values hold NaN or inf; count such samples apart before the interval")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(resamples, v.size))
    stats = np.array([statistic(v[i]) for i in idx])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
