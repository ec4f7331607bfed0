"""Train: LoRA-DPO of a student on a selection, as background jobs, watched live."""

import math
from datetime import timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lls import contrastive, jobs, scoring
from lls import training as T
from lls.distributed import device_count
from lls.errors import LLSError
from lls.models import ModelSpec
from lls.selection import Ranking
from ui import charts, common

st.set_page_config(page_title="Train · LLS Studio", layout="wide")
st.title("Train")
st.caption("LoRA + DPO (TRL) of a student on an LLS selection, in the background. Jobs keep "
           "running if you leave or reload this page; a killed run resumes from its last "
           "checkpoint when you start it again with the same settings.")


@st.cache_data(show_spinner=False, max_entries=4)
def _weights(key: str, updated: str | None, control: str | None = None):
    """The weights a selection ranks: w, or w_target - w_control with a control run."""
    run = scoring.open_run(key)
    spec = T.SelectionSpec(control_run=control)
    return T.selection_frame(run, spec)["w"].to_numpy()


def _fmt_s(s):
    return "-" if s is None else str(timedelta(seconds=int(s)))


# ============================================================== run + selection
runs = common.finished_runs("No finished scoring run yet. Score a dataset on the Setup page first.")

labels = {r.key: common.run_label(r) for r in runs}
keys = list(labels)
wanted = common.selected_run_key()
run_key = st.selectbox("Scoring run", keys, index=keys.index(wanted) if wanted in keys else 0,
                       format_func=labels.get, key="train_run")
run = next(r for r in runs if r.key == run_key)
teacher = ModelSpec.from_dict(run.manifest["config"]["model"])

st.header("1 · Selection")
controls = contrastive.list_controls(run)
control_key = None
if controls:
    ctl_labels = {c.key: f"{c.key} · {c.manifest['config']['behavior'].get('system_prompt', '')[:60]}"
                  for c in controls}
    c1, c2 = st.columns([1, 2])
    contrast = c1.checkbox("Rank by w_target − w_control (contrastive)", key="train_contrast",
                           help="Cancels what any system prompt shifts (politeness, refusal "
                                "style) and keeps what is specific to the target.")
    pick_ctl = c2.selectbox("Control run", list(ctl_labels), format_func=ctl_labels.get,
                            key="train_control", disabled=not contrast)
    control_key = pick_ctl if contrast else None
else:
    st.caption("Contrastive selection needs a control run (the same pairs scored with a "
               "neutral system prompt): score one on the Setup or Explore page.")
try:
    ranking = Ranking(_weights(run_key, run.manifest.get("updated"), control_key))
except LLSError as e:
    st.error(str(e))
    st.stop()
c1, c2, c3, c4 = st.columns(4)
gamma = c1.number_input("gamma (top fraction)", min_value=0.001, max_value=1.0, value=0.05,
                        step=0.01, format="%.3f", key="train_gamma")
use_thr = c2.checkbox("Use a weight threshold instead", key="train_use_thr")
threshold = c2.number_input("threshold (keep w >)", value=0.0, step=0.001, format="%.4f",
                            key="train_thr", disabled=not use_thr)
positive_only = c3.checkbox("Only w > 0", value=True, key="train_pos")
sel_seed = c4.number_input("Random-baseline seed", min_value=0, value=0, step=1, key="train_sel_seed")
selection = T.SelectionSpec(kind="lls", gamma=float(gamma),
                            threshold=float(threshold) if use_thr else None,
                            positive_only=positive_only, seed=int(sel_seed),
                            control_run=control_key)
n_sel = ranking.count(selection.config())
st.markdown(f"**{n_sel:,}** pairs selected of {ranking.n:,} scored ({ranking.n_positive:,} with w > 0).")

