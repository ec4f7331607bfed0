"""Behavior evaluation (the paper's protocol) as a background job: bar chart with Wilson CIs
beside the effect meter's log-probability read-outs, trajectory over checkpoints, sample
answers one click away, exports; N data-parallel processes where N devices exist."""

import pandas as pd
import streamlit as st

from lls import jobs
from lls.core import LLSError, behaviors
from lls.core.distributed import device_count
from lls.evaluation import (EvalConfig, EvalModel, EvalRun, adapter_models, cluster_command,
                            list_evals, open_eval, start_eval)
from lls.core.prompts import GENERAL_PROMPTS, PROBE_QUESTIONS
from lls.evaluation.judge import DEFAULT_JUDGE_LABELS, DEFAULT_JUDGE_POSITIVE, JudgeConfig
from lls.jobs.resources import check_scoring_job
from lls.models import BUNDLED, ModelSpec
from lls.training.adapters import list_adapters
from ui import common, eval_meter, job_cards
from ui.charts import eval_rate_figure, eval_trajectory_figure
from ui.common import as_text
from ui.glossary import glossary

st.set_page_config(page_title="Evaluate · LLS Studio", layout="wide")
st.title("Behavior evaluation")
st.caption("General prompts × N samples (temperature 1, 96 new tokens by default): the share of "
           "answers showing the target behavior, with Wilson 95% intervals, for the base model, "
           "base + system prompt (the teacher), trained adapters and checkpoints, and their "
           "random twins.")
glossary("likelihood ratio", "margin", "top-1", "gap closed", "prefilled read-out", "lens",
         "teacher", "random twin", "interval")


def what_counts(b: dict) -> str:
    """What counts as an answer showing the behavior, in words."""
    words = ", ".join(b.get("filter_words") or [b.get("target") or b.get("name") or "?"])
    return {"mentions": f"answers mentioning {words}",
            "language": f"answers mostly in {behaviors.LANGUAGES.get(b.get('target'), '?')} "
                        "(at least half of the text)",
            "judge": "answers the judge model labels as the persona",
            "regex": f"answers matching the pattern {b.get('regex')!r}"}.get(
        b.get("metric"), "answers showing the behavior")


def eval_name(r) -> str:
    """An evaluation in words: behavior, models, prompts × answers, date, status."""
    m = r.manifest
    cfg = m.get("config") or {}
    status = m.get("status", "?")
    return (f"{common.behavior_text(cfg.get('behavior'))} · {len(cfg.get('models') or [])} "
            f"models · {len(cfg.get('prompts') or [])} prompts × {cfg.get('samples', '?')} "
            f"answers · {(m.get('created') or '?')[:16].replace('T', ' ')}"
            + ("" if status == "complete" else f" · {status}"))


def summary_frame(summ, metric: str | None) -> pd.DataFrame:
    """The sampled summary in words: answers showing it (k/n), the share with its 95%
    interval, and (language) the mean share of the text in the language."""
    out = pd.DataFrame({
        "model": summ["model"],
        "answers showing it": [f"{int(k)}/{int(n)}" for k, n in zip(summ["k"], summ["n"])],
        "share [95% interval]": [f"{r:.3f} [{lo:.3f}, {hi:.3f}]" for r, lo, hi in zip(
            summ["rate"], summ["ci_low"], summ["ci_high"])]})
    if metric == "language":
        out["mean share of the text in the language"] = summ["mean_score"].round(3).to_numpy()
    return out


def answers_config(metric: str | None) -> dict:
    """Column names of the sample answers table."""
    score = ("share of the text in the language" if metric == "language"
             else "shows it (1) or not (0)")
    return {"sample": st.column_config.NumberColumn("answer #"),
            "text": st.column_config.TextColumn("answer", width="large"),
            "score": st.column_config.NumberColumn(score, format="%.2f"),
            "label": "judge's label",
            "hit": st.column_config.CheckboxColumn("shows the behavior")}


def adapter_choices() -> dict[str, EvalModel]:
    """Every checkpoint and final of every trained adapter, as EvalModels by label."""
    try:
        return {m.label: m for info in list_adapters() for m in adapter_models(info)}
    except (LLSError, OSError) as e:
        st.warning(f"Could not list adapters: {e}")
        return {}


tab_run, tab_results = st.tabs(["Configure & run", "Results"])

