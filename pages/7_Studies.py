"""Studies: sweep selection and training settings, every LLS adapter beside its same-size
random twin; the paired effect per cell, collapse, and a best cell only when one beat its
twin. Rendering only: the computations live in lls.studies and ui.studies."""

import streamlit as st

from lls import jobs, scoring
from lls.core.errors import LLSError
from lls.scoring import contrastive
from lls.studies import study as S
from lls.studies.export import report_html
from lls.studies.runner import submit_study
from lls.training.config import TrainConfig
from ui import charts, common, control_runs, job_cards
from ui import studies as U
from ui.glossary import glossary

st.set_page_config(page_title="Studies · LLS Studio", layout="wide")
st.title("Studies")
st.caption("A study sweeps selection and training settings over one scoring run. Every cell "
           "trains an LLS adapter **and its same-size random twin** with the same recipe and "
           "seed, so its effect is paired: LLS − random on the same questions and responses. "
           "Cells run one at a time, paper recipe first; a stopped study resumes where it was.")
glossary(*U.GLOSSARY_TERMS, note=U.STUDY_NOTE)

# ------------------------------------------------------------------ 1. create or extend
studies = S.list_studies()
with st.expander("Create a study, or extend one (finished cells are kept)",
                 expanded=not studies):
    runs = [r for r in scoring.list_runs() if r.complete]
    if not runs:
        st.info("No finished scoring run yet: score a dataset on the Setup page first.")
    else:
        labels = {r.key: common.run_label(r) for r in runs}
        by_key = {r.key: r for r in runs}
        c1, c2 = st.columns(2)
        run_key = c1.selectbox("Scoring run", list(labels), format_func=labels.get,
                               key="study_run",
                               help=common.run_help(by_key.get(st.session_state.get(
                                   "study_run"), runs[0])))
        name = c2.text_input("Study name", value="owl-sweep", key="study_name")
        st.caption("Comma-separated values per setting; a cell for every combination. "
                   "Choose one way to pick pairs: γ, a weight threshold, or a number of pairs.")
        c = st.columns(4)
        grid_text = {a.name: c[i % 4].text_input(a.label, a.page_default, key=f"study_{a.name}")
                     for i, a in enumerate(a for a in S.AXIS_LIST if a.name != "teacher")}
        others = S.teacher_candidates(run_key)
        teachers = st.multiselect(
            "Compare teachers: other scoring runs of the same pairs and behavior", others,
            format_func=lambda k: common.run_label(scoring.open_run(k)),
            key="study_teachers", help="Each teacher (another prompt, a trait adapter, a "
                                       "fine-tuned model) gets its own cells, each beside its "
                                       "own random twin and its own ceiling.")
        if teachers:
            grid_text["teacher"] = ",".join([run_key, *teachers])
        controls = contrastive.list_controls(by_key[run_key], runs=runs, strict=False)
        ctl_names = {r.key: control_runs.control_label(by_key[run_key], r) for r in controls}
        picked_ctl = c[1].multiselect(
            "Control runs (ranking contrastive; several: a panel)", list(ctl_names),
            format_func=ctl_names.get, key=f"study_control::{run_key}",
            help="Runs of the same pairs with another system prompt; with several, their mean "
                 "w is subtracted." if controls else
                 "No control run of this scoring run yet: score one on the Explore page.")
        control = ",".join(picked_ctl)
        c = st.columns(4)
        batch = c[0].number_input("Pairs per step (batch size)", 1, 512, TrainConfig().batch_size,
                                  key="study_batch")
        questions = c[1].number_input("Sampled read-outs: questions asked", 1, 32, 32,
                                      key="study_q")
        samples = c[2].number_input("Sampled read-outs: answers per question", 1, 100, 8,
                                    key="study_n")
        per_epoch = c[3].number_input(
            "Meter read-outs per epoch", 1, 16, 2, key="study_per_epoch",
            help="Each read-out costs ~40 s on the bundled model; 1 reads the epoch ends only.")
        prefill = st.checkbox("Also the prefilled read-out (the reply begun with 'My favorite "
                              "animal is the'; animal behaviors)", key="study_prefill")
        if st.button("Create / extend the study", key="study_create", type="primary"):
            try:
                cfg = S.StudyConfig(
                    name=name.strip(), run=run_key, control_run=control.strip() or None,
                    grid={k: S.parse_values(v) for k, v in grid_text.items()
                          if S.parse_values(v)},
                    recipe={"batch_size": int(batch)},
                    sampled={"questions": int(questions), "samples": int(samples), "seed": 0,
                             "kinds": ["one-word", "prefilled"] if prefill else None},
                    checkpoints_per_epoch=int(per_epoch))
                st.session_state["study_pick"] = S.create_study(cfg).name
                st.rerun()
            except LLSError as e:
                st.error(str(e))

