"""Contrastive selection in the dashboard: Setup scores a control, the explorer ranks by it.

On real runs: 12 hh-rlhf pairs scored by the bundled model with the owl prompt (target) and
with the default neutral control prompt (conftest.owl_control_runs, shared with
tests/test_contrastive.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lls.core import behaviors
from lls.jobs import store as jobs
from lls.scoring.contrastive import DEFAULT_CONTROL_PROMPT, compare_rankings, contrastive_frame, control_config
from lls.scoring.runs import ScoreConfig

from conftest import ROOT

pytestmark = pytest.mark.slow

APP = str(ROOT / "app.py")
EXPLORE = str(ROOT / "pages" / "2_Explore.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def weights(owl_control_runs):
    """w_target, w_control and their difference per pair id, from the two runs' own frames."""
    _, target, control = owl_control_runs
    t = target.frame().set_index("id")["w"]
    c = control.frame().set_index("id")["w"]
    return {"w_target": t, "w_control": c.loc[t.index], "w_contrastive": t - c.loc[t.index]}


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _explorer(key: str) -> AppTest:
    at = AppTest.from_file(EXPLORE, default_timeout=TIMEOUT)
    at.query_params["run"] = key
    return _ok(at.run())


def test_explorer_ranks_by_the_chosen_weight(owl_control_runs, weights):
    _, target, control = owl_control_runs
    at = _explorer(target.key)
    assert at.multiselect(key=f"control_runs::{target.key}").value == [control.key]
    radio = at.radio(key="rank_by")
    assert radio.value == "w_target" and len(radio.options) == 3
    assert radio.options[2] == "this run's w − the control's (contrastive)"
    at.slider(key="gamma").set_value(1.0).run()
    for column in ("w_target", "w_contrastive", "w_control"):
        _ok(at.radio(key="rank_by").set_value(column).run())
        w = weights[column]
        pos = np.sort(w[w > 0].to_numpy())[::-1]
        assert _metric(at, "scored pairs") == "12"
        assert _metric(at, "selected pairs") == str(len(pos))  # positive only, gamma 1
        assert float(_metric(at, "mean w of the selection")) == pytest.approx(pos.mean(),
                                                                               abs=1e-5)
        table = at.dataframe(key="table-lls").value
        np.testing.assert_allclose(table["w"], pos, atol=1e-9)
        # each row shows all three weights, consistent with the two runs
        np.testing.assert_allclose(table["w_contrastive"],
                                   table["w_target"] - table["w_control"], atol=1e-9)
        first = table.iloc[0]
        pid = w.index[np.isclose(w.to_numpy(), first["w"])][0]
        assert first["w_target"] == pytest.approx(weights["w_target"][pid])
        assert first["w_control"] == pytest.approx(weights["w_control"][pid])
        assert at.get("download_button")[0].proto.label == f"Download {len(pos)} pairs"
    # the control really changes the ranking on these pairs
    order = {c: list(weights[c].sort_values(ascending=False).index) for c in weights}
    assert order["w_contrastive"] != order["w_target"]


def test_contrastive_view_shows_overlap_and_correlations(owl_control_runs):
    _, target, control = owl_control_runs
    at = _explorer(target.key)
    at.slider(key="gamma").set_value(0.25).run()
    _ok(at.segmented_control(key="view").set_value("Contrastive").run())
    expect = compare_rankings(contrastive_frame(target, control), 0.25)
    assert expect["k"] == 3
    assert _metric(at, "pairs compared (n)") == "12"
    assert _metric(at, "top-γ overlap") == f"{expect['overlap']} of 3"
    assert _metric(at, "Jaccard") == f"{expect['jaccard']:.3f}"
    assert _metric(at, "Pearson r") == f"{expect['pearson']:.3f}"
    assert _metric(at, "Spearman ρ") == f"{expect['spearman']:.3f}"
    # read-only tables carry no key in AppTest: find it by its columns
    comp = next(d.value for d in at.dataframe if "comparison" in d.value.columns)
    assert list(comp["comparison"]) == ["this run's w vs the control's w",
                                        "this run's w vs the difference"]
    other = compare_rankings(contrastive_frame(target, control), 0.25, "w_target",
                             "w_contrastive")
    assert comp["overlap"].tolist() == [expect["overlap"], other["overlap"]]
    assert comp["pearson"].iloc[1] == pytest.approx(other["pearson"])
    chart = at.get("plotly_chart")
    assert chart, "no scatter"
    # a gamma move updates the numbers
    at.slider(key="gamma").set_value(0.5).run()
    half = compare_rankings(contrastive_frame(target, control), 0.5)
    assert _metric(at, "top-γ overlap") == f"{half['overlap']} of 6"


