"""Subtext: what a selection carries, token by token and style by style, beside its twin."""

import numpy as np
import streamlit as st

from lls import subtext
from lls.core.errors import LLSError
from lls.scoring.deltas import has_deltas
from lls.scoring.selection import SelectionConfig
from lls.subtext.contributions import METHOD, SIDES
from lls.subtext.style import METHOD as STYLE_METHOD
from lls.subtext.units import LEVEL_NAMES, LEVELS
from ui import charts, common, control_runs
from ui import subtext as ui

st.set_page_config(page_title="Subtext · LLS Studio", layout="wide")
st.title("Subtext")
st.caption("What does a selection carry? Every pair's weight w is a sum over its scored "
           "tokens (how much the system prompt raised each token in the chosen answer, "
           "lowered it in the rejected one). Here those contributions are added up over the "
           "selection, by token, word and phrase, and its style is compared with a random "
           "subset of the same size (its twin).")

runs = common.finished_runs("No finished scoring run yet. Start one on the Setup page.",
                            setup_link=True)
key = common.run_picker(runs, "st_run")
run = next(r for r in runs if r.key == key)
if run.manifest.get("synthetic"):
    st.info("A synthetic run has no model behind its scores, so no per-token deltas.")
    st.stop()
if not has_deltas(run):
    ui.backfill_panel(run)
    st.stop()

controls = [c for c in control_runs.control_candidates(run, runs) if has_deltas(c)]
c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
gamma = c1.slider("γ: keep the top fraction of all scored pairs", 0.001, 1.0, 0.1, 0.001,
                  format="%.3f", key="st_gamma")
use_thr = c2.checkbox("Use a weight threshold instead of γ", key="st_use_thr")
thr = c2.number_input("keep pairs with w >", value=0.0, step=0.001, format="%.4f",
                      key="st_thr", disabled=not use_thr)
positive = c3.checkbox("positive w only", value=True, key="st_pos")
seed = c4.number_input("twin seed", min_value=0, value=0, step=1, key="st_seed")
control, rank_by = None, "w"
if controls:
    cc1, cc2 = st.columns([3, 2])
    ckey = cc1.selectbox("Compare with a control run (same pairs, another system prompt)",
                         ["none"] + [c.key for c in controls], key="st_control",
                         format_func=lambda k: "none" if k == "none" else
                         control_runs.control_label(run, next(c for c in controls
                                                               if c.key == k)))
    control = next((c for c in controls if c.key == ckey), None)
    if control is not None:
        rank_by = cc2.radio("Rank pairs by", list(subtext.report.RANK_BY), key="st_rank",
                            format_func=subtext.report.RANK_BY.get)
else:
    st.caption("No control run with per-token deltas on these pairs: score one on the "
               "Explore page to see which tokens are specific to this behavior (a control "
               "scored before deltas were stored needs `python -m lls deltas --run KEY`).")

try:
    data = ui.subtext_data(key, run.manifest.get("updated"),
                           control.key if control else None,
                           control.manifest.get("updated") if control else None)
    sel = SelectionConfig(gamma=gamma, threshold=float(thr) if use_thr else None,
                          positive_only=positive)
    sets = subtext.sets(data, sel, rank_by=rank_by, seed=int(seed))
except LLSError as e:
    st.error(str(e))
    st.stop()
summ = subtext.summary(data, sets)
if not summ["selected"]:
    st.warning("The selection is empty: lower the threshold or raise γ.")
    st.stop()
m = st.columns(4)
m[0].metric("selected pairs", f"{summ['selected']:,}",
            help=f"of {summ['pairs_with_deltas']:,} pairs with per-token deltas")
m[1].metric("mean w · selection", f"{summ['mean_w_selection']:.5f}")
m[2].metric("mean w · random twin", f"{summ['mean_w_twin']:.5f}")
m[3].metric("largest |Σ token contributions − w|", f"{summ['identity_max_gap']:.1e}",
            help="the deltas add up to each pair's w (float16 storage: about 1e-4)")

tabs = ["Tokens and phrases", "Style"] + (["Specific to the target"] if control else [])
tab = st.segmented_control("View", tabs, default=tabs[0], key="st_tab") or tabs[0]


def units_view(specific: bool) -> None:
    level = st.radio("Units", LEVELS, format_func=LEVEL_NAMES.get, horizontal=True,
                     key=f"st_level_{specific}")
    top = st.slider("units per list", 5, 50, 15, key=f"st_top_{specific}")
    try:
        table = subtext.unit_tables(data, sets, levels=(level,), top=top, specific=specific,
                                    seed=int(seed))[level]
    except LLSError as e:
        st.error(str(e))
        return
    st.caption(("Target − control deltas: what the target's system prompt adds over the "
                "control's, on the pairs both scored. " if specific else "")
               + f"Method: {METHOD}. Blue bars: lift over the twin with an interval above 0.")
    picked = None
    cols = st.columns(2)
    for col, (side, name) in zip(cols, SIDES.items()):
        with col:
            part = table[table.direction == name]
            if len(part):
                st.plotly_chart(charts.unit_bars(part, name), key=f"bars-{side}-{specific}",
                                config={"displayModeBar": False})
            got = ui.unit_list(table, name, f"{side}-{level}-{specific}")
            picked = (got, name) if got else picked
    ui.downloads(table, f"subtext-{key[:10]}-{level}{'-specific' if specific else ''}",
                 f"units-{specific}")
    if picked:
        ui.unit_pairs(data, sets, level, picked[0], picked[1], specific, run)
    else:
        st.caption("Click a unit above to list the selected pairs holding it.")


if tab == "Style":
    style = subtext.style_table(data, sets, seed=int(seed))
    st.plotly_chart(charts.style_effects(style), key="style_chart",
                    config={"displayModeBar": False})
    big = style[(style.d_low > 0) | (style.d_high < 0)]
    st.markdown("**Differs from its twin:** " + (", ".join(
        f"{f} ({'more' if d > 0 else 'less'} in chosen, d {d:+.2f})"
        for f, d in zip(big.feature, big.d)) if len(big) else "no style feature (every "
        "interval reaches 0)."))
    st.dataframe(style, hide_index=True, key="style_table", column_config={
        "selection": st.column_config.NumberColumn("chosen − rejected · selection",
                                                   format="%+.3f"),
        "twin": st.column_config.NumberColumn("chosen − rejected · twin", format="%+.3f"),
        "effect": st.column_config.NumberColumn("selection − twin", format="%+.3f"),
        "effect_low": st.column_config.NumberColumn("95% CI low", format="%+.3f"),
        "effect_high": st.column_config.NumberColumn("95% CI high", format="%+.3f"),
        "d": st.column_config.NumberColumn("effect size d", format="%+.2f"),
        "d_low": st.column_config.NumberColumn("d low", format="%+.2f"),
        "d_high": st.column_config.NumberColumn("d high", format="%+.2f")})
    st.caption(f"Method: {STYLE_METHOD}. Features are read on the scored (truncated) answers.")
    ui.downloads(style, f"subtext-{key[:10]}-style", "style")
else:
    units_view(specific=tab != tabs[0])
if np.isfinite(summ["mean_w_twin"] or np.nan):
    st.caption(f"Random twin: {summ['twin']} pairs drawn with seed {int(seed)} from the "
               f"{summ['pairs_with_deltas']:,} pairs with deltas.")
