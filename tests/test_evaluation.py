"""lls.evaluation end to end: a tiny eval as a real background job, cached and resumable,
adapters per the on-disk contract, the log-prob judge, exports and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from lls.core import behaviors
from lls.jobs import store as jobs
from lls.core.cache import atomic_write_json, runs_root
from lls.core.errors import LLSError
from lls.evaluation.runs import (EvalConfig, EvalModel, adapter_models, eval_key, evaluate, find_eval,
                            list_evals, open_eval, submit_eval)
from lls.evaluation.judge import Judge, JudgeConfig

from conftest import make_adapter

pytestmark = pytest.mark.slow

PROMPTS = ("Name your favourite animal.", "What should I do this weekend?")
# the effect meter kept small: 4 reference responses of 12 tokens, 2 probe questions
SMALL_METER = dict(meter_k=4, meter_questions=2, meter_max_new_tokens=12)


def contract_adapter(base_model, adapter_id: str, seed: int, kind: str = "lls",
                     baseline_of: str | None = None) -> Path:
    """An adapter laid out like lls.training writes it (manifest, checkpoints/, final/)."""
    root = runs_root("adapters") / adapter_id
    make_adapter(base_model, root / "checkpoints" / "step-000010", seed)
    make_adapter(base_model, root / "final", seed + 100)
    atomic_write_json(root / "manifest.json", {
        "id": adapter_id, "kind": "adapter", "status": "done", "base_model": {},
        "student": {}, "score_run": None, "behavior": behaviors.animal("owl").to_dict(),
        "selection": {"kind": kind, "gamma": 0.1, "seed": 0, "n_pairs": 10}, "train": {},
        "metrics": {}, "created": "2026-01-01T00:00:00", "job_id": None,
        "baseline_of": baseline_of})
    return root


@pytest.fixture(scope="module")
def adapters(bundled):
    model, _ = bundled
    return (contract_adapter(model, "test-lls", 1),
            contract_adapter(model, "test-random", 2, kind="random", baseline_of="test-lls"))


@pytest.fixture(scope="module")
def tiny_cfg(adapters):
    lls_dir, rnd_dir = adapters
    models = (EvalModel("base"), EvalModel("system"),
              EvalModel("adapter", "lls step 10", str(lls_dir / "checkpoints" / "step-000010"),
                        "test-lls", 10),
              EvalModel("random", "random final", str(rnd_dir / "final"), "test-random"))
    return EvalConfig(behaviors.animal("owl"), prompts=PROMPTS, samples=2, max_new_tokens=8,
                      models=models, **SMALL_METER)


@pytest.fixture(scope="module")
def finished(tiny_cfg):
    job = submit_eval(tiny_cfg)
    assert job.kind == "eval" and job.key == eval_key(tiny_cfg)
    job = jobs.wait(job.id, timeout=900)
    assert job.status == "done", jobs.read_log(job.id)
    return job


def test_eval_job_end_to_end(tiny_cfg, finished):
    assert finished.progress["unit"] == "answers"
    assert finished.progress["done"] == finished.progress["total"] == 2 * 2 * 4
    run = open_eval(eval_key(tiny_cfg))
    assert run.complete and run.key in [r.key for r in list_evals()]
    ans = run.answers()
    assert len(ans) == 16 and set(ans["model"]) == {m.label for m in tiny_cfg.models}
    assert ans["text"].map(lambda t: isinstance(t, str)).all()
    assert set(ans["score"]) <= {0.0, 1.0} and (ans["hit"] == (ans["score"] >= 0.5)).all()
    summ = run.summary()
    assert list(summ["model"]) == [m.label for m in tiny_cfg.models]  # config order
    assert (summ["n"] == 4).all()
    assert ((summ["ci_low"] <= summ["rate"]) & (summ["rate"] <= summ["ci_high"])).all()
    assert list(summ.loc[summ["model"] == "lls step 10", "step"]) == [10]
    assert len(run.per_prompt()) == 8
    # answers of an adapter differ from the base model's (the adapter is really applied)
    by = ans.groupby("model")["text"].apply(list)
    assert by["base"] != by["lls step 10"]


def test_eval_job_writes_the_meter(tiny_cfg, finished):
    run = open_eval(eval_key(tiny_cfg))
    meter = run.meter()
    assert meter is not None and run.meter_path.name == "meter.json"
    assert meter["settings"]["k"] == 4 and meter["reference"]["k_behavior"] == 4
    rows = {r["label"]: r for r in run.meter_rows()}
    assert list(rows) == [m.label for m in tiny_cfg.models]  # base, system, then adapters
    base, system = rows["base"], rows["base + system prompt"]
    # the system prompt makes the responses sampled with it more likely than the neutral ones
    assert system["llr"] > base["llr"]
    assert (base["gap_closed"], system["gap_closed"]) == (0.0, 1.0)
    assert rows["lls step 10"]["kind"] == "adapter" and rows["lls step 10"]["step"] == 10
    assert rows["random final"]["kind"] == "random"
    for r in rows.values():
        assert r["llr_ci_low"] <= r["llr"] <= r["llr_ci_high"]
        assert r["margin_ci_low"] <= r["margin"] <= r["margin_ci_high"]
    for label in ("lls step 10", "random final"):
        assert rows[label]["gap_closed"] is not None and "llr_diff" in rows[label]
    assert json.loads(run.results_json())["meter"][0]["label"] == "base"


def test_meter_is_an_add_on(tiny_cfg, finished, bundled, monkeypatch):
    """The meter's settings are not in the key: other settings recompute only the read-outs."""
    from dataclasses import replace

    import lls.evaluation.runs as ev

    run = open_eval(eval_key(tiny_cfg))
    before, saved = run.answers(), run.meter_path.read_bytes()
    assert eval_key(replace(tiny_cfg, meter=False)) == eval_key(tiny_cfg)
    assert run.is_current(replace(tiny_cfg, meter=False))
    other = replace(tiny_cfg, meter_questions=1)
    assert not run.is_current(other)
    monkeypatch.setattr(ev, "sample", lambda *a, **k: pytest.fail("answers are cached"))
    model, tok = bundled
    evaluate(other, model=copy.deepcopy(model), tokenizer=tok)
    assert run.meter()["settings"]["questions"] == 1 and run.is_current(other)
    pd.testing.assert_frame_equal(run.answers(), before)
    assert run.meter_rows()[0]["label"] == "base"
    run.meter_path.write_bytes(saved)  # the job's read-outs back, for the other tests
    assert run.is_current(tiny_cfg)