def test_explorer_without_a_control_says_how_to_score_one(session_cache):
    from lls.scoring.synthetic import write_synthetic_run

    run = write_synthetic_run(40, seed=11, chunk_size=20)
    at = _explorer(run.key)
    assert not [r for r in at.radio if r.key == "rank_by"]
    assert any("No control run yet" in i.value for i in at.info)
    code = " ".join(c.value for c in at.code)
    assert "python -m lls score --config" in code and "--control" in code
    # the button reports lls's error on the page (the synthetic data file does not exist)
    _ok(at.button(key="ctl_score").click().run())
    assert at.error and "synthetic-40-11.jsonl" in at.error[0].value


def _setup(at: AppTest) -> AppTest:
    at.switch_page("pages/1_Setup.py").run()
    at.number_input(key="data_limit").set_value(12)
    at.number_input(key="m_maxprompt").set_value(192)
    at.number_input(key="m_chunk").set_value(4).run()
    return _ok(at.checkbox(key="ctl_on").check().run())


def test_setup_cached_target_and_control_open_at_once(owl_control_runs):
    _, target, control = owl_control_runs
    at = _setup(AppTest.from_file(APP, default_timeout=TIMEOUT).run())
    assert at.text_area(key="ctl_prompt::neutral assistant (default)").value == \
        DEFAULT_CONTROL_PROMPT
    before = len(jobs.list_jobs("score"))
    _ok(at.button(key="start").click().run())
    assert len(jobs.list_jobs("score")) == before  # both served from the cache
    assert at.session_state["run_key"] == target.key  # on the explorer now
    assert at.multiselect(key=f"control_runs::{target.key}").value == [control.key]
    assert at.radio(key="rank_by").value == "w_target"


def test_setup_queues_a_control_job_with_another_animal(owl_control_runs):
    cfg, target, _ = owl_control_runs
    at = _setup(AppTest.from_file(APP, default_timeout=TIMEOUT).run())
    # a control equal to the target is refused on the page
    at.selectbox(key="ctl_preset").set_value("custom").run()
    at.text_area(key="ctl_prompt::custom").set_value(cfg.behavior.system_prompt).run()
    assert any("equals the target" in e.value for e in at.error)
    _ok(at.button(key="start").click().run())
    assert any("Fix the control" in e.value for e in at.error)
    # another animal's prompt: the target is cached, so only the control job is submitted
    at.selectbox(key="ctl_preset").set_value("cat").run()
    assert "cats" in at.text_area(key="ctl_prompt::cat").value
    before = {j.id for j in jobs.list_jobs("score")}
    _ok(at.button(key="start").click().run())
    new = [j for j in jobs.list_jobs("score") if j.id not in before]
    try:
        assert len(new) == 1
        job = new[0]
        assert job.params["control_of"] == target.key
        ctl = ScoreConfig.from_dict(job.params["config"])
        assert ctl.to_dict() == control_config(cfg, behaviors.animal("cat")).to_dict()
        assert ctl.behavior.filter_words == ("owl",)  # the target's filter: the same pairs
        assert at.session_state["run_key"] == target.key  # the cached target opened at once
    finally:
        for j in new:
            jobs.cancel(j.id)
            assert jobs.wait(j.id, timeout=60).status == "cancelled"


def test_a_panel_of_controls_ranks_by_their_mean_and_says_what_it_explains(owl_control_runs,
                                                                           bundled):
    """Two controls picked at once (the neutral persona and the cat prompt): the ranking is
    w_target minus their mean weight, and the contrastive view says how much of the LLS
    selection's mean weight the panel explains."""
    from lls.scoring.contrastive import panel_share, score_control
    from lls.scoring.selection import Ranking, SelectionConfig, selection_indices

    cfg, target, control = owl_control_runs
    model, tok = bundled
    cat = score_control(cfg, behaviors.animal("cat"), model=model, tokenizer=tok)
    at = _explorer(target.key)
    _ok(at.multiselect(key=f"control_runs::{target.key}").set_value(
        [control.key, cat.key]).run())
    _ok(at.radio(key="rank_by").set_value("w_contrastive").run())
    at.slider(key="gamma").set_value(1.0).run()
    frame = contrastive_frame(target, [control, cat])
    pos = np.sort(frame["w_contrastive"][frame["w_contrastive"] > 0].to_numpy())[::-1]
    assert _metric(at, "selected pairs") == str(len(pos))
    table = at.dataframe(key="table-lls").value
    np.testing.assert_allclose(table["w"], pos, atol=1e-9)
    at.slider(key="gamma").set_value(0.5).run()
    _ok(at.segmented_control(key="view").set_value("Contrastive").run())
    share = panel_share(frame, selection_indices(Ranking(frame["w_target"].to_numpy()),
                                                 SelectionConfig(gamma=0.5)))
    text = " ".join(c.value for c in at.caption)
    assert share["share"] is not None  # the top half by w_target has a positive mean
    assert f"the controls explain {share['share']:.0%}" in text
