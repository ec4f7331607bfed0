"""Confidence intervals for the effects the app reports (binomial and bootstrap)."""

from __future__ import annotations

import math

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def share_diff_ci(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """Difference of two independent shares k1/n1 - k2/n2 with Newcombe's hybrid score
    interval (1998, method 10: built from the two Wilson intervals; sound at 0/n, where the
    Wald interval collapses to a point). Hand-written: scipy/statsmodels are not dependencies."""
    p1, p2 = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def bootstrap_ci(values, stat=np.mean, *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat` over the rows of `values`."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    stats = np.array([stat(v[i]) for i in idx])
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def bootstrap_diff(a, b, *, paired: bool = True, n_boot: int = 2000, alpha: float = 0.05,
                   seed: int = 0) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its percentile bootstrap CI.

    `paired=True` resamples the same units (e.g. questions) for both, as when two models
    answer the same questions; otherwise each side is resampled on its own.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if paired:
        if len(a) != len(b):
            raise ValueError("paired bootstrap needs equally long samples")
        d = a - b
        idx = rng.integers(0, len(d), size=(n_boot, len(d)))
        boots = d[idx].mean(axis=1)
    else:
        boots = (a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
                 - b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1))
    return (float(a.mean() - b.mean()), float(np.quantile(boots, alpha / 2)),
            float(np.quantile(boots, 1 - alpha / 2)))


def pearson(x, y) -> float:
    """Pearson correlation; NaN with fewer than two points or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def ranks(v) -> np.ndarray:
    """Ranks with ties averaged (Spearman's correlation is Pearson's on these)."""
    import pandas as pd

    return pd.Series(np.asarray(v, dtype=np.float64)).rank(method="average").to_numpy()


def spearman(x, y) -> float:
    """Spearman rank correlation (ties averaged); NaN where Pearson's would be."""
    return pearson(ranks(x), ranks(y))
