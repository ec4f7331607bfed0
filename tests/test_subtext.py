"""Per-token deltas (stored while scoring, backfilled for older runs), the subtext tables
(units, n-gram merging, lifts), style features and the command line.

Fast tier: a tiny random Llama with the bundled tokenizer (`lls.scoring.synthetic`); the
tests on the bundled model are marked slow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lls import subtext
from lls.core.behaviors import animal
from lls.core.errors import LLSError
from lls.data.source import DataSpec
from lls.models.load import ModelSpec, load_model
from lls.scoring import backfill as B
from lls.scoring.deltas import chunks_missing, has_deltas, read_deltas, storage_bytes
from lls.scoring.runs import ScoreConfig, score
from lls.scoring.selection import SelectionConfig
from lls.subtext.contributions import Sets, unit_pairs, unit_table
from lls.subtext.style import pair_differences, style_effects, text_features
from lls.subtext.units import Tokens, occurrences

from conftest import HH


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, session_cache):
    """(model dir, pairs file, loaded model, tokenizer)."""
    from lls.scoring.synthetic import synthetic_pairs_file, tiny_model_dir

    d = tmp_path_factory.mktemp("subtext")
    model_dir = tiny_model_dir(session_cache / "tiny-model")
    data = synthetic_pairs_file(d / "pairs.jsonl", 40, seed=3)
    model, tok = load_model(ModelSpec(str(model_dir)))
    return model_dir, data, model, tok


def _cfg(tiny, behavior=None, **kw):
    model_dir, data, _, _ = tiny
    return ScoreConfig(DataSpec(str(data)), behavior or animal("owl"),
                       model=ModelSpec(str(model_dir)), truncation=8, chunk_size=16, **kw)


def _score(tiny, cache, behavior=None, **kw):
    _, _, model, tok = tiny
    return score(_cfg(tiny, behavior), cache_dir=cache, model=model, tokenizer=tok, **kw)


def _identity_gap(run) -> float:
    """Largest |(Σ chosen δ − Σ rejected δ) / (n_c + n_r) − w| over the run's pairs."""
    f, d = run.frame(), read_deltas(run)
    signed = np.where(d.side == 0, d.delta, -d.delta).astype(np.float64)
    sums = np.bincount(d.row, weights=signed, minlength=len(f))
    return float(np.abs(sums / (f["n_c"] + f["n_r"]).to_numpy() - f["w"].to_numpy()).max())


def test_scoring_stores_deltas_that_sum_to_w(tiny, tmp_path):
    run = _score(tiny, tmp_path)
    assert has_deltas(run)
    d = read_deltas(run)
    f = run.frame()
    assert d.covered.all() and len(d) == int((f["n_c"] + f["n_r"]).sum())
    assert _identity_gap(run) < 1e-4
    assert np.abs(f["w"]).max() > 1e-3  # the identity is not 0 = 0
    # chunk k of deltas holds exactly chunk k's pairs, tokens in order
    first = d.row == 0
    assert d.pos[first & (d.side == 0)].tolist() == list(range(int(f["n_c"][0])))
    run_bytes, delta_bytes = storage_bytes(run)
    assert 0 < delta_bytes < run_bytes
    assert run.manifest["cost"]["pairs"] == len(f)


def test_a_second_behavior_reuses_per_token_neutral_values(tiny, tmp_path):
    _score(tiny, tmp_path)
    cat = _score(tiny, tmp_path, animal("cat"))
    assert cat.manifest["cost"]["neutral_reused"] == cat.manifest["n_pairs"]
    assert has_deltas(cat) and _identity_gap(cat) < 1e-4


def test_a_neutral_cache_without_per_token_values_is_recomputed_for_deltas(tiny, tmp_path):
    _score(tiny, tmp_path, deltas=False)  # neutral values stored as sums only
    cat = _score(tiny, tmp_path, animal("cat"))
    assert cat.manifest["cost"]["neutral_reused"] == 0  # recomputed to get per-token values
    assert has_deltas(cat) and _identity_gap(cat) < 1e-4
    dog = _score(tiny, tmp_path, animal("dog"))  # now the copy with tokens is found
    assert dog.manifest["cost"]["neutral_reused"] == dog.manifest["n_pairs"]


