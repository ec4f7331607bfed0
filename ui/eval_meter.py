"""The Evaluate page's read-outs beside the sampled bars: the effect meter (likelihood ratio,
probe margin) and the prefilled read-out (share naming the target after a begun reply, the
teacher as its ceiling, LLS − random twin paired over questions)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lls.core.stats import GAP_UNDEFINED
from lls.evaluation.meter import summary_rows, twin_differences
from ui.charts import eval_meter_figure, prefill_figure


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v))


def _ci(v, lo, hi, fmt: str = "{:+.3f}") -> str:
    if _missing(v):
        return ""
    if _missing(lo) or _missing(hi):
        return fmt.format(v)
    return f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _gap(r: dict, key: str) -> str:
    """A gap closed as a percentage with its interval, or why it is undefined."""
    if r.get(f"{key}_undefined"):
        return GAP_UNDEFINED
    return _ci(*(None if _missing(x) else 100 * x for x in (
        r.get(key), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"))), "{:.0f}%")


def meter_frame(rows: list[dict], name: str = "label") -> pd.DataFrame:
    """Effect-meter read-outs in words, one row per model (`lls.evaluation.meter.summary_rows`
    rows, or a training curve's last read-outs): each value with its 95% interval, its change
    from the base model and the share of the base → teacher gap it closes."""
    out = []
    has = lambda k: any(not _missing(r.get(k)) for r in rows)  # noqa: E731
    for r in rows:
        row = {"model": r.get(name)}
        if has("step"):
            row["step"] = r.get("step")
        row["likelihood ratio (nats/token) [95% interval]"] = _ci(
            r.get("llr"), r.get("llr_ci_low"), r.get("llr_ci_high"))
        row["likelihood ratio − base [95% interval]"] = _ci(
            r.get("llr_diff"), r.get("llr_diff_ci_low"), r.get("llr_diff_ci_high"))
        row["gap closed (likelihood ratio)"] = _gap(r, "gap_closed")
        if has("margin"):
            row["margin (nats) [95% interval]"] = _ci(
                r.get("margin"), r.get("margin_ci_low"), r.get("margin_ci_high"))
            row["margin − base [95% interval]"] = _ci(
                r.get("margin_diff"), r.get("margin_diff_ci_low"), r.get("margin_diff_ci_high"))
            if has("margin_gap_closed") or any(r.get("margin_gap_closed_undefined")
                                               for r in rows):
                row["gap closed (margin)"] = _gap(r, "margin_gap_closed")
            row["top-1 share"] = "" if _missing(r.get("top1_share")) else \
                f"{r['top1_share']:.0%}"
        out.append(row)
    return pd.DataFrame(out)


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
    rows = summary_rows(meter)
    st.plotly_chart(eval_meter_figure(pd.DataFrame(rows)), width="stretch",
                    key="ev_meter_bars")
    ref = meter.get("reference") or {}
    st.caption("Log-probabilities, no sampling. Likelihood ratio: mean per-token "
               "log P(responses sampled with the system prompt) − log P(responses "
               f"sampled without it), {ref.get('k_behavior', '?')} + "
               f"{ref.get('k_neutral', '?')} reference responses, prompted without "
               "the system prompt; margin: log P(target as the one-word answer) "
               "− the best other candidate. Error bars: bootstrap 95% intervals. Dotted: "
               "base, dashed: base + system prompt; the share of that gap an adapter "
               "closes is on its bar.")
    st.dataframe(meter_frame(rows), hide_index=True, width="stretch", key="ev_meter_table")


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
        "share [95% interval]": [_ci(v, lo, hi, "{:.3f}") for v, lo, hi in zip(
            table["prefill_share"], table["prefill_ci_low"], table["prefill_ci_high"])],
        "− base [95% interval]": [_ci(v, lo, hi) for v, lo, hi in zip(
            *(table.get(c, pd.Series([None] * len(table))) for c in (
                "prefill_diff_base", "prefill_diff_base_ci_low",
                "prefill_diff_base_ci_high")))],
        "− teacher [95% interval]": [_ci(v, lo, hi) for v, lo, hi in zip(
            *(table.get(c, pd.Series([None] * len(table))) for c in (
                "prefill_diff_system", "prefill_diff_system_ci_low",
                "prefill_diff_system_ci_high")))],
        "P(next word = target) [95% interval]": [_ci(v, lo, hi, "{:.4f}") for v, lo, hi in zip(
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