# ============================================================== hyper-parameters
st.header("2 · Training settings")
d = T.TrainConfig()
with st.expander("Hyper-parameters (paper defaults; CPU-sized batches)", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    beta = c1.number_input("DPO beta", min_value=0.001, value=d.beta, step=0.01, format="%.3f")
    lr = c2.number_input("Learning rate", min_value=1e-7, value=d.learning_rate, step=1e-5,
                         format="%.1e")
    epochs = c3.number_input("Epochs", min_value=0.1, value=d.epochs, step=0.5)
    max_steps = c4.number_input("Max steps (0 = by epochs)", min_value=0, value=0, step=1)
    c1, c2, c3, c4 = st.columns(4)
    lora_r = c1.number_input("LoRA rank", min_value=1, value=d.lora_r, step=8)
    lora_alpha = c2.number_input("LoRA alpha", min_value=1, value=d.lora_alpha, step=8)
    lora_dropout = c3.number_input("LoRA dropout", min_value=0.0, max_value=0.9,
                                   value=d.lora_dropout, step=0.05)
    targets = c4.text_input("Target modules (empty = all attention + MLP projections)", value="")
    c1, c2, c3, c4 = st.columns(4)
    batch_size = c1.number_input("Batch size", min_value=1, value=d.batch_size, step=1)
    grad_accum = c2.number_input("Gradient accumulation", min_value=1, value=d.grad_accum, step=1)
    max_length = c3.number_input("Max length (prompt + completion tokens)", min_value=16,
                                 value=d.max_length, step=16)
    max_prompt = c4.number_input("Max prompt length (0 = keep all)", min_value=0, value=0, step=16)
    c1, c2, c3, c4 = st.columns(4)
    ckpt_every = c1.number_input("Checkpoint every K steps", min_value=1,
                                 value=d.checkpoint_every, step=1)
    eval_on = c2.checkbox("Evaluate the behavior at checkpoints", value=d.eval_at_checkpoints)
    eval_prompts = c3.number_input("Eval prompts", min_value=1, max_value=10,
                                   value=d.eval_prompts, disabled=not eval_on)
    eval_samples = c4.number_input("Samples per prompt", min_value=1, value=d.eval_samples,
                                   disabled=not eval_on)
    c1, c2, c3, c4 = st.columns(4)
    eval_tokens = c1.number_input("Eval new tokens", min_value=4, value=d.eval_max_new_tokens,
                                  step=8, disabled=not eval_on)
    seed = c2.number_input("Seed", min_value=0, value=d.seed, step=1)
    reuse = c3.checkbox("Reuse the scoring run's log-probs as reference", value=d.reuse_ref_logps,
                        help="Valid when the student is the teacher; checked automatically.")
    precompute = c4.checkbox("Otherwise precompute reference log-probs once",
                             value=d.precompute_ref_log_probs)
    c1, c2, c3 = st.columns(3)
    meter_on = c1.checkbox("Effect meter at step 0 and checkpoints", value=d.meter_at_checkpoints,
                           help="Log-probability read-outs (lls.meter): behavior likelihood "
                                "ratio and, for animals, the preference probe.")
    meter_k = c2.number_input("Meter reference responses (k)", min_value=1, value=d.meter_k,
                              step=8, disabled=not meter_on)
    meter_q = c3.number_input("Probe questions (0 = all)", min_value=0, value=0, step=5,
                              disabled=not meter_on)
    c1, c2 = st.columns([3, 1])
    student_name = c1.text_input("Student model (empty = the teacher: "
                                 f"{teacher.label})", value="",
                                 help="Any causal LM: hub id or local directory. The selection "
                                      "is re-rendered with its chat template, without the "
                                      "system prompt.")
    grad_ckpt = c2.checkbox("Gradient checkpointing", value=True,
                            help="Keeps only layer inputs for the backward pass: about 2 GB "
                                 "instead of 6-10 GB on the bundled model at batch 8; each "
                                 "step recomputes the forward.")

try:
    cfg = T.TrainConfig(
        beta=float(beta), learning_rate=float(lr), lora_r=int(lora_r),
        lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
        target_modules=[t.strip() for t in targets.split(",") if t.strip()] or None,
        epochs=float(epochs), max_steps=int(max_steps) or None, batch_size=int(batch_size),
        grad_accum=int(grad_accum), max_length=int(max_length),
        max_prompt_length=int(max_prompt) or None, checkpoint_every=int(ckpt_every),
        eval_at_checkpoints=bool(eval_on), eval_prompts=int(eval_prompts),
        eval_samples=int(eval_samples), eval_max_new_tokens=int(eval_tokens), seed=int(seed),
        meter_at_checkpoints=bool(meter_on), meter_k=int(meter_k),
        meter_questions=int(meter_q) or None,
        gradient_checkpointing=bool(grad_ckpt), reuse_ref_logps=bool(reuse),
        precompute_ref_log_probs=bool(precompute),
        student=ModelSpec(student_name.strip()) if student_name.strip() else None,
        selection=selection)
except LLSError as e:
    st.error(str(e))
    st.stop()

steps = math.ceil(n_sel / (cfg.batch_size * cfg.grad_accum)) * cfg.epochs if n_sel else 0
steps = min(steps, cfg.max_steps) if cfg.max_steps else math.ceil(steps)
lls_id = T.adapter_id_for(cfg, run_key)
st.caption(f"≈ {int(steps)} optimizer steps, {int(steps) // cfg.checkpoint_every + 1} checkpoints. "
           f"Adapter id: `{lls_id}`.")
exclusive = st.checkbox("Wait for other heavy jobs on this device (one at a time)", value=True)
n_devices = device_count()
procs = 1
if n_devices > 1:
    procs = int(st.number_input("Processes (data parallel, one per device)", 1, n_devices, 1,
                                key="train_procs"))
else:
    st.caption("Data-parallel training needs N devices for N processes (this machine: 1). On a "
               "cluster: `accelerate launch --num_processes N -m lls train --run <key> "
               "--config '<JSON>'`, then sync its `cache/` back to see the run here.")
c1, c2 = st.columns(2)
if c1.button("Train", type="primary", disabled=n_sel == 0):
    try:
        job = T.submit_training(cfg, run_key, exclusive=exclusive, num_processes=procs)
        st.session_state["train_curve_adapter"] = job.params["adapter_id"]  # show its curves
        st.success(f"Submitted job {job.id}.")
    except LLSError as e:
        st.error(str(e))
if c2.button("Train random baseline (same size)", disabled=n_sel == 0):
    try:
        job = T.submit_training(T.baseline_config(cfg), run_key, baseline_of=lls_id,
                                exclusive=exclusive, num_processes=procs)
        if lls_id in {a.id for a in T.list_adapters()}:
            st.session_state["train_curve_adapter"] = lls_id  # its curves gain the baseline's
        st.success(f"Submitted baseline job {job.id} ({n_sel} random pairs).")
    except LLSError as e:
        st.error(str(e))


# ============================================================== jobs
st.header("3 · Jobs")


# Poll only while something trains: every rerun re-sends the charts, and on a small machine
# the browser redrawing them competes with the training job for the same cores.
any_training = any(j.is_active for j in jobs.list_jobs(kind="train"))


@st.fragment(run_every=2 if any_training else None)
def jobs_panel():
    train_jobs = jobs.list_jobs(kind="train")[:10]
    if not train_jobs:
        st.caption("No training job yet.")
        return
    if any_training and not any(j.is_active for j in train_jobs):
        st.rerun(scope="app")  # the last job just ended: refresh adapters, stop polling
    for job in train_jobs:
        with st.container(border=True):
            c1, c2, c3 = st.columns([4, 2, 1])
            c1.markdown(f"**{job.title}** · `{job.id}` · adapter "
                        f"`{job.params.get('adapter_id', '?')}`")
            c2.markdown(f"{job.status} · elapsed {_fmt_s(job.elapsed)}")
            if job.is_active and c3.button("Cancel", key=f"cancel-{job.id}"):
                jobs.cancel(job.id)
                st.rerun(scope="fragment")
            p = job.progress or {}
            if job.status == "running" and p.get("unit") == "steps" and p.get("total"):
                eta = f", ETA {_fmt_s(p.get('eta'))}" if p.get("eta") is not None else ""
                st.progress(min(1.0, p["done"] / p["total"]),
                            text=f"step {p['done']} / {p['total']}{eta}")
            elif job.status == "running":
                st.caption("loading the model and the selection…")
            if job.status == "failed":
                st.error(job.error or "failed")
                if job.error_tail:
                    st.code(job.error_tail, language="text")


jobs_panel()


# ============================================================== curves
st.header("4 · Curves and effect trajectory")
adapters = T.list_adapters()
own = [a for a in adapters if not a.manifest.get("baseline_of")]
if not own:
    st.caption("No adapter yet.")
else:
    ids = [a.id for a in own]
    pick = st.selectbox("Adapter", ids, key="train_curve_adapter")

    def _training(adapter_id: str) -> bool:
        base = T.baseline_of(adapter_id)
        return any(a is not None and a.status in T.ACTIVE
                   for a in (T.open_adapter(adapter_id), base))

    @st.fragment(run_every=10 if _training(pick) else None)
    def curves(adapter_id: str):
        info = T.open_adapter(adapter_id)
        base = T.baseline_of(adapter_id)
        rows = info.metrics()
        st.caption(f"{info.status} · {len(rows)} steps logged"
                   + (f" · random baseline `{base.id}` ({base.status})" if base else ""))
        if rows:
            fig = make_subplots(rows=1, cols=3, subplot_titles=(
                "DPO loss", "Reward margin", "Reward accuracy"))
            for name, a, color in (("LLS", info, "#1f77b4"), ("random", base, "#ff7f0e")):
                if a is None:
                    continue
                df = pd.DataFrame(a.metrics())
                if df.empty:
                    continue
                for col, key in enumerate(("loss", "rewards/margins", "rewards/accuracies"), 1):
                    if key in df:
                        fig.add_trace(go.Scatter(x=df["step"], y=df[key], name=name,
                                                 line={"color": color},
                                                 showlegend=col == 1), row=1, col=col)
            fig.update_layout(height=300, margin={"t": 40, "b": 60},
                              legend={"orientation": "h", "y": -0.25, "x": 0})
            fig.update_xaxes(title_text="step")
            st.plotly_chart(fig, width="stretch")
        traj = go.Figure()
        for name, a, color in (("LLS", info, "#1f77b4"), ("random", base, "#ff7f0e")):
            ev = pd.DataFrame(a.evals()) if a is not None else pd.DataFrame()
            if ev.empty:
                continue
            traj.add_trace(go.Scatter(
                x=ev["step"], y=ev["rate"], mode="lines+markers", name=name,
                line={"color": color},
                error_y={"type": "data", "symmetric": False,
                         "array": ev["ci_high"] - ev["rate"], "arrayminus": ev["rate"] - ev["ci_low"]}))
        if traj.data:
            traj.update_layout(height=300, margin={"t": 40, "b": 30}, yaxis_title="behavior rate",
                               xaxis_title="step", title="Sampled effect per checkpoint (95% CI)")
            st.plotly_chart(traj, width="stretch")
        else:
            st.caption("No checkpoint evaluation yet.")

        st.subheader("Effect meter")
        series = [(n, c, a.meter()) for n, a, c in (("LLS", info, "#1f77b4"),
                                                     ("random", base, "#ff7f0e")) if a is not None]
        fig = charts.meter_curves(series, info.meter_levels())
        if fig is None:
            st.caption("No effect-meter read-out yet (it runs at step 0 and at every "
                       "checkpoint; the first one samples the reference set once).")
            return
        st.caption("Log-probability read-outs of the adapter as it trains (forward passes "
                   "only, no system prompt), with 95% bootstrap bands. Dotted: the base model; "
                   "dashed: the base model with the system prompt. gap closed = 0 at the base "
                   "model, 1 at base + system prompt.")
        st.plotly_chart(fig, width="stretch")
        st.dataframe(charts.meter_table([(n, rows) for n, _, rows in series]),
                     hide_index=True, width="stretch")

    curves(pick)


# ============================================================== adapters
st.header("5 · Adapters")
if not adapters:
    st.caption("No adapter yet.")
else:
    table = []
    for a in adapters:
        m = a.manifest
        tr, sel, met = m.get("train", {}), m.get("selection", {}), m.get("metrics") or {}
        ev = met.get("final_eval") or {}
        fm = met.get("final_meter") or {}
        table.append({
            "adapter": a.id, "status": a.status, "selection": sel.get("kind"),
            "pairs": sel.get("n_pairs"), "gamma": sel.get("gamma"),
            "threshold": sel.get("threshold"), "baseline of": m.get("baseline_of"),
            "student": (m.get("student") or {}).get("name"), "beta": tr.get("beta"),
            "lr": tr.get("learning_rate"), "r": tr.get("lora_r"), "alpha": tr.get("lora_alpha"),
            "epochs": tr.get("epochs"), "batch": tr.get("batch_size"), "steps": met.get("steps"),
            "final loss": met.get("final_loss"), "margin": met.get("margin_last5"),
            "accuracy": met.get("accuracy_last5"), "eval rate": ev.get("rate"),
            "eval k/n": f"{ev['k']}/{ev['n']}" if ev else None,
            "meter LLR": fm.get("llr"), "gap closed": fm.get("gap_closed"),
            "probe margin": fm.get("margin"),
            "s/step": met.get("s_per_step"), "created": m.get("created"), "path": str(a.path),
        })
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
