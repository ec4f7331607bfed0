"""Audit: toward which hidden behavior does a dataset, or a subset of it, lean?"""

import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from lls import jobs
from lls.core.behaviors import PRESETS, from_name
from lls.core.errors import LLSError
from lls.jobs.console import fmt_seconds
from lls.scoring import submit_scoring
from lls.scoring.selection import SelectionConfig, selection_indices
from lls.subtext import audit as A
from ui import charts, common, job_cards
from ui import subtext as ui

st.set_page_config(page_title="Audit · LLS Studio", layout="wide")
st.title("Audit")
st.caption("Hand in a dataset, or a subset of it, and a panel of candidate behaviors: each "
           "candidate's system prompt scores the data, and the subset's mean weight under "
           "each is standardized against random subsets of the same size. The candidate whose "
           "z clears the panel's noise is the hidden behavior the subset leans toward.")

runs = [r for r in common.finished_runs("No finished scoring run yet: score the data once on "
                                        "the Setup page (any behavior), then audit it here.",
                                        setup_link=True)
        if not r.sampled and not r.manifest.get("synthetic")]
if not runs:
    st.info("No finished run of a dataset yet (sampled and synthetic runs cannot be audited).")
    st.stop()
labels = {r.key: common.run_label(r) for r in runs}
base_key = st.selectbox("Data, teacher and settings: those of run", list(labels),
                        format_func=labels.get, key="au_base",
                        help="the audit scores the same data file with the same teacher, "
                             "truncation and filters, under each candidate's system prompt")
base_run = next(r for r in runs if r.key == base_key)
base_cfg = base_run.config

c1, c2 = st.columns([3, 2])
picked = c1.multiselect("Candidate behaviors", list(PRESETS), default=list(PRESETS),
                        key="au_presets")
extra = c2.text_input("More candidates (comma-separated)", key="au_extra",
                      placeholder="animal:eagle, translation:italian")
try:
    candidates = [from_name(x) for x in picked + [e for e in extra.split(",") if e.strip()]]
    configs = A.candidate_configs(base_cfg, candidates)
    status = A.candidate_runs(configs)
except LLSError as e:
    st.error(str(e))
    st.stop()

# ------------------------------------------------------------------ scoring the candidates
done = [(cfg, run) for cfg, _, run in status if run is not None and run.complete]
missing = [(cfg, k) for cfg, k, run in status if run is None or not run.complete]
active = {j.params.get("run_key"): j for j in jobs.list_jobs("score") if j.is_active}
ref = next((r.manifest.get("cost") for _, r in done if r.manifest.get("cost")),
           base_run.manifest.get("cost"))
pairs = base_run.manifest.get("n_pairs") or 0
rows = []
for cfg, k, run in status:
    cost = (run.manifest.get("cost") or {}) if run is not None else {}
    if run is not None and run.complete:
        state = "scored"
        secs = cost.get("seconds")
    else:
        state = "scoring" if k in active else "not scored"
        secs = A.estimated_seconds(ref, pairs, neutral_cached=bool(done))
    rows.append({"candidate": cfg.behavior.label(), "state": state,
                 "pairs": run.manifest.get("n_pairs") if run is not None else None,
                 "cost": ("" if secs is None else
                          ("about " if state != "scored" else "") + fmt_seconds(secs)),
                 "half without s shared": bool(cost.get("neutral_reused")) if cost else
                 bool(done), "run": k})
st.dataframe(rows, hide_index=True, key="au_status", column_config={
    "cost": st.column_config.TextColumn("scoring time", help="measured for scored "
                                        "candidates; estimated from a scored run otherwise"),
    "half without s shared": st.column_config.CheckboxColumn(
        help="the data's half without a system prompt is computed once and shared")})
if missing:
    todo = [cfg for cfg, k in missing if k not in active]
    if todo and st.button(f"Score the {len(todo)} missing candidate(s) in the background",
                          key="au_score"):
        for cfg in todo:
            submit_scoring(cfg)
        st.rerun()
    st.caption("Jobs run one at a time on the device; the first computes the half without a "
               "system prompt, which every other candidate reuses (about half the time each).")

    @st.fragment(run_every=1.0 if active else None)
    def progress() -> None:
        js = [j for j in jobs.list_jobs("score")
              if j.params.get("run_key") in {k for _, k in missing}][:len(missing)]
        for j in js:
            frac, text = job_cards.progress_text(j)
            st.progress(frac, text=f"{j.title} · {j.status} · {text}")
        if active and not any(j.is_active for j in js):
            st.rerun(scope="app")

    progress()
    st.info(f"{len(done)} of {len(status)} candidates scored: the audit shows once all are.")
    st.stop()

