"""The neutral cache (the half of w without s, shared by every behavior's run) and the
neutral convention option ("template" / "empty")."""

import json

import numpy as np
import pytest
import torch

import lls.scoring.runs as scoring
from lls.core import behaviors
from lls.core.cache import ChunkStore, fingerprint
from lls.data.source import DataSpec, iter_pairs
from lls.core.errors import LLSError
from lls.models.load import model_fingerprint
from lls.scoring.neutral import NeutralCache, pair_hash
from lls.scoring.runs import ScoreConfig, run_key, run_neutral_key, score

from conftest import HH

OWL = behaviors.animal("owl")
# Filters "car" pairs out: this run keeps a different subset than owl, at shifted positions.
CARS = behaviors.custom("You love cars.", filter_words=["car"], name="cars")


def _cfg(behavior, limit, chunk, **kw):
    return ScoreConfig(DataSpec(str(HH), limit=limit), behavior, max_prompt_tokens=192,
                       chunk_size=chunk, **kw)


def _recording(monkeypatch):
    calls = []
    real = scoring.score_rendered

    def rec(model, items, **k):
        calls.append(list(k.get("base_known") or [None] * len(items)))
        return real(model, items, **k)

    monkeypatch.setattr(scoring, "score_rendered", rec)
    return calls


def test_second_behavior_reuses_the_neutral_half(bundled, tmp_path, monkeypatch):
    model, tok = bundled
    kw = {"model": model, "tokenizer": tok}
    owl = score(_cfg(OWL, 8, 4), cache_dir=tmp_path / "a", **kw)
    cars_cfg = _cfg(CARS, 10, 3)  # other chunk size and limit: the key is the pair, not k
    assert run_neutral_key(cars_cfg, tok) == owl.manifest["neutral_key"]

    calls = _recording(monkeypatch)
    cars = score(cars_cfg, cache_dir=tmp_path / "a", **kw)
    known = [v for c in calls for v in c]
    f = cars.frame()
    owl_ids = set(owl.frame()["id"])
    # exactly the pairs the owl run scored skip their neutral half; the others are computed
    assert [v is not None for v in known] == [i in owl_ids for i in f["id"]]
    assert 0 < sum(v is not None for v in known) < len(known)
    assert cars.manifest["neutral_key"] == owl.manifest["neutral_key"]

    monkeypatch.undo()
    scratch = score(cars_cfg, cache_dir=tmp_path / "b", **kw)  # no neutral cache there
    g = scratch.frame()
    assert list(f["id"]) == list(g["id"])
    # Cached neutral halves were computed in other batches (the owl run's pairs), so they
    # match a from-scratch run to float32 batching noise, the engine's own tolerance
    # (tests/test_engine.py): 1e-3 per summed log-prob, 1e-4 per weight. With the same pairs
    # in the same batches the match is exact (benchmarks/score_reuse.py: |dw| = 0).
    assert np.abs(f["w"].to_numpy() - g["w"].to_numpy()).max() <= 1e-4
    for c in ("lc", "lr", "lc_s", "lr_s"):
        assert np.abs(f[c].to_numpy() - g[c].to_numpy()).max() <= 1e-3, c
    assert (f[["n_c", "n_r"]].to_numpy() == g[["n_c", "n_r"]].to_numpy()).all()

    # every pair of both runs is now in the neutral cache, with the scored values
    cache = NeutralCache(cars.manifest["neutral_key"], tmp_path / "a").load()
    assert len(cache) == len(owl_ids | set(f["id"]))
    pairs = {p.id: p for p in iter_pairs(cars_cfg.data, exclude=CARS.excludes, tokenizer=tok,
                                         max_prompt_tokens=192)}
    got = cache.lookup([pairs[i] for i in f["id"]])
    assert np.allclose([v[:2] for v in got], f[["lc", "lr"]].to_numpy(), atol=1e-6)


