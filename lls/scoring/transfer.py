"""The transfer diagnostic: do two models' LLS weights on the same pairs agree?

Score the same pairs with the teacher and with the intended student (same ScoreConfig, other
ModelSpec) and compare the weights: Pearson and Spearman correlation with bootstrap CIs and
the overlap of the two top-gamma selections. The paper reports about 0.5 correlation within
one model and about 0.03-0.14 across families, and transfer tracks it: a low agreement says,
before any training, that the teacher's selection is unlikely to move this student.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import jobs
from ..core.errors import LLSError
from ..core.stats import pearson, spearman
from ..models.load import ModelSpec, load_tokenizer
from .runs import ScoreConfig, ScoreRun, find_run, open_run, run_key, score_command
from .selection import SelectionConfig, orientation_signs, select

READING = ("in the paper, the two weights correlate at about 0.5 (Pearson r) when teacher and "
           "student are the same model, and at 0.03-0.14 across model families; the transfer "
           "of the trait follows this agreement")


def _run(r) -> ScoreRun:
    return r if isinstance(r, ScoreRun) else open_run(str(r))


# Config fields that do not change which pairs are scored nor their weights' meaning.
_FREE_CONFIG = ("model", "chunk_size", "batch_tokens")


def _sampling(cfg: dict) -> dict | None:
    """A sampled config's sampling settings without whose answers they pair (that is in the
    data fingerprint: a student scoring the teacher's answers has the teacher's)."""
    s = cfg.get("sampling")
    return {k: v for k, v in s.items() if k != "answers_from"} if s else s


def pairs_mismatch(a: dict, b: dict) -> str | None:
    """Why the run manifests `a` and `b` do not score the same pairs with the same system
    prompt (data file content, or for sampled runs the answers paired; reading options,
    behavior and filter, truncation, prompt limit), or None when they do: only the model
    may differ in a transfer comparison."""
    if a.get("data_fingerprint") != b.get("data_fingerprint"):
        ca = a.get("config") or {}
        return "sampled answers (another model's)" if ca.get("sampling") else \
            "data file content"
    ca, cb = a.get("config") or {}, b.get("config") or {}
    for k in sorted(set(ca) | set(cb)):
        same = _sampling(ca) == _sampling(cb) if k == "sampling" else ca.get(k) == cb.get(k)
        if k not in _FREE_CONFIG and not same:
            return k
    return None


def same_pairs(run_a, run_b) -> bool:
    """Whether two runs can be compared by `compare_runs` (see `pairs_mismatch`)."""
    return pairs_mismatch(_run(run_a).manifest, _run(run_b).manifest) is None


def student_runs(run_a, runs) -> list[ScoreRun]:
    """The runs among `runs` (other than `run_a`) that scored run_a's pairs: its students."""
    a = _run(run_a)
    return [r for r in runs if r.key != a.key and same_pairs(a, r)]


def check_same_pairs(run_a, run_b) -> None:
    """Raise LLSError unless the two runs scored the same pairs with the same system prompt."""
    ra, rb = _run(run_a), _run(run_b)
    diff = pairs_mismatch(ra.manifest, rb.manifest)
    if diff is not None:
        raise LLSError(f"Runs {ra.key} and {rb.key} differ in {diff!r}, so their weights are "
                       "not comparable: score run A's pairs with the student "
                       "(`submit_student_scoring`, or the Transfer page) and compare those.")


def aligned_weights(run_a, run_b):
    """DataFrame (id, w_a, w_b, chosen, rejected) of the pairs both runs scored, by pair id,
    B's weight in A's orientation (a sampled run orients each pair by its own weight: where
    the student holds a pair the other way round, its weight changes sign)."""
    fa, fb = _run(run_a).frame(), _run(run_b).frame()
    a = fa[["id", "w", "chosen", "chosen_scored", "rejected_scored", "prompt"]]
    a = a.drop_duplicates("id")
    b = fb[["id", "w"]].drop_duplicates("id")
    m = a.merge(b, on="id", suffixes=("_a", "_b"), how="inner")
    m["w_b"] = m["w_b"].to_numpy() * np.nan_to_num(orientation_signs(m, fb), nan=1.0)
    return m.drop(columns=["chosen"]).rename(columns={"chosen_scored": "chosen",
                                                      "rejected_scored": "rejected"})


