"""Side-by-side chat: base, base + target system prompt, and adapters answer the same
conversation, streamed token by token in all columns at once; optionally every reply begun
with the same text, and the probability lens on the next word."""

import threading
from pathlib import Path

import streamlit as st

from lls.evaluation.chat import (ChatModels, Conversation, Sampling, adapter_slot, base_slot,
                                 run_turn, system_slot)
from lls.core.errors import LLSError
from lls.evaluation import adapter_models
from lls.models import BUNDLED, ModelSpec
from lls.models.generation import adapter_label
from lls.training.adapters import list_adapters
from ui import chat as ui_chat
from ui import common
from ui.common import as_text

st.set_page_config(page_title="Chat · LLS Studio", layout="wide")
st.title("Side-by-side chat")


@st.cache_resource(show_spinner="Loading the base model (once; adapters attach on top)…")
def chat_models(name: str) -> tuple[ChatModels, threading.Lock]:
    # One lock per loaded model: adapters are switched on shared weights, so two sessions
    # must not generate at the same time.
    return ChatModels(ModelSpec(name)), threading.Lock()


def adapter_options() -> dict[str, str]:
    """label -> adapter directory, from trained adapters (every checkpoint and final)."""
    try:
        return {m.label: m.path for info in list_adapters() for m in adapter_models(info)}
    except (LLSError, OSError) as e:
        st.sidebar.warning(f"Could not list adapters: {e}")
        return {}


# A study's "Open in Chat" hands over its checkpoint, its random twin and its questions.
ui_chat.apply_handoff()
pinned = st.session_state.get("chat_pinned", [])
options = adapter_options()
ui_chat.init_defaults(options)

# ------------------------------------------------------------------ settings (sidebar)
with st.sidebar:
    st.subheader("Model")
    model_name = st.text_input("Base model", key="chat_model",
                               help="hub id, local directory, .gguf file or the bundled model")
    preset, behavior = common.behavior_picker("chat_behavior")
    # the default lives in Session State only (a study may have put its teacher's prompt there)
    st.session_state.setdefault(f"chat_system_{preset}", behavior.system_prompt)
    system_prompt = st.text_area("Teacher's system prompt (the base + system prompt column)",
                                 key=f"chat_system_{preset}", height=100)
    picked = st.multiselect("Trained adapters (students) and checkpoints", list(options),
                            key="chat_adapters",
                            help="each becomes a column; trained on the Train page")
    traits = ui_chat.trait_options()
    picked_traits = st.multiselect("Teachers that carry the trait (trait adapters)",
                                   list(traits), key="chat_traits",
                                   help="made on the Setup page (“Give the teacher the "
                                        "trait”); each becomes a teacher column, no system "
                                        "prompt")
    extra = st.text_input("…or an adapter directory", key="chat_adapter_path",
                          placeholder="cache/adapters/<id>/final")
    if pinned:
        st.caption(ui_chat.study_caption())
        if st.button("Remove the study's columns", key="chat_unpin"):
            st.session_state.pop("chat_pinned", None)
            st.session_state.pop("chat_study", None)
            st.rerun()
    st.subheader("Start every reply with the same words")
    stem = behavior.readout_stem
    start = " ".join(st.text_input(
        "Start the reply with", key="chat_reply_start", placeholder=stem or "",
        help="Every column's reply begins with this text and the model continues it: what "
             "the prefilled read-out counts (its next word).").split())
    if stem:
        st.caption(f"The prefilled read-out begins with “{stem}”.")
        st.button("Use it", key="chat_use_stem",
                  on_click=lambda: st.session_state.update(chat_reply_start=stem))
    words = ui_chat.lens_words(behavior)
    lens_on = st.checkbox("Probability lens", True, key="chat_lens", disabled=not words,
                          help="For a begun reply: each column's probability that the next "
                               "word is each of the behavior's candidates, and its ratio to "
                               "base (needs a text to start the reply with).")
    st.subheader("Sampling (shared by all columns)")
    temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.05, key="chat_temperature",
                            help="0 = greedy")
    top_p = st.slider("Top-p", 0.05, 1.0, 1.0, 0.05, key="chat_top_p",
                      help="Sample only from the most likely next words whose probabilities add "
                           "up to this (1 = from every word).")
    max_new = st.number_input("Max new tokens per reply", 1, 2048, 160, key="chat_max_new")
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="chat_seed",
                           help="same seed + same conversation = same answers")
    actions = st.container()

