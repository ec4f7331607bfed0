"""Transfer diagnostic: score the same pairs with the intended student and compare weights."""

import streamlit as st

from lls import jobs
from lls.core.errors import LLSError
from lls.models import BUNDLED, ModelSpec
from lls.scoring.transfer import (READING, aligned_weights, compare_runs, student_runs,
                          submit_student_scoring)
from lls.jobs.resources import check_scoring_job
from lls.core import glossary as G
from ui import charts, common, job_cards

st.set_page_config(page_title="Transfer · LLS Studio", layout="wide")
st.title("Transfer diagnostic")
st.caption("Do the teacher's and the student's LLS weights agree on the same pairs? "
           f"{READING[0].upper() + READING[1:]}: check before training.")


runs = common.finished_runs("No finished scoring run yet: score a dataset on the Setup page first.")

labels = {r.key: common.run_label(r) for r in runs}
by_key = {r.key: r for r in runs}
key_a = st.selectbox("Teacher run (A)", list(labels), format_func=labels.get, key="tr_a",
                     help=common.run_help(by_key.get(st.session_state.get("tr_a"), runs[0])))
run_a = by_key[key_a]

st.subheader("1 · Score the same pairs with the student")
c1, c2 = st.columns([3, 1])
student = c1.text_input("Student model (hub id, local directory or .gguf)", BUNDLED,
                        key="tr_student",
                        help="offline, only local directories and already-downloaded hub "
                             "models can be loaded")
student_spec = ModelSpec(student.strip() or BUNDLED)
try:
    fits = job_cards.memory_gate(check_scoring_job(student_spec))
except LLSError:  # an unknown model path: the button reports it
    fits = True
if c2.button("Score with student", key="tr_score", disabled=not fits):
    try:
        job, cfg_b = submit_student_scoring(run_a, ModelSpec(student.strip() or BUNDLED))
        if job is None:
            st.success("Already scored with this model: pick it as run B below.")
        else:
            st.success(f"Started scoring job {job.id}.")
    except LLSError as e:
        st.error(str(e))
for j in jobs.list_jobs(kind="score"):
    if (j.params or {}).get("transfer_of") == key_a and (j.is_active or j.status == "failed"):
        p = j.progress or {}
        if j.is_active:
            st.progress(min(1.0, p.get("fraction") or 0.0),
                        text=f"{j.title} · {p.get('done', 0)}/{p.get('total', '?')} pairs")
        else:
            st.error(f"{j.title} failed: {j.error or ''}")
if any(j.is_active for j in jobs.list_jobs(kind="score")):
    st.button("Refresh progress", key="tr_refresh")

st.subheader("2 · Compare")


# only runs of A's pairs and system prompt with another model (the check compare_runs makes)
others = student_runs(run_a, runs) or [run_a]
labels_b = {r.key: labels[r.key] for r in others}
key_b = st.selectbox("Student run (B): A's pairs and system prompt, another model",
                     list(labels_b), format_func=labels_b.get, key="tr_b",
                     help=common.run_help(by_key.get(st.session_state.get("tr_b"), others[0])))
if key_b == key_a:
    st.caption("No student run of these pairs yet (score one above), so A is compared with "
               "itself (correlation 1).")
gamma = st.slider(G.GAMMA, 0.01, 0.5, 0.05, 0.01, key="tr_gamma",
                  help="The top sets of both runs whose overlap is measured. "
                       + G.TERMS["gamma"][1])

try:
    res = compare_runs(key_a, key_b, gamma)
    frame = aligned_weights(key_a, key_b)
except LLSError as e:
    st.error(str(e))
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Pearson r of the weights", f"{res['pearson']:.3f}",
          help=f"95% bootstrap interval {res['pearson_ci'][0]:.3f} … "
               f"{res['pearson_ci'][1]:.3f}")
m2.metric("Spearman ρ (rank agreement)", f"{res['spearman']:.3f}",
          help=f"95% bootstrap interval {res['spearman_ci'][0]:.3f} … "
               f"{res['spearman_ci'][1]:.3f}")
m3.metric(f"A's top {gamma:g} also in B's", f"{res['overlap_a']:.0%}",
          help=f"{res['intersection']} of A's {res['selected_a']} selected pairs are in B's "
               "selection too")
m4.metric("Jaccard of the two top sets", f"{res['jaccard']:.2f}",
          help="Pairs in both top sets ÷ pairs in either (1: the same pairs).")
st.caption(f"{res['n']} pairs in both runs (A: {res['n_a']}, B: {res['n_b']}). 95% intervals: "
           f"Pearson [{res['pearson_ci'][0]:.3f}, {res['pearson_ci'][1]:.3f}], Spearman "
           f"[{res['spearman_ci'][0]:.3f}, {res['spearman_ci'][1]:.3f}].")
st.info(res["reading"])

model_name = {k: (by_key[k].manifest.get("config") or {}).get("model", {}).get("name", "?")
              for k in (key_a, key_b)}
st.plotly_chart(charts.transfer_scatter(frame, model_name[key_a], model_name[key_b]),
                width="stretch", key="tr_scatter")
