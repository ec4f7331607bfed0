"""The Evaluate page's read-outs beside the sampled bars: the effect meter (likelihood ratio,
probe margin) and the prefilled read-out (share naming the target after a begun reply, the
teacher as its ceiling, LLS − random twin paired over questions)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lls.evaluation.meter import summary_rows, twin_differences
from ui.charts import eval_meter_figure, prefill_figure

METER_COLUMNS = ["label", "kind", "llr", "llr_ci_low", "llr_ci_high", "gap_closed",
                 "gap_closed_undefined", "llr_diff", "llr_diff_ci_low", "llr_diff_ci_high",
                 "margin", "margin_ci_low", "margin_ci_high", "margin_gap_closed",
                 "margin_gap_closed_undefined", "top1_share", "mean_rank", "target_mass"]


def _ci(v, lo, hi, fmt: str = "{:+.3f}") -> str:
    if v is None or pd.isna(v):
        return ""
    return f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def meter_section(run, cfg: dict) -> None:
    """The effect meter's bars and table for one evaluation (or why there are none)."""
    st.subheader("Effect meter")
    meter = run.meter()
    if meter is None:
        if cfg.get("meter") and not run.complete:
            st.info("The log-probability read-outs run after sampling.")
        else:
            st.caption("No effect-meter read-outs for this evaluation: run it again with "
                       "the effect meter on (only the read-outs are computed; the "
                       "answers come from the cache).")
        return
    table = pd.DataFrame(summary_rows(meter))
    mtable = table[[c for c in METER_COLUMNS if c in table.columns]]
    st.plotly_chart(eval_meter_figure(mtable), width="stretch", key="ev_meter_bars")
    ref = meter.get("reference") or {}
    st.caption("Log-probabilities, no sampling. Likelihood ratio: mean per-token "
               "log P(responses sampled with the system prompt) − log P(responses "
               f"sampled without it), {ref.get('k_behavior', '?')} + "
               f"{ref.get('k_neutral', '?')} reference responses, prompted without "
               "the system prompt; probe margin: log P(target as the one-word answer) "
               "− the best other candidate. Error bars: bootstrap 95% CIs. Dotted: "
               "base, dashed: base + system prompt; the share of that gap an adapter "
               "closes is on its bar.")
    st.dataframe(mtable.round(4), hide_index=True, width="stretch",
                 key="ev_meter_table")


def prefill_section(run) -> None:
    """The prefilled read-out of every model, the teacher as ceiling, LLS − random."""
    meter = run.meter()
    first = next((r["prefill"] for r in (meter or {}).get("models", []) if r.get("prefill")),
                 None)
    if first is None:
        return
    table = pd.DataFrame(summary_rows(meter))
    st.subheader("Prefilled read-out")
    st.plotly_chart(prefill_figure(table), width="stretch", key="ev_prefill_bars")
    shown = pd.DataFrame({
        "model": table["label"],
        "answers naming the target": [f"{int(k)}/{int(n)}" for k, n in
                                      zip(table["prefill_k"], table["prefill_n"])],
        "share [95% CI]": [_ci(v, lo, hi, "{:.3f}") for v, lo, hi in zip(
            table["prefill_share"], table["prefill_ci_low"], table["prefill_ci_high"])],
        "− base [95% CI]": [_ci(v, lo, hi) for v, lo, hi in zip(
            *(table.get(c, pd.Series([None] * len(table))) for c in (
                "prefill_diff_base", "prefill_diff_base_ci_low",
                "prefill_diff_base_ci_high")))],
        "− teacher [95% CI]": [_ci(v, lo, hi) for v, lo, hi in zip(
            *(table.get(c, pd.Series([None] * len(table))) for c in (
                "prefill_diff_system", "prefill_diff_system_ci_low",
                "prefill_diff_system_ci_high")))],
        "P(next word = target) [95% CI]": [_ci(v, lo, hi, "{:.4f}") for v, lo, hi in zip(
            table["lens_p"], table["lens_ci_low"], table["lens_ci_high"])]})
    st.dataframe(shown, hide_index=True, width="stretch", key="ev_prefill_table")
    twins = twin_differences(meter)
    for t in twins:
        st.markdown(f"**LLS − random twin** ({t['lls']} vs {t['random']}): share "
                    f"{_ci(t['share_diff'], t['share_ci_low'], t['share_ci_high'])}, "
                    "P(next word = target) "
                    f"{_ci(t['lens_diff'], t['lens_ci_low'], t['lens_ci_high'], '{:+.4f}')}")
    st.caption(
        f"{len(first['per_question'])} one-word questions × {first['samples']} answers each, "
        f"the reply begun with “{first['stem']}” and the next word sampled at temperature 1: "
        f"the share of answers whose next word is “{first['target']}” (any case or plural). "
        "The teacher (base + system prompt, dashed) is the ceiling: a student shows the "
        "behavior at most as often as its teacher. P(next word = target): the same event's "
        "probability, no sampling, averaged over questions. Intervals: 95%, resampling "
        "questions (paired for differences), at least as wide as the binomial interval.")
