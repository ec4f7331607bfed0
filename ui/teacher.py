"""Setup's teacher section: what carries the trait, how strong it is, and a trait adapter
made in the app. Renders and calls `lls` only."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lls import jobs
from lls.core.errors import LLSError
from lls.evaluation.strength import teacher_strength
from lls.models import ModelSpec
from lls.models.load import load_model
from lls.models.teacher import Teacher
from lls.training.trait import TraitConfig, list_traits, submit_trait
from ui.job_cards import job_card

KIND_LABELS = {"prompt": "the system prompt above (the paper)",
               "adapter": "a LoRA adapter that carries the trait (over the teacher model)",
               "model": "a fine-tuned model that carries the trait (same tokenizer)"}


# What the teacher study found on the bundled 135M model (docs/results.md).
SMALL_MODEL_ADVICE = (
    "For small models, prefer a trait adapter (make one below): on the bundled 135M model it "
    "names the owl in 96% of prefilled answers, the paper's prompt in 3-9%. Even so, no "
    "teacher has yet made the owl show in a 135M student's samples above its random twin: "
    "expect effects in log-probabilities, and check them against the twin.")


def teacher_choice(behavior, model: ModelSpec) -> Teacher | None:
    """The radio and inputs that say what carries the trait; None: the system prompt."""
    kind = st.radio("What carries the trait", list(KIND_LABELS), key="t_kind",
                    format_func=KIND_LABELS.get, horizontal=False,
                    help="With an adapter or a model, both conditions see the same tokens and no "
                         "system prompt: w compares the teacher with the trait to the base "
                         "model. Published small-model replications transferred a trait only "
                         "from such teachers.")
    st.caption(SMALL_MODEL_ADVICE)
    if kind == "prompt":
        return None
    if kind == "adapter":
        made = [m for m in list_traits() if m.get("status") == "done"
                and (m.get("config") or {}).get("behavior", {}).get("name") == behavior.name]
        options = {m["adapter"]: _trait_label(m) for m in made}
        c1, c2 = st.columns([3, 2])
        pick = c1.selectbox("Trait adapter made in this app", ["", *options],
                            format_func=lambda k: options.get(k, "— pick one, or give a "
                                                                 "directory →"),
                            key="t_adapter_pick")
        path = c2.text_input("…or an adapter directory (peft, safetensors)",
                             key="t_adapter_dir").strip() or pick
        if not path:
            st.info("Pick a trait adapter, give its directory, or make one below "
                    "(“Give the teacher the trait”).")
            return None
        try:
            return Teacher("adapter", path)
        except LLSError as e:
            st.error(str(e))
            return None
    name = st.text_input("Fine-tuned model: hub id, local directory (safetensors) or .gguf",
                         key="t_model").strip()
    if not name:
        st.info("Give the fine-tuned model that carries the trait.")
        return None
    try:
        return Teacher("model", name)
    except LLSError as e:
        st.error(str(e))
        return None


def _trait_label(m: dict) -> str:
    after = (m.get("strength_after") or {}).get("teacher_lens")
    cfg = m.get("config") or {}
    how = "from your examples" if cfg.get("source") == "file" else "distilled from a prompt"
    strength = f" · names it {after:.0%} of the time" if after is not None else ""
    return f"{m['key'][:8]} · {how} · {m.get('examples', '?')} examples{strength} · " \
           f"{m.get('created', '')[:16]}"


def strength_check(behavior, model: ModelSpec, teacher: Teacher | None) -> None:
    """The "Check the teacher" button and its table: base and the teacher(s), with more
    prompts to compare side by side."""
    with st.expander("Check the teacher's strength (before scoring)", expanded=False):
        st.caption("The read-out questions with the reply begun “" +
                   (behavior.readout_stem or "…") + "”: how often the teacher names the "
                   "target. The student cannot exceed this and at small scale reaches a small "
                   "fraction of it. About a minute on the bundled model.")
        others = st.text_area("Other system prompts to compare (one per line, optional)",
                              key="t_compare", height=80)
        c1, c2 = st.columns(2)
        questions = c1.number_input("Questions asked", 1, 32, 32, key="t_questions")
        samples = c2.number_input("Sampled next words per question", 1, 32, 4, key="t_samples")
        if st.button("Check the teacher", key="t_check"):
            teachers = [teacher] if teacher is not None else [behavior.system_prompt]
            teachers += [x.strip() for x in others.splitlines() if x.strip()]
            try:
                with st.spinner("Reading the teacher(s)…"):
                    m, tok = _model(model)
                    st.session_state["t_strength"] = teacher_strength(
                        m, tok, behavior, teachers, questions=int(questions),
                        samples=int(samples))
            except LLSError as e:
                st.session_state["t_strength"] = {"error": str(e)}
        res = st.session_state.get("t_strength")
        if res:
            show_strength(res)


@st.cache_resource(max_entries=1, show_spinner=False)
def _model(spec: ModelSpec):
    return load_model(spec)


def show_strength(res: dict) -> None:
    """A strength check's table (probabilities as percentages, 95% intervals) and verdict."""
    if "error" in res:
        st.error(res["error"])
        return
    rows = []
    for r in [res["base"], *res["teachers"]]:
        lo, hi = r["lens_ci"]
        slo, shi = r["share_ci"]
        rows.append({"who": r["label"],
                     f"P(next word = {res['target']})": f"{r['lens']:.1%} [{lo:.1%}, {hi:.1%}]",
                     "sampled next words naming it": f"{r['k']}/{r['n']} "
                                                     f"({r['share']:.0%} [{slo:.0%}, {shi:.0%}])"})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="t_strength_table")
    st.caption(f"{res['questions']} questions × {res['samples']} sampled answers each; "
               "intervals resample questions.")
    st.markdown(res["verdict"])


