"""LLS Studio: the entry point (`streamlit run app.py`): page config, the navigation and the
home page (what LLS is, where to go, recent runs and jobs).

The pages live in pages/ and are listed here with st.navigation, so the sidebar names the home
page "Home" (Streamlit's automatic pages/ navigation names it after this file: "app"). Pages
only render and call `lls`.
"""

from pathlib import Path

import streamlit as st

from lls import jobs
from lls import scoring
from lls.core.errors import LLSError
from ui import common, job_cards

PAGES = sorted(Path(__file__).with_name("pages").glob("[0-9]*_*.py"),
               key=lambda p: int(p.name.split("_", 1)[0]))


def home() -> None:
    """The home page."""
    st.title("LLS Studio")
    st.markdown(
        "**Logit-Linear Selection** (Aden-Ali et al., ICML 2026) picks preference pairs that "
        "carry a hidden trait.\n"
        "1. A teacher model scores every pair (prompt, chosen, rejected) with and without a "
        "target system prompt *s* (e.g. \"you love owls\").\n"
        "2. The weight *w* is how much more *s* prefers chosen over rejected, per token.\n"
        "3. The pairs with the largest positive *w* (top γ of the data) are kept.\n"
        "4. A student trained with DPO on them, *without* ever seeing *s*, drifts towards its "
        "trait."
    )

    c1, c2 = st.columns(2)
    c1.page_link(common.SETUP_PAGE, label="Setup: data, behavior, teacher, scoring", icon="⚙️")
    c2.page_link(common.EXPLORE_PAGE, label="Explore: scores, selection, examples", icon="🔎")

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
        st.info("No scoring runs yet: start one on the Setup page.")

    st.subheader("Recent jobs")
    recent = jobs.list_jobs()[:10]
    if recent:
        rows = []
        for j in recent:
            _, text = job_cards.progress_text(j)
            rows.append({"job": j.id, "kind": j.kind, "title": j.title, "status": j.status,
                         "progress": text, "error": j.error})
        st.dataframe(rows, hide_index=True, key="home_jobs")
    else:
        st.caption("No background jobs yet.")


st.set_page_config(page_title="LLS Studio", layout="wide")
st.navigation([st.Page(home, title="Home", icon="🏠", default=True)]
              + [st.Page(p) for p in PAGES]).run()
