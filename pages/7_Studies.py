"""Studies: sweep selection and training settings, every LLS adapter beside its same-size
random twin; the paired effect per cell, collapse flags, the best cell with its caveat."""

import pandas as pd
import streamlit as st

from lls import jobs
from lls import scoring
from lls.core.errors import LLSError
from lls.jobs.resources import check_training_job
from lls.studies import study as S
from lls.studies.runner import submit_study
from ui import charts, job_cards

st.set_page_config(page_title="Studies · LLS Studio", layout="wide")
st.title("Studies")
st.caption("A study sweeps selection and training settings over one scoring run. Every cell "
           "trains an LLS adapter **and its same-size random twin** with the same recipe and "
           "seed, so its effect is paired: LLS − random on the same questions and responses. "
           "Cells run one at a time, paper recipe first; a stopped study resumes where it was.")


def _values(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# ------------------------------------------------------------------ 1. create or extend
studies = S.list_studies()
with st.expander("Create a study, or extend one (finished cells are kept)",
                 expanded=not studies):
    runs = [r for r in scoring.list_runs() if r.complete]
    if not runs:
        st.info("No finished scoring run yet: score a dataset on the Setup page first.")
    else:
        labels = {r.key: f"{r.manifest['config']['behavior'].get('name', '?')} · "
                         f"{r.manifest.get('n_pairs', '?')} pairs · {r.key[:10]}" for r in runs}
        c1, c2 = st.columns(2)
        run_key = c1.selectbox("Scoring run", list(labels), format_func=labels.get,
                               key="study_run")
        name = c2.text_input("Study name", value="owl-sweep", key="study_name")
        c = st.columns(4)
        grid_text = {
            "gamma": c[0].text_input("γ values", "0.05,0.1,0.2", key="study_gamma"),
            "epochs": c[1].text_input("epochs", "1,3,5", key="study_epochs"),
            "learning_rate": c[2].text_input("learning rates", "1e-4", key="study_lr"),
            "beta": c[3].text_input("β values", "0.04", key="study_beta"),
            "lora_r": c[0].text_input("LoRA ranks", "64", key="study_r"),
            "seed": c[1].text_input("seeds", "0", key="study_seed"),
            "ranking": c[2].text_input("ranking (plain, contrastive)", "plain",
                                       key="study_ranking"),
        }
        control = c[3].text_input("Control run key (contrastive only)", "", key="study_control")
        c = st.columns(3)
        batch = c[0].number_input("Batch size", 1, 512, 8, key="study_batch")
        questions = c[1].number_input("Sampled read-out: questions", 1, 32, 32, key="study_q")
        samples = c[2].number_input("… samples per question", 1, 100, 8, key="study_n")
        per_epoch = c[0].number_input(
            "Meter read-outs per epoch", 1, 16, 2, key="study_per_epoch",
            help="Each read-out costs ~40 s on the bundled model; 1 reads the epoch ends only.")
        if st.button("Create / extend the study", key="study_create", type="primary"):
            try:
                cfg = S.StudyConfig(
                    name=name.strip(), run=run_key, control_run=control.strip() or None,
                    grid={k: _values(v) for k, v in grid_text.items() if _values(v)},
                    recipe={"batch_size": int(batch)},
                    sampled={"questions": int(questions), "samples": int(samples),
                             "max_new_tokens": 8, "seed": 0},
                    checkpoints_per_epoch=int(per_epoch))
                st.session_state["study_pick"] = S.create_study(cfg).name
                st.rerun()
            except LLSError as e:
                st.error(str(e))

studies = S.list_studies()
if not studies:
    st.stop()
names = [s.name for s in studies]
# a link can name the study (?study=NAME), so a study can be shared or bookmarked; the
# choice lives in session state only (an `index` as well would make Streamlit warn)
if st.session_state.get("study_pick") not in names:
    st.session_state.pop("study_pick", None)
    if st.query_params.get("study") in names:
        st.session_state["study_pick"] = st.query_params["study"]
pick = st.selectbox("Study", names, key="study_pick")
st.query_params["study"] = pick
study = S.open_study(pick)

# ------------------------------------------------------------------ 2. queue
job = next((j for j in jobs.list_jobs(kind="study")
            if (j.params or {}).get("study") == study.name), None)
rows = S.table(study)
done = sum(r["status"] == "done" for r in rows)
c1, c2, c3 = st.columns([2, 1, 1])
c1.markdown(f"**{done} of {len(rows)} cells done** · run `{study.config.run[:12]}` · "
            f"schedule `{study.config.lr_scheduler}`"
            + (f" · job {job.id}: **{job.status}**" if job else ""))
if job and job.is_active:
    if c3.button("Stop (resumable)", key="study_stop"):
        jobs.cancel(job.id)
        st.rerun()
elif done < len(rows) and job_cards.memory_gate(check_training_job(
        S.teacher(study), S.recipe(study))) and c2.button(
        "Run the queue in the background", key="study_go", type="primary"):
    try:
        submit_study(study.name)
        st.rerun()
    except LLSError as e:
        st.error(str(e))
if job and job.error:
    st.error(f"Last job: {job.error}")

# ------------------------------------------------------------------ 3. effect vs setting
animal = study.behavior().kind == "animal"
readouts = ["margin", "gap_closed", "top1"] if animal else ["gap_closed"]
readout = st.radio("Paired read-out (LLS − random at each cell's last step)", readouts,
                   horizontal=True, key="study_readout")
axes = [a for a in S.AXES if len(study.config.grid.get(a, [])) > 1] or ["gamma"]
c1, c2 = st.columns(2)
x = c1.selectbox("x axis", axes, key="study_x")
y_opts = [a for a in axes if a != x]
y = c2.selectbox("y axis (heatmap) / colour", ["(lines)", *y_opts], key="study_y")
fig = (charts.effect_lines(rows, readout, x, None) if y == "(lines)"
       else charts.effect_heatmap(rows, readout, x, y))
if fig is not None:
    st.plotly_chart(fig, key="study_effect")
else:
    st.info("No finished cell yet.")

# ------------------------------------------------------------------ 4. cells
frame = pd.DataFrame(rows)
show = [c for c in ["label", "status", "n_pairs", "step", f"{readout}_diff", f"{readout}_lo",
                    f"{readout}_hi", f"lls_{readout}", f"random_{readout}", f"base_{readout}",
                    "lls_share", "lls_lo", "lls_hi", "random_share", "random_lo", "random_hi",
                    "sampled_diff", "sampled_lo", "sampled_hi", "lls_collapsed",
                    "random_collapsed", "seconds", "error"] if c in frame]
st.dataframe(frame[show], hide_index=True, key="study_cells")
st.caption(f"`{readout}_diff`: LLS − random with its 95% CI. `lls_{readout}` / "
           f"`random_{readout}` / `base_{readout}`: each model's own value, so a paired effect "
           "made by the random twin drifting away shows as such. `sampled_diff`: LLS − random "
           "share of sampled answers (Newcombe 95% CI).")

best = S.best_cell(study)
if best:
    e = best["effect"]
    st.subheader("Best cell and checkpoint")
    st.markdown(f"**{best['label']}**, step {best['step']}: {best['readout']} "
                f"{e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]")
    st.warning(best["caveat"])
    c1, c2 = st.columns(2)
    if c1.button("Confirm: re-train this setting with a new seed", key="study_confirm"):
        st.success(f"Queued {S.confirm_best(study.name)}; run the queue to train it.")
    if c2.button("Open in Chat (checkpoint, random twin, base + system prompt)",
                 key="study_chat"):
        st.session_state["chat_preset"] = S.chat_setup(study, best)
        st.switch_page("pages/4_Chat.py")

# ------------------------------------------------------------------ 5. one cell
finished = [r for r in rows if r["status"] == "done"]
if finished:
    st.subheader("One cell")
    cell_id = st.selectbox("Cell", [r["cell"] for r in finished], key="study_cell",
                           format_func={r["cell"]: r["label"] for r in finished}.get)
    res = next(study.result(c) for c in study.cells() if c.id(study.config) == cell_id)
    c1, c2 = st.columns(2)
    f = charts.paired_curve(res["curve"], readout)
    if f is not None:
        c1.plotly_chart(f, key="study_curve")
    f = charts.sampled_bars(res)
    if f is not None:
        c2.plotly_chart(f, key="study_bars")
    samp = S.result_sampled(res)  # collapse read with the same rule as the cells table
    for who in ("lls", "random"):
        cl = (samp.get(who) or {}).get("collapse")
        if cl and not cl.get("assessable", True):
            st.caption(f"{who}: collapse not assessable ({cl['reason']}).")
        elif cl:
            st.caption(f"{who}: top answer {cl['top']} {cl['top_share']:.0%} "
                       f"(base {cl.get('base_top_share', 0):.0%}), entropy "
                       f"{cl['entropy']:.2f} vs base {cl.get('base_entropy', 0):.2f} nats"
                       + (" — **collapsed**" if cl["collapsed"] else ""))
