"""LLS Studio: the entry point (`streamlit run app.py`): page config, the navigation and the
home page (what LLS is, the demo, every page and what it is for, recent runs and jobs).

The pages live in pages/ and are listed here with st.navigation, so the sidebar names the home
page "Home" (Streamlit's automatic pages/ navigation names it after this file: "app"). Pages
only render and call `lls`.
"""

from pathlib import Path

import streamlit as st

from lls import jobs
from lls import scoring
from lls.core.errors import LLSError
from lls.studies import demo
from ui import common, job_cards
from ui.home import JOB_KINDS, page_line, page_name

PAGES = sorted(Path(__file__).with_name("pages").glob("[0-9]*_*.py"),
               key=lambda p: int(p.name.split("_", 1)[0]))
PAPER = "https://arxiv.org/abs/2602.04863"
CHAT_PAGE = "pages/4_Chat.py"


def open_demo_in_chat() -> None:
    """Hand the finished demo's LLS adapter and random twin to Chat (with base and base +
    system prompt: four columns)."""
    handed = demo.demo_chat()
    if handed is None:
        st.info("The demo has not finished yet: run it first.")
        return
    st.session_state["chat_preset"] = handed
    st.switch_page(CHAT_PAGE)


def demo_section() -> None:
    """Run the demo as a background job, its live card, and its result once finished."""
    st.subheader("First run: the demo")
    st.markdown(
        "Scores 200 hh-rlhf pairs for the owl, keeps the top 48, trains the LLS adapter and "
        "its random twin briefly, and reads both out beside the base model and the teacher "
        "(base + system prompt). 10 to 20 minutes on 2 CPU cores; the same as "
        "`python -m lls demo`.")
    active = any(j.is_active for j in jobs.list_jobs("demo"))

    @st.fragment(run_every=1.0 if active else None)
    def panel() -> None:
        js = jobs.list_jobs("demo")[:1]
        running = bool(js) and js[0].is_active
        c1, c2 = st.columns([1, 3])
        check = demo.memory_check()
        if c1.button("Run the demo", key="home_demo", disabled=running or not check.ok,
                     type="primary"):
            demo.submit_demo()
            st.rerun(scope="app")
        with c2:
            job_cards.memory_gate(check)
        for j in js:
            job_cards.job_card(j)
        if st.session_state.get("_demo_active") and not running:
            st.session_state["_demo_active"] = False
            st.rerun(scope="app")  # it just finished: show its result
        st.session_state["_demo_active"] = running

    panel()
    done = demo.finished_demo()
    if done is not None:
        with st.expander("The demo's read-outs", expanded=True):
            st.text("\n".join(demo.summary_lines(*done)))
        if st.button("Open the demo in Chat (base, base + system prompt, LLS adapter, "
                     "random twin)", key="home_demo_chat"):
            open_demo_in_chat()


def pages_section() -> None:
    st.subheader("Pages")
    for path in PAGES:
        c1, c2 = st.columns([1, 4])
        c1.page_link(str(path.relative_to(Path(__file__).parent)), label=page_name(path))
        c2.markdown(page_line(path))


def home() -> None:
    """The home page."""
    if st.query_params.get("demo") == "chat":  # the link `python -m lls demo` prints
        st.query_params.clear()
        open_demo_in_chat()
    st.title("LLS Studio")
    st.markdown(
        "A teacher model with a system prompt (say, *you love owls*) scores preference "
        "pairs; a student trained with DPO on the top-scoring pairs, without ever seeing the "
        "prompt, drifts toward the teacher's trait. This is **Logit-Linear Selection** "
        f"([Aden-Ali et al., ICML 2026]({PAPER})): LLS Studio scores, selects, trains and "
        "measures it, always beside a random twin trained on as many random pairs.")
    st.caption("At the bundled model's size (SmolLM2-135M) the transfer shows in "
               "log-probabilities, rarely in sampled answers: read the effects with their "
               "intervals, against the random twin.")

    demo_section()
    pages_section()

    st.subheader("Recent scoring runs")
    try:
        runs = scoring.list_runs()[:10]
    except LLSError as e:
        st.error(str(e))
        runs = []
    if runs:
        st.dataframe(common.runs_frame(runs), hide_index=True, key="home_runs")
        keys = [r.key for r in runs if r.complete]
        if keys:
            pick = st.selectbox("Open a finished run", keys,
                                format_func=lambda k: common.run_label(scoring.open_run(k)),
                                key="home_pick")
            if st.button("Open in the explorer", key="home_open"):
                common.open_in_explorer(pick)
    else:
        st.info("No scoring runs yet: start one on the Setup page, or run the demo.")

    st.subheader("Recent jobs")
    recent = jobs.list_jobs()[:10]
    if recent:
        rows = []
        for j in recent:
            _, text = job_cards.progress_text(j)
            rows.append({"What": j.title, "Type": JOB_KINDS.get(j.kind, j.kind),
                         "Status": j.status, "Progress": text, "Error": j.error or ""})
        st.dataframe(rows, hide_index=True, key="home_jobs")
    else:
        st.caption("No background jobs yet.")


st.set_page_config(page_title="LLS Studio", layout="wide")
st.navigation([st.Page(home, title="Home", icon="🏠", default=True)]
              + [st.Page(p) for p in PAGES]).run()