studies = S.list_studies()
if not studies:
    st.stop()
names = [s.name for s in studies]
# a link can name the study (?study=NAME); the choice lives in session state only
if st.session_state.get("study_pick") not in names:
    st.session_state.pop("study_pick", None)
    if st.query_params.get("study") in names:
        st.session_state["study_pick"] = st.query_params["study"]
pick = st.selectbox("Study", names, key="study_pick")
st.query_params["study"] = pick
study = S.open_study(pick)
t = S.target(study)
st.markdown(f"**Target**: {t['behavior']} · **model** {t['model']} · **data** `{t['data']}` "
            f"({t['pairs']} scored pairs) · sampled read-outs: {', '.join(t['kinds'])}",
            help=f"The scoring run's key: `{t['run']}`.")
if study.upgraded_from:
    st.info(f"Made by an older version ({study.upgraded_from}) of the studies: its cells are "
            "read again when the queue runs (finished adapters are reused, nothing retrains).")

# ------------------------------------------------------------------ 2. queue
job = U.study_job(study)
rows = S.table(study)
done = sum(r["status"] == "done" for r in rows)
c1, c2, c3 = st.columns([2, 1, 1])
c1.markdown(f"**{done} of {len(rows)} cells done** · learning-rate schedule "
            f"{study.config.lr_scheduler}")
running = U.progress_line(study, job)
if running:
    c1.info(running)
    if job and job.is_active and c3.button("Stop (resumable)", key="study_stop"):
        jobs.cancel(job.id)
        st.rerun()
elif done < len(rows) and job_cards.memory_gate(S.memory_check(study)) and c2.button(
        "Run the queue in the background", key="study_go", type="primary"):
    try:
        submit_study(study.name)
        st.rerun()
    except LLSError as e:
        st.error(str(e))
if job and job.error:
    st.error(f"Last job: {job.error}")

# ------------------------------------------------------------------ 3. effect vs setting
plan = S.plan_for(study)
names_ = U.READOUT_NAMES
readout = st.radio("Paired read-out (LLS − random at each cell's last step)",
                   list(plan["paired_all"]), format_func=names_.get, horizontal=True,
                   key="study_readout")
axes = S.varying_axes(study.config) or ["gamma"]
c1, c2 = st.columns(2)
x = c1.selectbox("x axis", axes, format_func=U.axis_label, key="study_x")
y_opts = [a for a in axes if a != x]
y = c2.selectbox("Second setting", ["(none)", *y_opts], key="study_y",
                 format_func=lambda a: a if a == "(none)" else U.axis_label(a))
mode = c2.radio("Show the second setting as", ["lines", "heatmap"], horizontal=True,
                key="study_mode") if y != "(none)" else "lines"
if mode == "heatmap":
    fig = charts.effect_heatmap(S.effect_grid(rows, readout, x, y), readout, x, y,
                                U.axis_label(x), U.axis_label(y))
else:
    fig = charts.effect_lines(rows, readout, x, None if y == "(none)" else y, U.axis_label(x),
                              None if y == "(none)" else U.axis_label(y))
if fig is not None:
    st.plotly_chart(fig, key="study_effect")
else:
    st.info("No finished cell yet.")

# ------------------------------------------------------------------ 4. cells
kinds = study.config.sampled.get("kinds", [])
st.dataframe(U.cells_frame(rows, readout, kinds), hide_index=True, key="study_cells",
             width="stretch")
st.caption(U.METHODS)

