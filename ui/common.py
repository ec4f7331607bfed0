"""Rendering helpers and cached data shared by the dashboard pages.

Only rendering and caching live here; every computation is a call into `lls`.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from lls import scoring
from lls.errors import LLSError
from lls.models import default_cache_dir
from lls.selection import Ranking

ROOT = Path(__file__).resolve().parent.parent
SHARED_HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"
EXPLORE_PAGE = "pages/2_Explore.py"
SETUP_PAGE = "pages/1_Setup.py"
TABLE_ROWS = 300  # rows sent to the browser; counts and stats always cover the whole selection
HIST_BINS = 80


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


def run_label(run: scoring.ScoreRun) -> str:
    m = run.manifest
    cfg = m.get("config") or {}
    beh = cfg.get("behavior") or {}
    data = Path((cfg.get("data") or {}).get("path", "?")).name
    n = m.get("n_pairs")
    return (f"{run.key[:10]} · {beh.get('kind', '?')}:{beh.get('name', '?')} · {data} · "
            f"{n if n is not None else '?'} pairs · {m.get('status', '?')}")


def runs_frame(runs: list[scoring.ScoreRun]) -> pd.DataFrame:
    """One row per cached run, for display."""
    rows = []
    for r in runs:
        m = r.manifest
        cfg = m.get("config") or {}
        beh = cfg.get("behavior") or {}
        rows.append({
            "run": r.key, "status": m.get("status"), "pairs": m.get("n_pairs"),
            "behavior": f"{beh.get('kind', '?')}:{beh.get('name', '?')}",
            "data": Path((cfg.get("data") or {}).get("path", "?")).name,
            "model": (cfg.get("model") or {}).get("name", "?").split(":", 1)[-1],
            "truncation": cfg.get("truncation"), "created": m.get("created"),
        })
    return pd.DataFrame(rows)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def progress_text(job) -> tuple[float, str]:
    """(fraction for st.progress, 'done/total pairs · rate · time left') of a job."""
    p = job.progress or {}
    done, total = p.get("done"), p.get("total")
    if job.status == "queued":
        return 0.0, "queued: waiting for the device (another exclusive job is running)"
    if done is None:
        return 0.0, f"starting (loading the model and data) · {fmt_seconds(job.elapsed)} elapsed"
    frac = p.get("fraction")
    frac = 0.0 if frac is None else max(0.0, min(1.0, float(frac)))
    if job.status == "done":
        frac = 1.0
    rate = p.get("rate")
    parts = [f"{done}/{total if total is not None else '?'} {p.get('unit') or 'pairs'} done"]
    if not job.is_active and done and job.elapsed:
        parts.append(f"{done / job.elapsed:.2f} pairs/s on average (incl. model loading)")
    else:
        parts.append(f"{rate:.2f} pairs/s" if rate else "rate: measuring")
    if job.is_active:
        parts.append(f"{fmt_seconds(p.get('eta'))} left" if p.get("eta") is not None
                     else "time left: estimating")
    else:
        parts.append(f"took {fmt_seconds(job.elapsed)}")
    return frac, " · ".join(parts)


# ------------------------------------------------------------------ uploads

def save_upload(uploaded) -> str:
    """Save an uploaded file under cache/uploads/ (content-addressed); returns its path."""
    data = uploaded.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:12]
    name = Path(uploaded.name).name
    path = default_cache_dir() / "uploads" / f"{digest}-{name}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(path)


def columns_from_error(message: str) -> list[str]:
    """Column names listed by lls.data's "missing column(s) ... Columns found: a, b." errors."""
    for marker in ("Columns found: ", "columns found: "):
        if marker in message:
            tail = message.split(marker, 1)[1]
            tail = tail.split(". ", 1)[0].split(")", 1)[0]
            return [c.strip() for c in tail.split(",") if c.strip() and c.strip() != "(none)"]
    return []


# ------------------------------------------------------------------ explorer data (cached)

