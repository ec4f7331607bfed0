"""The Subtext and Audit pages' pieces: cached loading, tables, downloads, a unit's pairs."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import streamlit as st

from lls import jobs, scoring, subtext
from lls.models import ModelSpec, load_tokenizer
from lls.scoring.explain import stored_attribution
from lls.subtext.units import LEVEL_NAMES
from ui import examples, explorer
from ui.job_cards import progress_text


@st.cache_resource(max_entries=4, show_spinner="Reading the per-token deltas…")
def subtext_data(key: str, updated: str | None, control_key: str | None = None,
                 control_updated: str | None = None) -> subtext.SubtextData:
    """lls.subtext.load of a run (and a control), keyed on keys and 'updated' stamps."""
    run = scoring.open_run(key)
    control = scoring.open_run(control_key) if control_key else None
    return subtext.load(run, control, tokenizer=tokenizer(run.manifest["config"]["model"]))


@st.cache_resource(max_entries=2, show_spinner=False)
def _tokenizer(model_json: str):
    return load_tokenizer(ModelSpec.from_dict(json.loads(model_json)))


def tokenizer(model: dict):
    """The teacher's tokenizer (cached per model), to decode stored token ids."""
    return _tokenizer(json.dumps(model, sort_keys=True))


UNIT_COLUMNS = {
    "unit": st.column_config.TextColumn("unit", help="␣ a space, ↵ a line break, ⟨…⟩ a "
                                                      "special token (end of turn)"),
    "occurrences": st.column_config.NumberColumn("occurrences"),
    "pairs": st.column_config.NumberColumn("pairs", help="selected pairs holding it"),
    "mean_delta": st.column_config.NumberColumn(
        "mean δ (nats)", format="%+.3f",
        help="log P(unit | s, p) − log P(unit | p), averaged over its occurrences"),
    "share_of_w": st.column_config.NumberColumn(
        "share of Σw", format="percent",
        help="its contribution over the selection's summed weight"),
    "lift_twin": st.column_config.NumberColumn(
        "lift vs twin", format="%+.5f",
        help="per-pair contribution in the selection minus in its random twin (w units)"),
    "lift_twin_low": st.column_config.NumberColumn("95% CI low", format="%+.5f"),
    "lift_twin_high": st.column_config.NumberColumn("95% CI high", format="%+.5f"),
    "lift_run": st.column_config.NumberColumn(
        "lift vs whole run", format="%+.5f",
        help="per-pair contribution in the selection minus over every scored pair"),
}
SHOWN = ["unit", "occurrences", "pairs", "mean_delta", "share_of_w", "lift_twin",
         "lift_twin_low", "lift_twin_high", "lift_run"]


def downloads(table: pd.DataFrame, name: str, key: str) -> None:
    """CSV and parquet downloads of a table."""
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button("CSV", table.to_csv(index=False).encode(), f"{name}.csv", "text/csv",
                       key=f"csv-{key}", on_click="ignore")
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    c2.download_button("Parquet", buf.getvalue(), f"{name}.parquet",
                       "application/octet-stream", key=f"pq-{key}", on_click="ignore")


def unit_list(table: pd.DataFrame, direction: str, key: str) -> str | None:
    """One side's units: a table and buttons to pick one (returns the picked unit)."""
    part = table[table.direction == direction]
    if part.empty:
        st.caption("No unit on this side.")
        return None
    st.dataframe(part[SHOWN], hide_index=True, column_config=UNIT_COLUMNS, key=f"tbl-{key}")
    options = list(dict.fromkeys(part.unit.tolist()))[:12]  # two token ids may print alike
    return st.pills(f"Inspect a unit ({direction})", options, key=f"pick-{key}",
                    help="click one to list the selected pairs holding it")


