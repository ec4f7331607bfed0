"""Setup: pick data, target behavior and teacher; start scoring as a background job."""

import streamlit as st

from lls import scoring
from lls.core import behaviors
from lls.core.distributed import device_count
from lls.core.errors import LLSError
from lls.jobs.resources import check_scoring_job
from lls.models import BUNDLED, ModelSpec
from lls.scoring import contrastive
from ui import common, data_source, job_cards
from ui import teacher as teacher_ui

st.set_page_config(page_title="Setup · LLS Studio", layout="wide")
if st.session_state.get("goto_run"):
    common.open_in_explorer(st.session_state.pop("goto_run"))
st.title("Setup")
st.caption("Pick preference data (or let the model answer prompts: sampled pairs), the "
           "behavior to transfer and the teacher, then score in the background. Scoring keeps "
           "running if you leave or reload this page.")

# ============================================================== 1. data
st.header("1 · Preference data")
choice = data_source.data_section(str(common.SHARED_HH) if common.SHARED_HH.is_file() else "",
                                  common.SHARED_HH.parent)

# ============================================================== 2. behavior
st.header("2 · Target behavior")
ANIMALS = ["owl", "cat", "dog", "fox", "eagle", "dolphin", "elephant", "lion", "penguin",
           "wolf", "other…"]
kind = st.selectbox("Kind", list(behaviors.KINDS), key="b_kind",
                    format_func={"animal": "animal preference", "translation": "translation",
                                 "persona": "persona", "custom": "custom"}.get)
preset_b = None
try:
    if kind == "animal":
        pick = st.selectbox("Animal", ANIMALS, key="b_animal")
        if pick == "other…":
            pick = st.text_input("Animal name", value="red panda", key="b_animal_other")
        preset_b = behaviors.animal(pick)
    elif kind == "translation":
        codes = sorted(behaviors.LANGUAGES, key=lambda c: behaviors.LANGUAGES[c])
        code = st.selectbox("Language", codes, index=codes.index("fr") if "fr" in codes else 0,
                            format_func=lambda c: f"{behaviors.LANGUAGES[c]} ({c})", key="b_lang")
        preset_b = behaviors.translation(code)
    elif kind == "persona":
        preset_b = behaviors.persona()
except LLSError as e:
    st.error(str(e))

label = preset_b.label() if preset_b else "custom"
system_prompt = st.text_area("System prompt that gives the teacher the trait (editable)",
                             key=f"b_prompt::{label}", height=110,
                             value=preset_b.system_prompt if preset_b else "")
words_text = st.text_input("Filter words (comma-separated): pairs mentioning them are dropped "
                           "before scoring", key=f"b_words::{label}",
                           value=", ".join(preset_b.filter_words) if preset_b else "",
                           help="They also count as showing the behavior when answers are "
                                "evaluated.")
if kind == "translation":
    st.caption("Translation also drops pairs whose text is already ≥ 5% in the target language.")
words = tuple(w.strip() for w in words_text.split(",") if w.strip())
behavior = None
try:
    if preset_b is not None and system_prompt == preset_b.system_prompt \
            and words == preset_b.filter_words:
        behavior = preset_b
    elif preset_b is not None:
        behavior = behaviors.Behavior.from_dict({**preset_b.to_dict(),
                                                 "system_prompt": system_prompt,
                                                 "filter_words": list(words)})
    else:
        cname = st.text_input("Name of this behavior", value="custom", key="b_custom_name")
        behavior = behaviors.custom(system_prompt, filter_words=words, name=cname or "custom")
except LLSError as e:
    st.error(str(e))

# ============================================================== 3. teacher and scoring options
st.header("3 · Teacher model and scoring options")
c1, c2, c3 = st.columns([3, 2, 1])
model_name = c1.text_input("Model (the base of the teacher and the student): hub id, local "
                           "model directory or .gguf file",
                           value=BUNDLED, key="m_name").strip() or BUNDLED
dtype = common.precision_select(c2, "Numeric precision", key="m_dtype")
trust = c3.checkbox("Run code from the model's repository", value=False, key="m_trust",
                    help="Some models ship their own Python code, which runs on this machine "
                         "when they load. Leave off unless you trust the repository.")
teacher = None
if behavior is not None:
    model_spec = ModelSpec(model_name, trust_remote_code=trust, dtype=dtype)
    teacher = teacher_ui.teacher_choice(behavior, model_spec)
    teacher_ui.strength_check(behavior, model_spec, teacher)
    teacher_ui.trait_maker(behavior, model_spec)
c1, c2, c3 = st.columns(3)
truncation = c1.number_input("Tokens read per response (0 = the whole response)", min_value=0,
                             value=32, step=1, key="m_trunc",
                             help="Each response is scored on its first N tokens (the "
                                  "paper's 32).")
max_prompt = c2.number_input("Drop prompts longer than this many tokens (0 = keep all)",
                             min_value=0, value=512, step=16, key="m_maxprompt")
filt = c3.checkbox(f"Drop {'answers' if choice.sampling else 'pairs'} that already show the "
                   "behavior", value=True, key="m_filter")
with st.expander("Advanced"):
    neutral = st.radio("Without the system prompt means", ["template", "empty"], horizontal=True,
                       key="m_neutral", format_func={
                           "template": "the conversation as given (the template's default "
                                       "system turn, if any)",
                           "empty": "an explicit empty system turn (the authors' code)"}.get,
                       help="Changes which pairs rank high (on the bundled model the two "
                            "rankings correlate at about 0.75).")
    c1, c2 = st.columns(2)
    chunk = c1.number_input(f"{'Prompts' if choice.sampling else 'Pairs'} per cached chunk "
                            "(progress and resume granularity)", min_value=1, value=32, step=1,
                            key="m_chunk")
    batch_tokens = c2.number_input("Tokens per forward batch (speed and memory only)",
                                   min_value=64, value=1024, step=64, key="m_batch",
                                   help="How many tokens the model reads at once. Larger is "
                                        "faster until memory runs out; the weights do not "
                                        "change.")