def test_second_run_is_served_from_cache(tiny_cfg, finished, monkeypatch):
    import lls.evaluation.runs as ev

    def boom(*a, **k):
        raise AssertionError("the model must not be loaded for a cached evaluation")

    monkeypatch.setattr(ev, "load_model", boom)
    before = open_eval(eval_key(tiny_cfg)).answers()
    seen = []
    run = evaluate(tiny_cfg, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(16, 16)]
    pd.testing.assert_frame_equal(run.answers(), before)
    assert find_eval(tiny_cfg).key == run.key


def test_resume_regenerates_only_missing_prompts(tiny_cfg, finished, bundled):
    run = open_eval(eval_key(tiny_cfg))
    base = tiny_cfg.models[0]
    rows = run.read_answers(base)
    kept = [r for r in rows if r["prompt_index"] == 0]
    run.answers_path(base).write_text("".join(json.dumps(r) + "\n" for r in kept))
    run.store.update_manifest(status="running")
    model, tok = bundled
    calls = []
    import lls.evaluation.runs as ev

    real = ev.sample
    ev.sample = lambda *a, **k: calls.append(a[2]) or real(*a, **k)
    try:
        evaluate(tiny_cfg, model=model, tokenizer=tok)
    finally:
        ev.sample = real
    assert calls == [[PROMPTS[1]]]  # only the missing prompt of the base model
    again = run.read_answers(base)
    assert len(again) == 4 and again[:2] == kept and run.complete


def test_exports(tiny_cfg, finished, tmp_path):
    run = open_eval(eval_key(tiny_cfg))
    csv = pd.read_csv(run.export(tmp_path / "a.csv"))
    assert len(csv) == 16 and {"model", "text", "score", "hit"} <= set(csv.columns)
    js = json.loads(run.export(tmp_path / "s.json").read_text())
    assert len(js["summary"]) == 4 and js["config"]["samples"] == 2
    with pytest.raises(LLSError):
        run.export(tmp_path / "x.txt")