@dataclass
class ExplorerData:
    """Everything the explorer needs for one run, computed once per run."""

    key: str
    frame: pd.DataFrame
    ranking: Ranking
    cum_w: np.ndarray  # cumulative sum of the sorted weights: mean w of any top-k in O(1)
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    prompt_preview: np.ndarray
    manifest: dict
    _haystack: np.ndarray | None = field(default=None, repr=False)

    @property
    def config(self) -> scoring.ScoreConfig:
        return scoring.ScoreConfig.from_dict(self.manifest["config"])

    def mean_w(self, k: int) -> float | None:
        return float(self.cum_w[k - 1] / k) if k else None

    def haystack(self) -> np.ndarray:
        """Lower-cased prompt + responses per row, built on the first search only."""
        if self._haystack is None:
            f = self.frame
            self._haystack = (f["prompt"].str.lower() + "\n" + f["chosen"].str.lower() + "\n"
                              + f["rejected"].str.lower()).to_numpy()
        return self._haystack


def _last_user_text(prompt_json: str) -> str:
    try:
        msgs = json.loads(prompt_json)
    except ValueError:
        return prompt_json
    users = [m.get("content", "") for m in msgs if m.get("role") == "user"]
    return users[-1] if users else (msgs[-1].get("content", "") if msgs else "")


# cache_resource (not cache_data): the frame is read-only here, and cache_data would pickle
# and copy 100k rows on every rerun, which alone would cost more than the latency budget.
@st.cache_resource(max_entries=4, show_spinner="Loading the run's scores…")
def explorer_data(key: str, updated: str | None) -> ExplorerData:
    """The run's frame, its ranking and histogram (keyed on the run key and its last update)."""
    run = scoring.open_run(key)
    frame = run.frame()
    ranking = Ranking(frame["w"].to_numpy())
    counts, edges = np.histogram(ranking.w, bins=HIST_BINS) if ranking.n else (np.zeros(0),
                                                                               np.zeros(1))
    preview = frame["prompt"].map(_last_user_text).str.slice(0, 300).to_numpy()
    return ExplorerData(key=key, frame=frame, ranking=ranking, cum_w=np.cumsum(ranking.sorted_w),
                        hist_counts=counts, hist_edges=edges, prompt_preview=preview,
                        manifest=run.manifest)


def histogram_figure(data: ExplorerData, cutoff: float | None, title: str = ""):
    """Bars of the (pre-binned) w distribution, the selected side coloured, a cutoff line."""
    import plotly.graph_objects as go

    edges = data.hist_edges
    centers = (edges[:-1] + edges[1:]) / 2
    if cutoff is None:
        colors = ["#9ca3af"] * len(centers)
    else:
        colors = np.where(edges[1:] > cutoff, "#2563eb", "#9ca3af").tolist()
    fig = go.Figure(go.Bar(x=centers, y=data.hist_counts, width=np.diff(edges),
                           marker_color=colors, hovertemplate="w≈%{x:.4f}: %{y} pairs"
                           "<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot", line_color="#6b7280")
    if cutoff is not None:
        fig.add_vline(x=cutoff, line_color="#dc2626", line_width=2,
                      annotation_text=f"cutoff {cutoff:.4f}", annotation_position="top right")
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30 if title else 10, b=10),
                      title=title or None, xaxis_title="w", yaxis_title="pairs",
                      bargap=0, showlegend=False)
    return fig