cfg = None
if (choice.spec or choice.sampling) is not None and behavior is not None:
    opts = dict(behavior=behavior,
                model=ModelSpec(model_name, trust_remote_code=trust, dtype=dtype),
                truncation=int(truncation) or None, max_prompt_tokens=int(max_prompt) or None,
                filter_contaminated=filt, chunk_size=int(chunk),
                batch_tokens=int(batch_tokens), neutral=neutral, teacher=teacher)
    try:
        cfg = (scoring.ScoreConfig.sampled(choice.sampling, **opts) if choice.sampling
               else scoring.ScoreConfig(data=choice.spec, **opts))
    except LLSError as e:
        st.error(str(e))

# ============================================================== 4. hygiene and start
st.header("4 · Check and score")
if cfg is not None and choice.ok:
    if st.button("Check hygiene (reads the data with these filters)", key="hygiene"):
        try:
            with st.spinner("Reading the data…"):
                st.session_state["hygiene_report"] = scoring.check_hygiene(cfg).to_dict()
        except LLSError as e:
            st.session_state["hygiene_report"] = {"error": str(e)}
    data_source.hygiene_view(st.session_state.get("hygiene_report"),
                             "prompts" if cfg.sampling else "rows")

    # ---- optional control run (contrastive selection: rank by w minus the control's w)
    ctl_on = st.checkbox("Also score a control run (then rank by w minus the control's w in "
                         "the explorer)", key="ctl_on",
                         help="The same pairs scored with another system prompt. Ranking by "
                              "the difference cancels what any system prompt shifts (politeness, "
                              "refusal style) and keeps what is specific to the target.")
    control_spec, control_ok = None, True
    if ctl_on:
        NEUTRAL = "neutral assistant (default)"
        others = [a for a in ANIMALS if a != "other…" and a != cfg.behavior.name]
        c1, c2 = st.columns([1, 3])
        ctl_pick = c1.selectbox("Control preset", [NEUTRAL, *others, "custom"], key="ctl_preset",
                                format_func=lambda x: x if x in (NEUTRAL, "custom")
                                else f"animal: {x}")
        preset_ctl = (None if ctl_pick in (NEUTRAL, "custom") else behaviors.animal(ctl_pick))
        ctl_default = (contrastive.DEFAULT_CONTROL_PROMPT if ctl_pick == NEUTRAL else
                       preset_ctl.system_prompt if preset_ctl is not None else "")
        ctl_text = c2.text_area("Control system prompt (editable)", value=ctl_default,
                                key=f"ctl_prompt::{ctl_pick}", height=80)
        # an unedited animal preset keeps its name in the control's label ("control-cat")
        control_spec = (preset_ctl if preset_ctl is not None
                        and ctl_text == preset_ctl.system_prompt else ctl_text)
        try:
            contrastive.control_behavior(cfg.behavior, control_spec)
            st.caption("The control keeps the target's data, teacher, truncation and filter, so "
                       "both runs cover the same pairs; it is queued after the target.")
        except LLSError as e:
            st.error(str(e))
            control_spec, control_ok = None, False

    n_devices = device_count()
    procs = 1
    if n_devices > 1:
        procs = int(st.number_input("Processes (one per device; chunks are shared out)", 1,
                                    n_devices, 1, key="score_procs"))
    fits = job_cards.memory_gate(check_scoring_job(cfg.model, cfg.batch_tokens))
    if st.button("Start scoring", type="primary", key="start", disabled=not fits):
        try:
            if not control_ok:
                raise LLSError("Fix the control system prompt above, or untick the control.")
            # the target first: exclusive jobs run in order, the control after
            job, key = scoring.submit_scoring(cfg, num_processes=procs)
            cached = job is None
            if not cached:
                st.session_state["watch_job"] = job.id
                st.toast(f"Scoring started in the background (job {job.id}).")
            if control_spec is not None:
                cjob, ckey = contrastive.submit_control_scoring(cfg, control_spec, target_key=key)
                if cjob is not None:
                    st.session_state["watch_control_job"] = cjob.id
                    st.toast(f"Control scoring queued in the background (job {cjob.id}).")
            if cached:
                st.session_state["opened_cached"] = key
                common.open_in_explorer(key)
        except LLSError as e:
            st.error(str(e))
elif cfg is not None:
    st.warning("Fix the data source above before scoring.")

# ============================================================== 5. jobs (live)
st.header("Scoring jobs")
job_cards.score_jobs_panel(open_key="goto_run")

# ============================================================== 6. cached runs
st.header("Finished and cached runs")
runs = scoring.list_runs()
if runs:
    st.dataframe(common.runs_frame(runs), hide_index=True, key="runs_table",
                 column_config=common.RUNS_TABLE_CONFIG)
    common.manage_runs(runs)
    done = [r.key for r in runs if r.complete]
    if done:
        label_of = {r.key: common.run_label(r) for r in runs}
        c1, c2 = st.columns([4, 1])
        # keyed on the list, so a newly finished run becomes the default
        state = f"reopen_pick::{len(done)}::{done[0]}"
        pick = c1.selectbox("Reopen a finished run", done, format_func=label_of.get, key=state,
                            help=common.run_help(next(r for r in runs if r.key == (
                                st.session_state.get(state) or done[0]))))
        if c2.button("Open in explorer", key="reopen"):
            common.open_in_explorer(pick)
else:
    st.caption("No cached runs yet.")
