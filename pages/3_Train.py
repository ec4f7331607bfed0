"""Train: LoRA-DPO of a student on a selection, as background jobs, watched live."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from lls import jobs
from lls import scoring
from lls import training as T
from lls.core import glossary as G
from lls.core.distributed import device_count
from lls.core.errors import LLSError
from lls.jobs.resources import check_training_job
from lls.scoring import contrastive
from lls.scoring.selection import Ranking
from lls.training.adapters import is_training, list_adapters, open_adapter, random_twin_of
from ui import charts, common, control_runs, job_cards
from ui.eval_meter import meter_frame
from ui.glossary import glossary
from ui.train_form import train_settings

st.set_page_config(page_title="Train · LLS Studio", layout="wide")
st.title("Train")
st.caption("LoRA + DPO (TRL) of a student on an LLS selection, in the background. Jobs keep "
           "running if you leave or reload this page; a killed run resumes from its last "
           "checkpoint when you start it again with the same settings.")
glossary("gamma", "w", "random twin", "control", "teacher", "likelihood ratio", "margin",
         "top-1", "gap closed", "interval")


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
picked = st.session_state.get("train_run") or (wanted if wanted in keys else keys[0])
run_key = st.selectbox("Scoring run", keys, index=keys.index(wanted) if wanted in keys else 0,
                       format_func=labels.get, key="train_run",
                       help=common.run_help(next((r for r in runs if r.key == picked), runs[0])))
run = next(r for r in runs if r.key == run_key)
teacher = run.teacher

st.header("1 · Selection")
controls = contrastive.list_controls(run)
control_key = None
if controls:
    ctl_labels = {c.key: control_runs.control_label(run, c) for c in controls}
    c1, c2 = st.columns([1, 2])
    contrast = c1.checkbox("Rank by w minus a control run's w (contrastive)",
                           key="train_contrast",
                           help="Cancels what any system prompt shifts (politeness, refusal "
                                "style) and keeps what is specific to the target.")
    picked_ctl = st.session_state.get("train_control") or controls[0].key
    pick_ctl = c2.selectbox("Control run", list(ctl_labels), format_func=ctl_labels.get,
                            key="train_control", disabled=not contrast,
                            help=common.run_help(next((c for c in controls
                                                       if c.key == picked_ctl), controls[0]),
                                                 "control run"))
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
d_sel = T.SelectionSpec()
gamma = c1.number_input(G.GAMMA, min_value=0.001, max_value=1.0, value=d_sel.gamma,
                        step=0.01, format="%.3f", key="train_gamma", help=G.TERMS["gamma"][1])
use_thr = c2.checkbox("Use a weight threshold instead of γ", key="train_use_thr")
threshold = c2.number_input("keep pairs with w > (nats/token)", value=0.0, step=0.001,
                            format="%.4f", key="train_thr", disabled=not use_thr)
positive_only = c3.checkbox("positive w only", value=d_sel.positive_only, key="train_pos")
sel_seed = c4.number_input("Random twin's seed", min_value=0, value=d_sel.seed, step=1,
                           key="train_sel_seed",
                           help="Which random pairs the random twin trains on (also seeds "
                                "training).")
selection = T.SelectionSpec(kind="lls", gamma=float(gamma),
                            threshold=float(threshold) if use_thr else None,
                            positive_only=positive_only, seed=int(sel_seed),
                            control_run=control_key)
n_sel = ranking.count(selection.config())
st.markdown(f"**{n_sel:,}** pairs selected of {ranking.n:,} scored ({ranking.n_positive:,} with w > 0).")

# ============================================================== hyper-parameters
st.header("2 · Training settings")
with st.expander("Hyper-parameters (paper defaults; CPU-sized batches)", expanded=False):
    settings = train_settings(teacher.label, teacher.dtype)
try:
    cfg = T.TrainConfig(**settings, selection=selection)
except LLSError as e:
    st.error(str(e))
    st.stop()

steps = T.estimate_steps(n_sel, cfg)
lls_id = T.adapter_id_for(cfg, run_key)
st.caption(f"≈ {steps} optimizer steps, {steps // cfg.checkpoint_every + 1} checkpoints. "
           f"Adapter id: `{lls_id}` (the same settings resume it).")
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
fits = job_cards.memory_gate(check_training_job(T.student_spec(cfg, run), cfg))
c1, c2 = st.columns(2)
if c1.button("Train", type="primary", disabled=n_sel == 0 or not fits):
    try:
        job = T.submit_training(cfg, run_key, exclusive=exclusive, num_processes=procs)
        st.session_state["train_curve_adapter"] = job.params["adapter_id"]  # show its curves
        st.success(f"Submitted job {job.id}.")
    except LLSError as e:
        st.error(str(e))
if c2.button("Train its random twin (same size, random pairs)",
             disabled=n_sel == 0 or not fits):
    try:
        job = T.submit_baseline(cfg, run_key, exclusive=exclusive, num_processes=procs)
        if lls_id in {a.id for a in list_adapters()}:
            st.session_state["train_curve_adapter"] = lls_id  # its curves gain the baseline's
        st.success(f"Submitted the random twin's job {job.id} ({n_sel} random pairs).")
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
adapters = list_adapters()
own = [a for a in adapters if not a.manifest.get("baseline_of")]
if not own:
    st.caption("No adapter yet.")
else:
    ids = [a.id for a in own]
    pick = st.selectbox("Adapter", ids, key="train_curve_adapter")

    @st.fragment(run_every=10 if is_training(pick) else None)
    def curves(adapter_id: str):
        info = open_adapter(adapter_id)
        base = random_twin_of(adapter_id)
        rows = info.metrics()
        st.caption(f"{info.status} · {len(rows)} steps logged"
                   + (f" · random twin `{base.id}` ({base.status})" if base else ""))
        pairs = [(n, a, c) for n, a, c in (("LLS", info, "#1f77b4"),
                                           ("random twin", base, "#ff7f0e"))
                 if a is not None]
        fig = charts.training_curves([(n, c, a.metrics()) for n, a, c in pairs]) if rows else None
        if fig is not None:
            st.plotly_chart(fig, width="stretch")
        traj = charts.eval_trajectory([(n, c, a.evals()) for n, a, c in pairs])
        if traj is not None:
            st.plotly_chart(traj, width="stretch")
        else:
            st.caption("No checkpoint evaluation yet.")

        st.subheader("Effect meter")
        series = [(n, c, a.meter()) for n, a, c in pairs]
        fig = charts.meter_curves(series, info.meter_levels())
        if fig is None:
            st.caption("No effect-meter read-out yet (it runs at step 0 and at every "
                       "checkpoint; the first one samples the reference set once).")
            return
        st.caption("Log-probability read-outs of the adapter as it trains (forward passes "
                   "only, no system prompt), with 95% bootstrap bands. Dotted: the base model; "
                   "dashed: the base model with the system prompt (the teacher). Gap closed: "
                   "0 at the base model, 1 at the teacher. The table: the last read-out.")
        st.plotly_chart(fig, width="stretch")
        st.dataframe(meter_frame([{**rows[-1], "model": n} for n, _, rows in series if rows],
                                 name="model"),
                     hide_index=True, width="stretch")

    curves(pick)


# ============================================================== adapters
st.header("5 · Adapters")
if not adapters:
    st.caption("No adapter yet.")
else:
    N = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame([a.summary() for a in adapters]), hide_index=True, width="stretch",
                 column_config={
                     "selection": "pairs (LLS or random)", "pairs": N("pairs trained on"),
                     "gamma": N("γ"), "threshold": N("w threshold"),
                     "baseline of": "random twin of", "beta": N("DPO β"),
                     "lr": N("learning rate", format="%.1e"), "r": N("LoRA rank"),
                     "alpha": N("LoRA alpha"), "batch": N("pairs per step"),
                     "final loss": N("final DPO loss", format="%.4f"),
                     "margin": N("DPO reward margin (last 5 steps)", format="%.4f"),
                     "accuracy": N("chosen ahead (last 5 steps)", format="%.2f"),
                     "eval rate": N("sampled: share showing it", format="%.3f"),
                     "eval k/n": "sampled: answers showing it",
                     "meter LLR": N("likelihood ratio (nats/token)", format="%.4f"),
                     "probe margin": N("margin (nats)", format="%.3f"),
                     "s/step": N("seconds per step", format="%.1f")})
