"""One pair of a run: prompt, responses, scores and the on-demand per-token attribution."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import streamlit as st

from lls.models import ModelSpec, load_model
from lls.models.teacher import Teacher
from lls.scoring.explain import token_attribution
from ui.common import as_text
from ui.explorer import ExplorerData


@st.cache_resource(max_entries=1, show_spinner="Loading the teacher model…")
def teacher(model_json: str):
    """(model, tokenizer) of a run's teacher, loaded once per process."""
    return load_model(ModelSpec.from_dict(json.loads(model_json)))


@st.cache_data(max_entries=256, show_spinner="Computing per-token attribution…")
def attribution(run_key: str, index: int, _row: dict, model_json: str, system_prompt: str,
                truncation: int | None, neutral: str = "template",
                teacher_json: str | None = None) -> dict:
    """lls.scoring.explain.token_attribution for one row of a run (cached per run and row)."""
    model, tok = teacher(model_json)
    trait = Teacher.from_dict(json.loads(teacher_json)) if teacher_json else None
    return token_attribution(model, tok, _row, system_prompt, truncation, neutral, trait)


def tokens_html(tokens: list, scale: float, outline=frozenset()) -> str:
    """Tokens as spans: green where s raised log P, red where it lowered it; the token
    positions in `outline` framed (the unit the Subtext page is showing)."""
    spans = []
    for i, (text, ls, lb, d) in enumerate(tokens):
        a = min(abs(d) / scale, 1.0) if scale > 0 else 0.0
        rgb = "22,163,74" if d > 0 else "220,38,38"
        shown = html.escape(text).replace("\n", "↵<br>") or "&nbsp;"
        tip = (f"{text!r}: delta {d:+.3f}" if ls is None else
               f"{text!r}: log P with s {ls:.3f}, without s {lb:.3f}, delta {d:+.3f}")
        frame = "outline:2px solid #2563eb;" if i in outline else ""
        spans.append(f'<span title="{html.escape(tip)}" style="background:rgba({rgb},{a:.2f});'
                     f'{frame}border-radius:3px;padding:1px 1px;margin:0 1px;'
                     f'white-space:pre-wrap">{shown}</span>')
    return ('<div style="line-height:2;font-family:monospace;font-size:0.9em">'
            + "".join(spans) + "</div>")


def render_attribution(att: dict, highlight: dict | None = None) -> None:
    """The per-token view of one pair: both responses coloured by delta, and the sums.
    `highlight`: {"chosen" / "rejected": token positions to outline}."""
    highlight = highlight or {}
    deltas = [abs(t[3]) for t in att["chosen"] + att["rejected"]]
    scale = float(np.percentile(deltas, 95)) if deltas else 1.0
    st.caption("Green: the system prompt raised the token's log-probability; red: lowered it "
               "(hover for numbers). Colour saturates at the 95th percentile of |delta|: "
               f"{scale:.3f} nats.")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown(f"**Chosen** · {att['n_c']} tokens · Σ delta = {att['sum_chosen']:+.3f} "
                    "nats")
        st.markdown(tokens_html(att["chosen"], scale, highlight.get("chosen", ())),
                    unsafe_allow_html=True)
    with c2:
        st.markdown(f"**Rejected** · {att['n_r']} tokens · Σ delta = "
                    f"{att['sum_rejected']:+.3f} nats")
        st.markdown(tokens_html(att["rejected"], scale, highlight.get("rejected", ())),
                    unsafe_allow_html=True)
    st.markdown(f"w = (Σ chosen − Σ rejected) / (chosen tokens + rejected tokens) = "
                f"**{att['w']:.5f}** nats/token")
    top = sorted(((t[3], t[0], side) for side in ("chosen", "rejected") for t in att[side]),
                 key=lambda x: -abs(x[0]))[:10]
    st.dataframe(pd.DataFrame([{"token": repr(t), "response": side,
                                "change in log P (nats)": d}
                               for d, t, side in top]), hide_index=True)


def render_example(data: ExplorerData, index: int, key_prefix: str) -> None:
    """One pair: prompt, both responses, its scores, and the on-demand per-token view."""
    row = data.frame.iloc[int(index)]
    st.markdown(f"#### Example `{row['id']}` · w = {row['w']:.5f}")
    cols = st.columns(5)
    cols[0].metric("w (nats/token)", f"{row['w']:.5f}")
    cols[1].metric("chosen: log P with prompt", f"{row['lc_s']:.2f}",
                   help="log-probability of the whole scored chosen response (nats) with the "
                        "system prompt")
    cols[2].metric("rejected: log P with prompt", f"{row['lr_s']:.2f}")
    cols[3].metric("chosen: log P without", f"{row['lc']:.2f}")
    cols[4].metric("rejected: log P without", f"{row['lr']:.2f}")
    try:
        msgs = json.loads(row["prompt"])
    except ValueError:
        msgs = [{"role": "user", "content": row["prompt"]}]
    with st.expander(f"Prompt ({len(msgs)} turns, {row['prompt_tokens']} tokens)",
                     expanded=len(msgs) <= 2):
        for m in msgs:
            st.markdown(f"**{as_text(m.get('role', ''))}:** {as_text(m.get('content', ''))}")
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
                              cfg.behavior.system_prompt, cfg.truncation, cfg.neutral,
                              json.dumps(cfg.teacher.to_dict()) if cfg.teacher else None)
        except Exception as e:  # noqa: BLE001 - show any failure on the page, not a traceback
            st.error(f"Per-token attribution failed: {e}")
            return
        render_attribution(att)