def test_backfill_gives_the_deltas_scoring_stores_and_resumes(tiny, tmp_path):
    fresh = _score(tiny, tmp_path / "a")
    old = _score(tiny, tmp_path / "b", deltas=False)
    assert not has_deltas(old) and len(chunks_missing(old)) == 3
    with pytest.raises(LLSError, match="no per-token deltas.*python -m lls deltas"):
        subtext.load(old, tokenizer=tiny[3])
    seen = []

    def stop_after_first_chunk(done, total):
        seen.append((done, total))
        if len(seen) == 2:
            raise KeyboardInterrupt  # killed after one chunk

    with pytest.raises(KeyboardInterrupt):
        B.backfill(old, progress=stop_after_first_chunk, model=tiny[2], tokenizer=tiny[3],
                   cache_dir=tmp_path / "b")
    assert seen == [(0, 40), (16, 40)]
    assert chunks_missing(old) == [1, 2]
    out = B.backfill(old, model=tiny[2], tokenizer=tiny[3], cache_dir=tmp_path / "b")
    assert out["chunks"] == 2 and out["pairs"] == 24 and out["no_deltas"] == 0
    assert out["max_w_diff"] < 1e-5
    assert has_deltas(old) and _identity_gap(old) < 1e-4
    a, b = read_deltas(fresh), read_deltas(old)
    assert np.array_equal(a.token, b.token) and np.array_equal(a.row, b.row)
    assert np.abs(a.delta - b.delta).max() < 1e-3
    assert B.backfill(old, model=tiny[2], tokenizer=tiny[3])["chunks"] == 0  # nothing left


def test_stored_deltas_are_the_per_pair_attribution(tiny, tmp_path):
    from lls.scoring.explain import stored_attribution, token_attribution

    run = _score(tiny, tmp_path)
    data = subtext.load(run, tokenizer=tiny[3])
    row = run.frame().iloc[5]
    ref = token_attribution(tiny[2], tiny[3], row, animal("owl").system_prompt, 8)
    c, r = subtext.report.pair_tokens(data, 5)
    att = stored_attribution(tiny[3], c, r)
    assert [t[0] for t in att["chosen"]] == [t[0] for t in ref["chosen"]]
    assert np.allclose([t[3] for t in att["rejected"]], [t[3] for t in ref["rejected"]],
                       atol=1e-3)
    assert att["w"] == pytest.approx(row["w"], abs=1e-4)


# ------------------------------------------------------------------ units (constructed)

TEXTS = {1: " I", 2: "'m", 3: " sorry", 4: ",", 5: " I", 6: " can", 7: "'t", 8: "⟨<|im_end|>⟩",
         9: "\n", 10: "Sure", 11: "!", 12: " owls"}


def _tokens(rows):
    """Tokens from [(row, side, [(token id, delta), ...]), ...]."""
    r, s, p, t, d = [], [], [], [], []
    for row, side, toks in rows:
        for i, (tid, delta) in enumerate(toks):
            r.append(row), s.append(side), p.append(i), t.append(tid), d.append(delta)
    return Tokens(np.array(r), np.array(s, dtype=np.int8), np.array(p, dtype=np.int32),
                  np.array(t), np.array(d, dtype=np.float64))


CASE = _tokens([
    (0, 0, [(1, 0.1), (2, 0.2), (3, 0.5), (4, 0.0), (5, 0.1), (6, 0.1), (7, 0.3), (8, 0.4),
            (9, 0.0)]),
    (0, 1, [(10, -0.6), (11, -0.2), (8, -0.1), (9, 0.0)]),
    (1, 0, [(3, 0.2), (12, 0.9), (8, 0.1), (9, 0.0)]),
    (1, 1, [(1, 0.0), (2, 0.0), (8, -0.3), (9, 0.0)]),
])


def test_tokens_merge_into_words_and_phrases():
    words = occurrences(CASE, TEXTS, "word")
    labels = [words.labels[c] for c in words.code]
    assert labels[:9] == ["i'm", "sorry", ",", "i", "can't", "⟨<|im_end|>⟩", "↵", "sure", "!"]
    assert words.delta[:2].tolist() == pytest.approx([0.3, 0.5])  # summed over its tokens
    assert words.length[:5].tolist() == [2, 1, 1, 1, 2]
    assert words.start[4] == 5  # "can't" begins at token 5
    bigrams = occurrences(CASE, TEXTS, "2-gram")
    lab2 = [bigrams.labels[c] for c in bigrams.code]
    assert lab2[:2] == ["i'm sorry", "sorry ,"]
    # no phrase spans two responses (chosen -> rejected, or one pair -> the next)
    assert "↵ sure" not in lab2 and "↵ sorry" not in lab2
    assert lab2.count("i'm ⟨<|im_end|>⟩") == 1  # row 1's rejected answer
    trigrams = occurrences(CASE, TEXTS, "3-gram")
    assert len(trigrams) == sum(max(n - 2, 0) for n in (7, 4, 4, 3))
    tok = occurrences(CASE, TEXTS, "token")
    assert tok.labels[tok.code[0]] == "␣I" and len(tok) == 21
    # a word right after punctuation (no space) is a word of its own
    paren = occurrences(_tokens([(0, 0, [(13, 0.1), (14, 0.2), (4, 0.0)])]),
                        {**TEXTS, 13: "(", 14: "yes"}, "word")
    assert list(paren.labels[paren.code]) == ["(", "yes", ","]
    # an apostrophe token between letters joins them ("I’m" as " I", "’", "m")
    curly = occurrences(_tokens([(0, 0, [(1, 0.1), (15, 0.2), (16, 0.3), (3, 0.0)])]),
                        {**TEXTS, 15: "’", 16: "m"}, "word")
    assert list(curly.labels[curly.code]) == ["i'm", "sorry"]
    assert curly.delta.tolist() == pytest.approx([0.6, 0.0])


