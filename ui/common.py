"""Run pickers, run and behavior names, and navigation shared by the dashboard pages.

A run is named in words everywhere (`run_name`: data, behavior, teacher, model, date); its
key, what the command line takes, is in the picker's tooltip (`run_help`) and the runs
table's last column. Only rendering and state live in `ui`; every computation is a call into
`lls`. The other ui modules: `job_cards` (background job progress), `data_source` (Setup's
data inputs), `explorer` (a run's frame, tables, export), `examples` (one pair and its
per-token view), `control_runs` (target vs control runs), `charts` (plotly figures),
`glossary` (what the words mean).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from lls import scoring
from lls.core import behaviors
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


def behavior_text(b: behaviors.Behavior | dict | None) -> str:
    """A behavior in words: "animal: owl", "translation: French", "persona: evil ruler",
    "custom: NAME"."""
    d = b.to_dict() if isinstance(b, behaviors.Behavior) else (b or {})
    kind, name = d.get("kind", "?"), str(d.get("name", "?"))
    if kind == "translation":
        name = behaviors.LANGUAGES.get(d.get("target") or name, name)
    return f"{kind}: {name.replace('-', ' ') if kind == 'persona' else name}"


def behavior_id(b: behaviors.Behavior) -> str:
    """The option id of a behavior: a preset's label ("animal:owl") when it is that preset,
    else the label and its fingerprint (an edited prompt, other filter words, a custom one)."""
    preset = behaviors.PRESETS.get(b.label())
    if preset is not None and preset.fingerprint() == b.fingerprint():
        return b.label()
    return f"{b.label()}#{b.fingerprint()[:8]}"


def behavior_options() -> dict[str, behaviors.Behavior]:
    """Every behavior to offer (Chat, Evaluate): the presets, then every behavior a cached
    scoring run was scored for (custom ones included), by `behavior_id`."""
    out = {k: b for k, b in behaviors.PRESETS.items()}
    try:
        scored = scoring.scored_behaviors()
    except LLSError:
        scored = []
    for b in scored:
        out.setdefault(behavior_id(b), b)
    return out


def behavior_option_text(options: dict[str, behaviors.Behavior]):
    """format_func of a behavior picker: the behavior in words, and the start of its system
    prompt when it is not a preset's."""
    def text(key: str) -> str:
        b = options[key]
        if key in behaviors.PRESETS:
            return behavior_text(b)
        prompt = " ".join(b.system_prompt.split())
        return (f"{behavior_text(b)} (scored run) · “{prompt[:40]}"
                f"{'…' if len(prompt) > 40 else ''}”")
    return text


def behavior_picker(key: str) -> tuple[str, behaviors.Behavior]:
    """The "Target behavior" picker (Chat, Evaluate): the presets, then every behavior a
    cached run was scored for; returns (its id, the behavior)."""
    known = behavior_options()
    if st.session_state.get(key) not in known:
        st.session_state.pop(key, None)  # a run deleted since, or a study's gone behavior
    pick = st.selectbox("Target behavior", list(known), key=key,
                        format_func=behavior_option_text(known),
                        help="The presets, then every behavior a scoring run in the cache was "
                             "scored for (custom ones included).")
    return pick, known[pick]


def _data_name(cfg: dict) -> str:
    """The data a run scored, in a few words: the file's name without its extensions, the hub
    name, or the prompt sources of sampled pairs."""
    def short(name: str) -> str:
        if "/" in name and not Path(name).suffix:
            return name  # a hub dataset
        name = Path(name).name
        for ext in (".gz", ".jsonl", ".json", ".csv", ".parquet", ".ndjson", ".txt"):
            name = name.removesuffix(ext)
        return name
    sampling = cfg.get("sampling")
    if sampling:
        names = [short(s.get("path", "?")) for s in sampling.get("sources", [])]
        return "model's answers to " + " + ".join(names or ["?"])
    return short((cfg.get("data") or {}).get("path", "?"))


def _teacher_text(cfg: dict) -> str:
    """`lls.scoring.describe_teacher` (short) of a manifest's config; what the config says
    when it cannot be rebuilt (e.g. the teacher adapter was deleted since)."""
    try:
        return scoring.describe_teacher(scoring.ScoreConfig.from_dict(cfg), short=True)
    except (LLSError, KeyError, TypeError):
        t = cfg.get("teacher") or {}
        return f"{t.get('kind')} {Path(t.get('path') or '?').name}" if t else "system prompt"


