"""Run pickers, labels and navigation shared by the dashboard pages.

Only rendering and state live in `ui`; every computation is a call into `lls`. The other ui
modules: `job_cards` (background job progress), `data_source` (Setup's data inputs),
`explorer` (a run's frame, tables, export), `examples` (one pair and its per-token view),
`contrastive` (target vs control runs), `charts` (plotly figures).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from lls import scoring
from lls.core.errors import LLSError

ROOT = Path(__file__).resolve().parent.parent
SHARED_HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"
EXPLORE_PAGE = "pages/2_Explore.py"
SETUP_PAGE = "pages/1_Setup.py"


# ------------------------------------------------------------------ text from data and models

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:])")


def as_text(text: str) -> str:
    """Dataset text or a model's reply for `st.markdown`, shown as the text it is: every
    Markdown and HTML character escaped, so a row holding `![x](http://host/x.png)` or
    `<img src=...>` is printed, never fetched by the reader's browser. Line breaks kept."""
    lines = (text or "").split("\n")
    return "  \n".join(_MARKDOWN.sub(r"\\\1", line) for line in lines)


# ------------------------------------------------------------------ selected run (state + URL)

def selected_run_key() -> str | None:
    """The run the user is looking at: the URL (?run=...) first, then session state."""
    return st.query_params.get("run") or st.session_state.get("run_key") or None


def set_selected_run(key: str) -> None:
    """Remember the run in session state and in the URL, so a reload keeps it."""
    st.session_state["run_key"] = key
    if st.query_params.get("run") != key:
        st.query_params["run"] = key


def open_in_explorer(key: str) -> None:
    """Go to the explorer showing run `key` (also put in the URL, so a reload keeps it)."""
    st.session_state["run_key"] = key
    st.switch_page(EXPLORE_PAGE, query_params={"run": key})


def run_picker(runs: list[scoring.ScoreRun], state_key: str, label: str = "Run") -> str:
    """A run selectbox that opens the run named in the URL (or session state) and puts the
    picked one back there, so a reload or a link keeps it; returns the picked key."""
    labels = {r.key: run_label(r) for r in runs}
    wanted = selected_run_key()
    match = [k for k in labels if wanted and k.startswith(wanted)]
    if match and st.session_state.get(state_key) != match[0]:
        st.session_state[state_key] = match[0]  # arrived with a run (link, URL, reload)
    elif st.session_state.get(state_key) not in labels:
        st.session_state[state_key] = runs[0].key
    key = st.selectbox(label, list(labels), format_func=labels.get, key=state_key,
                       on_change=lambda: set_selected_run(st.session_state[state_key]))
    set_selected_run(key)
    return key


# ------------------------------------------------------------------ labels and tables

def finished_runs(empty_hint: str, setup_link: bool = False) -> list[scoring.ScoreRun]:
    """The finished scoring runs; stops the page with a message when there are none."""
    try:
        runs = [r for r in scoring.list_runs() if r.complete]
    except LLSError as e:
        st.error(str(e))
        st.stop()
    if not runs:
        st.info(empty_hint)
        if setup_link:
            st.page_link(SETUP_PAGE, label="Go to Setup", icon="⚙️")
        st.stop()
    return runs


def run_label(run: scoring.ScoreRun, with_model: bool = False) -> str:
    """One line naming a run: key, (teacher,) behavior, data file, pairs, state (a dead
    owner's run reads "interrupted", as in the runs table)."""
    m = run.manifest
    cfg = m.get("config") or {}
    beh = cfg.get("behavior") or {}
    data = Path((cfg.get("data") or {}).get("path", "?")).name
    n = m.get("n_pairs")
    model = (cfg.get("model") or {}).get("name", "?").split(":", 1)[-1]
    neutral = cfg.get("neutral", "template")
    return (f"{run.key[:10]} · " + (f"{model} · " if with_model else "")
            + f"{beh.get('kind', '?')}:{beh.get('name', '?')} · {data} · "
            + ("neutral: empty system turn · " if neutral != "template" else "")
            + f"{n if n is not None else '?'} pairs · {scoring.run_status(run)['state']}")


def runs_frame(runs: list[scoring.ScoreRun]) -> pd.DataFrame:
    """One row per cached run, for display: its state (running, complete, failed,
    interrupted, ...) and, for a failed or interrupted run, why."""
    rows = []
    for r in runs:
        m = r.manifest
        cfg = m.get("config") or {}
        beh = cfg.get("behavior") or {}
        st_ = scoring.run_status(r)
        rows.append({
            "run": r.key, "state": st_["state"], "pairs": m.get("n_pairs"),
            "behavior": f"{beh.get('kind', '?')}:{beh.get('name', '?')}",
            "data": Path((cfg.get("data") or {}).get("path", "?")).name,
            "model": (cfg.get("model") or {}).get("name", "?").split(":", 1)[-1],
            "precision": st_["precision"],
            "truncation": cfg.get("truncation"), "neutral": cfg.get("neutral", "template"),
            "created": m.get("created"), "error": st_["error"] or "",
        })
    return pd.DataFrame(rows)


PRECISION_LABELS = {
    "auto": "automatic", "float32": "float32 (full precision)",
    "bfloat16": "bfloat16 (projections in bfloat16, the rest float32)",
}


def precision_select(col, label: str, key: str, follow: str | None = None) -> str | None:
    """A numeric-precision choice: "float32" / "bfloat16", None for automatic; with `follow`
    (a first option "as <follow>"), None for that one and "auto" for automatic."""
    from lls.models.load import auto_precision_reason

    options = (["follow"] if follow else []) + list(PRECISION_LABELS)
    labels = {**PRECISION_LABELS, "follow": f"as {follow}",
              "auto": f"automatic ({auto_precision_reason()})"}
    pick = col.selectbox(label, options, key=key, format_func=labels.get, help=(
        "bfloat16 computes the model's projections with half-width numbers: faster on GPUs and "
        "on CPUs with bfloat16 units, much slower on CPUs without them. Rankings agree closely "
        "with float32 but not digit for digit (README, Scaling); results of each precision "
        "are cached apart."))
    if pick == "follow":
        return None
    return ("auto" if follow else None) if pick == "auto" else pick


def manage_runs(runs: list[scoring.ScoreRun]) -> None:
    """Resume an unfinished run (its own config, as a background job) or delete a run."""
    label_of = {r.key: run_label(r) for r in runs}
    c1, c2, c3 = st.columns([4, 1, 1])
    key = c1.selectbox("Manage a run", list(label_of), format_func=label_of.get,
                       key="manage_run_pick")
    run = next(r for r in runs if r.key == key)
    state = scoring.run_status(run)["state"]
    if state in ("failed", "interrupted", "cancelled", "partial") and \
            c2.button("Resume", key="manage_resume"):
        try:
            cfg = scoring.ScoreConfig.from_dict(run.manifest["config"])
            job, _ = scoring.submit_scoring(cfg)
            st.toast(f"Resuming {key[:10]} (job {job.id})." if job else "Already complete.")
        except LLSError as e:
            st.error(str(e))
    if c3.button("Delete", key="manage_delete"):
        try:
            scoring.delete_run(key)
            st.rerun()
        except LLSError as e:
            st.error(str(e))