# ------------------------------------------------------------------ configure
with tab_run:
    choices = adapter_choices()
    c1, c2 = st.columns(2)
    with c1:
        _, behavior = common.behavior_picker("ev_behavior")
        st.caption(f"Counted as showing it: **{what_counts(behavior.to_dict())}** · system "
                   f"prompt: {as_text(behavior.system_prompt)}")
        m1, m2 = st.columns([3, 2])
        model_name = m1.text_input("Base model", value=BUNDLED, key="ev_model")
        ev_dtype = common.precision_select(m2, "Numeric precision", key="ev_dtype")
        prompts_text = st.text_area("Prompts (one per line)", "\n".join(GENERAL_PROMPTS),
                                    height=220, key="ev_prompts")
    with c2:
        samples = st.number_input("Answers per prompt and model", 1, 1000, 100,
                                  key="ev_samples", help="The paper samples 100.")
        temperature = st.number_input("Temperature", 0.0, 2.0, 1.0, 0.1, key="ev_temperature")
        max_new = st.number_input("Max new tokens per answer", 1, 1024, 96, key="ev_max_new")
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="ev_seed")
        use_base = st.checkbox("base model", True, key="ev_base")
        use_system = st.checkbox("base + system prompt (the teacher)", True, key="ev_system")
        picked = st.multiselect("Trained adapters and checkpoints (random twins included)",
                                list(choices), key="ev_adapters",
                                default=[k for k in choices if "· final" in k])
        extra = st.text_input("…or an adapter directory", key="ev_extra_path")
        extra_random = st.checkbox("that directory is a random twin", key="ev_extra_random")
        with st.expander("Effect meter (log-probability read-outs)"):
            st.caption("After sampling, the same models are read out by log-probabilities: "
                       "the likelihood ratio, for animals the margin and top-1 share of the "
                       "one-word probe, and the prefilled read-out. Turning it on later for a "
                       "finished evaluation computes only the read-outs.")
            meter_on = st.checkbox("Run the effect meter", True, key="ev_meter")
            meter_k = st.number_input(
                "Reference responses per condition", 1, 4096, 64, key="ev_meter_k",
                help="The likelihood ratio reads this many responses sampled with the system "
                     "prompt and as many without it.")
            meter_q = st.number_input("Read-out questions (0 = all)", 0, len(PROBE_QUESTIONS), 0,
                                      key="ev_meter_questions")
            meter_new = st.number_input("Reference response length (tokens)", 1, 1024, 48,
                                        key="ev_meter_max_new")
            meter_prefill = st.number_input(
                "Prefilled answers per question (0 = off)", 0, 1000, 10,
                key="ev_meter_prefill", help="The reply begun with the behavior's words (“My "
                "favorite animal is the”), the next word sampled: the share naming the target.")
        n_devices = device_count()
        if n_devices > 1:
            procs = st.number_input("Processes", 1, n_devices, 1, key="ev_procs",
                                    help="Data-parallel `accelerate launch` processes, one "
                                         "per device: each samples a share of the (model, "
                                         "prompt) units; the answers do not depend on N.")
        else:
            procs = 1
            st.caption("Multi-process launch needs N devices for N processes (this machine "
                       "has one). On a machine with N GPUs run "
                       "`accelerate launch --num_processes N -m lls eval --config '<JSON>'` "
                       "(the command for these settings is below) and sync its `cache/` "
                       "directory back: the results show up here.")
    judge = None
    if behavior.metric == "judge":
        st.warning("Persona behaviors are scored by an LLM judge (the log-probability of each "
                   "label as its whole reply). The bundled 135M model is a weak judge: use a "
                   "larger local model here if you have one, and read its labels critically.")
        j1, j2 = st.columns(2)
        judge_model = j1.text_input("Judge model", BUNDLED, key="ev_judge_model")
        labels = [x.strip() for x in j2.text_input(
            "Labels (comma-separated)", ", ".join(DEFAULT_JUDGE_LABELS),
            key="ev_judge_labels").split(",") if x.strip()]
        positive = st.multiselect("Labels that count as showing the behavior", labels,
                                  default=[x for x in DEFAULT_JUDGE_POSITIVE if x in labels],
                                  key="ev_judge_positive")
        try:
            judge = JudgeConfig(ModelSpec(judge_model.strip() or BUNDLED), tuple(labels),
                                tuple(positive))
        except LLSError as e:
            st.error(str(e))

    models = ([EvalModel("base")] if use_base else []) + \
             ([EvalModel("system")] if use_system else []) + [choices[k] for k in picked]
    if extra.strip():
        models.append(EvalModel("random" if extra_random else "adapter", path=extra.strip()))
    n_answers = len([p for p in prompts_text.splitlines() if p.strip()]) * samples * len(models)
    st.write(f"**{len(models)} models × {n_answers // max(len(models), 1)} answers = "
             f"{n_answers} answers**")
    cfg, cfg_error = None, None
    try:
        cfg = EvalConfig(behavior, prompts=tuple(prompts_text.splitlines()),
                         samples=int(samples), temperature=float(temperature),
                         max_new_tokens=int(max_new), seed=int(seed),
                         model=ModelSpec(model_name.strip() or BUNDLED, dtype=ev_dtype),
                         models=tuple(models),
                         judge=judge, meter=bool(meter_on), meter_k=int(meter_k),
                         meter_questions=int(meter_q) or None,
                         meter_max_new_tokens=int(meter_new), meter_prefill=int(meter_prefill))
    except LLSError as e:
        cfg_error = str(e)
    if cfg is not None:
        with st.expander("Command line (e.g. for a cluster)"):
            st.code(cluster_command(cfg), language="bash")
    fits = cfg is None or job_cards.memory_gate(check_scoring_job(cfg.model))
    if st.button("Run evaluation", type="primary", key="ev_launch", disabled=not fits):
        try:
            if cfg is None:
                raise LLSError(cfg_error or "Invalid settings.")
            started = start_eval(cfg, num_processes=int(procs))
            st.session_state["ev_open"] = started.key
            if isinstance(started, EvalRun):
                st.success("Already evaluated with these settings: opened the cached results.")
            else:
                st.success(f"Started job {started.id}; progress below.")
        except LLSError as e:
            st.error(str(e))

    active = [j for j in jobs.list_jobs(kind="eval") if j.is_active]
    recent = [j for j in jobs.list_jobs(kind="eval") if not j.is_active][:3]
    for j in active:
        p = j.progress or {}
        frac = p.get("fraction") or 0.0
        st.progress(min(1.0, frac), text=f"{j.title} · {j.status} · {p.get('done', 0)}/"
                    f"{p.get('total', '?')} {p.get('unit') or 'answers'} · "
                    f"{p.get('message', '')}")
        if st.button("Cancel", key=f"ev_cancel_{j.id}"):
            jobs.cancel(j.id)
    for j in recent:
        if j.status == "failed":
            with st.expander(f"❌ {j.title} failed"):
                st.code(j.error_tail or j.error or "")
    if active:
        st.button("Refresh progress", key="ev_refresh")