def _boot_corr(x, y, fn, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    if len(x) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        v = fn(x[i], y[i])
        if not np.isnan(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def compare_runs(run_a, run_b, gamma: float = 0.05, *, positive_only: bool = True,
                 n_boot: int = 1000, seed: int = 0) -> dict:
    """Agreement of two scoring runs' weights on their common pairs (aligned by pair id).

    The runs must score the same pairs with the same system prompt (`check_same_pairs`):
    only the model differs.

    Returns n (common pairs), n_a/n_b (pairs per run), pearson/spearman with 95% bootstrap
    CIs, the top-gamma selections' sizes, |A∩B|, Jaccard |A∩B|/|A∪B|, |A∩B|/|A|, and a
    one-line reading.
    """
    ra, rb = _run(run_a), _run(run_b)
    check_same_pairs(ra, rb)
    m = aligned_weights(ra, rb)
    if m.empty:
        raise LLSError(f"Runs {ra.key} and {rb.key} have no pair ids in common: score the "
                       "same data (same file, split and filters) with both models.")
    x, y = m["w_a"].to_numpy(np.float64), m["w_b"].to_numpy(np.float64)
    cfg = SelectionConfig(gamma=gamma, positive_only=positive_only)
    sa = set(m["id"].iloc[select(x, cfg)])
    sb = set(m["id"].iloc[select(y, cfg)])
    inter, union = len(sa & sb), len(sa | sb)
    r_p, r_s = pearson(x, y), spearman(x, y)
    out = {
        "run_a": ra.key, "run_b": rb.key, "n": len(m),
        "n_a": int(ra.manifest.get("n_pairs") or len(ra.frame())),
        "n_b": int(rb.manifest.get("n_pairs") or len(rb.frame())),
        "pearson": r_p, "pearson_ci": _boot_corr(x, y, pearson, n_boot, seed),
        "spearman": r_s, "spearman_ci": _boot_corr(x, y, spearman, n_boot, seed),
        "gamma": gamma, "selected_a": len(sa), "selected_b": len(sb), "intersection": inter,
        "jaccard": inter / union if union else float("nan"),
        "overlap_a": inter / len(sa) if sa else float("nan"),
        "chance_overlap": (len(sb) / len(m)) if len(m) else float("nan"),
    }
    out["reading"] = reading(out)
    return out


def reading(res: dict) -> str:
    """A short plain-language reading of a comparison."""
    r = res["pearson"]
    if np.isnan(r):
        verdict = "the correlation is undefined (too few pairs or constant weights)"
    elif r >= 0.35:
        verdict = "the models largely agree: the selection is likely to transfer"
    elif r >= 0.15:
        verdict = "partial agreement: expect a weaker transfer"
    else:
        verdict = "the models barely agree: the selection is unlikely to move this student"
    return (f"Pearson {r:.2f} on {res['n']} pairs, top-{res['gamma']:g} overlap "
            f"{res['overlap_a']:.0%} (chance ≈ {res['chance_overlap']:.0%}) — {verdict}. "
            f"({READING}.)")


def student_config(cfg: ScoreConfig, student: ModelSpec) -> ScoreConfig:
    """The same scoring config with another model (the intended student). A sampled run's
    pairs are the teacher's own answers: the student scores those (`answers_from`), never
    answers of its own."""
    if cfg.sampling is not None:
        src = cfg.sampling.answers_from or cfg.model
        return replace(cfg, model=student, sampling=replace(
            cfg.sampling, answers_from=None if src == student else src))
    return replace(cfg, model=student)


def check_model(spec: ModelSpec) -> None:
    """Raise a ModelError saying what to do if `spec` cannot be loaded here (e.g. offline)."""
    load_tokenizer(spec)


def submit_student_scoring(run, student: ModelSpec, cache_dir=None):
    """Score run's pairs with `student` as a background job (kind "score").

    Returns (job or None, ScoreConfig): None when the run is already cached and complete.
    """
    cfg = student_config(_run(run).config, student)
    check_model(student)
    found = find_run(cfg, cache_dir)
    if found is not None and found.complete:
        return None, cfg
    job = jobs.submit(score_command(cfg, cache_dir), kind="score", key=run_key(cfg),
                      title=f"transfer: score with {student.label}",
                      params={"transfer_of": _run(run).key, "student": student.to_dict()})
    return job, cfg
