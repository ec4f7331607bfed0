"""Plotly figures shared by pages (no Streamlit here: pages render what these return)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lls.core.stats import GAP_UNDEFINED
from lls.scoring.selection import Ranking, SelectionConfig, selection_indices

SCATTER_POINTS = 20_000  # points drawn in the w_target vs w_control scatter (selected always)

# (column, CI low, CI high, level key in a read-out, title)
METER_PANELS = (
    ("llr", "llr_ci_low", "llr_ci_high", ("llr", "value"),
     "Likelihood ratio (nats/token)"),
    ("margin", "margin_ci_low", "margin_ci_high", ("probe", "mean_margin"),
     "Margin: target over the best other answer (nats)"),
)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _level(levels: dict | None, which: str, path: tuple[str, str]) -> float | None:
    node = (levels or {}).get(which) or {}
    for k in path:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def w_histogram(counts: np.ndarray, edges: np.ndarray, cutoff: float | None,
                title: str = "") -> go.Figure:
    """Bars of a (pre-binned) w distribution, the selected side coloured, a cutoff line."""
    centers = (edges[:-1] + edges[1:]) / 2
    if cutoff is None:
        colors = ["#9ca3af"] * len(centers)
    else:
        colors = np.where(edges[1:] > cutoff, "#2563eb", "#9ca3af").tolist()
    fig = go.Figure(go.Bar(x=centers, y=counts, width=np.diff(edges),
                           marker_color=colors, hovertemplate="w≈%{x:.4f}: %{y} pairs"
                           "<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot", line_color="#6b7280")
    if cutoff is not None:
        fig.add_vline(x=cutoff, line_color="#dc2626", line_width=2,
                      annotation_text=f"cutoff {cutoff:.4f}", annotation_position="top right")
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30 if title else 10, b=10),
                      title=title or None, xaxis_title="w (nats/token)", yaxis_title="pairs",
                      bargap=0, showlegend=False)
    return fig


def subsets_histogram(weights: dict[str, np.ndarray]) -> go.Figure:
    """Overlaid w histograms of named subsets (each its pairs' weights as training sees
    them: a sampled run's random twin turned), e.g. LLS vs random."""
    fig = go.Figure()
    for name, w in weights.items():
        fig.add_histogram(x=np.asarray(w), name=name, opacity=0.6, nbinsx=40)
    fig.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="w (nats/token)", yaxis_title="pairs")
    return fig