def _date(stamp: str | None) -> str:
    return (stamp or "?")[:16].replace("T", " ")


def run_name(run: scoring.ScoreRun) -> str:
    """A run's name in words: data · behavior · teacher · model · date it was created."""
    m = run.manifest
    cfg = m.get("config") or {}
    model = (cfg.get("model") or {}).get("name", "?").split(":", 1)[-1]
    return (f"{_data_name(cfg)} · {behavior_text(cfg.get('behavior'))} · "
            f"teacher: {_teacher_text(cfg)} · {Path(model).name or model} · "
            f"{_date(m.get('created'))}")


def run_label(run: scoring.ScoreRun) -> str:
    """One line naming a run in pickers: its name, pairs, and its state when not finished
    (a dead owner's run reads "interrupted", as in the runs table). The key goes in the
    picker's tooltip (`run_help`)."""
    n = run.manifest.get("n_pairs")
    state = scoring.run_status(run)["state"]
    return (f"{run_name(run)} · {f'{n:,}' if n is not None else '?'} pairs"
            + ("" if state == "complete" else f" · {state}"))


def run_help(run: scoring.ScoreRun | None, what: str = "run") -> str | None:
    """The tooltip of a run picker: the picked run's key, as the command line takes it."""
    if run is None:
        return None
    return (f"The {what}'s key: `{run.key}` (`python -m lls select --run {run.key[:10]}` "
            "and every other command take it, or its first characters).")


RUNS_TABLE_CONFIG = {
    "key": st.column_config.TextColumn(
        "key", help="The run's key: what `python -m lls ... --run KEY` takes (a unique "
                    "prefix is enough)."),
    "tokens read": st.column_config.NumberColumn(
        "tokens read per response", help="Responses were scored on their first N tokens "
                                         "(empty: whole responses)."),
}


def runs_frame(runs: list[scoring.ScoreRun]) -> pd.DataFrame:
    """One row per cached run, for display: its name, state (running, complete, failed,
    interrupted, ...) and, for a failed or interrupted run, why; its key last."""
    rows = []
    for r in runs:
        m = r.manifest
        cfg = m.get("config") or {}
        st_ = scoring.run_status(r)
        rows.append({
            "run": run_name(r), "state": st_["state"], "pairs": m.get("n_pairs"),
            "tokens read": cfg.get("truncation"),
            "without the system prompt": NEUTRAL_TEXT.get(cfg.get("neutral", "template")),
            "precision": st_["precision"],
            "error": st_["error"] or "", "key": r.key,
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
        "with float32 but not digit for digit (docs/precision.md); results of each precision "
        "are cached apart."))
    if pick == "follow":
        return None
    return ("auto" if follow else None) if pick == "auto" else pick


NEUTRAL_TEXT = {"template": "the conversation as given",
                "empty": "an empty system turn"}


def manage_runs(runs: list[scoring.ScoreRun]) -> None:
    """Resume an unfinished run (its own config, as a background job) or delete a run."""
    label_of = {r.key: run_label(r) for r in runs}
    c1, c2, c3 = st.columns([4, 1, 1])
    picked = st.session_state.get("manage_run_pick")
    key = c1.selectbox("Manage a run", list(label_of), format_func=label_of.get,
                       key="manage_run_pick",
                       help=run_help(next((r for r in runs if r.key == picked), runs[0])))
    run = next(r for r in runs if r.key == key)
    state = scoring.run_status(run)["state"]
    if state in ("failed", "interrupted", "cancelled", "partial") and \
            c2.button("Resume", key="manage_resume"):
        try:
            cfg = scoring.ScoreConfig.from_dict(run.manifest["config"])
            job, _ = scoring.submit_scoring(cfg)
            st.toast(f"Resuming {run_name(run)} (job {job.id})." if job else
                     "Already complete.")
        except LLSError as e:
            st.error(str(e))
    if c3.button("Delete", key="manage_delete"):
        try:
            scoring.delete_run(key)
            st.rerun()
        except LLSError as e:
            st.error(str(e))