best = S.best_cell(study)
if best and best["state"] in ("beats", "confirmed", "candidate"):
    e = best["effect"]
    head = {"beats": "Best cell and checkpoint: it beat its random twin",
            "confirmed": "Best cell and checkpoint: confirmed by a fresh seed",
            "candidate": "Candidate cell (not a verdict yet)"}[best["state"]]
    st.subheader(head)
    corr = best["correction"]
    c = best["corrected"]
    st.markdown(f"**{best['label']}**, step {best['step']}: {names_.get(best['readout'])} "
                f"LLS − random {e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}] "
                "(paired bootstrap, 95%)")
    st.markdown(f"Corrected for the search: **{corr['method']} over N = {corr['n']} "
                f"candidates** (cells × read-out steps compared), the "
                f"{100 * corr['level']:.2f}% interval: "
                + (f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if c and c.get("ci_low")
                   is not None else "not available for this result (run the queue again)"))
    if best["state"] == "candidate":
        st.info("Its 95% interval clears 0 only before correcting for the search that picked "
                "it: the largest of many noisy estimates is optimistic. It becomes a result "
                "when a confirmation (the same setting, a fresh seed, judged at this step) "
                "clears 0 on its own.")
    else:
        st.warning(best["caveat"])
    for cf in best["confirmations"]:
        ce = cf.get("effect") or {}
        st.caption(f"Confirmation with seed {cf['seed']} at step {cf['step']}: {cf['status']}"
                   + (f", {ce['diff']:+.3f} [{ce['ci_low']:+.3f}, {ce['ci_high']:+.3f}]"
                      if ce.get("diff") is not None else ""))
    c1, c2 = st.columns(2)
    if c1.button("Confirm: re-train this setting with a new seed", key="study_confirm"):
        got = S.confirm_best(study.name)
        (st.success if got["queued"] else st.info)(
            f"Seed {got['settings']['seed']} at step {got['judge_step']}: "
            + ("queued; run the queue to train it." if got["queued"] else
               "already queued (one confirmation at a time)."))
    if c2.button("Open in Chat (checkpoint, random twin, base + system prompt)",
                 key="study_chat"):
        st.session_state["chat_preset"] = S.chat_setup(study, best)
        st.switch_page("pages/4_Chat.py")
elif best:
    e = best["effect"]
    corr = best["correction"]
    st.info(f"No cell beat its random twin: the largest paired effect ({best['label']}, step "
            f"{best['step']}: {e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}], the "
            f"largest of {best['n_compared']} checkpoints compared): {best['why_not']}. (The "
            f"verdict corrects for the search: {corr['method']} over N = {corr['n']} "
            "candidates.) There is "
            "nothing to confirm yet.")
hyg = S.hygiene(study)
with st.expander("Data hygiene (what scoring kept and dropped)",
                 expanded=bool(hyg.get("readout_overlap_text"))):
    if hyg.get("readout_overlap_text"):
        st.warning(hyg["readout_overlap_text"])
    st.caption(hyg.get("summary") or "No hygiene report recorded for this run.")

st.download_button(
    "Download report", key="study_report", mime="text/html", on_click="ignore",
    file_name=f"study-{study.name}.html", data=lambda: report_html(study).encode("utf-8"),
    help="One HTML file with everything above (target, data, recipe, every cell's effects "
         "and curves, the verdict and its correction, hygiene, the commands that reproduce "
         "the study, package versions): charts included, it opens with no network.")

# ------------------------------------------------------------------ 5. one cell
finished = [r for r in rows if r["status"] == "done"]
if finished:
    st.subheader("One cell")
    cell_id = st.selectbox("Cell", [r["cell"] for r in finished], key="study_cell",
                           format_func={r["cell"]: r["full_label"] for r in finished}.get)
    res = study.result(study.cell(cell_id))
    c1, c2 = st.columns(2)
    f = charts.paired_curve(res["curve"], readout)
    if f is not None:
        c1.plotly_chart(f, key="study_curve")
    for i, (kind, got) in enumerate(S.sampled_at(res).items()):
        f = charts.sampled_bars((res.get("sampled_levels") or {}).get(kind) or {}, got,
                                f"Sampled {U.KIND_LABELS.get(kind, kind)} at step {res['step']}")
        if f is not None:
            c2.plotly_chart(f, key=f"study_bars_{i}")
    for line in S.describe_sampled(res) + U.collapse_text(res):
        st.caption(line)
    if st.button(f"Open this cell in Chat (step {res['step']}, random twin, base + system "
                 "prompt)", key="study_cell_chat"):
        st.session_state["chat_preset"] = S.chat_setup(study, res)
        st.switch_page("pages/4_Chat.py")
    c = res.get("cost") or {}
    st.caption(f"Cost: training {c.get('training')} s, meter read-outs {c.get('meter')} s, "
               f"sampled read-outs {c.get('sampled')} s; peak memory of the study process "
               f"{(res.get('memory') or {}).get('peak_rss_mb')} MB.")