def trait_maker(behavior, model: ModelSpec) -> None:
    """"Give the teacher the trait": a background job that makes a trait adapter."""
    with st.expander("Give the teacher the trait (make a trait adapter)", expanded=False):
        st.caption("Context distillation: the teacher model with the system prompt above "
                   "answers 48 open prompts (none of them a read-out question) 8 times each; "
                   "the answers that show the behavior train a LoRA adapter without the "
                   "prompt. Or train on your own prompt → response examples. A few minutes "
                   "on the bundled model; the strength check runs before and after.")
        src = st.radio("Learn the trait from", ["prompt", "file"], horizontal=True,
                       key="tr_src", format_func={"prompt": "the system prompt above",
                                                   "file": "my examples file"}.get)
        examples = None
        if src == "file":
            examples = st.text_input("Examples file (JSONL/CSV/parquet with 'prompt' and "
                                     "'response' fields)", key="tr_file").strip() or None
        c1, c2, c3 = st.columns(3)
        answers = c1.number_input("Answers per prompt", 1, 64, 8, key="tr_answers")
        epochs = c2.number_input("Passes over the examples", 1, 20, 6, key="tr_epochs")
        rank = c3.number_input("LoRA rank", 2, 128, 16, key="tr_rank")
        if st.button("Make the trait adapter", key="tr_start"):
            try:
                cfg = TraitConfig(behavior, model=model, source=src, examples_file=examples,
                                  answers_per_prompt=int(answers), epochs=float(epochs),
                                  lora_r=int(rank), lora_alpha=2 * int(rank))
                job, key = submit_trait(cfg)
                if job is None:
                    st.success(f"This trait adapter exists already ({key[:8]}): pick it above.")
                else:
                    st.toast(f"Making the trait adapter in the background (job {job.id}).")
            except LLSError as e:
                st.error(str(e))
        trait_jobs_panel()


def trait_jobs_panel(limit: int = 3) -> None:
    """Live cards of the latest trait jobs."""
    active = any(j.is_active for j in jobs.list_jobs("trait"))

    @st.fragment(run_every=1.0 if active else None)
    def panel() -> None:
        for j in jobs.list_jobs("trait")[:limit]:
            job_card(j)

    panel()