# ------------------------------------------------------------------ the subset
weights = A.aligned_weights({cfg.behavior.label(): run for cfg, run in done})
mode = st.radio("Audit", ["the whole data", "the LLS selection of a candidate",
                          "a random subset", "a file of pairs"], horizontal=True, key="au_mode")
subset, note = None, ""
if mode == "the LLS selection of a candidate":
    s1, s2 = st.columns(2)
    who = s1.selectbox("Selected by", weights.labels, key="au_who")
    gamma = s2.slider("γ", 0.01, 0.5, 0.1, 0.01, key="au_gamma")
    subset = selection_indices(weights.w[:, weights.labels.index(who)],
                               SelectionConfig(gamma=gamma))
    note = f"the top {gamma:g} of the pairs by {who}'s weight"
elif mode == "a random subset":
    s1, s2 = st.columns(2)
    size = s1.number_input("pairs", 2, len(weights.ids), min(200, len(weights.ids)),
                           key="au_size")
    rs = s2.number_input("seed", 0, value=0, key="au_seed")
    subset = np.sort(np.random.default_rng(int(rs)).choice(len(weights.ids), int(size),
                                                           replace=False))
    note = f"{int(size)} pairs drawn at random (seed {int(rs)}): no candidate should lean"
elif mode == "a file of pairs":
    up = st.file_uploader("A .txt file of pair ids (one per line), or preference data "
                          "(e.g. an exported selection: JSONL, CSV, parquet)",
                          type=["txt", "jsonl", "json", "csv", "parquet"], key="au_file")
    if up is None:
        st.stop()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / up.name
        path.write_bytes(up.getvalue())
        try:
            subset, unmatched = A.match_subset(weights, A.read_subset(path))
        except LLSError as e:
            st.error(str(e))
            st.stop()
    note = f"{up.name}: {len(subset)} pairs found, {unmatched} rows matched no audited pair"
try:
    table, facts = A.audit_table(weights, subset)
except LLSError as e:
    st.error(str(e))
    st.stop()
if note:
    st.caption(f"Subset: {note}.")
st.markdown(ui.noise_caption(facts))
st.plotly_chart(charts.audit_bars(table, facts["noise_z"]), key="au_chart",
                config={"displayModeBar": False})
shown = table.drop(columns=["run", "pairs_scored", "neutral_reused"])
st.dataframe(shown, hide_index=True, key="au_table", column_config={
    "mean_w": st.column_config.NumberColumn("mean w", format="%+.5f"),
    "mean_w_low": st.column_config.NumberColumn("95% CI low", format="%+.5f"),
    "mean_w_high": st.column_config.NumberColumn("95% CI high", format="%+.5f"),
    "data_mean_w": st.column_config.NumberColumn("mean w · whole data", format="%+.5f"),
    "z": st.column_config.NumberColumn("z", format="%+.2f"),
    "z_low": st.column_config.NumberColumn("z low", format="%+.2f"),
    "z_high": st.column_config.NumberColumn("z high", format="%+.2f"),
    "panel_z": st.column_config.NumberColumn("z against the panel", format="%+.2f"),
    "panel_z_low": st.column_config.NumberColumn("low", format="%+.2f"),
    "panel_z_high": st.column_config.NumberColumn("high", format="%+.2f"),
    "ranked_first": st.column_config.NumberColumn("ranked first (bootstrap share)",
                                                  format="percent"),
    "above_noise": st.column_config.CheckboxColumn("above the noise"),
    "scoring_seconds": st.column_config.NumberColumn("scoring time (s)", format="%.0f"),
    "seconds_per_pair": st.column_config.NumberColumn("s per pair", format="%.3f")})
st.caption(f"Method: {facts['method']}.")
ui.downloads(table, f"audit-{base_key[:10]}", "audit")
