"""The Subtext and Audit pages under streamlit.testing.v1.AppTest, on runs of a tiny random
Llama (`lls.scoring.synthetic`): tables, a unit's pairs, style, the control comparison, the
deltas of an older run computed as a job, and an audit whose missing candidate is scored as
a job."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lls.core.behaviors import animal
from lls.data.source import DataSpec
from lls.jobs import store as jobs
from lls.models.load import ModelSpec
from lls.scoring.deltas import has_deltas
from lls.scoring.runs import ScoreConfig, score

from conftest import ROOT

pytestmark = pytest.mark.slow  # background jobs start Python processes

SUBTEXT = str(ROOT / "pages" / "8_Subtext.py")
AUDIT = str(ROOT / "pages" / "9_Audit.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, session_cache):
    """(owl run, cat run, owl run scored without deltas on other pairs), tiny model."""
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    d = tmp_path_factory.mktemp("app-subtext")
    model = ModelSpec(str(tiny_model_dir(session_cache / "tiny-model")))
    data = synthetic_pairs_file(d / "pairs.jsonl", 40, seed=11)
    other = synthetic_pairs_file(d / "old.jsonl", 24, seed=12)

    def cfg(path, b):
        return ScoreConfig(DataSpec(str(path)), b, model=model, truncation=8, chunk_size=16)

    return (score(cfg(data, animal("owl"))), score(cfg(data, animal("cat"))),
            score(cfg(other, animal("owl")), deltas=False))


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _page(path: str, run=None) -> AppTest:
    at = AppTest.from_file(path, default_timeout=TIMEOUT)
    if run is not None:
        at.query_params["run"] = run.key
    return _ok(at.run())


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_subtext_page_tables_pairs_style_and_control(tiny_runs):
    owl, cat, _ = tiny_runs
    at = _page(SUBTEXT, owl)
    at.slider(key="st_gamma").set_value(0.25).run()
    _ok(at)
    assert _metric(at, "selected pairs") == "10"
    tables = [d.value for d in at.dataframe if "share_of_w" in d.value.columns]
    assert len(tables) == 2  # raised in chosen, lowered in rejected
    pills = at.pills(key="pick-0-token-False")
    unit = pills.options[0]
    pills.set_value(unit).run()
    _ok(at)
    assert f"**“{unit}”** (token, raised in chosen)" in _texts(at)
    pairs = next(d.value for d in at.dataframe if "its contribution" not in d.value.columns
                 and "contribution" in d.value.columns)
    assert len(pairs) >= 1
    assert any("outline:2px" in m.value for m in at.markdown)  # the unit outlined
    at.segmented_control(key="st_tab").set_value("Style").run()
    _ok(at)
    style = next(d.value for d in at.dataframe if "feature" in d.value.columns)
    assert len(style) == 11
    # a control run on the same pairs: the tokens specific to the target
    at.selectbox(key="st_control").set_value(cat.key).run()
    _ok(at)
    assert "Specific to the target" in at.segmented_control(key="st_tab").options
    at.segmented_control(key="st_tab").set_value("Specific to the target").run()
    _ok(at)
    assert "Target − control deltas" in _texts(at)


def test_subtext_page_computes_an_older_runs_deltas_as_a_job(tiny_runs):
    _, _, old = tiny_runs
    at = _page(SUBTEXT, old)
    assert "scored before per-token deltas were stored" in "\n".join(i.value for i in at.info)
    before = {j.id for j in jobs.list_jobs("deltas")}
    at.button(key="st_backfill").click().run()
    job = next(j for j in jobs.list_jobs("deltas") if j.id not in before)
    assert jobs.wait(job.id, timeout=TIMEOUT).status == "done", jobs.read_log(job.id)
    assert has_deltas(old)
    at = _page(SUBTEXT, old)
    assert _metric(at, "selected pairs")


def test_audit_page_scores_a_missing_candidate_then_ranks(tiny_runs):
    owl, cat, _ = tiny_runs
    at = AppTest.from_file(AUDIT, default_timeout=TIMEOUT).run()
    at.selectbox(key="au_base").set_value(owl.key).run()
    at.multiselect(key="au_presets").set_value(["animal:owl", "animal:cat"]).run()
    at.text_input(key="au_extra").set_value("animal:bee").run()
    _ok(at)
    status = next(d.value for d in at.dataframe if "state" in d.value.columns)
    assert status.set_index("candidate")["state"].to_dict() == {
        "animal:owl": "scored", "animal:cat": "scored", "animal:bee": "not scored"}
    assert "about" in status.set_index("candidate").loc["animal:bee", "cost"]
    before = {j.id for j in jobs.list_jobs("score")}
    at.button(key="au_score").click().run()
    job = next(j for j in jobs.list_jobs("score") if j.id not in before)
    assert jobs.wait(job.id, timeout=TIMEOUT).status == "done", jobs.read_log(job.id)
    at.run()
    _ok(at)
    at.radio(key="au_mode").set_value("the LLS selection of a candidate").run()
    at.selectbox(key="au_who").set_value("animal:cat").run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "panel_z" in d.value.columns)
    assert table.candidate.tolist()[0] == "animal:cat" and len(table) == 3
    assert "Above the noise" in _texts(at) or "No candidate clears the noise" in _texts(at)
