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


def ratio_ci(a, b, *, alpha: float = 0.05, n_boot: int = N_BOOT,
             seed: int = BOOT_SEED) -> dict:
    """mean(a) / mean(b) of paired per-unit values (e.g. two models' P(next word = owl) on
    the same questions) with a percentile interval from resampling the units together;
    {"ratio", "ci_low", "ci_high"} (None when mean(b) is 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("a ratio of paired means needs two equally long, non-empty samples")
    if b.mean() <= 0:
        return {"ratio": None, "ci_low": None, "ci_high": None}
    idx = resample_index(len(a), n_boot=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = a[idx].mean(1) / b[idx].mean(1)
    lo, hi = percentile_ci(boots, alpha)
    return {"ratio": float(a.mean() / b.mean()), "ci_low": lo, "ci_high": hi}


def ci_dict(point: float | None, boots, alpha: float = 0.05) -> dict:
    """{"diff", "ci_low", "ci_high"} of a point estimate and its bootstrap replicates."""
    lo, hi = percentile_ci(boots, alpha)
    return {"diff": None if point is None else float(point), "ci_low": lo, "ci_high": hi}


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Hill's 1970 expansion about the normal quantile: within 0.001
    of the exact value from 7 degrees of freedom up; scipy is not a dependency)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    g = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
         (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
         (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def mean_ci(d, alpha: float = 0.05, *, seed: int = BOOT_SEED) -> dict:
    """mean(d) over its units with the percentile bootstrap interval at level 1 - alpha,
    never narrower than Student's t interval: far in the tails (a Bonferroni level) the
    bootstrap of a few dozen units is too narrow, as it is for a small sample anywhere."""
    d = np.asarray(d, dtype=np.float64)
    out = ci_dict(d.mean(), mean_diff_replicates(d, n_boot=boots_for(alpha), seed=seed), alpha)
    if len(d) > 1:
        half = t_quantile(1 - alpha / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        out["ci_low"] = min(out["ci_low"], float(d.mean() - half))
        out["ci_high"] = max(out["ci_high"], float(d.mean() + half))
    return out


def boots_for(alpha: float) -> int:
    """Resamples a percentile interval at level 1 - alpha needs: at least N_BOOT, and at
    least 20 replicates beyond each bound (a Bonferroni interval over many candidates reads
    far into the tails)."""
    return max(N_BOOT, math.ceil(40 / alpha))


# ----------------------------------------------------------------------------- prompts
# Reference responses of the likelihood-ratio read-out are k answers to each of a few
# prompts: answers to one prompt move together, so the prompt is the unit resampled. The
# behavior and neutral sets answer the same prompts: one draw of prompts serves both
# (pairing kept), and the same draw serves every model read on the same reference set.


def cluster_weights(n_clusters: int, *, n_boot: int = N_BOOT,
                    seed: int = BOOT_SEED) -> np.ndarray:
    """[n_boot, n_clusters]: how often each cluster is drawn in each resample (the clusters
    drawn with replacement, `resample_index`)."""
    idx = resample_index(n_clusters, n_boot=n_boot, seed=seed)
    w = np.zeros((len(idx), n_clusters))
    np.add.at(w, (np.repeat(np.arange(len(idx)), n_clusters), idx.ravel()), 1.0)
    return w


def _cluster_sums(values, clusters, labels) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    c = np.searchsorted(labels, np.asarray(clusters))
    return (np.bincount(c, weights=v, minlength=len(labels)),
            np.bincount(c, minlength=len(labels)).astype(np.float64))


def cluster_diff_replicates(a, b, a_clusters, b_clusters, *, n_boot: int = N_BOOT,
                            seed: int = BOOT_SEED) -> np.ndarray:
    """Bootstrap replicates of mean(a) - mean(b) with the clusters (prompts) resampled, one
    draw for both sides: a[i] belongs to cluster a_clusters[i], b[j] to b_clusters[j]."""
    labels = np.unique(np.concatenate([np.asarray(a_clusters), np.asarray(b_clusters)]))
    w = cluster_weights(len(labels), n_boot=n_boot, seed=seed)
    sa, na = _cluster_sums(a, a_clusters, labels)
    sb, nb = _cluster_sums(b, b_clusters, labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ sa) / (w @ na) - (w @ sb) / (w @ nb)


def cluster_diff_ci(a, b, a_clusters, b_clusters, *, alpha: float = 0.05,
                    seed: int = BOOT_SEED) -> dict:
    """mean(a) - mean(b) with its percentile interval over clusters
    (`cluster_diff_replicates`): {"diff", "ci_low", "ci_high", "clusters", "method"}."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    reps = cluster_diff_replicates(a, b, a_clusters, b_clusters, n_boot=boots_for(alpha),
                                   seed=seed)
    n = len(np.unique(np.concatenate([np.asarray(a_clusters), np.asarray(b_clusters)])))
    return {**ci_dict(a.mean() - b.mean(), reps, alpha), "clusters": n,
            "method": CLUSTER_METHOD}


GAP_UNDEFINED = "undefined: the system prompt barely moves the base"


def gap_ratio(num: float, span: float, num_reps, span_reps, alpha: float = 0.05) -> dict:
    """num / span (a move as a share of the base -> base + system prompt span) with its
    interval from paired replicates, each replicate divided by its own span. The one guard
    of every gap closed: undefined (diff None, `undefined` says why) when the span's own
    interval includes 0, where a ratio of a tiny span reads as any percentage."""
    s_lo, s_hi = percentile_ci(span_reps, alpha)
    if not (s_lo > 0 or s_hi < 0):
        return {"diff": None, "ci_low": None, "ci_high": None,
                "undefined": f"{GAP_UNDEFINED} (span {span:+.3f} [{s_lo:+.3f}, {s_hi:+.3f}] "
                             "includes 0)"}
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.asarray(num_reps) / np.asarray(span_reps)
    return ci_dict(num / span, reps, alpha)


CLUSTER_METHOD = ("bootstrap over reference prompts (2,000 resamples, seed 0; the answers to "
                  "one prompt stay together, behavior and neutral sets drawn together)")
SHARE_METHOD = ("bootstrap over questions (2,000 resamples, seed 0), at least the Wilson "
                "interval of the pooled answers")
SHARE_DIFF_METHOD = ("paired bootstrap over questions (2,000 resamples, seed 0), at least "
                     "Newcombe's interval")
