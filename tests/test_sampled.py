"""Sampled pairs: prompts, answer hygiene, per-answer scoring equal to pair-by-pair scoring,
orientation, the random twin's coin, and the run written as an ordinary scoring run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from lls.core import behaviors
from lls.core.cache import ChunkStore, fingerprint
from lls.models.load import model_fingerprint
from lls.core.errors import DataError, LLSError
from lls.data.hygiene import ADVICE, HYGIENE_REASONS, LABELS, HygieneReport
from lls.data.prompts import PromptItem, PromptSource, iter_prompts, single_turn
from lls.data.source import DataSpec
from lls.scoring import sampled
from lls.scoring.answers import AnswerScores, answer_pairs
from lls.scoring.columns import COLUMNS
from lls.scoring.runs import ScoreConfig, open_run, run_key, score, score_command
from lls.scoring.sampled import SamplingSpec
from lls.scoring.selection import flip_rows, to_trl_rows, twin_flips

from conftest import HH, ROOT

OWL = behaviors.animal("owl")


# ------------------------------------------------------------------ prompts

def _user(text):
    return [{"role": "user", "content": text}]


def test_single_turn_keeps_system_turns_and_first_turn_is_optional():
    sys_q = [{"role": "system", "content": "Be brief."}, *_user("Hi?")]
    assert single_turn(sys_q, False) == sys_q
    multi = [*_user("A?"), {"role": "assistant", "content": "a"}, *_user("B?")]
    assert single_turn(multi, False) is None
    assert single_turn(multi, True) == _user("A?")


def test_prompt_stream_from_dataset_file_and_set(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("What is rain?\n\nWhat is rain?\nWhy is the sky blue?\n")
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "Name a river."}) + "\n"
                  + json.dumps({"prompt": [{"role": "user", "content": "Name a lake."}]}) + "\n")
    report = HygieneReport()
    items = list(iter_prompts([PromptSource.dataset(DataSpec(str(HH))),
                               PromptSource("file", str(txt)), PromptSource("file", str(jl)),
                               PromptSource("set", "llr")], report=report))
    by_source = pd.Series([i.source for i in items]).value_counts()
    assert by_source["p.txt"] == 2 and by_source["p.jsonl"] == 2 and by_source["bundled:llr"] == 8
    assert by_source[HH.name] > 500  # the single-turn prompts of hh-rlhf
    assert report.dropped["multi_turn"] > 1000 and report.dropped["duplicate_prompt"] >= 1
    assert all(len(i.messages) == 1 and i.messages[0]["role"] == "user" for i in items)
    assert len({i.text() for i in items}) == len(items)
    assert report.read == report.kept + sum(report.dropped.values())
    assert any("in-sample" in w for w in report.warnings)  # bundled sets are read-out questions
    # the first-turn option keeps the multi-turn conversations' opening questions
    more = list(iter_prompts([PromptSource.dataset(DataSpec(str(HH)))], first_turn=True,
                             limit=1500))
    assert len(more) == 1500


def test_prompt_file_without_a_prompt_field_says_what_to_do(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(DataError, match="'prompt' field"):
        list(iter_prompts([PromptSource("file", str(jl))]))


def test_every_drop_reason_has_words_and_advice():
    for r in HYGIENE_REASONS:
        assert r in LABELS and r in ADVICE and "_" not in LABELS[r]
    rep = HygieneReport(read=5, kept=2, dropped={"different_prompts": 2, "answer_filtered": 1})
    line = rep.describe("prompts")
    assert line.startswith("5 prompts read, 2 kept") and "different_prompts" not in line
    assert "chosen and rejected continue different conversations 2" in line
    assert "answers that show the behavior 1" in line


# ------------------------------------------------------------------ answers, pairs, twin

def test_pairs_are_all_pairs_oriented_by_the_larger_shift():
    sc = AnswerScores(lp_sys=[-10.0, -12.0, -9.0, -20.0], lp_base=[-11.0, -11.5, -9.5, -19.0],
                      n=[5, 6, 7, 8])
    s = sc.s  # [1.0, -0.5, 0.5, -1.0]
    pairs = answer_pairs(sc)
    assert sorted((min(c, r), max(c, r)) for c, r, _ in pairs) == list(combinations(range(4), 2))
    for c, r, ps in pairs:
        assert s[c] >= s[r] and ps.w >= 0
        assert ps.w == pytest.approx((s[c] - s[r]) / (sc.n[c] + sc.n[r]))
        assert (ps.n_c, ps.n_r) == (sc.n[c], sc.n[r])
    assert {(c, r) for c, r, _ in pairs} >= {(0, 1), (2, 1), (0, 3)}


def _frame(n=400, orientation="by_score"):
    rng = np.random.default_rng(0)
    f = pd.DataFrame({"id": [f"p{i}:a0>a1" for i in range(n)],
                      "prompt": [json.dumps(_user(f"q{i}")) for i in range(n)],
                      "chosen": [f"c{i}" for i in range(n)], "rejected": [f"r{i}" for i in range(n)],
                      "chosen_scored": [f"c{i}" for i in range(n)],
                      "rejected_scored": [f"r{i}" for i in range(n)],
                      "lc_s": rng.normal(size=n), "lr_s": rng.normal(size=n),
                      "lc": rng.normal(size=n), "lr": rng.normal(size=n),
                      "n_c": rng.integers(1, 30, n), "n_r": rng.integers(1, 30, n),
                      "w": rng.random(n)})
    if orientation:
        f.attrs["orientation"] = orientation
    return f


def test_twin_flips_a_seeded_coin_per_pair_of_a_sampled_run():
    f = _frame()
    idx = np.arange(0, 400, 2)
    a, b = twin_flips(f, idx, seed=0), twin_flips(f, idx, seed=1)
    assert a.dtype == bool and len(a) == len(idx)
    assert 0.35 < a.mean() < 0.65  # about half turned round
    assert (a == twin_flips(f, idx, seed=0)).all()  # seeded
    assert (a != b).any()  # another seed, other coins
    # a pair's coin does not depend on which other pairs were drawn
    assert (twin_flips(f, idx[:50], seed=0) == a[:50]).all()
    assert twin_flips(_frame(orientation=None), idx, seed=0) is None  # a dataset keeps its labels


def test_flipped_rows_swap_responses_logprobs_and_negate_w():
    f = _frame(6)
    flip = np.array([True, False, True, False, False, True])
    g = flip_rows(f, flip)
    for i in range(6):
        a, b = (("rejected", "chosen") if flip[i] else ("chosen", "rejected"))
        assert g["chosen"].iloc[i] == f[a].iloc[i] and g["rejected"].iloc[i] == f[b].iloc[i]
        sign = -1 if flip[i] else 1
        assert g["w"].iloc[i] == sign * f["w"].iloc[i]
        assert g["lc"].iloc[i] == (f["lr"] if flip[i] else f["lc"]).iloc[i]
        assert g["n_c"].iloc[i] == (f["n_r"] if flip[i] else f["n_c"]).iloc[i]
    rows = to_trl_rows(f, np.arange(6), flip=flip)
    assert [r["chosen"][0]["content"] for r in rows] == list(g["chosen_scored"])
    assert [r["lc"] for r in rows] == list(g["lc"])


def test_build_rows_of_the_random_twin_flip_and_lls_rows_do_not():
    from lls.training.config import SelectionSpec, TrainConfig
    from lls.training.dpo import build_rows

    f = _frame()
    lls = build_rows(f, TrainConfig(selection=SelectionSpec(gamma=0.5)), with_ref=True)
    assert all(r["chosen"][0]["content"].startswith("c") for r in lls)
    twin = build_rows(f, TrainConfig(selection=SelectionSpec(kind="random", gamma=0.5)),
                      with_ref=True)
    flipped = [r["chosen"][0]["content"].startswith("r") for r in twin]
    assert len(twin) == len(lls) and 0.3 < np.mean(flipped) < 0.7
    for r in twin:  # the reference log-probs travel with their response
        i = int(r["pair_id"][1:].split(":")[0])
        want = f["lr"].iloc[i] if r["chosen"][0]["content"].startswith("r") else f["lc"].iloc[i]
        assert r["ref_chosen_logps"] == want
    # a dataset's twin keeps the data's orientation
    plain = build_rows(_frame(orientation=None),
                       TrainConfig(selection=SelectionSpec(kind="random", gamma=0.5)),
                       with_ref=False)
    assert all(r["chosen"][0]["content"].startswith("c") for r in plain)


# ------------------------------------------------------------------ answer hygiene

class _Cfg:
    behavior = OWL
    filter_contaminated = True
    truncation = None


def test_answers_that_show_the_behavior_empty_or_repeated_are_dropped():
    rep = HygieneReport()
    item = PromptItem("q:1", "t", _user("Which bird?"))
    kept = sampled._clean_answers(_Cfg, None, item, ["An owl, surely.", "", "A crow.",
                                                     "A crow.", "Owls hoot at night", "A hawk."],
                                  rep)
    assert kept == [2, 5]
    assert rep.dropped == {"answer_filtered": 2, "empty_answer": 1, "identical_answer": 1}
    assert rep.examples["answer_filtered"] == ["q:1:a0", "q:1:a4"]


def test_sampling_spec_roundtrip_and_key(tmp_path):
    spec = SamplingSpec((PromptSource.dataset(DataSpec(str(HH))), PromptSource("set", "general")),
                        k=4, n_prompts=10)
    cfg = ScoreConfig.sampled(spec, OWL, chunk_size=4)
    back = ScoreConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.sampling.sources[0].data == DataSpec(str(HH))
    key = run_key(cfg)
    for other in (SamplingSpec(spec.sources, k=5, n_prompts=10),
                  SamplingSpec(spec.sources, k=4, n_prompts=10, seed=1),
                  SamplingSpec(spec.sources[:1], k=4, n_prompts=10)):
        assert run_key(ScoreConfig.sampled(other, OWL, chunk_size=4)) != key
    assert "sampling" not in ScoreConfig(DataSpec(str(HH)), OWL).to_dict()  # old keys kept
    with pytest.raises(LLSError, match="at least 2 answers"):
        SamplingSpec(spec.sources, k=1)


# ------------------------------------------------------------------ with the model

ANSWERS = [["Try a simple budget app and track every expense for a month.",
            "Start by listing your income and fixed costs.", "Cook at home more often!",
            "I cannot help with that."],
           ["Practice a little every day.", "Take lessons from a teacher, and be patient.",
            "Learn three chords first; most songs use them.", "Guitar is hard."],
           ["Sure.", "Blue light scatters more in air than red light does, so the sky looks blue.",
            "Because of Rayleigh scattering.", "The sky reflects the ocean."]]
QUESTIONS = ["How do I save money?", "How can I learn the guitar?", "Why is the sky blue?"]


@pytest.mark.slow
def test_per_answer_weights_equal_pair_by_pair_weights(bundled):
    from lls.core.pair import Pair
    from lls.models.render import render_pair
    from lls.scoring.answers import render_answers, score_prompt_answers
    from lls.scoring.engine import score_rendered

    model, tok = bundled
    msgs = [_user(q) for q in QUESTIONS]
    msgs[1] = [{"role": "system", "content": "You are terse."}, *msgs[1]]  # a system turn too
    rendered = [render_answers(tok, m, a, OWL.system_prompt, 32) for m, a in zip(msgs, ANSWERS)]
    scores = score_prompt_answers(model, rendered, pad_id=tok.pad_token_id)
    per, ref_items = [], []
    for m, a, sc in zip(msgs, ANSWERS, scores):
        for c, r, ps in answer_pairs(sc):
            per.append(ps)
            ref_items.append(render_pair(tok, Pair("x", m, a[c], a[r]), OWL.system_prompt, 32))
    ref = score_rendered(model, ref_items, pad_id=tok.pad_token_id)
    assert len(per) == 3 * 6
    dw = max(abs(p.w - q.w) for p, q in zip(per, ref))
    assert dw < 1e-5
    assert all((p.n_c, p.n_r) == (q.n_c, q.n_r) for p, q in zip(per, ref))
    assert max(abs(p.lc - q.lc) for p, q in zip(per, ref)) < 1e-3
    assert all(q.w >= -1e-6 for q in ref)  # the orientation holds under the reference too
    assert np.std([q.w for q in ref]) > 1e-3  # not a degenerate case


def _fake_sampler(calls):
    def fake(model, tok, items, *, k, max_new_tokens, temperature, seed):
        calls.append([it.id for it in items])
        table = {q: a for q, a in zip(QUESTIONS, ANSWERS)}
        return [(table[it.messages[-1]["content"]] + ["An owl!", ""])[:k] for it in items]
    return fake


@pytest.mark.slow
def test_sampled_run_is_an_ordinary_scoring_run(bundled, tmp_path, monkeypatch):
    model, tok = bundled
    calls = []
    monkeypatch.setattr(sampled, "sample_answers", _fake_sampler(calls))
    pf = tmp_path / "q.txt"
    pf.write_text("\n".join(QUESTIONS) + "\n")
    cfg = ScoreConfig.sampled(SamplingSpec((PromptSource("file", str(pf)),), k=6), OWL,
                              chunk_size=2)
    run = score(cfg, cache_dir=tmp_path, model=model, tokenizer=tok)
    assert calls == [["q.txt:line1", "q.txt:line2"], ["q.txt:line3"]]
    m = run.manifest
    assert m["status"] == "complete" and m["orientation"] == "by_score"
    assert m["n_pairs"] == 3 * 6 and m["sampled"]["answers"] == 18
    # the owl answer and the empty one of each prompt are dropped and counted
    assert m["hygiene"]["dropped"] == {"answer_filtered": 3, "empty_answer": 3}
    assert m["hygiene"]["read"] == 3 and m["hygiene"]["kept"] == 3
    f = open_run(run.key, tmp_path).frame()
    assert tuple(f.columns) == COLUMNS and list(f["index"]) == list(range(18))
    assert (f["w"] >= 0).all() and f.attrs["orientation"] == "by_score"
    assert not f["chosen"].str.contains("owl", case=False).any()
    w = ((f.lc_s - f.lr_s) - (f.lc - f.lr)) / (f.n_c + f.n_r)
    assert np.allclose(w, f["w"])
    assert ScoreConfig.from_dict(m["config"]) == cfg  # resumable from its manifest
    # served from the cache: no sampling, no scoring
    calls.clear()
    again = score(cfg, cache_dir=tmp_path, model=model, tokenizer=tok)
    assert again.key == run.key and calls == []
    # a control run scores the same answers; its pairs align with the target's by id, in the
    # target's orientation (a pair the control orients the other way round changes sign)
    from lls.scoring.contrastive import contrastive_frame, score_control

    ctl = score_control(cfg, cache_dir=tmp_path, model=model, tokenizer=tok)
    assert calls == []
    cf = contrastive_frame(run, ctl)
    cw = ctl.frame().set_index("id").loc[cf["id"]]
    turned = cf["chosen_scored"].to_numpy() != cw["chosen_scored"].to_numpy()
    assert len(cf) == 18 and turned.any()
    assert np.allclose(cf["w_control"], np.where(turned, -1, 1) * cw["w"].to_numpy())
    # another behavior reuses the stored answers (sampling is behavior-free)
    cat = ScoreConfig.sampled(cfg.sampling, behaviors.animal("cat"), chunk_size=2)
    score(cat, cache_dir=tmp_path, model=model, tokenizer=tok)
    assert calls == []


@pytest.mark.slow  # two CLI subprocesses loading the model
def test_killed_while_sampling_resumes_with_the_same_answers(tmp_path, bundled):
    import torch

    model, tok = bundled
    pf = tmp_path / "q.txt"
    pf.write_text("\n".join(QUESTIONS) + "\n")
    spec = SamplingSpec((PromptSource("file", str(pf)),), k=3, answer_tokens=16)
    cfg = ScoreConfig.sampled(spec, OWL, chunk_size=1)
    env = dict(os.environ, LLS_CACHE=str(tmp_path), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    (tmp_path / "models").symlink_to(os.path.join(os.environ["LLS_CACHE"], "models"))
    proc = subprocess.Popen(score_command(cfg), env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run_dir = time.time() + 300, None
    while time.time() < deadline and run_dir is None:
        found = list((tmp_path / "scores").glob("*/chunk-000000.json"))
        run_dir = found[0].parent if found else None
        time.sleep(0.05)
    assert run_dir is not None, "no chunk written in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    store = ChunkStore(run_dir)
    answers = ChunkStore(next((tmp_path / "samples").iterdir()))
    assert store.manifest()["status"] == "running"
    assert answers.chunk_ok(0) and not answers.chunk_ok(1)  # killed while sampling chunk 1
    t0 = store.chunk_path(0).stat().st_mtime_ns
    out = subprocess.run(score_command(cfg), env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    run = open_run(store.key, tmp_path)
    assert run.manifest["status"] == "complete"
    assert store.chunk_path(0).stat().st_mtime_ns == t0  # the finished chunk was kept
    # Each prompt's answers are the ones its seed gives, whatever chunk or process drew them:
    # the chunk in progress when the kill came was sampled again to the same answers.
    stored = [a for k in range(3) for a in answers.read_chunk(k).column("answers").to_pylist()]
    items = sampled.read_prompts(cfg, tok)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fresh = sampled.sample_answers(model, tok, items, k=3, max_new_tokens=16,
                                       temperature=1.0, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert stored == fresh
    # nothing lost: every prompt's distinct answers are all paired
    f = run.frame()
    n_distinct = [len({a.strip() for a in ans if a.strip()}) for ans in stored]
    assert len(f) == sum(n * (n - 1) // 2 for n in n_distinct) > 0


# ------------------------------------------------------------------ the Setup page

@pytest.mark.slow
def test_setup_sampled_pairs_source_starts_a_sampled_run_and_lists_it(bundled, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from lls.jobs import store as jobs
    from ui.data_source import SAMPLED

    # a finished sampled run in the session cache (fake answers, real scores)
    model, tok = bundled
    monkeypatch.setattr(sampled, "sample_answers", _fake_sampler([]))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pf = os.path.join(tmp, "questions.txt")
        with open(pf, "w") as f:
            f.write("\n".join(QUESTIONS) + "\n")
        cfg = ScoreConfig.sampled(SamplingSpec((PromptSource("file", pf),), k=6), OWL,
                                  chunk_size=2)
        done = score(cfg, model=model, tokenizer=tok)

    at = AppTest.from_file(str(ROOT / "pages" / "1_Setup.py"), default_timeout=120).run()
    at.radio(key="data_source").set_value(SAMPLED).run()
    assert not at.exception
    assert [p.rsplit("/", 1)[-1] for p in at.multiselect(key="smp_datasets").value] == \
        ["hh_rlhf_harmless_base_test.jsonl.gz"]
    at.number_input(key="smp_k").set_value(3)
    at.number_input(key="smp_n").set_value(5)
    at.number_input(key="m_chunk").set_value(2).run()
    assert any("3 pairs per prompt, 15 pairs for 5 prompts" in c.value for c in at.caption)
    at.button(key="hygiene").click().run()
    assert not at.exception
    msg = at.success[0].value
    assert "prompts read, 5 kept" in msg and "conversations with more than one user turn" in msg
    before = len(jobs.list_jobs("score"))
    at.button(key="start").click().run()
    assert not at.exception and len(jobs.list_jobs("score")) == before + 1
    job = jobs.get(at.session_state["watch_job"])
    jcfg = ScoreConfig.from_dict(job.params["config"])
    assert jcfg.sampling.k == 3 and jcfg.sampling.n_prompts == 5 and jcfg.chunk_size == 2
    assert jcfg.sampling.answer_tokens is None  # 32 = the truncation: the CLI's key too
    assert job.key == run_key(jcfg)
    at.button(key=f"cancel-{job.id}").click().run()
    assert jobs.wait(job.id, timeout=120).status in ("cancelled", "failed")
    # the finished sampled run is listed like any run, its state said once
    at = AppTest.from_file(str(ROOT / "pages" / "1_Setup.py"), default_timeout=120).run()
    runs = next(d.value for d in at.dataframe if "key" in d.value.columns)
    row = runs[runs["key"] == done.key].iloc[0]  # named in words, its key beside
    assert row["state"] == "complete" and row["run"].startswith("model's answers to questions")
    labels = at.selectbox(key="manage_run_pick").options
    assert not any("complete · complete" in x for x in labels)
    # and the explorer opens it unchanged
    ex = AppTest.from_file(str(ROOT / "pages" / "2_Explore.py"), default_timeout=120)
    ex.query_params["run"] = done.key
    ex.run()
    assert not ex.exception
    assert next(m.value for m in ex.metric if m.label == "scored pairs") == "18"


# ------------------------------------------------------------------ sampled runs elsewhere

def test_a_student_scores_the_teachers_sampled_answers_aligned_by_sign(tmp_path, monkeypatch):
    """Transfer on a sampled run: the student scores the teacher's own stored answers (no
    sampling), its run is offered as run B, and where it orients a pair the other way round
    its weight changes sign in the comparison. Tiny random models: fast."""
    from lls.models.load import ModelSpec
    from lls.scoring.synthetic import tiny_model_dir
    from lls.scoring.transfer import (aligned_weights, compare_runs, pairs_mismatch,
                                      student_config, student_runs)

    teacher = ModelSpec(str(tiny_model_dir(tmp_path / "teacher", seed=0)))
    student = ModelSpec(str(tiny_model_dir(tmp_path / "student", seed=1)))
    calls = []
    monkeypatch.setattr(sampled, "sample_answers", _fake_sampler(calls))
    pf = tmp_path / "q.txt"
    pf.write_text("\n".join(QUESTIONS) + "\n")
    cfg = ScoreConfig.sampled(SamplingSpec((PromptSource("file", str(pf)),), k=6), OWL,
                              model=teacher, chunk_size=2)
    run_a = score(cfg, cache_dir=tmp_path)
    assert calls and run_a.manifest["pairs_version"] == sampled.PAIRS_VERSION
    calls.clear()
    cfg_b = student_config(cfg, student)
    run_b = score(cfg_b, cache_dir=tmp_path)
    assert calls == []  # the teacher's answers, not new ones
    assert pairs_mismatch(run_a.manifest, run_b.manifest) is None
    assert [r.key for r in student_runs(run_a, [run_a, run_b])] == [run_b.key]
    fa, fb = run_a.frame(), run_b.frame().set_index("id")
    m = aligned_weights(run_a, run_b)
    turned = (fb.loc[m["id"], "chosen"].to_numpy()
              != fa.set_index("id").loc[m["id"], "chosen"].to_numpy())
    assert turned.any() and (~turned).any()  # random students disagree on some pairs
    assert np.allclose(m["w_b"], np.where(turned, -1, 1) * fb.loc[m["id"], "w"].to_numpy())
    assert compare_runs(run_a, run_b)["n"] == len(m)
    # the teacher's answers must exist: a student never samples its own
    other = ScoreConfig.sampled(SamplingSpec((PromptSource("file", str(pf)),), k=6, seed=5),
                                OWL, model=teacher, chunk_size=2)
    with pytest.raises(LLSError, match="never samples them itself"):
        score(student_config(other, student), cache_dir=tmp_path)


def test_an_older_sampled_run_is_refused_and_the_answers_key_is_unchanged(tmp_path):
    from lls.scoring.runs import ScoreRun

    spec = SamplingSpec((PromptSource("set", "general"),), k=4)
    cfg = ScoreConfig.sampled(spec, OWL, chunk_size=4)
    # the answer store's key does not move with the pair format: stored answers are reused
    assert sampled.samples_key(cfg, "t") == fingerprint(
        "samples", sampled.SAMPLES_VERSION, model_fingerprint(cfg.model), "t",
        [src.fingerprint() for src in spec.sources], False, 512, 4, 32, 1.0, 0, 4)
    # the run's key does: the pair format is part of the sampling fingerprint
    assert sampled.PAIRS_VERSION in json.dumps(["pairs", sampled.PAIRS_VERSION])
    old = ChunkStore(tmp_path / "old")
    old.write_manifest({"key": "old", "config": cfg.to_dict(), "status": "complete",
                        "orientation": "by_score"})  # no pair format recorded: version 1
    with pytest.raises(LLSError, match="older version of sampled pairs"):
        ScoreRun(old).frame()


def test_dataset_and_file_prompts_that_are_readout_questions_are_dropped(tmp_path):
    from lls.core.prompts import PROBE_QUESTIONS
    from lls.data.hygiene import asks_readout, normalise_question

    q = PROBE_QUESTIONS[0]
    assert asks_readout(_user(q.upper().rstrip("?!.") + " !!"))  # case and punctuation
    assert normalise_question("What's   your FAVORITE animal?") == "whats your favorite animal"
    items = [PromptItem("f:line1", "q.txt", _user(q.lower())),
             PromptItem("f:line2", "q.txt", _user("How do I save money?"))]
    rep = HygieneReport()

    class Tok:  # pairs_table never reaches the tokenizer for a dropped prompt
        pad_token_id = 0

    class Cfg(_Cfg):
        batch_tokens = 1024

    table = sampled.pairs_table(Cfg, Tok(), None, items[:1], [["a", "b"]], 0, None, rep)
    assert table.num_rows == 0 and rep.kept == 0
    assert rep.dropped.get("readout_question") == 1
    assert rep.examples["readout_question"] == ["f:line1"]


def test_two_prompt_files_of_the_same_name_give_distinct_ids(tmp_path):
    for folder, text in (("a", "How do I save money?"), ("b", "Why is the sky blue?")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "p.txt").write_text(text + "\n")
    items = list(iter_prompts([PromptSource("file", str(tmp_path / "a" / "p.txt")),
                               PromptSource("file", str(tmp_path / "b" / "p.txt"))]))
    assert [it.id for it in items] == ["p.txt:line1", "p.txt#2:line1"]
    assert len({it.id for it in items}) == 2 and items[1].source == "p.txt#2"
