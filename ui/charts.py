"""Plotly figures shared by pages (no Streamlit here: pages render what these return)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lls.selection import Ranking, SelectionConfig, selection_indices

SCATTER_POINTS = 20_000  # points drawn in the w_target vs w_control scatter (selected always)

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
                      title=title or None, xaxis_title="w", yaxis_title="pairs",
                      bargap=0, showlegend=False)
    return fig


def subsets_histogram(w: np.ndarray, subsets: dict[str, np.ndarray]) -> go.Figure:
    """Overlaid w histograms of named subsets (row indices into `w`), e.g. LLS vs random."""
    fig = go.Figure()
    for name, idx in subsets.items():
        fig.add_histogram(x=w[idx], name=name, opacity=0.6, nbinsx=40)
    fig.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="w", yaxis_title="pairs")
    return fig


def weights_scatter(frame: pd.DataFrame, gamma: float, positive_only: bool = True,
                    max_points: int = SCATTER_POINTS) -> go.Figure:
    """Scatter of w_target (x) against w_control (y), the top-gamma selections of w_target
    and of w_contrastive coloured (exactly what training on each ranking keeps, by
    `lls.selection`); the diagonal is w_contrastive = 0 (below it: positive)."""
    x = frame["w_target"].to_numpy()
    y = frame["w_control"].to_numpy()
    n = len(x)
    cfg = SelectionConfig(gamma=gamma, positive_only=positive_only)
    in_t = np.zeros(n, dtype=bool)
    in_c = np.zeros(n, dtype=bool)
    in_t[selection_indices(Ranking(x), cfg)] = True
    in_c[selection_indices(Ranking(frame["w_contrastive"].to_numpy()), cfg)] = True
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


def transfer_scatter(frame: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    """Teacher (x) vs student (y) weights of the same pairs (`lls.transfer.aligned_weights`)."""
    fig = go.Figure(go.Scattergl(
        x=frame["w_a"], y=frame["w_b"], mode="markers", marker=dict(size=5, opacity=0.6),
        text=[f"{i}<br>+ {c[:60]}<br>− {r[:60]}" for i, c, r in
              zip(frame["id"], frame["chosen"], frame["rejected"])],
        hovertemplate="%{text}<br>w_A %{x:.4f}, w_B %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title=f"w (A: {label_a})", yaxis_title=f"w (B: {label_b})",
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