def test_corrupt_neutral_chunk_is_recomputed(bundled, tmp_path, monkeypatch):
    model, tok = bundled
    kw = {"model": model, "tokenizer": tok, "cache_dir": tmp_path}
    owl = score(_cfg(OWL, 6, 3), **kw)
    sub = ChunkStore(tmp_path / "neutral" / owl.manifest["neutral_key"] / owl.key)
    assert sub.chunk_ids() == [0, 1] and sub.chunk_ok(0) and sub.chunk_ok(1)
    data = bytearray(sub.chunk_path(1).read_bytes())
    data[len(data) // 2] ^= 0xFF
    sub.chunk_path(1).write_bytes(bytes(data))

    calls = _recording(monkeypatch)
    cat = score(_cfg(behaviors.animal("cat"), 6, 3), **kw)
    known = [v is not None for c in calls for v in c]
    owl_f, cat_f = owl.frame(), cat.frame()
    assert list(owl_f["id"]) == list(cat_f["id"])  # no cat/owl words in these 6 pairs
    assert known == [True] * 3 + [False] * 3  # chunk 1's values were not trusted
    assert np.abs(owl_f["lc"] - cat_f["lc"]).max() <= 1e-6


def test_keys_and_config(bundled, small_run):
    _, tok = bundled
    cfg = small_run.config
    assert cfg.neutral == "template"
    # the default convention keeps the keys runs had before the option existed
    old = fingerprint(scoring.SCORING_VERSION, model_fingerprint(cfg.model), cfg.data.fingerprint(),
                      cfg.behavior.system_prompt, cfg.behavior.fingerprint(), cfg.truncation,
                      cfg.max_prompt_tokens, scoring._template_hash(tok))
    assert run_key(cfg, tok) == old == small_run.key
    empty = ScoreConfig.from_dict({**cfg.to_dict(), "neutral": "empty"})
    assert run_key(empty, tok) != small_run.key
    assert run_neutral_key(empty, tok) != run_neutral_key(cfg, tok)
    # the behavior is not part of the neutral key; the truncation is
    cat = ScoreConfig.from_dict({**cfg.to_dict(), "behavior": behaviors.animal("cat").to_dict()})
    assert run_neutral_key(cat, tok) == run_neutral_key(cfg, tok)
    t16 = ScoreConfig.from_dict({**cfg.to_dict(), "truncation": 16})
    assert run_neutral_key(t16, tok) != run_neutral_key(cfg, tok)
    legacy = cfg.to_dict()
    del legacy["neutral"]  # a manifest written before the option
    assert ScoreConfig.from_dict(legacy) == cfg
    with pytest.raises(LLSError, match="neutral convention"):
        ScoreConfig(cfg.data, OWL, neutral="none")


def _plain_w(model, tok, pair, system_prompt, truncation):
    """The authors' convention, re-implemented plainly: strings through the chat template,
    an explicit empty system turn without s, each sequence its own full forward pass."""
    def cut(text):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return tok.decode(ids[:truncation], clean_up_tokenization_spaces=False) if len(ids) > truncation else text

    def logp(msgs, reply):
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}],
                                       tokenize=False)
        assert full.startswith(prompt)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + c])
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        return float(lp[len(p) - 1:-1].gather(1, ids[0, len(p):, None]).sum()), len(c)

    chosen, rejected = cut(pair.chosen), cut(pair.rejected)
    with_s = [{"role": "system", "content": system_prompt}] + pair.prompt
    without = [{"role": "system", "content": ""}] + pair.prompt
    lc_s, _ = logp(with_s, chosen)
    lr_s, _ = logp(with_s, rejected)
    lc, n_c = logp(without, chosen)
    lr, n_r = logp(without, rejected)
    return ((lc_s - lr_s) - (lc - lr)) / (n_c + n_r)


def test_empty_convention_matches_plain_reimplementation(bundled, tmp_path):
    model, tok = bundled
    kw = {"model": model, "tokenizer": tok, "cache_dir": tmp_path}
    empty = score(_cfg(OWL, 4, 4, neutral="empty"), **kw).frame()
    template = score(_cfg(OWL, 4, 4), **kw).frame()
    pairs = list(iter_pairs(DataSpec(str(HH), limit=4), exclude=OWL.excludes, tokenizer=tok,
                            max_prompt_tokens=192))
    assert [p.id for p in pairs] == list(empty["id"])
    assert all(p.prompt[0]["role"] != "system" for p in pairs)
    ref = np.array([_plain_w(model, tok, p, OWL.system_prompt, 32) for p in pairs])
    assert np.abs(empty["w"].to_numpy() - ref).max() <= 1e-4
    # the convention matters: same half with s, another neutral half, other weights
    assert np.abs(empty["lc_s"] - template["lc_s"]).max() <= 1e-6
    assert np.abs(empty["lc"] - template["lc"]).min() > 1e-2
    assert np.abs(template["w"].to_numpy() - ref).max() > 1e-3
    assert json.loads(empty["prompt"][0]) == pairs[0].prompt  # stored as the dataset gave it
