"""Contrastive selection in the explorer: control runs, the aligned frame, comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lls import scoring
from lls.core.errors import LLSError
from lls.scoring import contrastive
from ui.explorer import (TABLE_CONFIG, TABLE_ROWS, ExplorerData, explorer_data, frame_data,
                         table_view)
from ui.job_cards import progress_text

RANK_COLUMNS = {"w_target": "this run's w (plain LLS)",
                "w_control": "the control run's w",
                "w_contrastive": "this run's w − the control's (contrastive)"}


def control_candidates(target: scoring.ScoreRun,
                       runs: list[scoring.ScoreRun]) -> list[scoring.ScoreRun]:
    """Finished runs usable as the control of `target`: strict controls first (same pairs,
    another system prompt), then runs that differ in the contamination filter too."""
    return contrastive.list_controls(target, runs=runs, strict=False)


def control_label(target: scoring.ScoreRun, control: scoring.ScoreRun) -> str:
    """One line naming a control run: its system prompt, when it was made, whether it is
    strict (the key is in the picker's tooltip, `ui.common.run_help`)."""
    m = control.manifest
    prompt = " ".join(((m.get("config") or {}).get("behavior") or {}).get("system_prompt",
                                                                         "").split())
    short = prompt if len(prompt) <= 70 else prompt[:67] + "…"
    strict = contrastive.is_control_of(target.manifest, m, strict=True)
    return (f"“{short}” · {(m.get('created') or '?')[:16].replace('T', ' ')}"
            + ("" if strict else " · other filter: shared pairs only"))


class Panel:
    """The control run(s) picked on the page, as the page uses one control: `key` (the
    comma-joined keys a selection stores) and `manifest["updated"]` (their stamps)."""

    def __init__(self, runs: list[scoring.ScoreRun]):
        self.runs = runs
        self.key = ",".join(r.key for r in runs)
        self.size = len(runs)
        self.manifest = {"updated": "|".join(str(r.manifest.get("updated")) for r in runs)}


@st.cache_resource(max_entries=2, show_spinner="Aligning the target and control runs…")
def contrastive_frame(target_key: str, target_updated: str | None, control_key: str,
                      control_updated: str | None) -> pd.DataFrame:
    """lls.scoring.contrastive.contrastive_frame of a run and its control (or a panel of
    controls: comma-joined keys), keyed on the keys and their 'updated' stamps.

    cache_resource, like `explorer_data`: read-only here, and no pickled copy per rerun. The
    target's frame comes from `explorer_data`'s cache, so it is not read twice.
    """
    target_run = scoring.open_run(target_key)
    controls = contrastive.open_controls(control_key)
    for c in controls:
        contrastive.check_compatible(target_run, c)
    target = explorer_data(target_key, target_updated).frame
    return contrastive.contrastive_frame(target, [c.frame() for c in controls])


@st.cache_resource(max_entries=6, show_spinner="Ranking by the chosen weight…")
def contrastive_data(target_key: str, target_updated: str | None, control_key: str,
                     control_updated: str | None, column: str) -> ExplorerData:
    """Explorer data of the aligned target + control frame, ranked by `column` (its `w`).

    The manifest is the target's (its system prompt drives the per-token view); the key names
    both runs, so per-row caches never mix the aligned frame's rows with the target's.
    """
    frame = contrastive.as_ranked(contrastive_frame(target_key, target_updated, control_key,
                                        control_updated), column)
    manifest = explorer_data(target_key, target_updated).manifest
    import hashlib

    # a panel's joined keys, hashed: two panels sharing a first run still differ
    tag = control_key[:12] if "," not in control_key else \
        "panel-" + hashlib.sha256(control_key.encode()).hexdigest()[:10]
    return frame_data(f"{target_key}~{tag}", frame, manifest)


def weights_table_view(data: ExplorerData, indices, search: str = "",
                       limit: int = TABLE_ROWS) -> tuple[pd.DataFrame, np.ndarray, int]:
    """`table_view` plus the w_target / w_control / w_contrastive columns when the frame has
    them (a contrastive ranking); exactly `table_view` otherwise."""
    view, top, total = table_view(data, indices, search, limit)
    f = data.frame
    if "w_contrastive" in f:
        for i, col in enumerate(("w_target", "w_control", "w_contrastive")):
            view.insert(2 + i, col, f[col].to_numpy()[top])
    return view, top, total


WEIGHTS_TABLE_CONFIG = {
    **TABLE_CONFIG,
    "w": st.column_config.NumberColumn("w ranked by (nats/token)", format="%.5f"),
    "w_target": st.column_config.NumberColumn("w, this run", format="%.5f"),
    "w_control": st.column_config.NumberColumn("w, control", format="%.5f"),
    "w_contrastive": st.column_config.NumberColumn("w − control's w", format="%.5f"),
}


@st.cache_data(max_entries=64, show_spinner=False)
def ranking_comparison(target_key: str, target_updated: str | None, control_key: str,
                       control_updated: str | None, gamma: float,
                       positive_only: bool = True) -> list[dict]:
    """lls.scoring.contrastive.compare_rankings at `gamma` (and `positive_only`, as training): w_target vs w_control (how much the two
    system prompts agree) and w_target vs w_contrastive (how much the control changes the
    selection)."""
    frame = contrastive_frame(target_key, target_updated, control_key, control_updated)
    names = {"w_target": "this run's w", "w_control": "the control's w",
             "w_contrastive": "the difference"}
    return [{"comparison": f"{names[a]} vs {names[b]}",
             **contrastive.compare_rankings(frame, gamma, a, b, positive_only=positive_only)}
            for a, b in (("w_target", "w_control"), ("w_target", "w_contrastive"))]


def score_control_form(run: scoring.ScoreRun, active_controls: list) -> None:
    """How to score a control for `run`: a button (background job), the CLI command, and the
    progress of `active_controls` (its control jobs still running)."""
    key = run.key
    c1, c2 = st.columns([4, 1])
    prompt = c1.text_input("Control system prompt", value=contrastive.DEFAULT_CONTROL_PROMPT,
                           key=f"ctl_prompt_explore::{key}")
    c2.markdown("&nbsp;")
    if c2.button("Score a control", key="ctl_score"):
        try:
            job, ckey = contrastive.submit_control_scoring(run, prompt)
            if job is None:  # already scored: show it
                st.session_state[f"control_run::{key}"] = ckey
                st.rerun()
            st.success(f"Scoring the control in the background (job {job.id}); follow it on "
                       "the Setup page. It shows up here when it finishes.")
        except LLSError as e:
            st.error(str(e))
    try:
        st.caption("Or on the command line:")
        st.code(contrastive.control_command(run.config, prompt), language="bash",
                wrap_lines=True)
    except LLSError:
        pass
    for j in active_controls:
        frac, text = progress_text(j)
        st.progress(frac, text=f"{j.title} · {text}")
    if active_controls:
        st.button("Refresh", key="ctl_refresh")