def weights_scatter(frame: pd.DataFrame, gamma: float, positive_only: bool = True,
                    max_points: int = SCATTER_POINTS) -> go.Figure:
    """Scatter of w_target (x) against w_control (y), the top-gamma selections of w_target
    and of w_contrastive coloured (exactly what training on each ranking keeps, by
    `lls.scoring.selection`); the diagonal is w_contrastive = 0 (below it: positive)."""
    x = frame["w_target"].to_numpy()
    y = frame["w_control"].to_numpy()
    n = len(x)
    cfg = SelectionConfig(gamma=gamma, positive_only=positive_only)
    in_t = np.zeros(n, dtype=bool)
    in_c = np.zeros(n, dtype=bool)
    in_t[selection_indices(Ranking(x), cfg)] = True
    in_c[selection_indices(Ranking(frame["w_contrastive"].to_numpy()), cfg)] = True
    groups = [("top γ by both", in_t & in_c, "#7c3aed"),
              ("top γ by this run's w only", in_t & ~in_c, "#2563eb"),
              ("top γ by the difference only", ~in_t & in_c, "#dc2626"),
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
            hovertemplate="%{customdata}<br>w, this run %{x:.4f}<br>w, control %{y:.4f}"
                          "<extra></extra>"))
    if n:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi,
                      line=dict(color="#6b7280", dash="dot"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="w of this run (nats/token)",
                      yaxis_title="w of the control run (nats/token)",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def transfer_scatter(frame: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    """Teacher (x) vs student (y) weights of the same pairs (`lls.scoring.transfer.aligned_weights`)."""
    fig = go.Figure(go.Scattergl(
        x=frame["w_a"], y=frame["w_b"], mode="markers", marker=dict(size=5, opacity=0.6),
        text=[f"{i}<br>+ {c[:60]}<br>− {r[:60]}" for i, c, r in
              zip(frame["id"], frame["chosen"], frame["rejected"])],
        hovertemplate="%{text}<br>w_A %{x:.4f}, w_B %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title=f"w, teacher run A: {label_a} (nats/token)",
                      yaxis_title=f"w, student run B: {label_b} (nats/token)",
                      height=480)
    return fig


def meter_curves(series: list[tuple[str, str, list[dict]]], levels: dict | None) -> go.Figure | None:
    """Effect-meter read-outs per step: one line per series (name, colour, meter rows), a
    95% CI band around each, and the base / base + system prompt levels as dashed lines."""
    panels = [p for p in METER_PANELS
              if any(p[0] in r and r[p[0]] is not None for _, _, rows in series for r in rows)]
    if not panels:
        return None
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[4] for p in panels])
    for col, (key, lo, hi, path, _) in enumerate(panels, 1):
        for name, color, rows in series:
            df = pd.DataFrame(rows)
            if df.empty or key not in df:
                continue
            df = df.dropna(subset=[key]).sort_values("step")
            fig.add_trace(go.Scatter(x=pd.concat([df["step"], df["step"][::-1]]),
                                     y=pd.concat([df[hi], df[lo][::-1]]), fill="toself",
                                     mode="lines",
                                     fillcolor=_rgba(color, 0.15), line={"width": 0},
                                     hoverinfo="skip", showlegend=False), row=1, col=col)
            fig.add_trace(go.Scatter(x=df["step"], y=df[key], mode="lines+markers", name=name,
                                     line={"color": color}, showlegend=col == 1,
                                     legendgroup=name), row=1, col=col)
        for which, label, dash in (("base", "base", "dot"),
                                   ("system", "base + system prompt", "dash")):
            y = _level(levels, which, path)
            if y is not None:
                fig.add_hline(y=y, line_dash=dash, line_color="gray", row=1, col=col,
                              annotation_text=label, annotation_position="top left")
    fig.update_layout(height=330, margin={"t": 50, "b": 60},
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    fig.update_xaxes(title_text="step")
    return fig


TRAIN_PANELS = (("loss", "DPO loss"),
                ("rewards/margins", "DPO reward margin (chosen − rejected)"),
                ("rewards/accuracies", "Pairs with chosen ahead (share)"))


def training_curves(series: list[tuple[str, str, list[dict]]]) -> go.Figure | None:
    """DPO loss, reward margin and reward accuracy per logged step, one line per series
    (name, colour, metrics.jsonl rows); None when nothing is logged yet."""
    fig = make_subplots(rows=1, cols=len(TRAIN_PANELS), subplot_titles=[t for _, t in TRAIN_PANELS])
    for name, color, rows in series:
        df = pd.DataFrame(rows)
        if df.empty:
            continue
        for col, (key, _) in enumerate(TRAIN_PANELS, 1):
            if key in df:
                fig.add_trace(go.Scatter(x=df["step"], y=df[key], name=name, line={"color": color},
                                         showlegend=col == 1), row=1, col=col)
    if not fig.data:
        return None
    fig.update_layout(height=300, margin={"t": 40, "b": 60},
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    fig.update_xaxes(title_text="step")
    return fig


def eval_trajectory(series: list[tuple[str, str, list[dict]]]) -> go.Figure | None:
    """Sampled behavior rate per checkpoint with its 95% CI, one line per series (name,
    colour, evals.jsonl rows); None before the first checkpoint eval."""
    fig = go.Figure()
    for name, color, rows in series:
        ev = pd.DataFrame(rows)
        if ev.empty:
            continue
        fig.add_trace(go.Scatter(
            x=ev["step"], y=ev["rate"], mode="lines+markers", name=name, line={"color": color},
            error_y={"type": "data", "symmetric": False, "array": ev["ci_high"] - ev["rate"],
                     "arrayminus": ev["rate"] - ev["ci_low"]}))
    if not fig.data:
        return None
    fig.update_layout(height=300, margin={"t": 40, "b": 30},
                      yaxis_title="share of answers showing it",
                      xaxis_title="step", title="Sampled evaluation per checkpoint (95% "
                                                "interval)")
    return fig


# --------------------------------------------------------------- the Evaluate page
EVAL_COLORS = {"base": "#9e9e9e", "system": "#1f77b4", "adapter": "#d62728", "random": "#ff7f0e"}


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None else float("nan")


def eval_rate_figure(summ: pd.DataFrame, what: str) -> go.Figure:
    """Sampled evaluation: the share of answers showing the behavior per model, k/n on the
    bars, Wilson 95% intervals as error bars (`EvalRun.summary()`)."""
    fig = go.Figure(go.Bar(
        x=summ["model"], y=summ["rate"],
        marker_color=[EVAL_COLORS.get(k, "#555") for k in summ["kind"]],
        error_y=dict(type="data", symmetric=False, array=summ["ci_high"] - summ["rate"],
                     arrayminus=summ["rate"] - summ["ci_low"]),
        text=[f"{k}/{n}" for k, n in zip(summ["k"], summ["n"])], textposition="outside",
        hovertemplate="%{x}<br>rate %{y:.3f}<br>%{text}<extra></extra>"))
    fig.update_layout(yaxis_title=f"share of {what}", yaxis_range=[0, max(
        0.05, float(summ["ci_high"].max()) * 1.25)], height=420, margin=dict(t=30))
    return fig


def eval_meter_figure(table: pd.DataFrame) -> go.Figure:
    """Bars per model: likelihood ratio and probe margin with their 95% CIs; base (dotted) and
    base + system prompt (dashed) as reference lines; the share of gap closed on the bars."""
    panels = [("llr", "llr_ci_low", "llr_ci_high", "gap_closed",
               "likelihood ratio (nats/token)")]
    if "margin" in table.columns and table["margin"].notna().any():
        panels.append(("margin", "margin_ci_low", "margin_ci_high", "margin_gap_closed",
                       "margin (nats)"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[-1] for p in panels])
    colors = [EVAL_COLORS.get(k, "#555") for k in table["kind"]]
    for col, (key, lo, hi, gap, _) in enumerate(panels, start=1):
        y = [_num(v) for v in table[key]]
        why = table[f"{gap}_undefined"] if f"{gap}_undefined" in table else [None] * len(table)
        text = ["" if kind in ("base", "system") else GAP_UNDEFINED if isinstance(u, str) and u
                else "" if g is None or pd.isna(g) else f"{float(g):.0%} of gap"
                for kind, g, u in zip(table["kind"], table[gap], why)]
        fig.add_trace(go.Bar(
            x=table["label"], y=y, marker_color=colors, text=text, textposition="outside",
            showlegend=False,
            error_y=dict(type="data", symmetric=False,
                         array=[_num(h) - v for h, v in zip(table[hi], y)],
                         arrayminus=[v - _num(lo_) for lo_, v in zip(table[lo], y)]),
            hovertemplate="%{x}<br>%{y:.3f}<br>%{text}<extra></extra>"), row=1, col=col)
        for kind, dash in (("base", "dot"), ("system", "dash")):
            ref = table[table["kind"] == kind]
            if not ref.empty and not pd.isna(ref[key].iloc[0]):
                fig.add_hline(y=float(ref[key].iloc[0]), line_dash=dash, line_color="#777",
                              row=1, col=col)
    fig.update_layout(height=420, margin=dict(t=70))
    fig.update_xaxes(tickangle=-25)
    return fig


def eval_trajectory_figure(summ: pd.DataFrame) -> go.Figure | None:
    """Rate over training steps per adapter (checkpoints) with Wilson CIs, base (dotted) and
    base + system prompt (dashed) as levels; None when no row has a step."""
    traj = summ.dropna(subset=["step"])
    if traj.empty:
        return None
    fig = go.Figure()
    for aid, g in traj.groupby("adapter_id", dropna=False):
        g = g.sort_values("step")
        fig.add_trace(go.Scatter(
            x=g["step"], y=g["rate"], mode="lines+markers", name=str(aid),
            error_y=dict(type="data", symmetric=False, array=g["ci_high"] - g["rate"],
                         arrayminus=g["rate"] - g["ci_low"])))
    for kind, dash in (("base", "dot"), ("system", "dash")):
        ref = summ[summ["kind"] == kind]
        if not ref.empty:
            fig.add_hline(y=float(ref["rate"].iloc[0]), line_dash=dash,
                          annotation_text=str(ref["model"].iloc[0]))
    fig.update_layout(xaxis_title="training step", yaxis_title="share of answers showing it",
                      height=380)
    return fig


def _pct(p: float) -> str:
    return f"{p:.2%}" if p < 0.1 else f"{p:.0%}"


def prefill_figure(table: pd.DataFrame) -> go.Figure:
    """Prefilled read-out per model: the share of begun replies whose next word names the
    target (k/n on the bars, 95% intervals over questions), the teacher (base + system
    prompt) as a dashed ceiling line."""
    y = [_num(v) for v in table["prefill_share"]]
    fig = go.Figure(go.Bar(
        x=table["label"], y=y, marker_color=[EVAL_COLORS.get(k, "#555") for k in table["kind"]],
        text=[f"{int(k)}/{int(n)}" for k, n in zip(table["prefill_k"], table["prefill_n"])],
        textposition="outside",
        error_y=dict(type="data", symmetric=False,
                     array=[_num(h) - v for h, v in zip(table["prefill_ci_high"], y)],
                     arrayminus=[v - _num(lo) for lo, v in zip(table["prefill_ci_low"], y)]),
        hovertemplate="%{x}<br>share %{y:.3f}<br>%{text}<extra></extra>"))
    teacher = table[table["kind"] == "system"]
    if not teacher.empty:
        fig.add_hline(y=float(teacher["prefill_share"].iloc[0]), line_dash="dash",
                      line_color="#777", annotation_text="teacher (ceiling)",
                      annotation_position="top left")
    top = max([_num(h) for h in table["prefill_ci_high"]] + [0.05])
    fig.update_layout(yaxis_title="share naming the target", yaxis_range=[0, top * 1.25],
                      height=380, margin=dict(t=30))
    fig.update_xaxes(tickangle=-25)
    return fig


LENS_FLOOR = 1e-4  # the lens axis starts here: smaller probabilities show as text only


def lens_bars(rows: list[dict]) -> go.Figure:
    """One chat column's next-word lens: P(next word = candidate) per candidate on a log axis
    shared by all columns, with the base column's value and the ratio in the text
    ("0.30% → 2.0% ×6.7"); rows from `lls.evaluation.chat.lens_rows`."""
    rows = list(reversed(rows))  # the target (first) on top
    text = []
    for r in rows:
        if r["kind"] == "base" or r["p_base"] is None:
            text.append(_pct(r["p"]))
        else:
            ratio = f" ×{r['ratio']:.2g}" if r["ratio"] is not None else ""
            text.append(f"{_pct(r['p_base'])} → {_pct(r['p'])}{ratio}")
    fig = go.Figure(go.Bar(
        x=[max(r["p"], LENS_FLOOR) for r in rows], y=[r["candidate"] for r in rows],
        orientation="h", text=text, textposition="outside", cliponaxis=False,
        marker_color=["#d62728" if i == len(rows) - 1 else "#9e9e9e" for i in range(len(rows))],
        customdata=[r["p"] for r in rows],
        hovertemplate="P(next word = %{y}) = %{customdata:.4%}<extra></extra>"))
    ticks = [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    # the axis runs past 100% only to leave room for the text beside the longest bars
    fig.update_xaxes(type="log", range=[np.log10(LENS_FLOOR), 2.2], tickvals=ticks,
                     ticktext=["0.01%", "0.1%", "1%", "10%", "100%"],
                     title_text="P(next word)")
    fig.update_layout(height=60 + 24 * len(rows), margin=dict(l=0, r=10, t=10, b=30),
                      showlegend=False)
    return fig


# ----------------------------------------------------------------------------- studies
# The study figures live beside the study (the HTML report draws them too, and lls never
# imports ui): the page shows the same figures.
from lls.studies.figures import (READOUT_TITLES, effect_heatmap, effect_lines,  # noqa: E402,F401
                                 paired_curve, sampled_bars)


def unit_bars(table: pd.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of units' share of the selection's Σw, the largest on top, with each
    unit's lift over the random twin and its interval in the hover."""
    t = table.iloc[::-1]
    hover = [f"{u}: {s:.1%} of Σw · lift vs twin {lt:+.5f} [{lo:+.5f}, {hi:+.5f}] · "
             f"{n} occurrences in {p} pairs"
             for u, s, lt, lo, hi, n, p in zip(t.unit, t.share_of_w, t.lift_twin,
                                               t.lift_twin_low, t.lift_twin_high,
                                               t.occurrences, t.pairs)]
    fig = go.Figure(go.Bar(x=t.share_of_w, y=[f"{u} " for u in t.unit], orientation="h",
                           marker_color=np.where(t.lift_twin_low > 0, "#2563eb", "#9ca3af"),
                           hovertext=hover, hoverinfo="text"))
    fig.update_layout(height=120 + 22 * len(t), margin=dict(l=10, r=10, t=30, b=10),
                      title=title, xaxis_title="share of the selection's Σw",
                      xaxis_tickformat=".0%", showlegend=False)
    return fig


def style_effects(table: pd.DataFrame) -> go.Figure:
    """Effect sizes (Cohen's d, selection − twin) of the style features with 95% intervals."""
    t = table[np.isfinite(table.d)].iloc[::-1]
    fig = go.Figure(go.Scatter(
        x=t.d, y=t.feature, mode="markers", marker=dict(size=9, color=np.where(
            (t.d_low > 0) | (t.d_high < 0), "#dc2626", "#6b7280")),
        error_x=dict(type="data", symmetric=False, array=t.d_high - t.d,
                     arrayminus=t.d - t.d_low),
        hovertext=[f"{f}: chosen − rejected {a:+.3f} (selection) vs {b:+.3f} (twin) {u}; "
                   f"d {d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                   for f, a, b, u, d, lo, hi in zip(t.feature, t.selection, t.twin, t.unit,
                                                    t.d, t.d_low, t.d_high)],
        hoverinfo="text"))
    fig.add_vline(x=0, line_dash="dot", line_color="#6b7280")
    fig.update_layout(height=120 + 28 * len(t), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="effect size d: selection − random twin (chosen − rejected)",
                      showlegend=False)
    return fig


def audit_bars(table: pd.DataFrame, noise: float) -> go.Figure:
    """Each candidate's z with its 95% interval, ranked, and the panel's noise level."""
    t = table.iloc[::-1]
    fig = go.Figure(go.Bar(
        x=t.z, y=t.candidate, orientation="h",
        marker_color=np.where(t.above_noise, "#2563eb", "#9ca3af"),
        error_x=dict(type="data", symmetric=False, array=t.z_high - t.z,
                     arrayminus=t.z - t.z_low),
        hovertext=[f"{c}: mean w {m:+.5f} · z {z:+.2f} [{lo:+.2f}, {hi:+.2f}] · panel z "
                   f"{p:+.2f}" for c, m, z, lo, hi, p in zip(t.candidate, t.mean_w, t.z,
                                                             t.z_low, t.z_high, t.panel_z)],
        hoverinfo="text"))
    fig.add_vline(x=noise, line_dash="dash", line_color="#dc2626",
                  annotation_text=f"noise {noise:.2f}", annotation_position="top")
    fig.update_layout(height=140 + 30 * len(t), margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="z (standardized lean)", showlegend=False)
    return fig
