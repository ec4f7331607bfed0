"""Contrastive selection: rank pairs by w_target - w_control.

The top of an LLS ranking is often a style that any system prompt favours (polite answers
over terse ones). Scoring the same pairs with a control system prompt (default: a neutral
assistant persona; or e.g. another animal) and ranking by the difference cancels what every
system prompt shifts and keeps what is specific to the target.

The control run is an ordinary scoring run (`lls.scoring.score`) with the same data, model,
truncation and contamination filter as the target, so the two cover the same pairs and a
control scored before is served from the cache. `contrastive_frame` aligns the two by pair
id; any weight column of it ranks with `lls.selection.Ranking` unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .behaviors import Behavior
from .errors import LLSError
from .scoring import ScoreConfig, ScoreRun, score

DEFAULT_CONTROL_PROMPT = "You are a helpful, honest and concise assistant."

TEXT_COLUMNS = ("index", "id", "source", "prompt", "chosen", "rejected", "chosen_scored",
                "rejected_scored", "prompt_tokens")
SCORE_COLUMNS = ("lc_s", "lr_s", "lc", "lr", "n_c", "n_r")
WEIGHT_COLUMNS = ("w_target", "w_control", "w_contrastive")


def control_behavior(target: Behavior, control: str | Behavior = DEFAULT_CONTROL_PROMPT,
                     name: str | None = None) -> Behavior:
    """The target behavior with the control's system prompt.

    Everything else (kind, filter words, regex, language threshold) stays the target's, so
    the contamination filter drops exactly the same pairs and the two runs align.
    """
    prompt = control.system_prompt if isinstance(control, Behavior) else str(control)
    if not prompt.strip():
        raise LLSError("The control system prompt is empty: give a neutral persona (e.g. "
                       f"{DEFAULT_CONTROL_PROMPT!r}) or another behavior's prompt.")
    if prompt.strip() == target.system_prompt.strip():
        raise LLSError("The control system prompt equals the target's: every contrastive "
                       "weight would be 0. Pick a different control.")
    label = name or (f"control-{control.name}" if isinstance(control, Behavior) else "control")
    return Behavior.from_dict({**target.to_dict(), "system_prompt": prompt, "name": label})


def control_config(target_cfg: ScoreConfig, control_prompt: str | Behavior = DEFAULT_CONTROL_PROMPT
                   ) -> ScoreConfig:
    """The target's scoring config with the control system prompt (same data, model,
    truncation, prompt-length limit, filter and chunking: same pairs, same cache layout)."""
    return replace(target_cfg, behavior=control_behavior(target_cfg.behavior, control_prompt))


def score_control(target_cfg: ScoreConfig, control_prompt: str | Behavior = DEFAULT_CONTROL_PROMPT,
                  **score_kwargs) -> ScoreRun:
    """Score (or serve from the cache) the control run for a target config."""
    return score(control_config(target_cfg, control_prompt), **score_kwargs)


def _frame(run_or_frame):
    return run_or_frame.frame() if isinstance(run_or_frame, ScoreRun) else run_or_frame


def _check_compatible(target: ScoreRun, control: ScoreRun) -> None:
    t, c = target.manifest.get("config") or {}, control.manifest.get("config") or {}
    for k in ("data", "model", "truncation", "max_prompt_tokens"):
        if t.get(k) != c.get(k):
            raise LLSError(f"The control run {control.key} differs from the target run "
                           f"{target.key} in {k!r} ({c.get(k)!r} vs {t.get(k)!r}): score the "
                           "control with control_config(target_config, prompt).")


def contrastive_frame(target_run, control_run):
    """Target and control weights aligned by pair id (a pandas DataFrame).

    Columns: the target frame's text columns, its log-prob columns (lc_s ... n_r), `w`
    (= w_target, so the frame drops into code that reads the target frame), w_target,
    w_control and w_contrastive = w_target - w_control. Rows in the target's order; pairs
    missing from either run are left out. Accepts ScoreRuns or their frames.
    """
    if isinstance(target_run, ScoreRun) and isinstance(control_run, ScoreRun):
        _check_compatible(target_run, control_run)
    t, c = _frame(target_run), _frame(control_run)
    for name, f in (("target", t), ("control", c)):
        if "id" not in f or "w" not in f:
            raise LLSError(f"The {name} frame has no 'id'/'w' columns: pass a ScoreRun or "
                           "ScoreRun.frame().")
        if f["id"].duplicated().any():
            raise LLSError(f"The {name} run has duplicate pair ids, so pairs cannot be aligned.")
    keep = [col for col in TEXT_COLUMNS + SCORE_COLUMNS if col in t.columns]
    out = t[keep].copy()
    out["w"] = t["w"].to_numpy()
    out["w_target"] = t["w"].to_numpy()
    ctrl = c.set_index("id")["w"]
    out["w_control"] = out["id"].map(ctrl).to_numpy(dtype=np.float64)
    out = out[out["w_control"].notna()].reset_index(drop=True)
    out["w_contrastive"] = out["w_target"] - out["w_control"]
    return out


def as_ranked(frame, column: str = "w_contrastive"):
    """A copy whose `w` is `column`: for `lls.selection.to_trl_rows` / `export`, which record
    the weight a selection was ranked by."""
    if column not in frame:
        raise LLSError(f"No column {column!r}; use one of {list(WEIGHT_COLUMNS)}.")
    out = frame.copy()
    out["w"] = frame[column].to_numpy()
    return out


def compare_rankings(frame, gamma: float = 0.05, a: str = "w_target",
                     b: str = "w_control") -> dict:
    """Top-gamma overlap (count, Jaccard) and Pearson/Spearman correlation of two weights.

    Top-gamma sets are the top ceil(gamma * n) pairs of each column (ties broken by order).
    """
    if not 0 < gamma <= 1:
        raise LLSError(f"gamma must be in (0, 1], got {gamma}.")
    x = np.asarray(frame[a], dtype=np.float64)
    y = np.asarray(frame[b], dtype=np.float64)
    n = len(x)
    if n < 2:
        raise LLSError("Comparing rankings needs at least two pairs.")
    k = int(np.ceil(gamma * n))
    top_a = set(np.argsort(-x, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-y, kind="stable")[:k].tolist())
    inter = len(top_a & top_b)
    const = np.ptp(x) == 0 or np.ptp(y) == 0
    return {"n": n, "gamma": gamma, "k": k, "overlap": inter,
            "jaccard": inter / len(top_a | top_b),
            "pearson": None if const else float(np.corrcoef(x, y)[0, 1]),
            "spearman": None if const else float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])}


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (Spearman's correlation is Pearson's on these)."""
    import pandas as pd

    return pd.Series(v).rank(method="average").to_numpy()