def table_view(data: ExplorerData, indices: np.ndarray, search: str = "",
               limit: int = TABLE_ROWS) -> tuple[pd.DataFrame, np.ndarray, int]:
    """(display frame of the first `limit` matching rows, their frame indices, match count)."""
    idx = np.asarray(indices, dtype=np.int64)
    if search.strip():
        hay = data.haystack()[idx]
        needle = search.strip().lower()
        mask = np.fromiter((needle in h for h in hay), dtype=bool, count=len(hay))
        idx = idx[mask]
    total = len(idx)
    top = idx[:limit]
    f = data.frame
    view = pd.DataFrame({
        "rank": np.arange(1, len(top) + 1),
        "w": f["w"].to_numpy()[top],
        "prompt": data.prompt_preview[top],
        "chosen": f["chosen_scored"].to_numpy()[top],
        "rejected": f["rejected_scored"].to_numpy()[top],
        "lc_s": f["lc_s"].to_numpy()[top], "lr_s": f["lr_s"].to_numpy()[top],
        "lc": f["lc"].to_numpy()[top], "lr": f["lr"].to_numpy()[top],
    })
    return view, top, total


TABLE_CONFIG = {
    "w": st.column_config.NumberColumn("w", format="%.5f"),
    "lc_s": st.column_config.NumberColumn("log P(c|s,p)", format="%.2f"),
    "lr_s": st.column_config.NumberColumn("log P(r|s,p)", format="%.2f"),
    "lc": st.column_config.NumberColumn("log P(c|p)", format="%.2f"),
    "lr": st.column_config.NumberColumn("log P(r|p)", format="%.2f"),
    "prompt": st.column_config.TextColumn("prompt (last user turn)", width="medium"),
    "chosen": st.column_config.TextColumn("chosen (scored)", width="medium"),
    "rejected": st.column_config.TextColumn("rejected (scored)", width="medium"),
}


def subset_stats(data: ExplorerData, idx: np.ndarray) -> dict:
    """Length and score summary of a subset (for the LLS vs random comparison)."""
    f = data.frame
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return {"pairs": 0}
    w = data.ranking.w[idx]
    return {
        "pairs": len(idx), "mean w": float(w.mean()), "median w": float(np.median(w)),
        "share w > 0": float((w > 0).mean()),
        "mean chosen tokens (n_c)": float(f["n_c"].to_numpy()[idx].mean()),
        "mean rejected tokens (n_r)": float(f["n_r"].to_numpy()[idx].mean()),
        "mean prompt tokens": float(f["prompt_tokens"].to_numpy()[idx].mean()),
        "mean chosen − rejected tokens": float((f["n_c"].to_numpy()[idx]
                                                 - f["n_r"].to_numpy()[idx]).mean()),
        "mean log P(c|p) − log P(r|p)": float((f["lc"].to_numpy()[idx]
                                                - f["lr"].to_numpy()[idx]).mean()),
    }


# ------------------------------------------------------------------ export

EXPORT_MIME = {"jsonl": "application/jsonl", "parquet": "application/octet-stream",
               "hf": "application/zip"}


def export_bytes(frame: pd.DataFrame, indices, fmt: str, settings: dict,
                 responses: str = "scored") -> bytes:
    """The selection exported by `lls.selection.export`, as bytes ("hf": a zipped folder)."""
    from lls.selection import export

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / ("selection.jsonl" if fmt == "jsonl" else
                              "selection.parquet" if fmt == "parquet" else "selection")
        export(frame, indices, target, fmt=fmt, settings=settings, responses=responses)
        if fmt != "hf":
            return target.read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(target.rglob("*")):
                if p.is_file():
                    z.write(p, Path("selection") / p.relative_to(target))
            side = target.with_name(target.name + ".lls.json")
            if side.is_file():
                z.write(side, side.name)
        return buf.getvalue()


def export_filename(key: str, name: str, n: int, fmt: str) -> str:
    ext = {"jsonl": "jsonl", "parquet": "parquet", "hf": "zip"}[fmt]
    return f"lls-{key[:8]}-{name}-{n}.{ext}"


# ------------------------------------------------------------------ per-token attribution

@st.cache_resource(max_entries=1, show_spinner="Loading the teacher model…")
def teacher(model_json: str):
    """(model, tokenizer) of a run's teacher, loaded once per process."""
    from lls.models import ModelSpec, load_model

    return load_model(ModelSpec.from_dict(json.loads(model_json)))


