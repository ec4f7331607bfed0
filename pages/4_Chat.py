"""Side-by-side chat: base, base + target system prompt, and adapters answer the same
conversation, streamed token by token in all columns at once."""

import threading
from pathlib import Path

import streamlit as st

from lls.core import behaviors
from lls.evaluation.chat import (ChatModels, Conversation, Sampling, adapter_slot, base_slot, run_turn,
                      system_slot)
from lls.core.errors import LLSError
from lls.evaluation import adapter_models
from lls.models import BUNDLED, ModelSpec
from lls.models.generation import adapter_label
from lls.training.adapters import list_adapters

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
handed = st.session_state.pop("chat_preset", None)
if handed:
    st.session_state["chat_pinned"] = list(zip(handed["labels"], handed["adapters"]))
    st.session_state["chat_suggestions"] = handed["prompts"]
    st.session_state["chat_adapters"] = []
    st.session_state["chat_model"] = handed["model"]
    if handed["behavior_label"] in behaviors.PRESETS:
        st.session_state["chat_behavior"] = handed["behavior_label"]
pinned = st.session_state.get("chat_pinned", [])

# ------------------------------------------------------------------ settings (sidebar)
with st.sidebar:
    st.subheader("Model")
    model_name = st.text_input("Base model", key="chat_model",  # no default beside a state value
                               value=None if "chat_model" in st.session_state else BUNDLED,
                               help="hub id, local directory, .gguf file or the bundled model")
    presets = list(behaviors.PRESETS)
    preset = st.selectbox("Target behavior", presets, key="chat_behavior")
    system_prompt = st.text_area("Target system prompt", value=behaviors.PRESETS[preset].system_prompt,
                                 key=f"chat_system_{preset}", height=100)
    options = adapter_options()
    picked = st.multiselect("Adapters / checkpoints", list(options), key="chat_adapters",
                            default=[next((k for k in options if "· final" in k), list(options)[0])]
                            if options and "chat_adapters" not in st.session_state else None,
                            help="each becomes a column; trained on the Train page")
    extra = st.text_input("…or an adapter directory", key="chat_adapter_path",
                          placeholder="cache/adapters/<id>/final")
    if pinned:
        st.caption("From the study: " + "; ".join(label for label, _ in pinned))
        if st.button("Remove the study's columns", key="chat_unpin"):
            st.session_state.pop("chat_pinned", None)
            st.rerun()
    st.subheader("Sampling (shared by all columns)")
    temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.05, key="chat_temperature",
                            help="0 = greedy")
    top_p = st.slider("Top-p", 0.05, 1.0, 1.0, 0.05, key="chat_top_p")
    max_new = st.number_input("Max new tokens", 1, 2048, 160, key="chat_max_new")
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="chat_seed",
                           help="same seed + same conversation = same answers")
    actions = st.container()

sampling = Sampling(float(temperature), float(top_p), int(max_new), int(seed))

slots = [base_slot(), system_slot(system_prompt)]
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
for col, slot in zip(cols, slots):
    with col:
        st.markdown(f"**{slot.label}**")
        if slot.system_prompt:
            st.caption(f"system prompt: {slot.system_prompt[:120]}")
        for user, replies in zip(conv.users, conv.replies):
            st.chat_message("user").markdown(user)
            st.chat_message("assistant").markdown(replies.get(slot.key, ""))
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
            st.chat_message("user").markdown(prompt)
            boxes.append(st.chat_message("assistant").empty())
    with lock:
        def show(i: int, text: str) -> None:
            boxes[i].markdown(text + " ▌")

        try:
            replies = run_turn(models, conv, prompt, sampling, on_piece=show)
        except LLSError as e:
            st.error(str(e))
            st.stop()
    for box, slot in zip(boxes, slots):
        box.markdown(replies[slot.key] or "_(empty answer)_")
    if models.last_first_token_s is not None:
        st.caption(f"first token after {models.last_first_token_s:.2f} s")

with actions:
    st.download_button("Export JSON", conv.to_json(), file_name="lls-chat.json",
                       mime="application/json", key="chat_export_json",
                       disabled=not conv.turns)
    st.download_button("Export Markdown", conv.to_markdown(), file_name="lls-chat.md",
                       mime="text/markdown", key="chat_export_md", disabled=not conv.turns)
