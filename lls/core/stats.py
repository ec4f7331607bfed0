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


# ----------------------------------------------------------------------------- clusters
# Sampled answers cluster by question (a model that names the owl to one question tends to
# name it again to the same question), so the unit an interval resamples is the question.
# The same seed draws the same question indices for every model read on the same questions:
# differences, ratios and averages over cells are computed per resample (paired).

N_BOOT = 2000
BOOT_SEED = 0


def resample_index(n: int, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """[n_boot, n] unit indices drawn with replacement (the same for a given n and seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_ci(boots, alpha: float = 0.05) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates left out)."""
    b = np.asarray(boots, dtype=np.float64)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return float("nan"), float("nan")
    return float(np.quantile(b, alpha / 2)), float(np.quantile(b, 1 - alpha / 2))


def share_replicates(k, n, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """Bootstrap replicates of sum(k) / sum(n) over questions (k hits of n answers each)."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    idx = resample_index(len(k), n_boot=n_boot, seed=seed)
    return k[idx].sum(1) / np.maximum(n[idx].sum(1), 1)


def question_share_ci(k, n, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict:
    """Share of answers showing the behavior, k[i] of n[i] per question, with a 95%
    bootstrap interval over questions. Never narrower than the Wilson interval of the pooled
    counts: with 0 (or every) hit there is nothing to resample, and treating the answers as
    independent is the least the uncertainty can be."""
    k, n = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    tk, tn = int(k.sum()), int(n.sum())
    lo, hi = percentile_ci(share_replicates(k, n, n_boot=n_boot, seed=seed)) if len(k) else \
        (0.0, 1.0)
    wl, wh = wilson(tk, tn)
    return {"k": tk, "n": tn, "share": tk / tn if tn else 0.0, "ci_low": min(lo, wl),
            "ci_high": max(hi, wh), "questions": int(len(k)), "method": SHARE_METHOD}


def paired_share_diff_ci(k_a, k_b, n, *, n_boot: int = N_BOOT,
                         seed: int = BOOT_SEED) -> dict:
    """share(a) - share(b) of two models answering the same questions (k_a[i], k_b[i] hits
    of n[i] answers each), with a 95% paired bootstrap interval over questions, never
    narrower than Newcombe's interval for independent answers (see `question_share_ci`)."""
    ka, kb = np.asarray(k_a, dtype=np.float64), np.asarray(k_b, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if not (len(ka) == len(kb) == len(n)):
        raise ValueError("paired shares need the same questions for both models")
    idx = resample_index(len(n), n_boot=n_boot, seed=seed)
    boots = (ka[idx].sum(1) - kb[idx].sum(1)) / np.maximum(n[idx].sum(1), 1)
    lo, hi = percentile_ci(boots)
    tn = int(n.sum())
    d, nl, nh = share_diff_ci(int(ka.sum()), tn, int(kb.sum()), tn)
    return {"diff": d, "ci_low": min(lo, nl), "ci_high": max(hi, nh),
            "questions": int(len(n)), "method": SHARE_DIFF_METHOD}


def mean_diff_replicates(d, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """Bootstrap replicates of mean(d) over its units (d: per-question paired differences)."""
    d = np.asarray(d, dtype=np.float64)
    return d[resample_index(len(d), n_boot=n_boot, seed=seed)].mean(1)


def ci_dict(point: float | None, boots) -> dict:
    """{"diff", "ci_low", "ci_high"} of a point estimate and its bootstrap replicates."""
    lo, hi = percentile_ci(boots)
    return {"diff": None if point is None else float(point), "ci_low": lo, "ci_high": hi}


SHARE_METHOD = ("bootstrap over questions (2,000 resamples, seed 0), at least the Wilson "
                "interval of the pooled answers")
SHARE_DIFF_METHOD = ("paired bootstrap over questions (2,000 resamples, seed 0), at least "
                     "Newcombe's interval")