@st.cache_data(max_entries=256, show_spinner="Computing per-token attribution…")
def attribution(run_key: str, index: int, _row: dict, model_json: str, system_prompt: str,
                truncation: int | None) -> dict:
    """lls.explain.token_attribution for one row of a run (cached per run and row)."""
    from lls.explain import token_attribution

    model, tok = teacher(model_json)
    return token_attribution(model, tok, _row, system_prompt, truncation)


def tokens_html(tokens: list, scale: float) -> str:
    """Tokens as spans: green where s raised log P, red where it lowered it."""
    spans = []
    for text, ls, lb, d in tokens:
        a = min(abs(d) / scale, 1.0) if scale > 0 else 0.0
        rgb = "22,163,74" if d > 0 else "220,38,38"
        shown = html.escape(text).replace("\n", "↵<br>") or "&nbsp;"
        tip = f"{text!r}: log P with s {ls:.3f}, without s {lb:.3f}, delta {d:+.3f}"
        spans.append(f'<span title="{html.escape(tip)}" style="background:rgba({rgb},{a:.2f});'
                     f'border-radius:3px;padding:1px 1px;margin:0 1px;white-space:pre-wrap">'
                     f"{shown}</span>")
    return ('<div style="line-height:2;font-family:monospace;font-size:0.9em">'
            + "".join(spans) + "</div>")


def render_attribution(att: dict) -> None:
    """The per-token view of one pair: both responses coloured by delta, and the sums."""
    deltas = [abs(t[3]) for t in att["chosen"] + att["rejected"]]
    scale = float(np.percentile(deltas, 95)) if deltas else 1.0
    st.caption("Green: the system prompt raised the token's log-probability; red: lowered it "
               "(hover for numbers). Colour saturates at the 95th percentile of |delta|: "
               f"{scale:.3f} nats.")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown(f"**Chosen** · {att['n_c']} tokens · Σ delta = {att['sum_chosen']:+.3f}")
        st.markdown(tokens_html(att["chosen"], scale), unsafe_allow_html=True)
    with c2:
        st.markdown(f"**Rejected** · {att['n_r']} tokens · Σ delta = {att['sum_rejected']:+.3f}")
        st.markdown(tokens_html(att["rejected"], scale), unsafe_allow_html=True)
    st.markdown(f"w = (Σ chosen − Σ rejected) / (n_c + n_r) = **{att['w']:.5f}**")
    top = sorted(((t[3], t[0], side) for side in ("chosen", "rejected") for t in att[side]),
                 key=lambda x: -abs(x[0]))[:10]
    st.dataframe(pd.DataFrame([{"token": repr(t), "response": side, "delta": d}
                               for d, t, side in top]), hide_index=True)


def render_example(data: ExplorerData, index: int, key_prefix: str) -> None:
    """One pair: prompt, both responses, its scores, and the on-demand per-token view."""
    row = data.frame.iloc[int(index)]
    st.markdown(f"#### Example `{row['id']}` · w = {row['w']:.5f}")
    cols = st.columns(5)
    cols[0].metric("w", f"{row['w']:.5f}")
    cols[1].metric("log P(c|s,p)", f"{row['lc_s']:.2f}")
    cols[2].metric("log P(r|s,p)", f"{row['lr_s']:.2f}")
    cols[3].metric("log P(c|p)", f"{row['lc']:.2f}")
    cols[4].metric("log P(r|p)", f"{row['lr']:.2f}")
    try:
        msgs = json.loads(row["prompt"])
    except ValueError:
        msgs = [{"role": "user", "content": row["prompt"]}]
    with st.expander(f"Prompt ({len(msgs)} turns, {row['prompt_tokens']} tokens)",
                     expanded=len(msgs) <= 2):
        for m in msgs:
            st.markdown(f"**{m.get('role')}:** {html.escape(m.get('content', ''))}")
    c1, c2 = st.columns(2)
    c1.markdown(f"**Chosen (scored, {row['n_c']} tokens)**")
    c1.text(row["chosen_scored"])
    c2.markdown(f"**Rejected (scored, {row['n_r']} tokens)**")
    c2.text(row["rejected_scored"])
    if data.manifest.get("synthetic"):
        st.caption("Synthetic run: no per-token view (there is no model behind these scores).")
        return
    state_key = f"{key_prefix}-att-{data.key}-{int(index)}"
    if st.button("Show per-token attribution (runs the teacher on this pair)",
                 key=f"{key_prefix}-att-btn"):
        st.session_state[state_key] = True
    if st.session_state.get(state_key):
        cfg = data.config
        try:
            att = attribution(data.key, int(index), row.to_dict(),
                              json.dumps(cfg.model.to_dict(), sort_keys=True),
                              cfg.behavior.system_prompt, cfg.truncation)
        except Exception as e:  # noqa: BLE001 - show any failure on the page, not a traceback
            st.error(f"Per-token attribution failed: {e}")
            return
        render_attribution(att)


