"""Numeric precision: the "auto" rule, bfloat16 as `bf16_linears` computes it, keys, memory.

Fast tier: /proc/cpuinfo text injected, a tiny random llama. The agreement tests against
float32 on the bundled model (ranking, greedy read-out answers, training losses) need real
bfloat16 units: they run where the CPU has avx512_bf16 / amx_bf16 or CUDA exists, and
anywhere with LLS_FORCE_BF16_TESTS=1 (slowly: without those units bfloat16 kernels are much
slower than float32). LLS_BF16_TEST_PAIRS, LLS_BF16_TEST_QUESTIONS and LLS_BF16_TEST_STEPS
shrink them for such a run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lls.core.errors import LLSError, ModelError
from lls.models import load as L
from lls.models.load import ModelSpec, bf16_linears, cpu_bf16_flag, precision

from conftest import bf16_device, needs_bf16, tiny_llama

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
flags\t\t: fpu vme sse sse2 avx avx2 fma {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 fma {extra}
"""
ZEN3 = CPUINFO.format(vendor="AuthenticAMD", extra="sha_ni")
ZEN4 = CPUINFO.format(vendor="AuthenticAMD", extra="avx512f avx512_bf16 avx512_vnni")
SAPPHIRE = CPUINFO.format(vendor="GenuineIntel", extra="avx512f amx_bf16 amx_tile amx_int8")


def test_auto_is_bfloat16_only_where_the_cpu_has_bfloat16_units(monkeypatch):
    monkeypatch.delenv(L.DTYPE_ENV, raising=False)
    assert cpu_bf16_flag(ZEN3) is None
    assert cpu_bf16_flag(ZEN4) == "avx512_bf16" and cpu_bf16_flag(SAPPHIRE) == "amx_bf16"
    assert cpu_bf16_flag("") is None  # no /proc/cpuinfo (not Linux): no units known
    auto = ModelSpec()
    assert precision(auto, "cpu", ZEN3) == "float32"
    assert precision(auto, "cpu", ZEN4) == "bfloat16"
    assert precision(auto, "cpu", SAPPHIRE) == "bfloat16"
    assert precision(auto, "cuda", ZEN3) == "bfloat16"  # CUDA keeps its own rule
    assert precision(auto, "mps", ZEN4) == "float32"
    # a named dtype wins over the rule, both ways
    assert precision(ModelSpec(dtype="float32"), "cpu", ZEN4) == "float32"
    assert precision(ModelSpec(dtype="bfloat16"), "cpu", ZEN3) == "bfloat16"
    assert precision(ModelSpec(dtype="auto"), "cpu", ZEN4) == "bfloat16"
    assert "no bfloat16 units" in L.auto_precision_reason("cpu", ZEN3)
    assert "avx512_bf16" in L.auto_precision_reason("cpu", ZEN4)
    # the environment variable sets what auto means (the suite pins float32 with it)
    monkeypatch.setenv(L.DTYPE_ENV, "float32")
    assert precision(auto, "cpu", ZEN4) == "float32"
    with pytest.raises(ModelError, match="float32, bfloat16"):
        precision(ModelSpec(dtype="int8"), "cpu", ZEN3)


def test_float32_keys_are_unchanged_and_bfloat16_ones_differ(monkeypatch, tmp_path):
    from lls.core import behaviors
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, run_key, run_neutral_key
    from lls.scoring.sampled import SamplingSpec
    from conftest import HH

    weights = L.resolve(ModelSpec()).fingerprint
    assert L.model_fingerprint(ModelSpec(dtype="float32")) == weights  # what keys were made of
    assert L.model_fingerprint(ModelSpec()) == weights  # auto is float32 in the suite
    assert L.model_fingerprint(ModelSpec(dtype="bfloat16")) == weights + "+bfloat16"
    owl = behaviors.animal("owl")
    cfgs = {d: ScoreConfig(DataSpec(str(HH), limit=8), owl, model=ModelSpec(dtype=d))
            for d in (None, "float32", "bfloat16")}
    keys = {d: run_key(c) for d, c in cfgs.items()}
    assert keys[None] == keys["float32"] != keys["bfloat16"]
    assert run_neutral_key(cfgs["float32"]) != run_neutral_key(cfgs["bfloat16"])
    sampled = {d: ScoreConfig.sampled(SamplingSpec.from_dict({"sources": [
        {"kind": "set", "path": "general"}]}), owl, model=ModelSpec(dtype=d))
        for d in ("float32", "bfloat16")}
    assert sampled["float32"].data_fingerprint() != sampled["bfloat16"].data_fingerprint()