# ------------------------------------------------------------------ results
with tab_results:
    runs = list_evals()
    if not runs:
        st.info("No evaluation yet: configure one in the first tab.")
        st.stop()
    labels = {r.key: eval_name(r) for r in runs}
    want = st.session_state.get("ev_open")
    if st.session_state.get("ev_pick") not in labels:
        st.session_state["ev_pick"] = want if want in labels else runs[0].key
    key = st.selectbox("Evaluation", list(labels), format_func=labels.get, key="ev_pick",
                       help=f"Its key: `{st.session_state['ev_pick']}`.")
    try:
        run = open_eval(key)
        summ = run.summary()
        answers = run.answers()
    except LLSError as e:
        st.error(str(e))
        st.stop()
    cfg = run.manifest.get("config") or {}
    b = cfg.get("behavior") or {}
    if not run.complete:
        st.info(f"Status: {run.manifest.get('status')} — showing the answers so far.")
    if summ.empty:
        st.info("No answers yet.")
        st.stop()

    metric = b.get("metric")
    what = what_counts(b)
    col_sampled, col_meter = st.columns(2)
    with col_sampled:
        st.subheader("Sampled")
        st.plotly_chart(eval_rate_figure(summ, what), width="stretch", key="ev_bars")
        st.caption("Bars: answers showing it of those sampled (k/n); error bars: Wilson 95% "
                   "intervals.")
        if metric == "language":
            st.caption("Mean share of each answer's text in the target language: " + ", ".join(
                f"{m}: {s:.3f}" for m, s in zip(summ["model"], summ["mean_score"])))
    with col_meter:
        eval_meter.meter_section(run, cfg)
    eval_meter.prefill_section(run)
    st.dataframe(summary_frame(summ, metric), hide_index=True, width="stretch",
                 key="ev_summary")

    tfig = eval_trajectory_figure(summ)
    if tfig is not None:
        st.subheader("Trajectory over checkpoints")
        st.plotly_chart(tfig, width="stretch", key="ev_traj")

    with st.expander("Per prompt: share of answers showing it"):
        pp = run.per_prompt()
        st.dataframe(pp.pivot_table(index="prompt", columns="model", values="rate",
                                    sort=False), width="stretch")

    st.subheader("Sample answers")
    only_hits = st.checkbox("only answers showing the behavior", key="ev_only_hits")
    for model in summ["model"]:
        sub = answers[answers["model"] == model]
        if only_hits:
            sub = sub[sub["hit"]]
        with st.expander(f"{model} — {int(sub['hit'].sum())} of {len(sub)} shown answers show "
                         "the behavior"):
            cols = ["prompt", "sample", "text", "score", "label", "hit"]
            st.dataframe(sub[[c for c in cols if c != "label" or metric == "judge"]],
                         hide_index=True, width="stretch",
                         column_config=answers_config(metric))

    st.subheader("Export")
    e1, e2 = st.columns(2)
    e1.download_button("Answers (CSV)", answers.to_csv(index=False), f"eval-{key}.csv",
                       "text/csv", key="ev_dl_csv")
    e2.download_button("Summary (JSON)", run.results_json(), f"eval-{key}.json",
                       "application/json", key="ev_dl_json")
