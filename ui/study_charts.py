"""Plotly figures of a study (no Streamlit here): effect vs setting, a cell's paired curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

READOUT_TITLES = {
    "margin": "Probe margin, LLS − random (nats)",
    "gap_closed": "Gap closed, LLS − random",
    "top1": "Top-1 share, LLS − random",
    "llr": "Likelihood ratio, LLS − random (nats/token)",
}


def effect_heatmap(rows: list[dict], readout: str, x: str, y: str) -> go.Figure | None:
    """Paired effect at each cell's last step over two axes (mean over the other axes),
    with the CI in the hover text and cell count per square."""
    df = pd.DataFrame([r for r in rows if r.get(f"{readout}_diff") is not None])
    if df.empty:
        return None
    g = df.groupby([y, x], dropna=False).agg(
        diff=(f"{readout}_diff", "mean"), lo=(f"{readout}_lo", "mean"),
        hi=(f"{readout}_hi", "mean"), n=("cell", "count")).reset_index()
    xs, ys = sorted(g[x].dropna().unique()), sorted(g[y].dropna().unique())
    z = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for _, r in g.iterrows():
        i, j = ys.index(r[y]), xs.index(r[x])
        z[i][j] = r["diff"]
        text[i][j] = f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] (cells {r['n']})"
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in xs], y=[str(v) for v in ys], text=text,
                               texttemplate="%{text}", colorscale="RdBu", zmid=0,
                               hovertemplate=f"{x} %{{x}}, {y} %{{y}}: %{{text}}<extra></extra>"))
    fig.update_layout(title=READOUT_TITLES.get(readout, readout), xaxis_title=x,
                      yaxis_title=y, height=360, margin=dict(t=50, b=40))
    return fig


def effect_lines(rows: list[dict], readout: str, x: str, color: str | None) -> go.Figure | None:
    """Paired effect vs one axis, one line per value of `color`, with 95% CI bars."""
    df = pd.DataFrame([r for r in rows if r.get(f"{readout}_diff") is not None])
    if df.empty:
        return None
    fig = go.Figure()
    groups = df.groupby(color, dropna=False) if color else [("all", df)]
    for name, d in groups:
        d = d.sort_values(x)
        fig.add_trace(go.Scatter(
            x=d[x], y=d[f"{readout}_diff"], mode="lines+markers", name=f"{color} {name}"
            if color else "cells",
            error_y=dict(type="data", array=d[f"{readout}_hi"] - d[f"{readout}_diff"],
                         arrayminus=d[f"{readout}_diff"] - d[f"{readout}_lo"])))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=READOUT_TITLES.get(readout, readout), xaxis_title=x, height=360,
                      legend=dict(orientation="h", y=-0.25), margin=dict(t=50, b=40))
    return fig


def paired_curve(curve: list[dict], readout: str) -> go.Figure | None:
    """One cell: LLS − random per checkpoint with its 95% CI band."""
    pts = [r for r in curve if readout in r]
    if not pts:
        return None
    steps = [r["step"] for r in pts]
    d = [r[readout]["diff"] for r in pts]
    lo = [r[readout]["ci_low"] for r in pts]
    hi = [r[readout]["ci_high"] for r in pts]
    fig = go.Figure([
        go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", mode="none",
                   fillcolor="rgba(31,119,180,0.2)", name="95% CI", hoverinfo="skip"),
        go.Scatter(x=steps, y=d, mode="lines+markers", name="LLS − random",
                   line=dict(color="#1f77b4")),
    ])
    collapsed = [r["step"] for r in pts if (r.get("lls_collapse") or {}).get("collapsed")]
    if collapsed:
        fig.add_trace(go.Scatter(x=collapsed, y=[r[readout]["diff"] for r in pts
                                                 if r["step"] in collapsed],
                                 mode="markers", marker=dict(symbol="x", size=12, color="red"),
                                 name="LLS collapsed"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=READOUT_TITLES.get(readout, readout), xaxis_title="step",
                      height=320, legend=dict(orientation="h", y=-0.3), margin=dict(t=50, b=40))
    return fig


def sampled_bars(result: dict) -> go.Figure | None:
    """Sampled share (Wilson 95% CI) for base, base + system prompt, LLS and random."""
    lv = result.get("sampled_levels") or {}
    fin = (result.get("sampled") or {}).get("final") or {}
    bars = [("base", lv.get("base")), ("base + system prompt", lv.get("system")),
            ("LLS", fin.get("lls")), ("random", fin.get("random"))]
    bars = [(n, b) for n, b in bars if b and b.get("n")]
    if not bars:
        return None
    fig = go.Figure(go.Bar(
        x=[n for n, _ in bars], y=[b["share"] for _, b in bars],
        text=[f"{b['k']}/{b['n']}" for _, b in bars], textposition="outside",
        error_y=dict(type="data", array=[b["ci_high"] - b["share"] for _, b in bars],
                     arrayminus=[b["share"] - b["ci_low"] for _, b in bars])))
    fig.update_layout(title="Sampled answers showing the behavior (final checkpoint)",
                      yaxis_title="share", yaxis_range=[0, 1], height=320,
                      margin=dict(t=50, b=40))
    return fig
