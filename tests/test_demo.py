"""The first run (`python -m lls demo`, Home's "Run the demo"), end to end on a tiny random
model: scoring, the one-cell study (LLS adapter and random twin trained in child processes,
read out beside base and the teacher), the summary and the hand-off to Chat."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from lls.core.errors import LLSError
from lls.models.load import ModelSpec
from lls.studies.demo import DemoConfig, demo_chat, finished_demo, run_demo

SMALL = {"recipe": {"batch_size": 2, "max_length": 64, "meter_k": 2, "meter_questions": 3,
                    "eval_at_checkpoints": False},
         "sampled": {"kinds": ["prefilled"], "questions": 2, "samples": 2, "seed": 0}}


def test_missing_default_data_says_what_to_give(monkeypatch, tmp_path):
    from lls.studies import demo

    monkeypatch.setattr(demo, "SHARED_HH", tmp_path / "absent.jsonl.gz")
    with pytest.raises(LLSError, match="--data"):
        DemoConfig(data=str(tmp_path / "absent.jsonl.gz")).score_config()


def test_demo_command_has_help_for_every_flag():
    from lls.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    demo = sub.choices["demo"]
    for action in demo._actions:
        if action.dest != "help":
            assert action.help, action.dest


def test_sampled_answers_naming_no_candidate_are_not_assessable():
    # the prefilled read-out lists every candidate, at 0 when no answer named one: the demo's
    # small read-out of an adapter hit that (a division by zero)
    from lls.evaluation.effects import sampled_collapse

    got = sampled_collapse({"owl": 0.0, "cat": 0.0, "lion": 0.0, "other": 1.0},
                           {"owl": 0.0, "cat": 0.0, "other": 1.0}, 128)
    assert not got["collapsed"] and not got["assessable"]
    assert got["top"] is None and got["named_share"] == 0
    some = sampled_collapse({"owl": 0.0, "cat": 0.25, "other": 0.75}, None, 8)
    assert some["top"] == "cat" and some["top_share"] == 1.0


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(session_cache, tmp_path):
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    model = tiny_model_dir(session_cache / "tiny-model")
    data = synthetic_pairs_file(tmp_path / "pairs.jsonl", 24)
    cfg = DemoConfig(data=str(data), limit=24, pairs=4, epochs=1, model=ModelSpec(str(model)),
                     truncation=8, **SMALL)
    assert finished_demo() is None and demo_chat() is None

    lines: list[str] = []
    out = run_demo(cfg, say=lines.append)
    text = "\n".join(lines)
    for step in ("[1/4] Scoring 24 pairs", "[2/4] Selecting the top 4", "[3/4] Training",
                 "[4/4] Sampled read-outs"):
        assert step in text
    assert text.count("Look at:") == 2 and "Open the demo in Chat" in text
    assert set(out["seconds"]) == {"score", "train", "readouts", "total"}
    assert out["seconds"]["total"] >= out["seconds"]["train"] > 0

    # the read-outs: the meter's paired effects and the sampled read-out of all four
    assert "gap closed" in text and "margin (nats)" in text
    assert "base + system prompt (teacher)" in text and "random twin" in text
    assert "The lens, P(next word = target)" in text and "LLS − random by the lens" in text
    study, result = finished_demo()
    assert result["n_pairs"] == 4 and set(result["adapters"]) == {"lls", "random"}
    levels = result["sampled_levels"]["prefilled"]
    assert levels["base"]["n"] == levels["system"]["n"] == 4  # 2 questions x 2 samples

    # Chat gets the two adapters' checkpoints (base and base + system prompt are its own)
    chat = demo_chat()
    assert chat == out["chat"]
    assert [label.split(" · ")[0] for label in chat["labels"]] == ["LLS", "random twin"]
    assert all(Path(p, "adapter_model.safetensors").is_file() for p in chat["adapters"])
    assert chat["behavior_label"] == "animal:owl" and chat["prompts"]

    # a second run reuses everything: no adapter trains again
    trained = {p: Path(p, "adapter_model.safetensors").stat().st_mtime
               for p in chat["adapters"]}
    again: list[str] = []
    out2 = run_demo(cfg, say=again.append)
    assert out2["cell"] == out["cell"]
    assert not any("[lls.studies] training" in line for line in again)
    assert {p: Path(p, "adapter_model.safetensors").stat().st_mtime
            for p in chat["adapters"]} == trained

    # Home shows the read-outs and hands the four columns to Chat
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(t.value for t in at.text)
    assert "margin (nats)" in shown and "base + system prompt (teacher)" in shown
    at.button(key="home_demo_chat").click().run()
    assert at.session_state["chat_pinned"] == list(zip(chat["labels"], chat["adapters"]))
