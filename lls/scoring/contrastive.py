"""Contrastive selection: rank pairs by w_target - w_control.

The top of an LLS ranking is often a style that any system prompt favours (polite answers
over terse ones). Scoring the same pairs with a control system prompt (default: a neutral
assistant persona; or e.g. another animal) and ranking by the difference cancels what every
system prompt shifts and keeps what is specific to the target.

The control run is an ordinary scoring run (`lls.scoring.score`) with the same data, model,
truncation and contamination filter as the target, so the two cover the same pairs and a
control scored before is served from the cache. `contrastive_frame` aligns the two by pair
id; any weight column of it ranks with `lls.scoring.selection.Ranking` unchanged.

`list_controls` / `find_control` find the finished control runs of a target run among the
cached runs (from their manifests only: no model, tokenizer or data file is opened), and
`submit_control_scoring` scores one as a background job. On the command line:
`python -m lls score ... --control [PROMPT]` scores the control of the run the other flags
describe.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import jobs
from ..core.behaviors import Behavior, from_name
from ..core.errors import LLSError
from .runs import (ScoreConfig, ScoreRun, find_run, list_runs, run_key, score,
                      score_command)
from ..core.stats import pearson, spearman
from .selection import Ranking, SelectionConfig, orientation_signs, selection_indices

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


def _model_dict(cfg: dict) -> dict:
    # The device a run was scored on is not part of its key (nor of its numbers, beyond
    # float noise): a control scored under `accelerate launch` still matches.
    return {k: v for k, v in (cfg.get("model") or {}).items() if k != "device"}


def check_compatible(target: ScoreRun, control: ScoreRun) -> None:
    """Raise LLSError unless the two runs share data, teacher, truncation and prompt limit."""
    t, c = target.manifest.get("config") or {}, control.manifest.get("config") or {}
    for k in ("data", "model", "truncation", "max_prompt_tokens", "neutral"):
        same = (_model_dict(t) == _model_dict(c)) if k == "model" else \
            (t.get(k, "template") == c.get(k, "template")) if k == "neutral" else \
            (t.get(k) == c.get(k))
        if not same:
            raise LLSError(f"The control run {control.key} differs from the target run "
                           f"{target.key} in {k!r} ({c.get(k)!r} vs {t.get(k)!r}): score the "
                           "control with control_config(target_config, prompt).")


_check_compatible = check_compatible  # the earlier private name


def contrastive_frame(target_run, control_run):
    """Target and control weights aligned by pair id (a pandas DataFrame).

    Columns: the target frame's text columns, its log-prob columns (lc_s ... n_r), `w`
    (= w_target, so the frame drops into code that reads the target frame), w_target,
    w_control and w_contrastive = w_target - w_control. Rows in the target's order; pairs
    missing from either run are left out. Accepts ScoreRuns or their frames.

    A panel of controls (a list of runs or frames, e.g. the other animals): w_control is the
    mean of the panel's weights, each in the target's orientation (pairs every run scored);
    `attrs["panel"]` is the number of control runs.
    """
    panel = list(control_run) if isinstance(control_run, (list, tuple)) else [control_run]
    if not panel:
        raise LLSError("A contrastive ranking needs at least one control run.")
    if isinstance(target_run, ScoreRun):
        for c in panel:
            if isinstance(c, ScoreRun):
                check_compatible(target_run, c)
    t = _frame(target_run)
    frames = [_frame(c) for c in panel]
    for name, f in [("target", t)] + [("control", c) for c in frames]:
        if "id" not in f or "w" not in f:
            raise LLSError(f"The {name} frame has no 'id'/'w' columns: pass a ScoreRun or "
                           "ScoreRun.frame().")
        if f["id"].duplicated().any():
            raise LLSError(f"The {name} run has duplicate pair ids, so pairs cannot be aligned.")
    keep = [col for col in TEXT_COLUMNS + SCORE_COLUMNS if col in t.columns]
    out = t[keep].copy()
    out["w"] = t["w"].to_numpy()
    out["w_target"] = t["w"].to_numpy()
    aligned = np.stack([_aligned_weights(out, c) for c in frames])
    present = ~np.isnan(aligned).any(axis=0)
    out["w_control"] = np.where(present, aligned.mean(axis=0) if present.any() else np.nan,
                                np.nan)
    out = out[present].reset_index(drop=True)
    out["w_contrastive"] = out["w_target"] - out["w_control"]
    out.attrs["panel"] = len(frames)
    return out


def _aligned_weights(out, c) -> np.ndarray:
    """A control frame's weights in the order and orientation of the target frame `out`."""
    w = out["id"].map(c.set_index("id")["w"]).to_numpy(dtype=np.float64)
    if "chosen" in c and "chosen" in out:
        # A sampled run orients each pair by its own weight, so the control may hold a pair
        # the other way round: its weight in the target's orientation changes sign.
        w = w * np.nan_to_num(orientation_signs(out, c), nan=1.0)
    return w