def test_unit_table_contributions_shares_and_lifts():
    n_tokens = np.array([13.0, 8.0, 10.0])
    w = np.array([(1.7 - (-0.9)) / 13, (1.2 - (-0.3)) / 8, 0.0])
    words = occurrences(CASE, TEXTS, "word")
    s = Sets(selection=np.array([0, 1]), twin=np.array([1, 2]), run=np.array([0, 1, 2]))
    t = unit_table(words, n_tokens, w, s, top=3, n_boot=200)
    chosen = t[t.direction == "raised in chosen"]
    assert chosen.unit.tolist() == ["owls", "sorry", "⟨<|im_end|>⟩"]
    owls = chosen.iloc[0]
    assert owls.contribution == pytest.approx(0.9 / 8)
    assert owls.share_of_w == pytest.approx(0.9 / 8 / w[:2].sum())
    assert owls.per_pair == pytest.approx(0.9 / 8 / 2)
    assert owls.twin_per_pair == pytest.approx(0.9 / 8 / 2)  # the twin holds row 1 too
    assert owls.lift_twin == pytest.approx(0.0)
    assert owls.run_per_pair == pytest.approx(0.9 / 8 / 3)
    end = chosen.iloc[2]
    assert end.occurrences == 2 and end.pairs == 2
    assert end.contribution == pytest.approx(0.4 / 13 + 0.1 / 8)
    rejected = t[t.direction == "lowered in rejected"]
    assert rejected.unit.iloc[0] == "sure"  # −(−0.6)/13: lowered where it was rejected
    # a twin turned round swaps sides: row 1's "owls" then counts against w
    flipped = unit_table(words, n_tokens, w, Sets(np.array([0, 1]), np.array([1, 2]),
                                                  np.array([0, 1, 2]),
                                                  np.array([True, False])), top=3, n_boot=200)
    assert flipped[flipped.unit == "owls"].twin_per_pair.iloc[0] == pytest.approx(0.0)
    pairs = unit_pairs(words, n_tokens, np.array([0, 1]), "sorry", "raised in chosen")
    assert pairs.row.tolist() == [0, 1] and pairs.spans.tolist() == [[(2, 1)], [(0, 1)]]


# ------------------------------------------------------------------ style (constructed)

def test_text_features_on_constructed_answers():
    polite = text_features("I'm sorry, but I can't help with that. Could you tell me more?")
    assert polite["apology"] == 1 and polite["refusal"] == 1 and polite["question"] == 1
    assert polite["first_person"] == 3 and polite["second_person"] == 1
    assert polite["length_words"] == 13
    listy = text_features("Sure! Here you go:\n- eggs\n- milk\n```\nprint(1)\n```")
    assert listy["list"] == 1 and listy["code"] == 1 and listy["exclamation"] == 1
    assert listy["apology"] == 0 and listy["refusal"] == 0
    assert text_features("Je suis désolé, je ne peux pas vous aider avec cela aujourd'hui."
                         )["non_english"] > 0.9
    assert text_features("The weather is nice today and the sky is blue.")["non_english"] == 0
    assert pair_differences(["Sorry!"], ["ok"]).loc[0, "exclamation"] == 1


def test_style_effects_say_short_and_polite_not_topic():
    polite = ("I'm sorry, I can't help with that.", "what?")
    plain = ("The capital of France is Paris.", "Paris is the capital of France, I think.")
    rows = [polite] * 30 + [plain] * 30
    frame = pd.DataFrame({"chosen_scored": [c for c, _ in rows],
                          "rejected_scored": [r for _, r in rows]})
    eff = style_effects(frame, np.arange(30), np.arange(30, 60)).set_index("feature")
    for feature in ("apology marker", "refusal marker"):
        assert eff.loc[feature, "effect"] == pytest.approx(1.0)
        assert eff.loc[feature, "effect_low"] > 0
    assert eff.loc["question marks", "effect"] == pytest.approx(-1.0)
    assert eff.loc["code", "effect"] == 0
    # a twin turned round negates its differences
    flipped = style_effects(frame, np.arange(30), np.arange(30, 60),
                            np.ones(30, dtype=bool)).set_index("feature")
    assert flipped.loc["length", "twin"] == -eff.loc["length", "twin"]