# ------------------------------------------------------------------ contrastive selection

RANK_COLUMNS = {"w_target": "w_target (LLS: the target run's w)",
                "w_control": "w_control (the control run's w)",
                "w_contrastive": "w_contrastive = w_target − w_control"}
SCATTER_POINTS = 20_000  # points drawn in the w_target vs w_control scatter (selected always)


def control_candidates(target: scoring.ScoreRun,
                       runs: list[scoring.ScoreRun]) -> list[scoring.ScoreRun]:
    """Finished runs usable as the control of `target`: strict controls first (same pairs,
    another system prompt), then runs that differ in the contamination filter too."""
    from lls.contrastive import list_controls

    return list_controls(target, runs=runs, strict=False)


def control_label(target: scoring.ScoreRun, control: scoring.ScoreRun) -> str:
    from lls.contrastive import is_control_of

    m = control.manifest
    prompt = ((m.get("config") or {}).get("behavior") or {}).get("system_prompt", "")
    short = prompt if len(prompt) <= 70 else prompt[:67] + "…"
    strict = is_control_of(target.manifest, m, strict=True)
    return (f"{control.key[:10]} · “{short}”"
            + ("" if strict else " · other filter: shared pairs only"))


@st.cache_resource(max_entries=2, show_spinner="Aligning the target and control runs…")
def contrastive_frame(target_key: str, target_updated: str | None, control_key: str,
                      control_updated: str | None) -> pd.DataFrame:
    """lls.contrastive.contrastive_frame of two runs (keyed on both keys and 'updated' stamps).

    cache_resource, like `explorer_data`: read-only here, and no pickled copy per rerun. The
    target's frame comes from `explorer_data`'s cache, so it is not read twice.
    """
    from lls import contrastive

    contrastive.check_compatible(scoring.open_run(target_key), scoring.open_run(control_key))
    target = explorer_data(target_key, target_updated).frame
    return contrastive.contrastive_frame(target, scoring.open_run(control_key).frame())


def _explorer_from_frame(key: str, frame: pd.DataFrame, manifest: dict) -> ExplorerData:
    ranking = Ranking(frame["w"].to_numpy())
    counts, edges = np.histogram(ranking.w, bins=HIST_BINS) if ranking.n else (np.zeros(0),
                                                                               np.zeros(1))
    preview = frame["prompt"].map(_last_user_text).str.slice(0, 300).to_numpy()
    return ExplorerData(key=key, frame=frame, ranking=ranking, cum_w=np.cumsum(ranking.sorted_w),
                        hist_counts=counts, hist_edges=edges, prompt_preview=preview,
                        manifest=manifest)