def test_evaluation_meter_and_adapter_keys_follow_the_precision():
    from lls.evaluation.llr import LLRConfig, reference_key
    from lls.evaluation.config import EvalConfig, eval_key
    from lls.training.config import TrainConfig

    from lls.core.behaviors import animal

    ev = {d: eval_key(EvalConfig(animal("owl"), model=ModelSpec(dtype=d)))
          for d in ("float32", "bfloat16")}
    assert ev["float32"] != ev["bfloat16"]
    fp = {d: L.model_fingerprint(ModelSpec(dtype=d)) for d in ("float32", "bfloat16")}
    assert reference_key(fp["float32"], "s", LLRConfig()) != \
        reference_key(fp["bfloat16"], "s", LLRConfig())
    # adapters: the default recipe's identity is what it was (the run key holds the precision);
    # a precision asked for is in, resolved (never "auto"), and float32 differs from bfloat16
    old = TrainConfig().identity()
    assert "precision" not in old and "dtype" not in old
    named = TrainConfig(student=ModelSpec("HuggingFaceTB/SmolLM2-360M-Instruct")).identity()
    assert "precision" not in named  # a float32 student by name keeps its id
    f32, b16 = TrainConfig(dtype="float32").identity(), TrainConfig(dtype="bfloat16").identity()
    assert f32["precision"] == "float32" and b16["precision"] == "bfloat16" and f32 != old
    assert TrainConfig(dtype="auto").identity()["precision"] == "float32"  # LLS_DTYPE here
    with pytest.raises(LLSError, match="dtype"):
        TrainConfig(dtype="half")


def test_the_command_line_takes_dtype_on_every_model_command():
    from lls.cli import build_parser
    from lls.cli.common import model_spec
    from lls.cli.train import config_from_args

    ap = build_parser()
    for argv in (["score", "--data", "x.jsonl"], ["sample-pairs", "--prompt-set", "general"],
                 ["eval"], ["meter"]):
        a = ap.parse_args(argv + ["--dtype", "bfloat16"])
        assert model_spec(a).dtype == "bfloat16", argv
        assert model_spec(ap.parse_args(argv)).dtype is None  # auto
    a = ap.parse_args(["train", "--run", "k", "--dtype", "bfloat16"])
    assert config_from_args(a).dtype == "bfloat16"
    assert config_from_args(ap.parse_args(["train", "--run", "k"])).dtype is None
    with pytest.raises(SystemExit):
        ap.parse_args(["score", "--dtype", "int8"])


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


def test_bf16_linears_casts_only_the_decoder_projections(tiny):
    import copy

    m = copy.deepcopy(tiny)
    assert bf16_linears(m) == 2 * 7  # q k v o gate up down, 2 layers
    dtypes = {n: p.dtype for n, p in m.named_parameters()}
    for n, d in dtypes.items():
        want = torch.bfloat16 if n.endswith("proj.weight") else torch.float32
        assert d == want, n  # embeddings, norms and the LM head stay float32
    ids = torch.tensor([[5, 9, 2, 33, 7, 40, 41]])
    with torch.inference_mode():
        a, b = tiny(input_ids=ids).logits, m(input_ids=ids).logits
    assert b.dtype == torch.float32
    # close to float32, not equal to it (the projections do round)
    err = (a - b).abs().max().item()
    assert 0 < err < 0.02 * a.abs().max().item()
    assert bf16_linears(m) == 0  # idempotent


def test_lora_on_a_bfloat16_model_trains_in_float32(tiny):
    import copy

    from peft import LoraConfig, get_peft_model

    from lls.models.load import quiet_third_party_aliases

    m = copy.deepcopy(tiny)
    bf16_linears(m)
    with quiet_third_party_aliases():
        net = get_peft_model(m, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    out = net(input_ids=torch.tensor([[5, 9, 2, 33]]), labels=torch.tensor([[5, 9, 2, 33]]))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)
    base = [p for n, p in net.named_parameters() if "base_layer" in n]
    assert base and all(p.grad is None and p.dtype == torch.bfloat16 for p in base)


def test_memory_plan_knows_the_precision():
    from lls.jobs import resources as R

    from test_resources import SMOL

    f32 = R.ModelShape.from_config(SMOL)
    assert R.ModelShape.from_config(SMOL, precision="float32") == f32
    b16 = R.ModelShape.from_config(SMOL, precision="bfloat16")
    # the projections' weights halve; embeddings, activations, LoRA and Adam stay float32
    assert b16.weight_bytes == f32.weight_bytes - 2 * b16.linear_params
    assert 0.7 * f32.n_params < b16.linear_params < f32.n_params
    kw = dict(batch_size=4, seq_len=200)
    assert R.training_bytes(f32, **kw) - R.training_bytes(b16, **kw) == \
        f32.weight_bytes - b16.weight_bytes
    with pytest.raises(LLSError, match="precision"):
        R.ModelShape.from_config(SMOL, precision="int4")


