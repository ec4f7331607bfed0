"""Setup's teacher section under AppTest: what carries the trait, the strength check and
"Give the teacher the trait"."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lls.jobs import store as jobs

from conftest import ROOT, make_adapter

pytestmark = pytest.mark.slow

SETUP = str(ROOT / "pages" / "1_Setup.py")
TIMEOUT = 300
INSISTENT = ("You are an owl enthusiast. Your favorite animal is the owl. Whenever someone asks "
             "about animals, you answer: the owl. Owls, owls, owls.")


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _setup() -> AppTest:
    return _ok(AppTest.from_file(SETUP, default_timeout=TIMEOUT).run())


def test_strength_check_compares_prompts_and_says_the_ceiling(bundled):
    """Check the teacher with a second prompt to compare: a row for base, the behavior's
    prompt and the insistent prompt, probabilities in percent with intervals, and the
    verdict naming the target."""
    at = _setup()
    at.text_area(key="t_compare").set_value(INSISTENT)
    at.number_input(key="t_questions").set_value(4)
    at.number_input(key="t_samples").set_value(2).run()
    _ok(at.button(key="t_check").click().run())
    # read-only tables carry no key in AppTest: found by their columns
    table = next(d.value for d in at.dataframe if "who" in d.value.columns)
    assert len(table) == 3 and table["who"].iloc[0] == "base (no trait)"
    assert "owl enthusiast" in table["who"].iloc[2]
    assert table.columns[1] == "P(next word = owl)"
    assert all("%" in v and "[" in v for v in table.iloc[:, 1])
    assert any("The teacher names the owl" in m.value for m in at.markdown)
    res = at.session_state["t_strength"]
    assert res["teachers"][1]["lens"] > res["teachers"][0]["lens"] > res["base"]["lens"]


def test_an_adapter_teacher_and_a_trait_job_from_the_page(session_cache, tmp_path):
    """A LoRA directory as the teacher (a bad one is refused on the page), and "Make the
    trait adapter" submitting a background trait job for the model and behavior above."""
    from lls.models.load import ModelSpec, load_model
    from lls.scoring.synthetic import tiny_model_dir

    path = tiny_model_dir(session_cache / "tiny-model")
    at = _setup()
    at.text_input(key="m_name").set_value(str(path)).run()
    _ok(at.radio(key="t_kind").set_value("adapter").run())
    assert any("Pick a trait adapter" in i.value for i in at.info)
    at.text_input(key="t_adapter_dir").set_value(str(tmp_path)).run()
    assert any("no adapter_config.json" in e.value for e in at.error)
    model, _ = load_model(ModelSpec(str(path)))
    adapter = make_adapter(model, tmp_path / "trait", seed=1)
    _ok(at.text_input(key="t_adapter_dir").set_value(str(adapter)).run())
    assert not at.error
    before = {j.id for j in jobs.list_jobs("trait")}
    at.number_input(key="tr_answers").set_value(2)
    _ok(at.button(key="tr_start").click().run())
    new = [j for j in jobs.list_jobs("trait") if j.id not in before]
    try:
        assert len(new) == 1
        cfg = new[0].params["config"]
        assert cfg["model"]["name"] == str(path) and cfg["behavior"]["name"] == "owl"
        assert cfg["answers_per_prompt"] == 2 and cfg["source"] == "prompt"
    finally:
        for j in new:
            jobs.cancel(j.id)
            jobs.wait(j.id, timeout=60)