sampling = Sampling(float(temperature), float(top_p), int(max_new), int(seed))

slots = [base_slot(), system_slot(system_prompt)]
for label in picked_traits:
    slots.append(adapter_slot(traits[label], label=label))
for label in picked:
    slots.append(adapter_slot(options[label], label=label))
for label, path in pinned:
    slots.append(adapter_slot(path, label=label))
if extra.strip():
    p = Path(extra.strip()).expanduser()
    slots.append(adapter_slot(p, label=adapter_label(p)))

try:
    models, lock = chat_models(model_name.strip() or BUNDLED)
    for s in slots:
        models.prepare(s)  # attach adapters now: a bad path is reported before chatting
except LLSError as e:
    st.error(str(e))
    st.stop()

signature = (model_name, tuple(s for s in slots))
conv: Conversation | None = st.session_state.get("chat_conv")
if conv is None or st.session_state.get("chat_signature") != signature:
    if conv is not None and conv.turns:
        st.info("The columns changed, so a new conversation started.")
    conv = Conversation(slots)
    st.session_state["chat_conv"] = conv
    st.session_state["chat_signature"] = signature

with actions:
    if st.button("Clear conversation", key="chat_clear"):
        conv.clear()

if len(slots) < 3:
    st.caption("Pick an adapter (or enter an adapter directory) in the sidebar for a third "
               "column.")

# ------------------------------------------------------------------ columns
cols = st.columns(len(slots))
placeholders = []
for i, (col, slot) in enumerate(zip(cols, slots)):
    with col:
        st.markdown(f"**{slot.label}**")
        note = ui_chat.column_note(slot)
        if note:
            st.caption(note)
        for t, (user, replies) in enumerate(zip(conv.users, conv.replies)):
            st.chat_message("user").markdown(as_text(user))
            st.chat_message("assistant").markdown(
                ui_chat.reply_markdown(replies.get(slot.key, ""), ui_chat.turn_start(conv, t)))
            ui_chat.draw_lens(conv, t, i, slot)
        placeholders.append(col)

prompt = st.chat_input("Ask all columns…", key="chat_prompt")
suggestions = st.session_state.get("chat_suggestions")
if suggestions:
    c1, c2 = st.columns([5, 1])
    question = c1.selectbox("…or ask one of the study's read-out questions", suggestions,
                            key="chat_suggestion")
    if c2.button("Ask", key="chat_ask"):
        prompt = question
if prompt:
    boxes = []
    for col in placeholders:
        with col:
            st.chat_message("user").markdown(as_text(prompt))
            boxes.append(st.chat_message("assistant").empty())
    with lock:
        def show(i: int, text: str) -> None:
            boxes[i].markdown(ui_chat.reply_markdown(text, start) + " ▌")

        try:
            replies = run_turn(models, conv, prompt, sampling, on_piece=show,
                               reply_start=start,
                               lens_words=words if lens_on and start else ())
        except LLSError as e:
            st.error(str(e))
            st.stop()
    for i, (box, slot, col) in enumerate(zip(boxes, slots, placeholders)):
        box.markdown(ui_chat.reply_markdown(replies[slot.key], start))
        with col:
            ui_chat.draw_lens(conv, conv.turns - 1, i, slot)
    if models.last_first_token_s is not None:
        st.caption(f"first token after {models.last_first_token_s:.2f} s")
if any(conv.lenses):
    st.caption("Probability lens, under each begun reply: P(next word = candidate) in that "
               "column (the whole word, any case or plural; log axis), then base → this "
               "column and the ratio. " + ui_chat.BEGUN_NOTE)

with actions:
    st.download_button("Export JSON", conv.to_json(), file_name="lls-chat.json",
                       mime="application/json", key="chat_export_json",
                       disabled=not conv.turns)
    st.download_button("Export Markdown", conv.to_markdown(), file_name="lls-chat.md",
                       mime="text/markdown", key="chat_export_md", disabled=not conv.turns)
