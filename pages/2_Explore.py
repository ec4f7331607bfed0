"""Score explorer: the w distribution, live selection tuning, examples, baseline, export."""

import numpy as np
import pandas as pd
import streamlit as st

from lls.core import glossary as G
from lls.core.errors import LLSError
from lls import scoring
from lls.scoring import contrastive
from lls.scoring.selection import Ranking, SelectionConfig, selection_indices, twin_flips
from ui import charts, common, control_runs, examples, explorer
from ui.glossary import glossary

st.set_page_config(page_title="Explore · LLS Studio", layout="wide")
st.title("Score explorer")
st.caption("Every scored pair with its weight w, the pairs training would keep (the top γ by "
           "w), their random twin, and the export.")
glossary("w", "gamma", "teacher", "random twin", "control")

runs = common.finished_runs("No finished scoring run yet. Start one on the Setup page.",
                            setup_link=True)

labels = {r.key: common.run_label(r) for r in runs}
wanted = common.selected_run_key()
match = [k for k in labels if wanted and k.startswith(wanted)]
if match and st.session_state.get("explore_run") != match[0]:
    st.session_state["explore_run"] = match[0]  # arrived with a run (link, URL, reload)
elif st.session_state.get("explore_run") not in labels:
    st.session_state["explore_run"] = runs[0].key
key = st.selectbox("Scoring run", list(labels), format_func=labels.get, key="explore_run",
                   help=common.run_help(next(r for r in runs
                                             if r.key == st.session_state["explore_run"])),
                   on_change=lambda: common.set_selected_run(st.session_state["explore_run"]))
common.set_selected_run(key)
if st.session_state.pop("opened_cached", None) == key:
    st.success("This configuration was already scored: opened the cached run.")

try:
    run = next(r for r in runs if r.key == key)
    run_manifest = run.manifest
    data = explorer.explorer_data(key, run_manifest.get("updated"))
except LLSError as e:
    st.error(str(e))
    st.stop()

cfg = data.manifest.get("config", {})
beh = cfg.get("behavior", {})


# ----------------------------------------------------------------- contrastive ranking
rank_by, control = "w_target", None
candidates = control_runs.control_candidates(run, runs)
active_controls = contrastive.control_jobs(key, active_only=True)
if candidates:
    with st.container(border=True):
        st.markdown("**Contrastive selection** · rank by this run's w minus a control run's w "
                    "(the same pairs, another system prompt): what any system prompt shifts "
                    "(politeness, refusal style) cancels, what is specific to the target "
                    "stays.")
        ckeys = [c.key for c in candidates]
        default = contrastive.find_control(run, runs=candidates)
        state = f"control_runs::{key}"
        if not set(st.session_state.get(state) or []) <= set(ckeys) or \
                not st.session_state.get(state):
            st.session_state[state] = [default.key if default is not None else ckeys[0]]
        c1, c2 = st.columns([3, 2])
        picked = c1.multiselect(
            "Control runs (several: a panel, ranked by this run's w minus their mean)", ckeys,
            key=state, format_func=lambda k: control_runs.control_label(
                run, next(c for c in candidates if c.key == k)))
        control = control_runs.Panel([c for c in candidates if c.key in picked]) \
            if picked else None
        rank_by = c2.radio("Rank pairs by", list(control_runs.RANK_COLUMNS), key="rank_by",
                           format_func=control_runs.RANK_COLUMNS.get, horizontal=False)
        if default is None:
            st.caption("No control scored with this run's exact filter yet: the picked run is "
                       "compared on the pairs both runs kept.")
        with st.expander("Score another control"):
            control_runs.score_control_form(run, active_controls)
else:
    with st.expander("Contrastive selection: no control run for this run yet",
                     expanded=bool(active_controls)):
        st.info("No control run yet: score the same pairs with a control system prompt (a "
                "neutral assistant persona, or e.g. another animal), then rank by this run's w "
                "minus the control's here.")
        control_runs.score_control_form(run, active_controls)

if control is not None:
    try:
        data = control_runs.contrastive_data(key, run_manifest.get("updated"), control.key,
                                       control.manifest.get("updated"), rank_by)
    except LLSError as e:
        st.error(str(e))
        control, rank_by = None, "w_target"
rank_settings = ({"ranked_by": rank_by, "control_run": control.key} if control is not None
                 else {})
r = data.ranking
c = st.columns(5)
c[0].metric("scored pairs", f"{r.n:,}")
c[1].metric("pairs with w > 0", f"{r.n_positive / r.n:.1%}" if r.n else "–")
c[2].metric("mean w (nats/token)", f"{r.w.mean():.5f}" if r.n else "–")
c[3].metric("behavior", common.behavior_text(beh))
neutral = cfg.get("neutral", "template")
c[4].metric("tokens read per response", cfg.get("truncation") or "all",
            help="Each response was scored on its first N tokens. Without the system prompt "
                 f"meant: {common.NEUTRAL_TEXT.get(neutral, neutral)}.")
