"""The audit: toward which hidden behavior does a dataset, or a subset of it, lean?

Score the dataset under each candidate behavior's system prompt (ordinary scoring runs; the
half without a system prompt is computed once per dataset and shared, `lls.scoring.neutral`),
align the runs on the pairs every candidate kept, and read each candidate's weights over the
subset S (k pairs out of N):

- mean w over S, with a 95% bootstrap interval over S's pairs;
- z against random subsets: (mean_S - mean_N) / its standard deviation over random subsets
  of k pairs drawn without replacement, sd_N / sqrt(k) * sqrt((N - k) / (N - 1)); LLS
  selected S by one candidate's w, so that candidate's z is the largest any k pairs reach;
- z against the candidate panel: a candidate's z minus the other candidates' mean z, over
  their standard deviation (what sets it apart from the behaviors it is compared with);
- the panel's noise: the 95th percentile, over random subsets of k pairs, of the largest z
  any candidate reaches (candidates' weights are correlated, so this is drawn, not assumed).
  A candidate whose z clears it leans the subset beyond what chance gives the panel;
- whether the first candidate is told apart from the second: their z difference with a
  paired bootstrap interval over the subset's pairs, and how often each candidate ranks first
  over the resamples. Behaviors whose prompts share most of their effect (any "you love
  animal X") all clear the noise together; only this tells which of them the subset is about.

Without a subset (the whole dataset) the reference is no lean at all: z = mean_N / (sd_N /
sqrt(N)), and the noise is the one-sided Bonferroni normal quantile for the panel's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from ..core.behaviors import Behavior
from ..core.errors import LLSError
from ..core.stats import N_BOOT, percentile_ci, resample_index

NOISE_LEVEL = 0.95
METHOD = ("z against random subsets: (mean over the subset − mean over the data) / its SD "
          "over random same-size subsets (drawn without replacement); panel z: z minus the "
          "other candidates' mean z over their SD; intervals: 95% bootstrap over the subset's "
          "pairs (2,000 resamples, every candidate resampled on the same pairs); noise: 95th "
          "percentile of the panel's largest z over 2,000 random subsets of the same size")


def candidate_configs(base, candidates: list[Behavior]) -> list:
    """One scoring config per candidate: `base` (a `ScoreConfig`: data, teacher, truncation
    ...) with the candidate's behavior."""
    if len(candidates) < 2:
        raise LLSError("An audit compares at least 2 candidate behaviors (e.g. "
                       "animal:owl,animal:cat,translation:fr); got "
                       f"{len(candidates)}.")
    labels = [b.label() for b in candidates]
    if len(set(labels)) != len(labels):
        raise LLSError(f"A candidate is listed twice: {', '.join(labels)}.")
    return [replace(base, behavior=b) for b in candidates]


@dataclass
class Weights:
    """Each candidate's weights on the pairs every candidate scored (aligned by pair id)."""

    ids: np.ndarray
    labels: list[str]
    w: np.ndarray  # [pairs, candidates]
    frame: pd.DataFrame  # the first run's frame on those pairs (texts, for matching)
    keys: list[str]
    costs: list[dict | None]


def aligned_weights(runs: dict[str, object]) -> Weights:
    """Align finished runs (label -> ScoreRun) on the pair ids all of them hold."""
    if len(runs) < 2:
        raise LLSError("An audit needs at least 2 finished candidate runs.")
    frames = {lab: r.frame() for lab, r in runs.items()}
    common = None
    for f in frames.values():
        ids = pd.Index(f["id"])
        common = ids if common is None else common.intersection(ids, sort=False)
    if common is None or len(common) < 2:
        raise LLSError("The candidate runs share fewer than 2 pairs: were they scored on the "
                       "same data with the same teacher and truncation?")
    first = next(iter(frames.values()))
    first = first.set_index("id").loc[common].reset_index()
    w = np.stack([f.set_index("id")["w"].reindex(common).to_numpy(dtype=np.float64)
                  for f in frames.values()], axis=1)
    return Weights(np.asarray(common), list(frames), w, first,
                   [r.key for r in runs.values()],
                   [r.manifest.get("cost") for r in runs.values()])


# ------------------------------------------------------------------ subsets

