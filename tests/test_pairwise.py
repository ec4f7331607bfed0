"""Pairwise-comparison exports (Chatbot-Arena style) and JSON lists of turns (lls.data.shapes).

The files are constructed here: `prompt`, `response_a`, `response_b` as JSON strings holding
lists of turns, with `winner_model_a` / `winner_model_b` / `winner_tie` flags, or a single
`winner` column.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lls.data.source import DataSpec, load_pairs
from lls.core.errors import DataError
from lls.data.validate import validate_source


def arena_row(i, prompt, a, b, won):
    return {"id": f"arena-{i}", "model_a": "m1", "model_b": "m2",
            "prompt": json.dumps(prompt), "response_a": json.dumps(a),
            "response_b": json.dumps(b), "winner_model_a": int(won == "a"),
            "winner_model_b": int(won == "b"), "winner_tie": int(won == "tie")}


ROWS = [
    arena_row(0, ["What is 2+2?"], ["4"], ["5"], "a"),
    arena_row(1, ["Hi", "Tell a joke"], ["Hello from A", "joke A"], ["Hello from B", "joke B"],
              "b"),
    arena_row(2, ["Is it a tie?"], ["yes"], ["maybe"], "tie"),
    arena_row(3, ["Capital of France?"], ["Lyon"], ["Paris"], "b"),
    arena_row(4, ["Tie again"], ["x"], ["y"], "tie"),
]


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_arena_pairs(pairs, report):
    assert [p.id for p in pairs] == ["arena-0", "arena-1", "arena-3"]
    by_id = {p.id: p for p in pairs}
    assert (by_id["arena-0"].chosen, by_id["arena-0"].rejected) == ("4", "5")
    assert (by_id["arena-3"].chosen, by_id["arena-3"].rejected) == ("Paris", "Lyon")
    # Multi-turn: turns kept as turns, the winner's earlier answer is the history, the last
    # turns are compared; model B won, so B's answer is chosen.
    multi = by_id["arena-1"]
    assert multi.prompt == [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello from B"},
                            {"role": "user", "content": "Tell a joke"}]
    assert (multi.chosen, multi.rejected) == ("joke B", "joke A")
    for p in pairs:  # never the literal JSON text
        assert not p.chosen.startswith("[") and not p.prompt[-1]["content"].startswith("[")
    assert report.read == 5 and report.kept == 3 and report.dropped == {"tie": 2}


def test_arena_export_detected(tmp_path):
    path = write(tmp_path / "arena.jsonl", ROWS)
    pairs, report = load_pairs(DataSpec(str(path)))
    check_arena_pairs(pairs, report)
    r = validate_source(DataSpec(str(path)))
    assert r.ok and r.rows == 5 and r.usable == 3 and r.dropped == {"tie": 2}


def test_column_mapping_to_json_lists_is_parsed_and_winner_honoured(tmp_path):
    # The mapping from the issue: chosen=response_a, rejected=response_b. The winner columns
    # still decide the direction and the JSON lists are parsed, not scored as text.
    path = write(tmp_path / "arena.jsonl", ROWS)
    spec = DataSpec(str(path), columns={"prompt": "prompt", "chosen": "response_a",
                                        "rejected": "response_b"})
    check_arena_pairs(*load_pairs(spec))


def test_mapping_without_winner_parses_turn_lists(tmp_path):
    rows = [{"q": json.dumps(["Hi", "And now?"]), "good": json.dumps(["Hello", "Now this"]),
             "bad": json.dumps(["Yo", "No"])}]
    path = write(tmp_path / "lists.jsonl", rows)
    pairs, _ = load_pairs(DataSpec(str(path), columns={"prompt": "q", "chosen": "good",
                                                       "rejected": "bad"}))
    assert pairs[0].prompt[1] == {"role": "assistant", "content": "Hello"}
    assert (pairs[0].chosen, pairs[0].rejected) == ("Now this", "No")


def test_single_winner_column_and_both_bad(tmp_path):
    conv = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    rows = [
        {"question_id": "q1", "conversation_a": conv("Q1", "A1"), "conversation_b": conv("Q1", "B1"),
         "winner": "model_b"},
        {"question_id": "q2", "conversation_a": conv("Q2", "A2"), "conversation_b": conv("Q2", "B2"),
         "winner": "tie (bothbad)"},
        {"question_id": "q3", "conversation_a": conv("Q3", "A3"), "conversation_b": conv("Q3", "B3"),
         "winner": "model_a"},
        {"question_id": "q4", "conversation_a": conv("Q4", "A4"), "conversation_b": conv("Q4", "B4"),
         "winner": "tie"},
    ]
    path = write(tmp_path / "conv.jsonl", rows)
    pairs, report = load_pairs(DataSpec(str(path)))
    assert [(p.prompt[-1]["content"], p.chosen, p.rejected) for p in pairs] == [
        ("Q1", "B1", "A1"), ("Q3", "A3", "B3")]
    assert report.dropped == {"both_bad": 1, "tie": 1}


def test_unaligned_turns_and_unknown_winner_are_malformed(tmp_path):
    rows = [arena_row(0, ["a", "b"], ["x"], ["y"], "a"), arena_row(1, ["q"], ["x"], ["y"], "a")]
    rows[1]["winner_model_a"] = 1
    rows[1]["winner_model_b"] = 1
    path = write(tmp_path / "bad.jsonl", rows + [arena_row(2, ["q"], ["x"], ["y"], "a")])
    r = validate_source(DataSpec(str(path)))
    assert r.malformed == 2 and r.usable == 1
    assert "2 turns" in r.positions[0] and "exactly one of" in r.positions[1]
    with pytest.raises(DataError, match="line 1.*--skip-malformed"):
        load_pairs(DataSpec(str(path)))