if control is not None and rank_by != "w_target":
    st.caption(f"Ranked by **{control_runs.RANK_COLUMNS[rank_by]}** (control: "
               f"{'; '.join(common.run_name(r) for r in control.runs)}): the counts, "
               "histogram, tables and export below use this weight as w.")
with st.expander("Teacher and run details"):
    st.markdown(f"**What carried the trait (the teacher):** "
                f"{scoring.describe_teacher(run.config)}")
    if run.hygiene is not None:
        st.markdown(f"**Hygiene:** {run.hygiene.summary()}")
    st.json(cfg, expanded=False)


def subset_table(indices: np.ndarray, name: str, data=data) -> None:
    """Searchable table of a subset (sorted by w), a click opening one example."""
    search = st.text_input("Search prompt / responses", key=f"search-{name}",
                           placeholder="e.g. sorry")
    view, top, total = control_runs.weights_table_view(data, indices, search)
    shown = len(view)
    st.caption(f"table rows: {shown} of {total} matching"
               + (f" (top {shown} by {control_runs.RANK_COLUMNS[rank_by]} shown)"
                  if shown < total else ""))
    event = st.dataframe(view, key=f"table-{name}", on_select="rerun",
                         selection_mode="single-row", hide_index=True,
                         column_config=control_runs.WEIGHTS_TABLE_CONFIG if control is not None
                         else explorer.TABLE_CONFIG, height=360)
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(top):
        i = int(top[rows[0]])
        if control is not None:
            row = data.frame.iloc[i]
            st.caption(f"w of this run {row['w_target']:.5f} · of the control "
                       f"{row['w_control']:.5f} · difference {row['w_contrastive']:.5f} "
                       "(the log-probabilities below are this run's)")
        examples.render_example(data, i, key_prefix=name)
    else:
        st.caption("Click a row to open the example and its per-token view.")


def export_block(indices: np.ndarray, name: str, settings: dict) -> None:
    """Download the subset in one of the foundation's export formats."""
    c1, c2, c3 = st.columns([1, 1, 2])
    fmt = c1.selectbox("Format", ["jsonl", "parquet", "hf"], key=f"fmt-{name}",
                       format_func={"jsonl": "JSON lines", "parquet": "Parquet",
                                    "hf": "Hugging Face dataset folder, zipped"}.get)
    responses = c2.selectbox("Responses", ["scored", "full"], key=f"resp-{name}",
                             format_func={"scored": "truncated (as scored)",
                                          "full": "full"}.get)
    idx = np.asarray(indices)
    frame = data.frame
    # a sampled run's twin turns a seeded half of its pairs round, as training does
    flip = twin_flips(frame, idx, settings.get("seed", 0)) if name == "random" else None
    c3.download_button(
        f"Download {len(idx)} pairs", key=f"dl-{name}", disabled=len(idx) == 0,
        data=lambda: explorer.export_bytes(frame, idx, fmt, settings, responses, flip),
        file_name=explorer.export_filename(data.key, name, len(idx), fmt),
        mime=explorer.EXPORT_MIME[fmt], on_click="ignore")


def contrastive_view(sel: SelectionConfig) -> None:
    """The two weights side by side: top-gamma overlap, correlations, scatter."""
    updated = (run_manifest.get("updated"), control.manifest.get("updated"))
    gamma = sel.gamma
    try:
        comp = control_runs.ranking_comparison(key, updated[0], control.key, updated[1], gamma,
                                               sel.positive_only)
    except LLSError as e:
        st.error(str(e))
        return
    tc = comp[0]
    st.caption(f"**This run's w vs the control's** on the {tc['n']:,} pairs both runs "
               "scored; top-γ sets are what training keeps: the top ⌈γ·n⌉ pairs of each "
               f"weight (γ = {gamma:g}){', w > 0 only' if sel.positive_only else ''}: "
               f"{tc['k_a']:,} by this run's w, {tc['k_b']:,} by the control's.")
    m = st.columns(5)
    m[0].metric("pairs compared (n)", f"{tc['n']:,}")
    m[1].metric("top-γ overlap", f"{tc['overlap']} of {tc['k']}",
                help="Pairs in both top-γ sets, of the top set's size.")
    m[2].metric("Jaccard", f"{tc['jaccard']:.3f}",
                help="Pairs in both top-γ sets ÷ pairs in either (1: the same pairs).")
    m[3].metric("Pearson r",
                "–" if tc["pearson"] is None else f"{tc['pearson']:.3f}")
    m[4].metric("Spearman ρ",
                "–" if tc["spearman"] is None else f"{tc['spearman']:.3f}")
    st.dataframe(pd.DataFrame(comp)[["comparison", "n", "k", "overlap", "jaccard", "pearson",
                                     "spearman"]],
                 hide_index=True, key="contrastive_compare",
                 column_config={"n": st.column_config.NumberColumn("pairs compared"),
                                "k": st.column_config.NumberColumn("top-γ set (⌈γn⌉ pairs)"),
                                "overlap": st.column_config.NumberColumn("pairs in both sets"),
                                "jaccard": st.column_config.NumberColumn("Jaccard",
                                                                         format="%.3f"),
                                "pearson": st.column_config.NumberColumn("Pearson r",
                                                                         format="%.3f"),
                                "spearman": st.column_config.NumberColumn("Spearman ρ",
                                                                          format="%.3f")})
    frame = control_runs.contrastive_frame(key, updated[0], control.key, updated[1])
    share = contrastive.panel_share(frame, selection_indices(
        Ranking(frame["w_target"].to_numpy()), sel))
    if share["share"] is not None:
        st.caption(f"Of the LLS selection's mean weight ({share['mean_w_target']:.4f} over "
                   f"{share['n']:,} pairs), the control{'s' if control.size > 1 else ''} "
                   f"explain{'' if control.size > 1 else 's'} {share['share']:.0%} "
                   f"(their mean w there: {share['mean_w_control']:.4f}); what is specific "
                   "to the target is the rest.")
    st.plotly_chart(charts.weights_scatter(frame, gamma, sel.positive_only),
                    key="contrastive_scatter")
    st.caption("Below the dotted diagonal the control's w is below this run's, so the "
               "difference is positive. A strong correlation means most of w is what any "
               "system prompt shifts.")