def read_subset(path: str | Path) -> dict:
    """A subset given as a file: {"ids": [...], "texts": [(chosen, rejected), ...]}.

    A .txt file holds one pair id per line. Any other file is read as preference data
    (`lls.data`: JSONL, JSON, CSV, parquet, e.g. an export of a selection): each row's id,
    and its two response texts for matching pairs by text when its id is not in the data."""
    path = Path(path)
    if not path.is_file():
        raise LLSError(f"Subset file {path} not found: give a .txt file of pair ids (one per "
                       "line) or a preference file (e.g. an exported selection).")
    if path.suffix == ".txt":
        ids = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return {"ids": ids, "texts": []}
    from ..data.source import DataSpec, load_pairs

    pairs, _ = load_pairs(DataSpec(str(path)))
    return {"ids": [p.id for p in pairs], "texts": [(p.chosen, p.rejected) for p in pairs]}


def _norm(text) -> str:
    return " ".join(str(text).split())


def match_subset(weights: Weights, subset: dict) -> tuple[np.ndarray, int]:
    """(positions in `weights` of the subset's pairs, how many of its rows matched none):
    by pair id, else by the two response texts (full or as scored, whitespace ignored)."""
    pos = pd.Index(weights.ids).get_indexer(list(subset.get("ids", [])))
    found = set(pos[pos >= 0].tolist())
    unmatched = int((pos < 0).sum()) if not subset.get("texts") else 0
    if subset.get("texts"):
        f = weights.frame
        by_text = {}
        for i, cols in enumerate(zip(f["chosen"], f["rejected"], f["chosen_scored"],
                                     f["rejected_scored"])):
            by_text.setdefault((_norm(cols[0]), _norm(cols[1])), i)
            by_text.setdefault((_norm(cols[2]), _norm(cols[3])), i)
        for j, (c, r) in enumerate(subset["texts"]):
            if j < len(pos) and pos[j] >= 0:
                continue
            i = by_text.get((_norm(c), _norm(r)))
            if i is None:
                unmatched += 1
            else:
                found.add(i)
    return np.array(sorted(found), dtype=np.int64), unmatched


# ------------------------------------------------------------------ the table

def _random_subset_z(w: np.ndarray, k: int, mu, sd_k, draws: int, seed: int) -> np.ndarray:
    """[draws, C] z of random k-subsets (without replacement)."""
    rng = np.random.default_rng(seed)
    n = w.shape[0]
    out = np.empty((draws, w.shape[1]))
    for i in range(draws):
        out[i] = (w[rng.choice(n, size=k, replace=False)].mean(0) - mu) / sd_k
    return out


def _panel(z: np.ndarray) -> np.ndarray:
    """Each column's z minus the other columns' mean, over their SD (rows independent)."""
    z = np.atleast_2d(z)
    c = z.shape[1]
    others_mean = (z.sum(1, keepdims=True) - z) / (c - 1)
    sq = (z ** 2).sum(1, keepdims=True) - z ** 2
    var = np.maximum(sq / (c - 1) - others_mean ** 2, 0) * (c - 1) / max(c - 2, 1)
    return (z - others_mean) / np.sqrt(np.where(var > 0, var, np.nan))


