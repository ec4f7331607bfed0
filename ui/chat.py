"""The Chat page's state and pieces: a study's hand-off, widget defaults set once (never a
default and a Session State value both), replies with their begun text, and the lens."""

from __future__ import annotations

import streamlit as st

from lls.core import behaviors
from lls.evaluation.chat import Slot
from lls.evaluation.prefill import prefill_applies, readout_candidates
from lls.models import BUNDLED
from lls.models.generation import adapter_label
from ui.charts import lens_bars
from ui.common import as_text, behavior_id, behavior_text

BEGUN_NOTE = "The bold beginning of each reply was given; the models wrote the rest."


def apply_handoff() -> None:
    """Take over a study's "Open in Chat" (`lls.studies.study.chat_setup`): its checkpoint
    and random twin pinned as columns, its questions offered, its model and behavior set."""
    handed = st.session_state.pop("chat_preset", None)
    if not handed:
        return
    st.session_state["chat_pinned"] = list(zip(handed["labels"], handed["adapters"]))
    st.session_state["chat_suggestions"] = handed["prompts"]
    st.session_state["chat_adapters"] = []
    st.session_state["chat_model"] = handed["model"]
    st.session_state["chat_study"] = {k: handed.get(k) for k in ("study", "cell", "step")}
    if handed.get("behavior"):  # the study's behavior, a preset or the one its run scored
        st.session_state["chat_behavior"] = behavior_id(
            behaviors.Behavior.from_dict(handed["behavior"]))
    elif handed.get("behavior_label") in behaviors.PRESETS:
        st.session_state["chat_behavior"] = handed["behavior_label"]
        # the study teacher's own prompt (e.g. another wording of the preset's)
        st.session_state[f"chat_system_{handed['behavior_label']}"] = handed["system_prompt"]


def init_defaults(options: dict[str, str]) -> None:
    """Defaults of the sidebar widgets, set in Session State once and passed to no widget
    (Streamlit warns when a widget gets both)."""
    st.session_state.setdefault("chat_model", BUNDLED)
    if "chat_adapters" not in st.session_state:
        final = [k for k in options if "· final" in k]
        st.session_state["chat_adapters"] = final[:1] or list(options)[:1]
    else:  # adapters deleted since: keep only those still offered
        st.session_state["chat_adapters"] = [k for k in st.session_state["chat_adapters"]
                                             if k in options]


def study_caption() -> str | None:
    """What the pinned columns are, in words ("From the study …: cell …, checkpoint …")."""
    pinned = st.session_state.get("chat_pinned") or []
    if not pinned:
        return None
    info = st.session_state.get("chat_study") or {}
    if not info.get("study"):
        return "From the study: " + "; ".join(label for label, _ in pinned)
    return (f"From the study **{info['study']}**: cell {info.get('cell')}, checkpoint step "
            f"{info.get('step')} — the LLS adapter and its random twin (same size, random "
            "pairs), beside base and base + system prompt.")


def column_note(slot: Slot) -> str | None:
    """The caption under a column's header: its system prompt or its adapter directory."""
    if slot.adapter_path:
        return f"adapter {adapter_label(slot.adapter_path)}"
    if slot.system_prompt:
        return f"system prompt: {slot.system_prompt[:120]}"
    return None


def reply_markdown(text: str, start: str = "") -> str:
    """A reply for st.markdown, its begun text in bold; the model's words are text
    (`as_text`: no Markdown image or HTML of a reply ever renders)."""
    if start and text.startswith(start):
        return f"**{as_text(start)}**{as_text(text[len(start):])}"
    return as_text(text) if text else "_(empty answer)_"


def lens_words(b: behaviors.Behavior) -> list[str]:
    """The behavior's candidate next words for the lens (target first); [] if it has none."""
    return list(readout_candidates(b)) if prefill_applies(b, "") else []


def turn_start(conv, turn: int) -> str:
    """The text the replies of `turn` were begun with ("" if none)."""
    return (conv.settings[turn] if turn < len(conv.settings) else {}).get("reply_start", "")


def draw_lens(conv, turn: int, i: int, slot: Slot) -> None:
    """Column `i`'s lens bar chart for `turn`, if that turn has one."""
    rows = conv.lens(turn)
    mine = [r for r in rows or [] if r["key"] == slot.key]
    if mine:
        start = turn_start(conv, turn)
        st.caption(f"Next word after “{start}”" if start else "First word of the reply")
        st.plotly_chart(lens_bars(mine), key=f"chat_lens_{turn}_{i}",
                        config={"displayModeBar": False})


def trait_options() -> dict[str, str]:
    """"teacher: ..." label -> adapter directory, for every finished trait adapter."""
    from lls.training.trait import list_traits

    out = {}
    for m in list_traits():
        if m.get("status") == "done":
            b = ((m.get("config") or {}).get("behavior") or {})
            lens = (m.get("strength_after") or {}).get("teacher_lens")
            out[f"teacher: {behavior_text(b)} trait adapter, {(m.get('created') or '')[:10]}"
                + (f" (names it {lens:.0%})" if lens is not None else "")
                + f" · {m['key'][:6]}"] = m["adapter"]
    return out