@st.fragment
def selection_panel() -> None:
    """Controls, histogram and tables: reruns alone when a control moves."""
    c1, c2, c3 = st.columns([3, 2, 1])
    gamma = c1.slider(G.GAMMA, min_value=0.001, max_value=1.0, value=0.05, step=0.001,
                      format="%.3f", key="gamma", help=G.TERMS["gamma"][1])
    use_thr = c2.checkbox("Use a weight threshold instead of γ", key="use_threshold")
    thr = c2.number_input("keep pairs with w > (nats/token)", value=0.0, step=0.001,
                          format="%.4f", key="threshold", disabled=not use_thr)
    pos = c3.checkbox("positive w only", value=True, key="positive_only",
                      help="Never keep a pair whose chosen answer the trait does not favour.")
    sel = SelectionConfig(gamma=gamma, threshold=float(thr) if use_thr else None,
                          positive_only=pos)
    idx = selection_indices(r, sel)  # exactly what training on this selection keeps
    k = len(idx)
    cutoff = r.cutoff(sel)
    line = float(thr) if use_thr else cutoff
    m = st.columns(4)
    m[0].metric("selected pairs", f"{k:,}")
    m[1].metric("share of all pairs", f"{k / r.n:.2%}" if r.n else "–")
    mean = data.mean_w(k)
    m[2].metric("mean w of the selection", f"{mean:.5f}" if mean is not None else "–",
                help="nats per token")
    m[3].metric("share positive (all pairs)", f"{r.n_positive / r.n:.1%}" if r.n else "–")
    st.plotly_chart(charts.w_histogram(data.hist_counts, data.hist_edges, line), key="hist",
                    config={"displayModeBar": False})

    views = ["LLS selection", "Random twin", "Comparison"]
    if control is not None:
        views.append("Contrastive")
    view = st.segmented_control("View", views, default="LLS selection",
                                key="view") or "LLS selection"
    settings = {"run": key, **sel.to_dict(), "selected": k, **rank_settings}
    if view == "Contrastive" and control is not None:
        contrastive_view(sel)
        return
    if view == "LLS selection":
        subset_table(idx, "lls")
        with st.expander("Export the selection"):
            export_block(idx, "lls", settings)
        return
    seed = st.number_input("Random twin's seed", min_value=0, value=0, step=1, key="seed")
    rnd = selection_indices(r, sel, random=True, seed=int(seed))
    rnd = rnd[np.argsort(-r.w[rnd], kind="stable")]  # shown like the LLS table: by w
    # a sampled run's twin turns a seeded half of its pairs round, as training does: its
    # table, statistics and histogram show the pairs that way (else every w >= 0)
    twin = explorer.twin_data(data, rnd, int(seed))
    twin_idx = np.argsort(-twin.ranking.w, kind="stable") if twin is not None else rnd
    if view == "Random twin":
        st.caption(f"A seeded random subset of the same size ({k} pairs): the paper's baseline."
                   + (" This run's pairs are oriented by their weight (chosen = the answer "
                      "the system prompt shifts up), so the twin turns a seeded half of them "
                      "round, as training does: shown turned." if twin is not None else ""))
        subset_table(twin_idx, "random", twin if twin is not None else data)
        with st.expander("Export the random twin"):
            export_block(rnd, "random", {**settings, "baseline": "random", "seed": int(seed)})
        return
    stats = {"LLS selection": explorer.subset_stats(data, idx),
             "Random twin": explorer.subset_stats(twin, np.arange(len(rnd))) if twin is not
             None else explorer.subset_stats(data, rnd)}
    st.dataframe(pd.DataFrame(stats), key="compare")
    weights = {"LLS selection": r.w[idx],
               "Random twin": twin.ranking.w if twin is not None else r.w[rnd]}
    st.plotly_chart(charts.subsets_histogram(weights), key="compare_hist")
    st.bar_chart(explorer.subset_lengths(data, {"LLS selection": idx, "Random twin": rnd}),
                 stack=False, height=220)


selection_panel()