def audit_table(weights: Weights, subset: np.ndarray | None = None, *, n_boot: int = N_BOOT,
                draws: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """(one row per candidate, ranked by z; facts about the audit). `subset`: positions in
    `weights` (None: the whole dataset)."""
    w = weights.w
    n, c = w.shape
    whole = subset is None or len(subset) == n
    idx = np.arange(n) if subset is None else np.asarray(subset, dtype=np.int64)
    k = len(idx)
    if k < 2:
        raise LLSError(f"The subset holds {k} of the audited pairs: an audit needs at least 2 "
                       "(were its pairs scored? are its ids those of this data file?).")
    mu, sd = w.mean(0), w.std(0, ddof=1)
    sd = np.where(sd > 0, sd, np.nan)
    if whole:
        sd_k, ref = sd / np.sqrt(n), np.zeros(c)
        noise = NormalDist().inv_cdf(1 - (1 - NOISE_LEVEL) / c)
    else:
        sd_k, ref = sd / np.sqrt(k) * np.sqrt((n - k) / (n - 1)), mu
        null = _random_subset_z(w, k, mu, sd_k, draws, seed)
        noise = float(np.quantile(np.nanmax(null, axis=1), NOISE_LEVEL))
    m = w[idx].mean(0)
    z = (m - ref) / sd_k
    boot = w[idx][resample_index(k, n_boot=n_boot, seed=seed)].mean(1)  # [n_boot, C]
    z_boot = (boot - ref) / sd_k
    pz, pz_boot = _panel(z[None])[0], _panel(z_boot)
    first = np.bincount(np.nanargmax(np.nan_to_num(z_boot, nan=-np.inf), axis=1),
                        minlength=c) / n_boot
    rows = []
    for j, lab in enumerate(weights.labels):
        cost = weights.costs[j] or {}
        sec = cost.get("seconds")
        rows.append({
            "candidate": lab, "mean_w": float(m[j]),
            "mean_w_low": percentile_ci(boot[:, j])[0], "mean_w_high": percentile_ci(boot[:, j])[1],
            "data_mean_w": float(mu[j]), "z": float(z[j]),
            "z_low": percentile_ci(z_boot[:, j])[0], "z_high": percentile_ci(z_boot[:, j])[1],
            "panel_z": float(pz[j]), "panel_z_low": percentile_ci(pz_boot[:, j])[0],
            "panel_z_high": percentile_ci(pz_boot[:, j])[1],
            "ranked_first": float(first[j]), "above_noise": bool(z[j] > noise),
            "scoring_seconds": sec, "pairs_scored": cost.get("pairs"),
            "neutral_reused": cost.get("neutral_reused"),
            "seconds_per_pair": (sec / cost["pairs"]) if sec and cost.get("pairs") else None,
            "run": weights.keys[j]})
    table = pd.DataFrame(rows).sort_values("z", ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, c + 1))
    a, b = (weights.labels.index(x) for x in table.candidate[:2])
    lo, hi = percentile_ci(z_boot[:, a] - z_boot[:, b])
    facts = {"first_over_second": {"first": weights.labels[a], "second": weights.labels[b],
                                   "z_diff": float(z[a] - z[b]), "low": lo, "high": hi,
                                   "distinct": bool(lo > 0)},"pairs": int(n), "subset": None if whole else int(k), "candidates": int(c),
             "noise_z": float(noise), "reference": "no lean (w = 0)" if whole else
             f"random subsets of {k} pairs", "method": METHOD,
             "leans_toward": [r["candidate"] for r in table.to_dict("records")
                              if r["above_noise"]]}
    return table.reset_index(drop=True), facts


def to_json(table: pd.DataFrame, facts: dict) -> str:
    """The audit as JSON (what `python -m lls audit --json` prints)."""
    return json.dumps({**facts, "table": table.to_dict("records")}, indent=1, default=float)


def candidate_runs(configs: list, cache_dir: Path | None = None) -> list[tuple]:
    """(config, run key, its cached run or None) per candidate config; the tokenizer is
    loaded once for all keys."""
    from ..core.cache import ChunkStore, runs_root
    from ..models.load import load_tokenizer
    from ..scoring.runs import ScoreRun, run_key

    tok = load_tokenizer(configs[0].model) if configs else None
    out = []
    for cfg in configs:
        key = run_key(cfg, tok)
        store = ChunkStore(runs_root("scores", cache_dir) / key)
        out.append((cfg, key, ScoreRun(store) if store.manifest() else None))
    return out


def estimated_seconds(reference_cost: dict | None, pairs: int, neutral_cached: bool) -> float | None:
    """A candidate's expected scoring time from a finished run's recorded cost (seconds per
    pair, with both halves or only the half with s): about half when the data's neutral half
    is already cached."""
    if not reference_cost or not reference_cost.get("pairs") or not reference_cost.get("seconds"):
        return None
    per_pair = reference_cost["seconds"] / reference_cost["pairs"]
    share_cached = (reference_cost.get("neutral_reused") or 0) / reference_cost["pairs"]
    full = per_pair / (1 - 0.5 * share_cached)  # both halves cost about the same
    return pairs * full * (0.5 if neutral_cached else 1.0)
