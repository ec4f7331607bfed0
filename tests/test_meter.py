"""The effect meter: probe (lls.evaluation.probe) and likelihood-ratio (lls.evaluation.llr) read-outs and the
meter's entry points (lls.evaluation.meter) on the bundled model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lls.core import behaviors
from lls.evaluation import llr
from lls.evaluation import meter
from lls.evaluation import probe
from lls.core.errors import LLSError
from lls.core.prompts import GENERAL_PROMPTS, LLR_PROMPTS, PROBE_QUESTIONS
from lls.models.render import render_prompt_completions
from lls.core.stats import GAP_UNDEFINED, bootstrap_diff

OWL = behaviors.animal("owl")
# Reduced read-outs so the file stays fast: 8 questions x 10 candidates, K = 8 responses.
PROBE = probe.probe_config(8)
LLR = llr.LLRConfig(prompts=tuple(LLR_PROMPTS[:4]), k=8, max_new_tokens=24)


def _plain_logprob(model, prompt, completion) -> float:
    with torch.inference_mode():
        ids = torch.tensor([prompt + completion])
        lp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
    return sum(float(lp[0, len(prompt) - 1 + i, t]) for i, t in enumerate(completion))


def test_variants_and_logsumexp_merge_on_a_hand_case():
    assert probe.variants("owl") == ["Owl", "owl", "Owls", "owls"]
    assert probe.variants("wolf") == ["Wolf", "wolf", "Wolves", "wolves"]
    assert probe.variants("sheep") == ["Sheep", "sheep"]
    probs = [0.1, 0.02, 0.05, 0.03]
    assert probe.logsumexp(np.log(probs)) == pytest.approx(math.log(0.2), abs=1e-12)
    # stable far below exp's range
    assert probe.logsumexp([-1000.0, -1000.0]) == pytest.approx(-1000 + math.log(2))


def test_probe_stats_on_a_constructed_case():
    # target (col 0) second best in row 0, best in row 1
    lp = np.log(np.array([[0.3, 0.5, 0.2], [0.6, 0.3, 0.1]]))
    s = probe.probe_stats(lp)
    assert s["margin"] == pytest.approx([math.log(0.3 / 0.5), math.log(0.6 / 0.3)])
    assert s["rank"].tolist() == [2.0, 1.0]
    assert s["top1"].tolist() == [0.0, 1.0]
    assert s["mass"] == pytest.approx([0.3, 0.6])


@pytest.mark.slow  # runs the bundled model
def test_probe_merges_variants_with_logsumexp_of_plain_forward_logprobs(bundled):
    model, tok = bundled
    cfg = probe.ProbeConfig(("Name your favourite animal in one word.",), ("owl", "wolf"))
    got = probe.probe_logprobs(model, tok, cfg)
    msgs = [{"role": "user", "content": cfg.questions[0]}]
    for ci, cand in enumerate(cfg.candidates):
        forms = probe.variants(cand)
        plain = []
        for v in forms:
            p, c, _ = render_prompt_completions(tok, msgs, v, v)
            assert c[-2:] == render_prompt_completions(tok, msgs, "x", "x")[1][-2:]  # end of turn
            plain.append(_plain_logprob(model, p, c))
        assert got[0, ci] == pytest.approx(probe.logsumexp(plain), abs=1e-3)


def test_bootstrap_ci_on_constructed_cases():
    d, lo, hi = bootstrap_diff(np.full(20, 3.5), np.full(20, 1.0), paired=True)
    assert (d, lo, hi) == pytest.approx((2.5, 2.5, 2.5))
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(40):
        x = rng.normal(0.7, 1.0, 200)
        _, lo, hi = bootstrap_diff(x, np.zeros(200), paired=True, seed=i)
        covered += lo <= 0.7 <= hi
        assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.25)
    assert covered >= 34  # nominal 95%: 38 of 40 expected
    # the LLR difference to the base: constant per-response shifts give a zero-width CI
    cur = {"per_response": {"behavior": [1.0, 2.0, 3.0], "neutral": [0.5, 0.5]}}
    base = {"per_response": {"behavior": [0.0, 1.0, 2.0], "neutral": [1.0, 1.0]}}
    got = llr.llr_diff(cur, base)
    assert (got["diff"], got["ci_low"], got["ci_high"]) == pytest.approx((1.5, 1.5, 1.5))


def _prompted(values_b, values_n, per=8):
    """An "llr" read-out dict whose responses are `per` answers to each prompt."""
    return {"per_response": {"behavior": list(values_b), "neutral": list(values_n),
                             "behavior_prompt": [i // per for i in range(len(values_b))],
                             "neutral_prompt": [i // per for i in range(len(values_n))]}}


def test_llr_intervals_resample_prompts_not_answers():
    # 8 prompts x 8 answers; a model's shift differs by prompt (answers to one prompt move
    # together): the 64 answers are 8 units, not 64
    rng = np.random.default_rng(3)
    per_prompt = np.repeat(rng.normal(0.0, 0.5, 8), 8)
    b = per_prompt + rng.normal(0, 0.05, 64)
    base = _prompted(np.zeros(64), np.zeros(64))
    cur = _prompted(b, np.zeros(64))
    got = llr.llr_diff(cur, base)
    # what resampling the 64 answers one by one gives (the old, too narrow interval)
    _, lo, hi = bootstrap_diff(b, np.zeros(64), paired=True)
    assert got["ci_high"] - got["ci_low"] > 2 * (hi - lo)
    assert got["clusters"] == 8 and "prompts" in got["method"]
    assert got["ci_low"] <= got["diff"] <= got["ci_high"]


def test_gap_closed_has_one_guard_on_every_path(monkeypatch):
    """A model that moved 0.02 nats over a span of 0.005 whose own interval includes 0: the
    read-out (Evaluate, meter curves) and the paired study effect both say "undefined",
    never 400%."""
    from lls.evaluation import effects
    from lls.evaluation.llr import Reference
    from ui.charts import eval_meter_figure
    import pandas as pd

    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.05, 64)  # noqa: E731
    floor = {"reference": "r", "llr": _prompted(noise(), np.zeros(64))}
    base_b = np.asarray(floor["llr"]["per_response"]["behavior"])
    ceiling = {"reference": "r", "llr": _prompted(base_b + 0.005 + noise(), np.zeros(64))}
    moved = {"value": 0.0, **_prompted(base_b + 0.02, np.zeros(64))}
    monkeypatch.setattr(meter, "llr_readout", lambda *a, **k: moved)
    ref = Reference("r", OWL.system_prompt, LLR, [], [])
    r = meter.readout(None, None, OWL, probe=False, reference=ref, base_ref=floor,
                      ceiling_ref=ceiling)
    assert r["llr"]["gap_closed"] is None
    assert r["llr"]["gap_closed_undefined"].startswith(GAP_UNDEFINED)
    row = meter.summary_rows([{"label": "adapter", "kind": "adapter", **r}])[0]
    fig = eval_meter_figure(pd.DataFrame([row]))
    assert list(fig.data[0].text) == [GAP_UNDEFINED] and "%" not in fig.data[0].text[0]
    assert llr.gap_text({"diff": None, "undefined": "x"}) == GAP_UNDEFINED
    # the study's paired effect: the same guard
    rnd = {"reference": "r", "llr": _prompted(base_b, np.zeros(64))}
    lls = {"reference": "r", "llr": moved}
    g = effects.paired_step(lls, rnd, {"base": floor, "system": ceiling})["gap_closed"]
    assert g["diff"] is None and g["undefined"].startswith(GAP_UNDEFINED)
    # the levels say so too: base and teacher are 0 and 1 of nothing
    import contextlib

    monkeypatch.setattr(meter, "base_weights", lambda m: contextlib.nullcontext(m))
    monkeypatch.setattr(meter, "readout", lambda m, t, b, system_prompt=None, **k:
                        {**(ceiling if system_prompt else floor), "llr": dict(
                            (ceiling if system_prompt else floor)["llr"])})
    lv = meter.reference_levels(None, None, OWL, ref, probe=False)
    assert lv["base"]["llr"]["gap_closed"] is None and lv["system"]["llr"]["gap_closed"] is None
    # a clear span: a share with an interval
    wide = {"reference": "r", "llr": _prompted(base_b + 1.0 + noise(), np.zeros(64))}
    ok = llr.model_gap_closed({"llr": moved}, floor, wide)
    assert ok["diff"] == pytest.approx(0.02, abs=0.01) and ok["ci_low"] < ok["ci_high"]


def test_probe_config_puts_the_target_first():
    p = probe.ProbeConfig().with_target("Fox")
    assert p.candidates[0] == "fox" and len(p.candidates) == 11
    assert len(probe.ProbeConfig().questions) >= 30
    assert probe.ProbeConfig().with_target("cat").candidates[:2] == ("cat", "owl")
    assert not set(LLR_PROMPTS) & set(GENERAL_PROMPTS)


def test_probe_config_takes_the_first_n_questions():
    assert probe.probe_config(3).questions == tuple(PROBE_QUESTIONS[:3])
    assert probe.probe_config().questions == probe.probe_config(0).questions \
        == tuple(PROBE_QUESTIONS)
    assert probe.probe_config(1000).questions == tuple(PROBE_QUESTIONS)
    assert probe.probe_config(2, ["Fox", "cat"]).candidates == ("fox", "cat")
    assert probe.probe_config().candidates == probe.ProbeConfig().candidates
    with pytest.raises(LLSError, match="positive count"):
        probe.probe_config(-1)


@pytest.mark.slow  # runs the bundled model
def test_system_prompt_raises_margin_and_llr(bundled, session_cache):
    model, tok = bundled
    ref = llr.build_reference(model, tok, OWL, LLR)
    assert len(ref.behavior) == len(ref.neutral) == 8
    assert ref.path and json.loads(open(ref.path).read())["key"] == ref.key
    assert ref.path.startswith(str(session_cache / "meter" / ref.key))
    # cached: a second call reads the same responses without sampling
    again = llr.build_reference(model, tok, OWL, LLR)
    assert again.behavior == ref.behavior and again.neutral == ref.neutral

    levels = meter.reference_levels(model, tok, OWL, ref, probe=PROBE)
    base, system = levels["base"], levels["system"]
    assert base["probe"]["target"] == "owl" and base["probe"]["n_questions"] == 8
    assert system["probe"]["mean_margin"] > base["probe"]["mean_margin"]
    assert system["probe"]["mean_rank"] <= base["probe"]["mean_rank"]
    assert system["probe"]["diff_vs_base"]["margin"]["ci_low"] > 0
    assert system["llr"]["value"] > base["llr"]["value"]
    assert system["llr"]["gap_closed"] == 1.0 and base["llr"]["gap_closed"] == 0.0
    json.dumps(levels)  # JSON-able

    # the same model read as a "checkpoint" closes none of the gap
    r = meter.readout_for_peft_model(model, tok, OWL, ref, levels=levels, probe=PROBE)
    assert r["llr"]["gap_closed"] == pytest.approx(0.0, abs=1e-6)
    assert r["probe"]["diff_vs_base"]["margin"]["diff"] == pytest.approx(0.0, abs=1e-6)
    rows = meter.summary_rows([base, system, r])
    assert rows[1]["margin"] == system["probe"]["mean_margin"]


@pytest.mark.slow  # runs the bundled model
def test_non_animal_behavior_reads_llr_only(bundled):
    model, tok = bundled
    b = behaviors.translation("fr")
    small = llr.LLRConfig(prompts=tuple(LLR_PROMPTS[:2]), k=2, max_new_tokens=8)
    r = meter.readout(model, tok, b, llr=small)
    assert "probe" not in r and math.isfinite(r["llr"]["value"])


@pytest.mark.slow  # loads the model twice and samples a reference set
def test_cli_meter_writes_json_with_an_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    from lls.cli import main
    from lls.models.load import load_model, quiet_third_party_aliases

    # a fresh LoRA adapter (B = 0 at init): it must read exactly like the base model
    fresh, _ = load_model()
    with quiet_third_party_aliases():
        peft_model = get_peft_model(fresh, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "meter.json"
    assert main(["meter", "--behavior", "animal:owl", "--adapter", str(tmp_path / "adapter"),
                 "--questions", "2", "--k", "2", "--max-new-tokens", "6",
                 "--prefill-samples", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [m["kind"] for m in res["models"]] == ["base", "system", "adapter"]
    base, system, adapter = res["models"]
    assert adapter["probe"]["mean_margin"] == pytest.approx(base["probe"]["mean_margin"],
                                                            abs=1e-4)
    assert adapter["llr"]["value"] == pytest.approx(base["llr"]["value"], abs=1e-4)
    # one answer to each of 8 prompts: whether the system prompt's span clears 0 depends on
    # the answers; either the fresh adapter closes none of it, or every level says undefined
    if adapter["llr"]["gap_closed_undefined"]:
        assert base["llr"]["gap_closed"] is None and system["llr"]["gap_closed"] is None
    else:
        assert adapter["llr"]["gap_closed"] == pytest.approx(0.0, abs=1e-3)
    # k = 2 over the 8 default prompts rounds up to one response per prompt
    assert system["probe"]["n_questions"] == 2 and res["reference"]["k_behavior"] == 8
    rows = meter.summary_rows(res)
    assert [r["label"] for r in rows][:2] == ["base", "base + system prompt"]
    # the prefilled read-out: 2 questions x 3 answers per model; the B = 0 adapter samples
    # exactly what base samples (same seed), the teacher is compared with base
    pre = [m["prefill"] for m in res["models"]]
    assert [p["n"] for p in pre] == [6, 6, 6] and pre[0]["stem"] == "My favorite animal is the"
    assert pre[2]["per_question"] == pre[0]["per_question"]
    assert pre[2]["examples"] == pre[0]["examples"]
    assert pre[2]["lens"]["mean"] == pytest.approx(pre[0]["lens"]["mean"], rel=1e-4)
    assert "diff_vs_base" in pre[1] and "diff_vs_system" in pre[2]
    assert rows[2]["prefill_n"] == 6 and rows[1]["lens_p"] > rows[0]["lens_p"]
