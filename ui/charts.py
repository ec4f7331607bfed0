"""Plotly figures shared by pages (no Streamlit here: pages render what these return)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# (column, CI low, CI high, level key in a read-out, title)
METER_PANELS = (
    ("llr", "llr_ci_low", "llr_ci_high", ("llr", "value"),
     "Behavior likelihood ratio (nats/token)"),
    ("margin", "margin_ci_low", "margin_ci_high", ("probe", "mean_margin"),
     "Probe: target margin over best alternative (nats)"),
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


def meter_table(series: list[tuple[str, list[dict]]]) -> pd.DataFrame:
    """The last read-out of each series as one row (value, CI, difference to base, gap)."""
    cols = ["step", "llr", "llr_ci_low", "llr_ci_high", "llr_diff", "llr_diff_ci_low",
            "llr_diff_ci_high", "gap_closed", "margin", "margin_diff", "margin_diff_ci_low",
            "margin_diff_ci_high", "top1_share"]
    out = []
    for name, rows in series:
        if rows:
            last = rows[-1]
            out.append({"model": name, **{c: last.get(c) for c in cols}})
    return pd.DataFrame(out)


TRAIN_PANELS = (("loss", "DPO loss"), ("rewards/margins", "Reward margin"),
                ("rewards/accuracies", "Reward accuracy"))


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
    fig.update_layout(height=300, margin={"t": 40, "b": 30}, yaxis_title="behavior rate",
                      xaxis_title="step", title="Sampled effect per checkpoint (95% CI)")
    return fig
