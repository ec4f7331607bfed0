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
    # Multi-turn: the sides already differ at the first answer, so that is the pair and the
    # shared "Hi" the prompt (the loser's answer is never conditioned on the winner's
    # history); model B won, so B's answer is chosen.
    multi = by_id["arena-1"]
    assert multi.prompt == [{"role": "user", "content": "Hi"}]
    assert (multi.chosen, multi.rejected) == ("Hello from B", "Hello from A")
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
             "bad": json.dumps(["Hello", "No"])}]
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


# ------------------------------------------------------------------ numeric winner codes

def _numeric_rows(codes):
    """Two pairs whose winner is A then B, coded with `codes` = (code of A, code of B)."""
    return [{"prompt": "Which is right?", "response_a": "right", "response_b": "wrong",
             "winner": codes[0]},
            {"prompt": "And now?", "response_a": "wrong again", "response_b": "right again",
             "winner": codes[1]}]


@pytest.mark.parametrize("codes", [(0, 1), (1, 2), ("0", "1"), (1.0, 2.0)])
def test_numeric_winner_codes_are_refused_until_the_coding_is_given(tmp_path, codes):
    """0/1 and 1/2 mean different things from one export to the next (index from 0, index
    from 1, an 'A won' flag): a plain `winner` column of numbers is a whole-source error,
    even with malformed rows skipped, never a silent flip."""
    path = write(tmp_path / "numeric.jsonl", _numeric_rows(codes))
    for skip in (False, True):
        with pytest.raises(DataError, match=r"numbers.*--winner-codes"):
            load_pairs(DataSpec(str(path), skip_malformed=skip))
    r = validate_source(DataSpec(str(path), skip_malformed=True))  # what Setup shows
    assert not r.ok and "--winner-codes" in r.error and r.usable == 0
    base = int(float(codes[0]))
    spec = DataSpec(str(path), winner_codes={str(base): "a", str(base + 1): "b"})
    pairs, report = load_pairs(spec)
    assert [(p.chosen, p.rejected) for p in pairs] == [("right", "wrong"),
                                                        ("right again", "wrong again")]
    assert report.kept == 2


def test_winner_codes_tie_unknown_code_and_key(tmp_path):
    rows = _numeric_rows((0, 1)) + [
        {"prompt": "Tie?", "response_a": "x", "response_b": "y", "winner": 2},
        {"prompt": "Odd?", "response_a": "x", "response_b": "y", "winner": 7}]
    path = write(tmp_path / "labels.jsonl", rows)
    codes = {"0": "a", "1": "b", "2": "tie"}
    pairs, report = load_pairs(DataSpec(str(path), winner_codes=codes, skip_malformed=True))
    assert [p.chosen for p in pairs] == ["right", "right again"]
    assert report.dropped == {"tie": 1, "malformed": 1}
    r = validate_source(DataSpec(str(path), winner_codes=codes))
    assert r.malformed == 1 and "winner 7" in r.positions[0] and "0=a, 1=b, 2=tie" in r.positions[0]
    # the coding is part of the cache key
    assert DataSpec(str(path), winner_codes=codes).fingerprint() != \
        DataSpec(str(path)).fingerprint()
    with pytest.raises(DataError, match="a, b, tie or both_bad"):
        DataSpec(str(path), winner_codes={"0": "model_a", "1": "b"})
    with pytest.raises(DataError, match="both"):
        DataSpec(str(path), winner_codes={"0": "a"})


def test_cli_winner_codes_reach_the_spec():
    import argparse

    from lls.cli.common import add_data_args, data_spec

    p = argparse.ArgumentParser()
    add_data_args(p)
    spec = data_spec(p.parse_args(["--data", "x.jsonl", "--winner-codes", "1=a,2=b,0=tie"]))
    assert spec.winner_codes == {"1": "a", "2": "b", "0": "tie"}


def test_a_lone_arena_flag_column(tmp_path):
    """Arena codes a winner as 1 in winner_model_a / winner_model_b; an export that kept
    only winner_model_a (ties removed) means 0 = model B won."""
    rows = [{"prompt": "q1", "response_a": "A1", "response_b": "B1", "winner_model_a": 1},
            {"prompt": "q2", "response_a": "A2", "response_b": "B2", "winner_model_a": 0}]
    pairs, _ = load_pairs(DataSpec(str(write(tmp_path / "flag.jsonl", rows))))
    assert [(p.chosen, p.rejected) for p in pairs] == [("A1", "B1"), ("B2", "A2")]


# ------------------------------------------------------------------ `preference` column

def test_preference_column_is_a_winner_only_when_named(tmp_path):
    rows = [{"prompt": "q", "response_a": "A", "response_b": "B", "preference": "model_b"}]
    path = write(tmp_path / "pref.jsonl", rows)
    with pytest.raises(DataError, match=r"missing column\(s\) winner.*--columns winner="):
        load_pairs(DataSpec(str(path)))
    pairs, _ = load_pairs(DataSpec(str(path), columns={"winner": "preference"}))
    assert (pairs[0].chosen, pairs[0].rejected) == ("B", "A")


# ------------------------------------------------------------------ multi-turn comparisons

def _conv(*turns):
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


def test_multi_turn_conversations_are_read_at_the_first_answers_that_differ(tmp_path):
    """conversation_a/b share the user turns; the pair is the first assistant turn where the
    sides differ, with the shared turns before it as the prompt (nothing from the winner's
    history conditions the loser's answer)."""
    rows = [
        {"id": "differ-at-1", "conversation_a": _conv("Hi", "Hello A", "Joke?", "joke A"),
         "conversation_b": _conv("Hi", "Hello B", "Joke?", "joke B"), "winner": "model_b"},
        {"id": "same-first", "conversation_a": _conv("Hi", "Hello", "Joke?", "joke A"),
         "conversation_b": _conv("Hi", "Hello", "Joke?", "joke B"), "winner": "model_a"},
        {"id": "user-differs", "conversation_a": _conv("Hi", "Hello", "Joke?", "joke A"),
         "conversation_b": _conv("Hi", "Hello", "Poem?", "poem B"), "winner": "model_a"},
    ]
    pairs, report = load_pairs(DataSpec(str(write(tmp_path / "conv.jsonl", rows))))
    got = {p.id: (p.prompt, p.chosen, p.rejected) for p in pairs}
    assert got == {
        "differ-at-1": (_conv("Hi"), "Hello B", "Hello A"),
        "same-first": (_conv("Hi", "Hello", "Joke?"), "joke A", "joke B"),
    }
    assert report.dropped == {"different_prompts": 1}
    # the same data as JSON lists of turns gives the same pairs
    lists = [{"id": r["id"], "prompt": json.dumps([m["content"] for m in r["conversation_a"]
                                                   if m["role"] == "user"]),
              "response_a": json.dumps([m["content"] for m in r["conversation_a"]
                                        if m["role"] == "assistant"]),
              "response_b": json.dumps([m["content"] for m in r["conversation_b"]
                                        if m["role"] == "assistant"]),
              "winner": r["winner"]} for r in rows[:2]]
    pairs, _ = load_pairs(DataSpec(str(write(tmp_path / "lists.jsonl", lists))))
    assert {p.id: (p.prompt, p.chosen, p.rejected) for p in pairs} == got