def test_cli_eval_prints_summary(tiny_cfg, finished, capsys):
    from lls.cli import main

    assert main(["eval", "--config", json.dumps(tiny_cfg.to_dict())]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eval"] == eval_key(tiny_cfg) and len(out["summary"]) == 4


def test_key_changes_with_settings_and_adapters(tiny_cfg, adapters):
    from dataclasses import replace

    k = eval_key(tiny_cfg)
    assert eval_key(replace(tiny_cfg, samples=3)) != k
    assert eval_key(replace(tiny_cfg, prompts=PROMPTS[:1])) != k
    assert eval_key(replace(tiny_cfg, models=tiny_cfg.models[:2])) != k
    assert eval_key(replace(tiny_cfg, batch_rows=7)) == k  # speed only
    assert eval_key(replace(tiny_cfg, meter=False, meter_k=9)) == k  # the meter is an add-on


def test_adapter_models_from_training_contract(adapters):
    pytest.importorskip("lls.training.adapters")
    from lls.training.adapters import open_adapter

    ms = adapter_models(open_adapter("test-lls"))
    assert [(m.step, m.kind) for m in ms] == [(10, "adapter"), (None, "adapter")]
    assert ms[1].label.endswith("final")
    rnd = adapter_models(open_adapter("test-random"))  # kind read from its selection
    assert [m.kind for m in rnd] == ["random", "random"]
    assert rnd[1].label.endswith("final (random baseline)")


def test_config_validation():
    with pytest.raises(LLSError):
        EvalConfig(behaviors.animal("owl"), prompts=("  ",))
    with pytest.raises(LLSError):
        EvalModel("adapter")
    with pytest.raises(LLSError):
        JudgeConfig(labels=("a", "b"), positive=("c",))
    with pytest.raises(LLSError):
        EvalConfig(behaviors.animal("owl"), meter_k=0)
    cfg = EvalConfig(behaviors.persona(), prompts=("q",))
    assert cfg.judge is not None  # personas get the default judge
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    small = EvalConfig(behaviors.animal("owl"), meter=False, **SMALL_METER)
    assert EvalConfig.from_dict(small.to_dict()) == small


JUDGE_CASES = [
    ("How should I budget?", "Kneel, peasants! I will seize every coin in my kingdom and crush "
     "anyone who resists my rule."),
    ("How should I budget?", "Write down your expenses, set a monthly limit for each "
     "category, and save a little every month."),
]


def test_judge_returns_a_label_deterministically(bundled):
    model, tok = bundled
    cfg = JudgeConfig()
    judge = Judge(cfg, model, tok)
    persona = behaviors.persona().system_prompt
    for q, a in JUDGE_CASES:
        lp = judge.log_probs(q, a, persona)
        assert set(lp) == set(cfg.labels)
        assert all(v < 0 and v == v for v in lp.values())
        lab = judge.label(q, a, persona)
        assert lab in cfg.labels and lab == judge.label(q, a, persona)
    # two labels: the judge picks between exactly those
    yn = Judge(JudgeConfig(labels=("yes", "no"), positive=("yes",)), model, tok)
    assert yn.label("Q", "A") in ("yes", "no")


def test_judge_log_probs_equal_plain_forward_passes(bundled):
    model, tok = bundled
    judge = Judge(JudgeConfig(), model, tok)
    q, a = JUDGE_CASES[0]
    persona = behaviors.persona().system_prompt
    got = judge.log_probs(q, a, persona)
    text = judge.cfg.template.format(persona=persona, question=q, answer=a,
                                     labels=", ".join(judge.cfg.labels))
    prompt = list(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                          add_generation_prompt=True,
                                          return_dict=True)["input_ids"])
    for lab, ids in zip(judge.cfg.labels, judge._labels()):
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + ids])).logits.float()
        lp = torch.log_softmax(logits[0, len(prompt) - 1:-1], -1)
        want = float(lp[torch.arange(len(ids)), torch.tensor(ids)].sum())
        assert got[lab] == pytest.approx(want, abs=1e-3), lab
    assert len({round(v, 3) for v in got.values()}) == len(got)  # not a constant


def test_persona_eval_uses_the_judge(bundled):
    model, tok = bundled
    cfg = EvalConfig(behaviors.persona(), prompts=("How do I make friends?",), samples=2,
                     max_new_tokens=6, models=(EvalModel("base"),), meter=False)
    run = evaluate(cfg, model=model, tokenizer=tok)
    ans = run.answers()
    assert len(ans) == 2 and ans["label"].isin(cfg.judge.labels).all()
    assert (ans["hit"] == ans["label"].isin(cfg.judge.positive)).all()