def panel_keys(spec: str | list | tuple | None) -> list[str]:
    """Control run keys from a control spec: one key, or a panel given as a comma-separated
    string or a list (how selections and studies store a panel)."""
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [k.strip() for k in items if k and k.strip()]


def open_controls(spec, cache_dir: Path | None = None) -> list[ScoreRun]:
    """The control runs of a control spec (one key or a panel), each finished."""
    from .runs import open_run

    runs = [open_run(k, cache_dir) for k in panel_keys(spec)]
    for r in runs:
        if not r.complete:
            raise LLSError(f"The control run {r.key} is not complete: finish scoring it "
                           "first (resubmit the same control scoring job).")
    return runs


def panel_share(frame, indices) -> dict:
    """How much of a selection's mean w the control (panel) explains: mean w_target, mean
    w_control and their ratio over the selected rows (`share` None when mean w_target <= 0)."""
    idx = np.asarray(indices, dtype=np.int64)
    t = float(np.mean(frame["w_target"].to_numpy()[idx])) if len(idx) else float("nan")
    c = float(np.mean(frame["w_control"].to_numpy()[idx])) if len(idx) else float("nan")
    return {"n": int(len(idx)), "mean_w_target": t, "mean_w_control": c,
            "share": c / t if t > 0 else None}


def as_ranked(frame, column: str = "w_contrastive"):
    """A copy whose `w` is `column`: for `lls.scoring.selection.to_trl_rows` / `export`, which record
    the weight a selection was ranked by."""
    if column not in frame:
        raise LLSError(f"No column {column!r}; use one of {list(WEIGHT_COLUMNS)}.")
    out = frame.copy()
    out["w"] = frame[column].to_numpy()
    return out


def compare_rankings(frame, gamma: float = 0.05, a: str = "w_target", b: str = "w_control",
                     *, positive_only: bool = True) -> dict:
    """Top-gamma overlap (count, Jaccard) and Pearson/Spearman correlation of two weights.

    The top-gamma set of each column is exactly what training on that ranking would keep
    (`lls.scoring.selection.selection_indices` with `SelectionConfig(gamma, positive_only=...)`):
    the top ceil(gamma * n) pairs, capped at the column's positive weights when
    `positive_only`. `k_a` / `k_b` are the two set sizes; `k` is `k_a`.
    """
    cfg = SelectionConfig(gamma=gamma, positive_only=positive_only)
    x = np.asarray(frame[a], dtype=np.float64)
    y = np.asarray(frame[b], dtype=np.float64)
    n = len(x)
    if n < 2:
        raise LLSError("Comparing rankings needs at least two pairs.")
    top_a = set(selection_indices(Ranking(x), cfg).tolist())
    top_b = set(selection_indices(Ranking(y), cfg).tolist())
    inter, union = len(top_a & top_b), len(top_a | top_b)
    const = np.ptp(x) == 0 or np.ptp(y) == 0
    return {"n": n, "gamma": gamma, "k": len(top_a), "k_a": len(top_a), "k_b": len(top_b),
            "overlap": inter, "jaccard": inter / union if union else float("nan"),
            "pearson": None if const else pearson(x, y),
            "spearman": None if const else spearman(x, y)}


# ------------------------------------------------------------------ finding control runs

_MANIFEST_MATCH = ("version", "model_fingerprint", "data_fingerprint", "template_hash")
_BEHAVIOR_FREE = ("system_prompt", "name")  # what a control may change in the behavior


def _prompt_of(manifest: dict) -> str:
    return ((manifest.get("config") or {}).get("behavior") or {}).get("system_prompt", "")


def _same_teacher_and_data(t: dict, c: dict) -> bool:
    """Manifests of runs over the same data file content, teacher and template, with the same
    truncation and prompt-length limit (every part of the cache key but the behavior)."""
    if any(t.get(k) != c.get(k) for k in _MANIFEST_MATCH):
        return False
    tc, cc = t.get("config") or {}, c.get("config") or {}
    return (tc.get("data") == cc.get("data") and _model_dict(tc) == _model_dict(cc)
            and tc.get("truncation") == cc.get("truncation")
            and tc.get("max_prompt_tokens") == cc.get("max_prompt_tokens"))


def _same_filter(t: dict, c: dict) -> bool:
    """Both runs dropped the same pairs: same contamination filter (or none in both)."""
    tc, cc = t.get("config") or {}, c.get("config") or {}
    if tc.get("filter_contaminated") != cc.get("filter_contaminated"):
        return False
    if not tc.get("filter_contaminated"):
        return True
    free = lambda b: {k: v for k, v in (b or {}).items() if k not in _BEHAVIOR_FREE}  # noqa: E731
    return free(tc.get("behavior")) == free(cc.get("behavior"))


