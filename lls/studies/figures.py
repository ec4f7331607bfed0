"""The study's figures (plotly): effect against a setting (lines, heatmap), a cell's paired
curve and its sampled bars. Drawn by the Studies page (`ui.charts` re-exports them) and by
the self-contained HTML report (`lls.studies.export`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..core.stats import GAP_UNDEFINED

READOUT_TITLES = {
    "margin": "Probe margin, LLS − random (nats)",
    "gap_closed": "Gap closed, LLS − random (share of the base → system-prompt gap)",
    "top1": "Top-1 share of probe questions, LLS − random",
    "llr": "Likelihood ratio, LLS − random (nats/token)",
}


def effect_heatmap(squares: list[dict], readout: str, x: str, y: str,
                   x_title: str | None = None, y_title: str | None = None) -> go.Figure | None:
    """Paired effect over two axes; `squares` (`lls.studies.report.effect_grid`) carry each
    square's pooled effect and its interval from the resamples, or why it is undefined."""
    if not squares:
        return None
    key = lambda v: (v is None, v if not isinstance(v, str) else 0)  # noqa: E731
    xs = sorted({s["x"] for s in squares}, key=key)
    ys = sorted({s["y"] for s in squares}, key=key)
    z = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for s in squares:
        i, j = ys.index(s["y"]), xs.index(s["x"])
        e = s["effect"] or {}
        if e.get("diff") is None:
            text[i][j] = GAP_UNDEFINED if e.get("undefined") else "undefined"
            continue
        z[i][j] = e["diff"]
        text[i][j] = f"{e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}] ({s['cells']})"
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in xs], y=[str(v) for v in ys], text=text,
                               texttemplate="%{text}", colorscale="RdBu", zmid=0,
                               hovertemplate="%{x}, %{y}: %{text}<extra></extra>"))
    fig.update_layout(title=READOUT_TITLES.get(readout, readout), xaxis_title=x_title or x,
                      yaxis_title=y_title or y, height=360, margin=dict(t=50, b=40))
    return fig


def effect_lines(rows: list[dict], readout: str, x: str, color: str | None,
                 x_title: str | None = None, color_title: str | None = None) -> go.Figure | None:
    """Paired effect vs one axis, one line per value of `color` (the second axis), with
    95% CI bars."""
    df = pd.DataFrame([r for r in rows if r.get(f"{readout}_diff") is not None])
    if df.empty:
        return None
    fig = go.Figure()
    groups = df.groupby(color, dropna=False) if color else [("all", df)]
    for name, d in groups:
        d = d.sort_values(x)
        fig.add_trace(go.Scatter(
            x=d[x], y=d[f"{readout}_diff"], mode="lines+markers",
            name=f"{color_title or color} {name}" if color else "cells",
            error_y=dict(type="data", array=d[f"{readout}_hi"] - d[f"{readout}_diff"],
                         arrayminus=d[f"{readout}_diff"] - d[f"{readout}_lo"])))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=READOUT_TITLES.get(readout, readout), xaxis_title=x_title or x,
                      height=360, legend=dict(orientation="h", y=-0.25), margin=dict(t=50, b=40))
    return fig


def paired_curve(curve: list[dict], readout: str) -> go.Figure | None:
    """One cell: LLS − random per checkpoint with its 95% CI (a band from two read-outs on,
    error bars otherwise); whole-step ticks."""
    pts = [r for r in curve if (r.get(readout) or {}).get("diff") is not None]
    if not pts:
        return None
    steps = [r["step"] for r in pts]
    d = [r[readout]["diff"] for r in pts]
    lo = [r[readout]["ci_low"] for r in pts]
    hi = [r[readout]["ci_high"] for r in pts]
    traces = []
    if len(pts) > 2:
        traces.append(go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself",
                                 mode="none", fillcolor="rgba(31,119,180,0.2)", name="95% CI",
                                 hoverinfo="skip"))
    err = None if len(pts) > 2 else dict(type="data", array=[h - v for h, v in zip(hi, d)],
                                         arrayminus=[v - low for v, low in zip(d, lo)])
    traces.append(go.Scatter(x=steps, y=d, mode="lines+markers", name="LLS − random",
                             line=dict(color="#1f77b4"), error_y=err))
    fig = go.Figure(traces)
    collapsed = [r for r in pts if (r.get("lls_collapse") or {}).get("collapsed")]
    if collapsed:
        fig.add_trace(go.Scatter(x=[r["step"] for r in collapsed],
                                 y=[r[readout]["diff"] for r in collapsed], mode="markers",
                                 marker=dict(symbol="x", size=12, color="red"),
                                 name="LLS collapsed"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_xaxes(tickmode="array", tickvals=steps) if len(steps) <= 12 else \
        fig.update_xaxes(tickformat="d")
    fig.update_layout(title=READOUT_TITLES.get(readout, readout), xaxis_title="training step",
                      height=320, legend=dict(orientation="h", y=-0.3), margin=dict(t=50, b=40))
    return fig


def sampled_bars(levels: dict, final: dict, title: str) -> go.Figure | None:
    """Sampled share (95% CI over questions) for base, base + system prompt (the teacher:
    the ceiling), LLS and random, for one read-out kind."""
    bars = [("base", levels.get("base")), ("base + system prompt (teacher)", levels.get("system")),
            ("LLS", final.get("lls")), ("random twin", final.get("random"))]
    bars = [(n, b) for n, b in bars if b and b.get("n")]
    if not bars:
        return None
    fig = go.Figure(go.Bar(
        x=[n for n, _ in bars], y=[b["share"] for _, b in bars],
        text=[f"{b['k']}/{b['n']}" for _, b in bars], textposition="outside",
        error_y=dict(type="data", array=[b["ci_high"] - b["share"] for _, b in bars],
                     arrayminus=[b["share"] - b["ci_low"] for _, b in bars])))
    top = max(b["ci_high"] for _, b in bars)
    fig.update_layout(title=title, yaxis_title="share of answers",
                      yaxis_range=[0, min(1.0, max(0.1, top * 1.3))], height=320,
                      margin=dict(t=50, b=40))
    return fig