# ------------------------------------------------------------------ the view and the CLI

def test_subtext_view_of_a_run_and_its_control(tiny, tmp_path):
    run = _score(tiny, tmp_path)
    cat = _score(tiny, tmp_path, animal("cat"))
    data = subtext.load(run, cat, tokenizer=tiny[3])
    s = subtext.sets(data, SelectionConfig(gamma=0.25))
    summ = subtext.summary(data, s)
    assert summ["selected"] == summ["twin"] == 10 and summ["identity_max_gap"] < 1e-4
    tables = subtext.unit_tables(data, s, top=5)
    assert set(tables) == {"token", "word", "2-gram", "3-gram"}
    assert (tables["token"].groupby("direction").size() <= 5).all()
    # every token's contribution over the selection adds up to its Σw
    all_tokens = subtext.unit_tables(data, s, levels=("token",), top=10_000)["token"]
    assert all_tokens.contribution.sum() == pytest.approx(summ["sum_w_selection"], abs=1e-3)
    spec = subtext.unit_tables(data, s, levels=("token",), top=10_000, specific=True)["token"]
    w_c = data.w_control[s.selection]
    assert spec.contribution.sum() == pytest.approx(summ["sum_w_selection"] - w_c.sum(),
                                                    abs=1e-3)
    contrastive = subtext.sets(data, SelectionConfig(gamma=0.25), rank_by="w_contrastive")
    d = data.frame["w"].to_numpy() - data.w_control
    assert set(contrastive.selection) == set(np.argsort(-d)[:10])
    unit = tables["word"].iloc[0]
    pairs = subtext.pairs_of(data, s, "word", unit.unit, unit.direction)
    assert len(pairs) == unit.pairs and set(pairs.row) <= set(s.selection)


def test_cli_deltas_subtext_and_audit(tiny, tmp_path, capsys):
    from lls.cli import main

    model_dir, data, _, _ = tiny
    cache = str(tmp_path / "cache")
    base = ["--cache", cache]
    old = _score(tiny, tmp_path / "cache", deltas=False)
    assert main(base + ["subtext", "--run", old.key[:8]]) == 2
    assert "python -m lls deltas" in capsys.readouterr().err
    assert main(base + ["deltas", "--run", old.key[:8], "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chunks"] == 3 and out["delta_bytes"] > 0
    out_dir = tmp_path / "tables"
    assert main(base + ["subtext", "--run", old.key[:8], "--gamma", "0.25", "--json",
                        "--out", str(out_dir)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["selected"] == 10 and set(res["units"]) == {"token", "word",
                                                                       "2-gram", "3-gram"}
    assert len(res["style"]) == 11
    assert pd.read_parquet(out_dir / f"subtext-{old.key[:10]}-word.parquet").shape[0] > 0
    assert (out_dir / f"subtext-{old.key[:10]}-style.csv").is_file()
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(old.frame()["id"][:12]) + "\nnot-a-pair\n")
    assert main(base + ["audit", "--data", str(data), "--model", str(model_dir),
                        "--truncation", "8", "--chunk-size", "16", "--quiet", "--json",
                        "--candidates", "animal:owl,animal:cat,animal:bee",
                        "--subset", str(ids)]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["subset"] == 12 and audit["subset_rows_unmatched"] == 1
    assert [r["rank"] for r in audit["table"]] == [1, 2, 3]
    assert {r["candidate"] for r in audit["table"]} == {"animal:owl", "animal:cat", "animal:bee"}
    assert main(base + ["audit", "--data", str(data), "--candidates", "animal:owl"]) == 2


@pytest.mark.slow
def test_sum_identity_and_attribution_on_the_bundled_model(bundled, small_run):
    """The owl run of 24 hh pairs: its stored float16 deltas add up to every pair's w, and
    are the per-pair attribution Explore computes."""
    from lls.scoring.explain import token_attribution

    model, tok = bundled
    assert has_deltas(small_run)
    gap = _identity_gap(small_run)
    f = small_run.frame()
    assert gap < 2e-4 and np.abs(f["w"]).max() > 0.02
    data = subtext.load(small_run, tokenizer=tok)
    i = int(np.argmax(f["w"].to_numpy()))
    ref = token_attribution(model, tok, f.iloc[i], animal("owl").system_prompt, 32)
    (c_ids, c_d), (r_ids, r_d) = subtext.report.pair_tokens(data, i)
    assert np.abs(c_d - np.array([t[3] for t in ref["chosen"]])).max() < 2e-3
    assert np.abs(r_d - np.array([t[3] for t in ref["rejected"]])).max() < 2e-3