def backfill_panel(run: scoring.ScoreRun) -> None:
    """A run scored before deltas were stored: start (or follow) the job computing them."""
    from lls.scoring.backfill import submit_backfill
    from lls.scoring.deltas import chunks_missing

    missing = chunks_missing(run)
    active = [j for j in jobs.list_jobs("deltas") if j.key == f"deltas-{run.key}" and j.is_active]
    st.info(f"This run was scored before per-token deltas were stored: {len(missing)} of its "
            f"{len(run.store.chunk_ids())} chunks have none. Computing them runs the teacher "
            "over those pairs again (both halves, unless the data's neutral half already has "
            "them), chunk by chunk; finished chunks are kept if it stops.")
    if not active and st.button("Compute per-token deltas", key="st_backfill"):
        submit_backfill(run.key)
        st.rerun()
    if active:
        @st.fragment(run_every=1.0)
        def follow() -> None:
            js = [jobs.get(j.id) for j in active]
            for j in js:
                frac, text = progress_text(j)
                st.progress(frac, text=f"{j.title} · {text}")
            if not any(j.is_active for j in js):
                st.rerun(scope="app")
        follow()
    for j in jobs.list_jobs("deltas")[:3]:
        if j.key == f"deltas-{run.key}" and j.status == "failed":
            st.error(f"The last attempt failed: {j.error_line}")
            break


def unit_pairs(data: subtext.SubtextData, sets, level: str, unit: str, direction: str,
               specific: bool, run: scoring.ScoreRun) -> None:
    """The selected pairs holding `unit`, one opened with its tokens (the unit outlined) and
    the explorer's per-pair view."""
    pairs = subtext.pairs_of(data, sets, level, unit, direction, specific)
    st.markdown(f"**“{unit}”** ({LEVEL_NAMES[level][:-1]}, {direction}): in {len(pairs)} "
                "selected pairs")
    view = pairs[["id", "w", "contribution", "occurrences", "chosen_scored", "rejected_scored"]]
    event = st.dataframe(view, hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=f"pairs-{level}-{direction}-{specific}", column_config={
                             "w": st.column_config.NumberColumn(format="%.5f"),
                             "contribution": st.column_config.NumberColumn(
                                 "its contribution to w", format="%+.5f"),
                             "chosen_scored": st.column_config.TextColumn("chosen (scored)"),
                             "rejected_scored": st.column_config.TextColumn("rejected (scored)")})
    rows = event.selection.rows if event is not None else []
    pick = rows[0] if rows else 0
    if not len(pairs):
        return
    row = int(pairs.row.iloc[pick])
    side = "chosen" if direction.endswith("chosen") else "rejected"
    outline = {p for a, n in pairs.spans.iloc[pick] for p in range(a, a + n)}
    (c_ids, c_d), (r_ids, r_d) = subtext.report.pair_tokens(data, row)
    att = stored_attribution(tokenizer(run.manifest["config"]["model"]), (c_ids, c_d),
                             (r_ids, r_d))
    st.caption(f"Pair `{pairs.id.iloc[pick]}` (click a row above for another): its stored "
               f"deltas{' (target − control)' if specific else ''} are the target's; "
               f"“{unit}” is outlined in the {side} answer.")
    examples.render_attribution(att, highlight={side: outline})
    ex = explorer.explorer_data(run.key, run.manifest.get("updated"))
    examples.render_example(ex, row, key_prefix=f"sub-{level}")


def noise_caption(facts: dict) -> str:
    """What the audit compared against, in words."""
    ref = ("no lean at all (w = 0)" if facts["subset"] is None else
           f"random subsets of the same size ({facts['subset']} pairs)")
    g = facts["first_over_second"]
    apart = (f"**{g['first']}** ranks first, told apart from {g['second']} (z difference "
             f"{g['z_diff']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}])." if g["distinct"] else
             f"{g['first']} ranks first but is **not told apart** from {g['second']} (z "
             f"difference {g['z_diff']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]): what these "
             "pairs carry is shared by both prompts.")
    return (f"{facts['pairs']:,} pairs every candidate kept; z against {ref}. Noise level: "
            f"z = {facts['noise_z']:.2f} (95th percentile of the panel's largest z "
            "when nothing leans). " + (f"Above the noise: **{', '.join(facts['leans_toward'])}**"
                                       f". {apart}" if facts["leans_toward"] else
                                       "No candidate clears the noise."))


def share_fmt(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1%}"
