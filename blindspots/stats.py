"""Interval estimates used across the toolkit, in one place: Wilson intervals for proportions and percentile
bootstrap intervals over samples (sources, pairs)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import norm

__all__ = ["wilson_interval", "bootstrap_interval"]


def wilson_interval(k, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of the proportion k/n at confidence `level` (elementwise; NaN where n == 0)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    z = float(norm.ppf(0.5 + level / 2))
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def bootstrap_interval(values, statistic: Callable[[np.ndarray], float] = np.mean, *, level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over the samples in `values` (1-D; NaNs are refused)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return float("nan"), float("nan")
    if not np.all(np.isfinite(v)):
        raise ValueError("bootstrap_interval: values hold NaN or inf; count such samples apart before the interval")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(resamples, v.size))
    stats = np.array([statistic(v[i]) for i in idx])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
