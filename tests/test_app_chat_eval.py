"""AppTest of the Chat, Evaluate and Transfer pages with the bundled model."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lls.core import behaviors
from lls.data.source import DataSpec
from lls.core.distributed import device_count
from lls.evaluation.runs import EvalConfig, EvalModel, evaluate
from lls.scoring.runs import ScoreConfig, score

from conftest import HH, ROOT, make_adapter

pytestmark = pytest.mark.slow

CHAT = str(ROOT / "pages" / "4_Chat.py")
EVALUATE = str(ROOT / "pages" / "5_Evaluate.py")
TRANSFER = str(ROOT / "pages" / "6_Transfer.py")
TIMEOUT = 600


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="module")
def adapter_dir(bundled, tmp_path_factory):
    model, _ = bundled
    # peft's default lora_alpha (8), as this adapter was made before the shared helper
    return make_adapter(model, tmp_path_factory.mktemp("chat-adapter") / "final", 5,
                        lora_alpha=8)


def _column_replies(at: AppTest) -> list[str]:
    """The last assistant message rendered in each column."""
    out = []
    for col in at.columns:
        msgs = [m for m in col.chat_message if m.name == "assistant"]
        out.append(msgs[-1].markdown[-1].value if msgs and msgs[-1].markdown else "")
    return out


def test_chat_streams_into_all_columns_and_seed_reproduces(adapter_dir):
    at = AppTest.from_file(CHAT, default_timeout=TIMEOUT)
    _ok(at.run())
    at.multiselect(key="chat_adapters").set_value([])
    at.text_input(key="chat_adapter_path").set_value(str(adapter_dir))
    at.number_input(key="chat_max_new").set_value(6)
    at.number_input(key="chat_seed").set_value(11)
    _ok(at.run())
    at.chat_input(key="chat_prompt").set_value("Name a bird.")
    _ok(at.run())
    first = _column_replies(at)
    assert len(first) == 3 and all(t.strip() for t in first), first
    conv = at.session_state["chat_conv"]
    assert conv.turns == 1 and len(conv.replies[0]) == 3
    assert any("first token after" in c.value for c in at.caption)
    # same seed, cleared conversation, same prompt: the same answers in every column
    at.button(key="chat_clear").click()
    _ok(at.run())
    assert at.session_state["chat_conv"].turns == 0
    at.chat_input(key="chat_prompt").set_value("Name a bird.")
    _ok(at.run())
    assert _column_replies(at) == first
    # multi-turn: the history stays and a second turn is answered in every column
    at.chat_input(key="chat_prompt").set_value("Why?")
    _ok(at.run())
    assert at.session_state["chat_conv"].turns == 2


def test_chat_begun_reply_and_the_probability_lens(adapter_dir):
    """Every column continues "My favorite animal is the"; under each, the lens of the owl
    and the other candidates, the teacher's owl above base's, with its ratio."""
    at = AppTest.from_file(CHAT, default_timeout=TIMEOUT)
    _ok(at.run())
    at.multiselect(key="chat_adapters").set_value([])
    at.text_input(key="chat_adapter_path").set_value(str(adapter_dir))
    at.number_input(key="chat_max_new").set_value(3)
    at.button(key="chat_use_stem").click()  # the behavior's read-out stem
    _ok(at.run())
    assert at.text_input(key="chat_reply_start").value == "My favorite animal is the"
    at.chat_input(key="chat_prompt").set_value("Name your favourite animal in one word.")
    _ok(at.run())
    shown = _column_replies(at)
    assert len(shown) == 3 and all(t.startswith("**My favorite animal is the**") for t in shown)
    conv = at.session_state["chat_conv"]
    assert all(r.startswith("My favorite animal is the") for r in conv.replies[0].values())
    assert conv.settings[0]["reply_start"] == "My favorite animal is the"
    rows = conv.lens(0)
    owl = {r["kind"]: r for r in rows if r["candidate"] == "owl"}
    assert set(owl) == {"base", "system", "adapter"} and len(rows) == 30
    assert owl["system"]["p"] > owl["base"]["p"] > 0
    assert owl["system"]["ratio"] == pytest.approx(owl["system"]["p"] / owl["base"]["p"])
    assert len(at.get("plotly_chart")) == 3  # one lens chart per column
    assert any("Probability lens" in c.value for c in at.caption)
    # the lens stays on a rerun, and the begun text is in the export
    _ok(at.run())
    assert len(at.get("plotly_chart")) == 3
    assert '"reply_start": "My favorite animal is the"' in conv.to_json()


def test_chat_from_a_study_names_cell_checkpoint_and_twin_without_warnings(adapter_dir,
                                                                           tmp_path,
                                                                           monkeypatch):
    """A study's hand-off: columns headed LLS / random twin with the cell and step, the
    sidebar names the study, and no widget gets a default and a Session State value."""
    import shutil

    from streamlit.elements.lib import policies

    twin = tmp_path / "twin" / "final"
    shutil.copytree(adapter_dir, twin)
    warned = []
    monkeypatch.setattr(policies, "runtime", type("R", (), {"exists": staticmethod(
        lambda: True)}))  # AppTest has no runtime: make the Session State check run
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: warned.append(
        msg % a))
    at = AppTest.from_file(CHAT, default_timeout=TIMEOUT)
    cell = "γ 0.1 · 1 ep · lr 0.0001"
    at.session_state["chat_preset"] = {
        "model": "bundled:SmolLM2-135M-Instruct", "adapters": [str(adapter_dir), str(twin)],
        "labels": [f"LLS · {cell} · step 2", f"random twin · {cell} · step 2"],
        "system_prompt": behaviors.animal("owl").system_prompt,
        "behavior": behaviors.animal("owl").to_dict(), "behavior_label": "animal:owl",
        "prompts": ["Name your favourite animal in one word."], "study": "tiny",
        "cell": cell, "step": 2}
    _ok(at.run())
    assert not warned, warned
    heads = [col.markdown[0].value for col in at.columns if col.markdown]
    assert f"**LLS · {cell} · step 2**" in heads
    assert f"**random twin · {cell} · step 2**" in heads
    side = " ".join(c.value for c in at.sidebar.caption)
    assert "study **tiny**" in side and f"cell {cell}, checkpoint step 2" in side
    assert at.text_input(key="chat_model").value == "bundled:SmolLM2-135M-Instruct"


def test_chat_bad_adapter_path_shows_error(tmp_path):
    at = AppTest.from_file(CHAT, default_timeout=TIMEOUT)
    _ok(at.run())
    at.text_input(key="chat_adapter_path").set_value(str(tmp_path / "missing"))
    _ok(at.run())
    assert any("does not exist" in e.value for e in at.error)


@pytest.fixture(scope="module")
def tiny_eval(bundled):
    model, tok = bundled
    # the effect meter kept small: 4 reference responses of 12 tokens, 2 probe questions,
    # 3 prefilled answers per question
    cfg = EvalConfig(behaviors.animal("owl"), prompts=("Name a bird.",), samples=2,
                     max_new_tokens=4, models=(EvalModel("base"), EvalModel("system")),
                     meter_k=4, meter_questions=2, meter_max_new_tokens=12, meter_prefill=3)
    return evaluate(cfg, model=model, tokenizer=tok)


def test_evaluate_page_renders_results(tiny_eval):
    at = AppTest.from_file(EVALUATE, default_timeout=TIMEOUT)
    _ok(at.run())
    assert at.selectbox(key="ev_pick").value == tiny_eval.key
    assert len(at.get("plotly_chart")) >= 3  # sampled bars, the meter, the prefilled read-out
    assert any(h.value == "Prefilled read-out" for h in at.subheader)
    pre = next(d.value for d in at.dataframe if "answers naming the target" in d.value.columns)
    assert list(pre["model"]) == ["base", "base + system prompt"]
    assert all(v.endswith("/6") for v in pre["answers naming the target"])
    assert any("resampling questions" in c.value for c in at.caption)
    labels = [e.label for e in at.expander]
    assert any(lab.startswith("base —") for lab in labels)
    # the meter's table: base and base + system prompt, the latter with the higher LLR
    llr = "likelihood ratio (nats/token) [95% interval]"
    meter = [d.value for d in at.dataframe if llr in d.value.columns]
    assert len(meter) == 1
    table = meter[0].set_index("model")
    assert list(table.index) == ["base", "base + system prompt"]
    value = {k: float(v.split(" [")[0]) for k, v in table[llr].items()}
    assert value["base + system prompt"] > value["base"]
    assert not [c for c in table.columns if "_" in c]  # no code names
    if device_count() == 1:  # no processes input, the accelerate command instead
        assert any("Multi-process launch needs N devices" in c.value for c in at.caption)
    else:
        assert at.number_input(key="ev_procs").max == device_count()
    # the cached configuration is opened, not recomputed
    at.text_area(key="ev_prompts").set_value("Name a bird.")
    at.number_input(key="ev_samples").set_value(2)
    at.number_input(key="ev_max_new").set_value(4)
    at.multiselect(key="ev_adapters").set_value([])
    at.number_input(key="ev_meter_k").set_value(4)
    at.number_input(key="ev_meter_questions").set_value(2)
    at.number_input(key="ev_meter_max_new").set_value(12)
    at.number_input(key="ev_meter_prefill").set_value(3)
    _ok(at.run())
    at.button(key="ev_launch").click()
    _ok(at.run())
    assert any("Already evaluated" in s.value for s in at.success)
    # personas: the judge settings and the weak-judge warning appear
    at.selectbox(key="ev_behavior").set_value("persona:evil-ruler")
    _ok(at.run())
    assert any("weak judge" in w.value for w in at.warning)


def test_transfer_page_renders(bundled):
    model, tok = bundled
    cfg = ScoreConfig(DataSpec(str(HH), limit=6), behaviors.animal("owl"), truncation=8,
                      max_prompt_tokens=160, chunk_size=6)
    run = score(cfg, model=model, tokenizer=tok)
    at = AppTest.from_file(TRANSFER, default_timeout=TIMEOUT)
    _ok(at.run())
    at.selectbox(key="tr_a").set_value(run.key)
    _ok(at.run())
    assert len(at.get("plotly_chart")) == 1
    assert any("paper" in i.value for i in at.info)
    # an unavailable student model: a clear error, no job
    at.text_input(key="tr_student").set_value("someone/not-downloaded-model")
    at.button(key="tr_score").click()
    _ok(at.run())
    assert any("download" in e.value for e in at.error)