@st.cache_resource(max_entries=6, show_spinner="Ranking by the chosen weight…")
def contrastive_data(target_key: str, target_updated: str | None, control_key: str,
                     control_updated: str | None, column: str) -> ExplorerData:
    """Explorer data of the aligned target + control frame, ranked by `column` (its `w`).

    The manifest is the target's (its system prompt drives the per-token view); the key names
    both runs, so per-row caches never mix the aligned frame's rows with the target's.
    """
    from lls.contrastive import as_ranked

    frame = as_ranked(contrastive_frame(target_key, target_updated, control_key,
                                        control_updated), column)
    manifest = explorer_data(target_key, target_updated).manifest
    return _explorer_from_frame(f"{target_key}~{control_key[:12]}", frame, manifest)


def weights_table_view(data: ExplorerData, indices: np.ndarray, search: str = "",
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
    "w": st.column_config.NumberColumn("w (ranked by)", format="%.5f"),
    "w_target": st.column_config.NumberColumn("w_target", format="%.5f"),
    "w_control": st.column_config.NumberColumn("w_control", format="%.5f"),
    "w_contrastive": st.column_config.NumberColumn("w_contrastive", format="%.5f"),
}


@st.cache_data(max_entries=64, show_spinner=False)
def ranking_comparison(target_key: str, target_updated: str | None, control_key: str,
                       control_updated: str | None, gamma: float) -> list[dict]:
    """lls.contrastive.compare_rankings at `gamma`: w_target vs w_control (how much the two
    system prompts agree) and w_target vs w_contrastive (how much the control changes the
    selection)."""
    from lls.contrastive import compare_rankings

    frame = contrastive_frame(target_key, target_updated, control_key, control_updated)
    return [{"comparison": f"{a} vs {b}", **compare_rankings(frame, gamma, a, b)}
            for a, b in (("w_target", "w_control"), ("w_target", "w_contrastive"))]


def weights_scatter(frame: pd.DataFrame, gamma: float, max_points: int = SCATTER_POINTS):
    """Scatter of w_target (x) against w_control (y), the top-gamma pairs of w_target and of
    w_contrastive coloured; the diagonal is w_contrastive = 0 (below it: positive)."""
    import plotly.graph_objects as go

    x = frame["w_target"].to_numpy()
    y = frame["w_control"].to_numpy()
    n = len(x)
    k = int(np.ceil(gamma * n)) if n else 0
    in_t = np.zeros(n, dtype=bool)
    in_c = np.zeros(n, dtype=bool)
    in_t[np.argsort(-x, kind="stable")[:k]] = True
    in_c[np.argsort(-frame["w_contrastive"].to_numpy(), kind="stable")[:k]] = True
    groups = [("top γ by both", in_t & in_c, "#7c3aed"),
              ("top γ by w_target only", in_t & ~in_c, "#2563eb"),
              ("top γ by w_contrastive only", ~in_t & in_c, "#dc2626"),
              ("other pairs", ~in_t & ~in_c, "#9ca3af")]
    rest = np.flatnonzero(~in_t & ~in_c)
    budget = max(max_points - int((in_t | in_c).sum()), 0)
    if len(rest) > budget:
        keep = np.zeros(n, dtype=bool)
        keep[np.random.default_rng(0).choice(rest, size=budget, replace=False)] = True
        groups[-1] = ("other pairs (sample)", keep, "#9ca3af")
    ids = frame["id"].to_numpy()
    fig = go.Figure()
    for name, mask, color in reversed(groups):
        fig.add_trace(go.Scattergl(
            x=x[mask], y=y[mask], mode="markers", name=f"{name} ({int(mask.sum())})",
            marker=dict(color=color, size=5 if name.startswith("other") else 7, opacity=0.7),
            customdata=ids[mask],
            hovertemplate="%{customdata}<br>w_target %{x:.4f}<br>w_control %{y:.4f}"
                          "<extra></extra>"))
    if n:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi,
                      line=dict(color="#6b7280", dash="dot"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="w_target", yaxis_title="w_control",
                      legend=dict(orientation="h", y=-0.2))
    return fig