def is_control_of(target: dict, candidate: dict, *, strict: bool = True) -> bool:
    """Whether the manifest `candidate` describes a control run of the manifest `target`.

    Strict: everything in the cache key equal except the system prompt (what
    `control_config(target_config, prompt)` scores), so both runs cover exactly the same
    pairs. Not strict: the contamination filter may differ too (e.g. an ordinary "cat" run as
    the control of an "owl" run); `contrastive_frame` then keeps the pairs both runs scored.
    """
    if not _same_teacher_and_data(target, candidate):
        return False
    if _prompt_of(target).strip() == _prompt_of(candidate).strip():
        return False
    return _same_filter(target, candidate) if strict else True


def list_controls(target_run: ScoreRun, cache_dir: Path | None = None, *, strict: bool = True,
                  runs: list[ScoreRun] | None = None,
                  complete: bool = True) -> list[ScoreRun]:
    """The cached control runs of `target_run`, newest first (see `is_control_of`).

    Reads only manifests. `runs`: the candidates (default: every cached scoring run);
    `complete`: only finished runs. With `strict=False` the strict controls come first.
    """
    target = target_run.manifest
    pool = list_runs(cache_dir) if runs is None else runs
    found = []
    for r in pool:
        if r.key == target_run.key:
            continue
        m = r.manifest
        if complete and m.get("status") != "complete":
            continue
        if is_control_of(target, m, strict=True):
            found.append((0, r))
        elif not strict and is_control_of(target, m, strict=False):
            found.append((1, r))
    return [r for _, r in sorted(found, key=lambda x: x[0])]


def find_control(target_run: ScoreRun, prompt: str | Behavior | None = None,
                 cache_dir: Path | None = None, *,
                 runs: list[ScoreRun] | None = None) -> ScoreRun | None:
    """The finished control run of `target_run` scored with `prompt`, or None.

    A run scored with `control_config(target_config, prompt)` has the key of that config,
    and every part of the key is in its manifest, so it is found by comparing manifests
    (no tokenizer or data file is opened). Without `prompt`: the control with the default
    neutral prompt if there is one, else the newest control.
    """
    controls = list_controls(target_run, cache_dir, runs=runs)
    if prompt is None:
        neutral = [c for c in controls if _prompt_of(c.manifest).strip() == DEFAULT_CONTROL_PROMPT]
        return (neutral or controls or [None])[0]
    text = (prompt.system_prompt if isinstance(prompt, Behavior) else str(prompt)).strip()
    return next((c for c in controls if _prompt_of(c.manifest).strip() == text), None)


# ------------------------------------------------------------------ scoring controls

_PRESET_NAME = re.compile(r"(animal|translation|persona):[A-Za-z][A-Za-z_-]*")


def parse_control(text: str | None) -> str | Behavior:
    """A control given on the command line: None or "" means the default neutral persona;
    a preset name (`animal:cat`, `translation:fr`, `persona:evil-ruler`) means that
    preset's system prompt; anything else is the system prompt itself (stripped: a stray
    space would change the cache key)."""
    if text is None or not text.strip():
        return DEFAULT_CONTROL_PROMPT
    text = text.strip()
    if _PRESET_NAME.fullmatch(text):
        return from_name(text)
    return text


def submit_control_scoring(target: ScoreRun | ScoreConfig,
                           control: str | Behavior = DEFAULT_CONTROL_PROMPT, *,
                           target_key: str | None = None, cache_dir: Path | None = None):
    """Score the control of `target` (a run or its config) as a background job (kind "score").

    Returns (job, control run key); job is None when that control is already cached and
    complete. The job's params carry `control_of` (the target's key), so pages can follow it.
    """
    tcfg = target.config if isinstance(target, ScoreRun) else target
    tkey = target.key if isinstance(target, ScoreRun) else (target_key or run_key(tcfg))
    ccfg = control_config(tcfg, control)
    found = find_run(ccfg, cache_dir)
    if found is not None and found.complete:
        return None, found.key
    key = found.key if found is not None else run_key(ccfg)
    job = jobs.submit(score_command(ccfg, cache_dir), kind="score", key=key,
                      title=f"{ccfg.behavior.name} for {tcfg.behavior.label()} · "
                            f"{tcfg.data.source_name()}",
                      params={"run_key": key, "config": ccfg.to_dict(), "control_of": tkey,
                              "control_prompt": ccfg.behavior.system_prompt})
    return job, key


def control_jobs(target_key: str, active_only: bool = False) -> list:
    """Scoring jobs that score a control of the run `target_key`, newest first."""
    return [j for j in jobs.list_jobs("score") if (j.params or {}).get("control_of") == target_key
            and (j.is_active or not active_only)]


def control_command(target_cfg: ScoreConfig, prompt: str | None = None) -> str:
    """The shell command that scores the control of `target_cfg` (for copy and paste)."""
    import json

    argv = ["python", "-m", "lls", "score", "--config",
            json.dumps(target_cfg.to_dict(), ensure_ascii=False)]
    if prompt is None or prompt.strip() == DEFAULT_CONTROL_PROMPT:
        argv.append("--control")
    else:
        argv.append(f"--control={prompt}")  # '=': a prompt starting with '-' stays a value
    return shlex.join(argv)
