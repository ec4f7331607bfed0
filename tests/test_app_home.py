"""The home page under streamlit.testing.v1.AppTest: every page linked with what it is for,
tables in words, and the demo started as a background job."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from ui.home import page_line

pytestmark = pytest.mark.slow

APP = str(ROOT / "app.py")
TIMEOUT = 120


def _home() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_home_links_every_page_and_says_what_it_is_for():
    at = _home()
    links = {p.proto.page: p.proto.label for p in at.get("page_link")}
    pages = sorted(p.stem.split("_", 1)[1] for p in (ROOT / "pages").glob("[0-9]*_*.py"))
    assert sorted(links.values()) == pages
    lines = [m.value for m in at.markdown]
    for path in (ROOT / "pages").glob("[0-9]*_*.py"):
        line = page_line(path)
        assert line and line in lines, path.name


def test_home_starts_the_demo_as_a_job_with_a_card():
    from lls.jobs import store as jobs

    at = _home()
    assert not [d for d in at.dataframe if "kind" in d.value.columns]  # words, not code names
    before = {j.id for j in jobs.list_jobs("demo")}
    at.button(key="home_demo").click().run()
    new = [j for j in jobs.list_jobs("demo") if j.id not in before]
    try:
        assert len(new) == 1 and new[0].argv[-1] == "demo"
        at.run()
        assert any(new[0].id in m.value for m in at.markdown)  # its job card
        assert at.button(key="home_demo").disabled  # one demo at a time
    finally:
        for j in new:
            jobs.cancel(j.id)
            jobs.wait(j.id, timeout=60)
