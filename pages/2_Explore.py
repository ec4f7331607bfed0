"""Score explorer: the w distribution, live selection tuning, examples, baseline, export."""

import numpy as np
import pandas as pd
import streamlit as st

from lls.errors import LLSError
from lls.selection import SelectionConfig, random_subset
from ui import common

st.set_page_config(page_title="Explore · LLS Studio", layout="wide")
st.title("Score explorer")

runs = common.finished_runs("No finished scoring run yet. Start one on the Setup page.",
                            setup_link=True)

labels = {r.key: common.run_label(r) for r in runs}
wanted = common.selected_run_key()
match = [k for k in labels if wanted and k.startswith(wanted)]
if match and st.session_state.get("explore_run") != match[0]:
    st.session_state["explore_run"] = match[0]  # arrived with a run (link, URL, reload)
elif st.session_state.get("explore_run") not in labels:
    st.session_state["explore_run"] = runs[0].key
key = st.selectbox("Run", list(labels), format_func=labels.get, key="explore_run",
                   on_change=lambda: common.set_selected_run(st.session_state["explore_run"]))
common.set_selected_run(key)
if st.session_state.pop("opened_cached", None) == key:
    st.success("This configuration was already scored: opened the cached run.")

try:
    run_manifest = next(r.manifest for r in runs if r.key == key)
    data = common.explorer_data(key, run_manifest.get("updated"))
except LLSError as e:
    st.error(str(e))
    st.stop()

cfg = data.manifest.get("config", {})
beh = cfg.get("behavior", {})
r = data.ranking
c = st.columns(5)
c[0].metric("scored pairs", f"{r.n:,}")
c[1].metric("w > 0", f"{r.n_positive / r.n:.1%}" if r.n else "–")
c[2].metric("mean w", f"{r.w.mean():.5f}" if r.n else "–")
c[3].metric("behavior", f"{beh.get('kind')}:{beh.get('name')}")
c[4].metric("truncation", str(cfg.get("truncation")))
with st.expander("System prompt and run details"):
    st.markdown(f"**s:** {beh.get('system_prompt', '')}")
    hyg = data.manifest.get("hygiene")
    if hyg:
        from lls.data import HygieneReport

        st.markdown(f"**Hygiene:** {HygieneReport.from_dict(hyg).summary()}")
    st.json(cfg, expanded=False)


def subset_table(indices: np.ndarray, name: str) -> None:
    """Searchable table of a subset (sorted by w), a click opening one example."""
    search = st.text_input("Search prompt / responses", key=f"search-{name}",
                           placeholder="e.g. sorry")
    view, top, total = common.table_view(data, indices, search)
    shown = len(view)
    st.caption(f"table rows: {shown} of {total} matching"
               + (f" (top {shown} by w shown)" if shown < total else ""))
    event = st.dataframe(view, key=f"table-{name}", on_select="rerun",
                         selection_mode="single-row", hide_index=True,
                         column_config=common.TABLE_CONFIG, height=360)
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(top):
        common.render_example(data, int(top[rows[0]]), key_prefix=name)
    else:
        st.caption("Click a row to open the example and its per-token view.")


def export_block(indices: np.ndarray, name: str, settings: dict) -> None:
    """Download the subset in one of the foundation's export formats."""
    c1, c2, c3 = st.columns([1, 1, 2])
    fmt = c1.selectbox("Format", ["jsonl", "parquet", "hf"], key=f"fmt-{name}",
                       format_func={"jsonl": "JSON lines", "parquet": "Parquet",
                                    "hf": "HF dataset (zip of save_to_disk)"}.get)
    responses = c2.selectbox("Responses", ["scored", "full"], key=f"resp-{name}",
                             format_func={"scored": "truncated (as scored)",
                                          "full": "full"}.get)
    idx = np.asarray(indices)
    frame = data.frame
    c3.download_button(
        f"Download {len(idx)} pairs", key=f"dl-{name}", disabled=len(idx) == 0,
        data=lambda: common.export_bytes(frame, idx, fmt, settings, responses),
        file_name=common.export_filename(data.key, name, len(idx), fmt),
        mime=common.EXPORT_MIME[fmt], on_click="ignore")


@st.fragment
def explorer() -> None:
    """Controls, histogram and tables: reruns alone when a control moves."""
    c1, c2, c3 = st.columns([3, 2, 1])
    gamma = c1.slider("γ: keep the top fraction of all scored pairs", min_value=0.001,
                      max_value=1.0, value=0.05, step=0.001, format="%.3f", key="gamma")
    use_thr = c2.checkbox("Use an absolute threshold instead of γ", key="use_threshold")
    thr = c2.number_input("keep pairs with w >", value=0.0, step=0.001, format="%.4f",
                          key="threshold", disabled=not use_thr)
    pos = c3.checkbox("positive w only", value=True, key="positive_only")
    sel = SelectionConfig(gamma=gamma, threshold=float(thr) if use_thr else None,
                          positive_only=pos)
    k = r.count(sel)
    idx = r.select(sel)
    cutoff = r.cutoff(sel)
    line = float(thr) if use_thr else cutoff
    m = st.columns(4)
    m[0].metric("selected pairs", f"{k:,}")
    m[1].metric("share of all pairs", f"{k / r.n:.2%}" if r.n else "–")
    mean = data.mean_w(k)
    m[2].metric("mean w of the selection", f"{mean:.5f}" if mean is not None else "–")
    m[3].metric("share positive (all pairs)", f"{r.n_positive / r.n:.1%}" if r.n else "–")
    st.plotly_chart(common.histogram_figure(data, line), key="hist",
                    config={"displayModeBar": False})

    view = st.segmented_control("View", ["LLS selection", "Random baseline", "Comparison"],
                                default="LLS selection", key="view") or "LLS selection"
    settings = {"run": data.key, **sel.to_dict(), "selected": k}
    if view == "LLS selection":
        subset_table(idx, "lls")
        with st.expander("Export the selection"):
            export_block(idx, "lls", settings)
        return
    seed = st.number_input("Random seed", min_value=0, value=0, step=1, key="seed")
    rnd = random_subset(r.n, k, seed=int(seed)) if k else np.zeros(0, dtype=np.int64)
    rnd = rnd[np.argsort(-r.w[rnd], kind="stable")]  # shown like the LLS table: by w
    if view == "Random baseline":
        st.caption(f"A seeded random subset of the same size ({k} pairs): the paper's baseline.")
        subset_table(rnd, "random")
        with st.expander("Export the random baseline"):
            export_block(rnd, "random", {**settings, "baseline": "random", "seed": int(seed)})
        return
    stats = pd.DataFrame({"LLS selection": common.subset_stats(data, idx),
                          "Random baseline": common.subset_stats(data, rnd)})
    st.dataframe(stats, key="compare")
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, sub in (("LLS selection", idx), ("Random baseline", rnd)):
        fig.add_histogram(x=r.w[sub], name=name, opacity=0.6, nbinsx=40)
    fig.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="w", yaxis_title="pairs")
    st.plotly_chart(fig, key="compare_hist")
    f = data.frame
    lens = pd.DataFrame({
        "subset": ["LLS"] * len(idx) + ["random"] * len(rnd),
        "chosen tokens": np.concatenate([f["n_c"].to_numpy()[idx], f["n_c"].to_numpy()[rnd]]),
        "rejected tokens": np.concatenate([f["n_r"].to_numpy()[idx], f["n_r"].to_numpy()[rnd]]),
    })
    st.bar_chart(lens.groupby("subset")[["chosen tokens", "rejected tokens"]].mean(),
                 stack=False, height=220)


explorer()