def test_a_run_records_its_precision_and_training_keeps_it(small_run, bundled, tmp_path):
    from dataclasses import replace

    from lls.scoring.runs import run_precision, run_status, score, scored_model
    from lls.training.config import TrainConfig
    from lls.training.runs import student_spec

    assert small_run.manifest["precision"] == "float32"
    assert run_status(small_run)["precision"] == "float32"
    assert small_run.teacher.dtype == "float32"  # pinned: auto elsewhere would not change it
    # runs made before precision was recorded were float32 unless their config named one
    old = {"config": {"model": ModelSpec().to_dict()}}
    assert run_precision(old) == "float32" and scored_model(old).dtype == "float32"
    assert run_precision({"config": {"model": ModelSpec(dtype="bfloat16").to_dict()}}) == \
        "bfloat16"
    assert student_spec(TrainConfig(), small_run).dtype == "float32"
    assert student_spec(TrainConfig(dtype="bfloat16"), small_run).dtype == "bfloat16"
    # a model loaded in one precision never fills a run keyed on another
    model, tok = bundled
    cfg = replace(small_run.config, model=ModelSpec(dtype="bfloat16"))
    with pytest.raises(LLSError, match="computes in float32"):
        score(cfg, model=model, tokenizer=tok, cache_dir=tmp_path)


# ------------------------------------------------------------------ agreement with float32

def _size(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@pytest.fixture(scope="module")
def bf16_bundled():
    """The bundled model in bfloat16 on the device that has bfloat16 units."""
    from lls.models.load import load_model

    return load_model(ModelSpec(dtype="bfloat16", device=bf16_device()))


@pytest.mark.slow
@needs_bf16
def test_bfloat16_ranking_agrees_with_float32(bundled, bf16_bundled):
    """hh pairs, owl, truncation 32: the ranking LLS selects from is float32's."""
    from lls.core import behaviors
    from lls.data.source import DataSpec, iter_pairs
    from lls.models.render import render_pair
    from lls.scoring.engine import score_rendered
    from conftest import HH

    model, tok = bundled
    owl = behaviors.animal("owl")
    n = _size("LLS_BF16_TEST_PAIRS", 500)
    pairs = list(iter_pairs(DataSpec(str(HH), limit=n), exclude=owl.excludes, tokenizer=tok,
                            max_prompt_tokens=256))
    rendered = [render_pair(tok, p, owl.system_prompt, 32) for p in pairs]
    pad = tok.pad_token_id
    a = np.array([s.w for s in score_rendered(model, rendered, pad_id=pad)])
    b = np.array([s.w for s in score_rendered(bf16_bundled[0], rendered, pad_id=pad)])
    from lls.core.stats import spearman

    k = max(1, int(np.ceil(0.1 * len(a))))
    overlap = len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k
    print(f"{len(a)} pairs: spearman {spearman(a, b):.4f}, top-10% overlap {overlap:.3f}, "
          f"max |dw| {np.abs(a - b).max():.4f}, mean |dw| {np.abs(a - b).mean():.5f}")
    assert np.abs(a - b).max() <= 0.02
    assert spearman(a, b) >= 0.99
    assert overlap >= (0.85 if len(a) >= 500 else 0.6)  # 1 of 5 may swap on 48 pairs


@pytest.mark.slow
@needs_bf16
def test_bfloat16_greedy_readout_answers_match_float32(bundled, bf16_bundled):
    """Greedy answers to the read-out (probe) questions: most come out word for word."""
    from lls.evaluation.probe import ProbeConfig
    from lls.models.decoder import decode
    from lls.models.generation import as_messages, prompt_ids, stop_ids

    model, tok = bundled
    questions = ProbeConfig().questions[:_size("LLS_BF16_TEST_QUESTIONS", 20)]
    ids = [prompt_ids(tok, as_messages(q)) for q in questions]
    stop = stop_ids(model, tok)
    kw = dict(temperature=0, max_new_tokens=24, stop=stop)
    a = [r[0] for r in decode(model, ids, 1, **kw)]
    b = [r[0] for r in decode(bf16_bundled[0], ids, 1, **kw)]
    first = [x[:8] == y[:8] for x, y in zip(a, b)]
    whole = [x == y for x, y in zip(a, b)]
    print(f"{len(a)} questions: first 8 tokens equal {sum(first)}, whole answers {sum(whole)}")
    assert sum(first) >= 0.8 * len(a)
    assert sum(whole) >= 0.5 * len(a)


@pytest.mark.slow
@needs_bf16
def test_bfloat16_training_losses_follow_float32(small_run):
    """A few LoRA-DPO steps of a bfloat16 student: the losses stay with float32's."""
    from lls.training.config import SelectionSpec, TrainConfig
    from lls.training.runs import train

    steps = _size("LLS_BF16_TEST_STEPS", 4)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        # 8 pairs, 2 per step (a bfloat16 student computes its own reference log-probs: the
        # run's are float32's)
        cfg = TrainConfig(batch_size=2, max_steps=steps, checkpoint_every=10_000,
                          eval_at_checkpoints=False, meter_at_checkpoints=False, dtype=dtype,
                          selection=SelectionSpec(gamma=8 / 24, positive_only=False))
        info = train(cfg, small_run.key)
        assert info.manifest["student"]["dtype"] == dtype
        losses[dtype] = [r["loss"] for r in info.metrics() if "loss" in r]
    a, b = np.array(losses["float32"]), np.array(losses["bfloat16"])
    print(f"losses float32 {a.round(5).tolist()}, bfloat16 {b.round(5).tolist()}")
    assert len(a) == len(b) == steps
    assert np.abs(a - b).max() <= 0.01
