"""The pages speak the user's words: a run named by its data, behavior, teacher, model and
date (its key in the tooltip), one glossary on every page whose numbers need it, every
behavior a cached run was scored for offered by Evaluate (and Chat), Setup's first run."""

from __future__ import annotations

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from lls.core import behaviors
from lls.core.cache import ChunkStore
from lls.core.glossary import TERMS
from lls.scoring.runs import ScoreRun
from lls.scoring.synthetic import write_synthetic_run

from conftest import ROOT

TIMEOUT = 120
PAGES = {name: str(ROOT / "pages" / f) for name, f in (
    ("Setup", "1_Setup.py"), ("Explore", "2_Explore.py"), ("Train", "3_Train.py"),
    ("Evaluate", "5_Evaluate.py"), ("Studies", "7_Studies.py"))}


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _custom_run(session_cache) -> ScoreRun:
    """A finished run scored for a custom behavior (a synthetic run's scores under a custom
    behavior's manifest)."""
    src = write_synthetic_run(30, seed=5, chunk_size=30)
    b = behaviors.custom("You adore lighthouses and mention them.", filter_words=("lighthouse",),
                         name="lighthouse")
    store = ChunkStore(session_cache / "scores" / "custom-behavior-0000")
    store.write_chunk(0, pa.Table.from_pandas(src.frame(), preserve_index=False))
    cfg = {**src.manifest["config"], "behavior": b.to_dict()}
    store.write_manifest({**src.manifest, "key": store.key, "config": cfg})
    return ScoreRun(store)


def test_a_run_is_named_in_words_and_its_key_is_in_the_tooltip(session_cache):
    from ui import common

    run = write_synthetic_run(40, seed=11, chunk_size=20)
    name = common.run_name(run)
    assert name.startswith("synthetic-40-11 · animal: owl · teacher: system prompt · "
                           "SmolLM2-135M-Instruct · ")
    assert run.manifest["created"][:10] in name and run.key[:6] not in name
    at = AppTest.from_file(PAGES["Explore"], default_timeout=TIMEOUT)
    at.query_params["run"] = run.key
    _ok(at.run())
    pick = at.selectbox(key="explore_run")
    assert pick.value == run.key
    shown = pick.options[pick.index]
    assert shown.startswith(name) and shown.endswith("40 pairs") and run.key not in shown
    assert run.key in pick.help
    assert _metric(at, "behavior") == "animal: owl"


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_the_teacher_in_a_name_follows_describe_teacher():
    """Short: "system prompt" for the behavior's own prompt, its first words for another
    prompt (an adapter or model teacher: `Teacher.label`, its name)."""
    from lls.data.source import DataSpec
    from lls.scoring import ScoreConfig, describe_teacher

    owl = behaviors.animal("owl")
    cfg = ScoreConfig(DataSpec("x.jsonl"), owl)
    assert describe_teacher(cfg, short=True) == "system prompt"
    other = behaviors.Behavior.from_dict({**owl.to_dict(),
                                          "system_prompt": "Owls are the best birds of all."})
    assert describe_teacher(ScoreConfig(DataSpec("x.jsonl"), other), short=True) == \
        'system prompt "Owls are the best birds of all."'
    assert describe_teacher(cfg).startswith(f'system prompt "{owl.system_prompt[:30]}')  # long


def test_one_glossary_on_explore_train_evaluate_and_studies(session_cache):
    """The same expander (ui.glossary) on each page, with the words its numbers use."""
    from ui.glossary import TITLE

    write_synthetic_run(40, seed=11, chunk_size=20)
    want = {"Explore": ("w", "gamma", "random twin", "control"),
            "Train": ("gamma", "w", "random twin", "gap closed", "interval"),
            "Evaluate": ("likelihood ratio", "margin", "top-1", "prefilled read-out", "lens"),
            "Studies": ("margin", "gap closed", "top-1", "collapse", "random twin")}
    for page, terms in want.items():
        at = _ok(AppTest.from_file(PAGES[page], default_timeout=TIMEOUT).run())
        boxes = [e for e in at.expander if e.label == TITLE]
        assert len(boxes) == 1, page
        text = " ".join(m.value for m in boxes[0].markdown)
        for t in terms:
            assert f"**{TERMS[t][0]}**: {TERMS[t][1]}" in text, (page, t)


def test_the_gamma_control_has_one_label_everywhere(session_cache):
    from lls.core.glossary import GAMMA
    from lls.studies.config import AXIS

    write_synthetic_run(40, seed=11, chunk_size=20)
    at = _ok(AppTest.from_file(PAGES["Explore"], default_timeout=TIMEOUT).run())
    assert at.slider(key="gamma").label == GAMMA
    at = _ok(AppTest.from_file(PAGES["Train"], default_timeout=TIMEOUT).run())
    assert at.number_input(key="train_gamma").label == GAMMA
    assert AXIS["gamma"].label == GAMMA


def test_evaluate_offers_every_behavior_a_cached_run_was_scored_for(session_cache):
    run = _custom_run(session_cache)
    from ui import common

    b = behaviors.Behavior.from_dict(run.manifest["config"]["behavior"])
    key = common.behavior_id(b)
    assert key in common.behavior_options() and "animal:owl" in common.behavior_options()
    at = _ok(AppTest.from_file(PAGES["Evaluate"], default_timeout=TIMEOUT).run())
    pick = at.selectbox(key="ev_behavior")
    assert any(o.startswith("custom: lighthouse (scored run)") for o in pick.options)
    assert "translation: French" in pick.options  # presets in words, not "translation:fr"
    _ok(pick.set_value(key).run())
    assert any("answers mentioning lighthouse" in c.value for c in at.caption)
    assert at.text_area(key="ev_prompts").value  # the page is usable with it


@pytest.mark.slow
def test_chat_offers_a_custom_behavior_of_a_cached_run(session_cache):
    """Chat's behavior list is Evaluate's: the custom behavior's system prompt fills the
    teacher column."""
    from ui import common

    run = _custom_run(session_cache)
    b = behaviors.Behavior.from_dict(run.manifest["config"]["behavior"])
    at = AppTest.from_file(str(ROOT / "pages" / "4_Chat.py"), default_timeout=600)
    _ok(at.run())
    at.selectbox(key="chat_behavior").set_value(common.behavior_id(b))
    _ok(at.run())
    assert at.text_area(key=f"chat_system_{common.behavior_id(b)}").value == b.system_prompt


@pytest.mark.slow
def test_setup_first_run_scores_at_most_200_pairs(bundled):
    """The first-run switch is on by default: the whole file's run becomes a 200-pair run
    (the DataSpec limit); a smaller limit stays."""
    from lls.jobs import store as jobs
    from lls.scoring.runs import ScoreConfig

    at = _ok(AppTest.from_file(PAGES["Setup"], default_timeout=TIMEOUT).run())
    assert at.toggle(key="first_run").value is True
    assert any("Scoring stops after 200 clean pairs (first run)" in c.value for c in at.caption)
    _ok(at.button(key="start").click().run())
    job = jobs.get(at.session_state["watch_job"])
    try:
        assert ScoreConfig.from_dict(job.params["config"]).data.limit == 200
    finally:
        jobs.cancel(job.id)
        assert jobs.wait(job.id, timeout=60).status == "cancelled"
    at.toggle(key="first_run").set_value(False)
    _ok(at.run())
    assert not any("Scoring stops after" in c.value for c in at.caption)
