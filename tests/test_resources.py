"""Memory estimates and the fit check (lls.jobs.resources): constructed numbers, no model runs."""

from __future__ import annotations

import json

import pytest

from lls.jobs import resources as R
from lls.core.errors import LLSError

SMOL = {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
        "vocab_size": 49152, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "tie_word_embeddings": True}


def test_shape_from_config_counts_the_bundled_models_parameters(tmp_path):
    shape = R.ModelShape.from_config(SMOL)
    assert abs(shape.n_params - 134_515_008) < 1e6  # SmolLM2-135M's published count
    assert shape.kv_dim == 192 and shape.weight_bytes == 4 * shape.n_params
    (tmp_path / "config.json").write_text(json.dumps(SMOL))
    assert R.ModelShape.from_model_dir(tmp_path) == shape
    with pytest.raises(LLSError, match="config.json"):
        R.ModelShape.from_model_dir(tmp_path / "missing")
    with pytest.raises(LLSError, match="hidden_size"):
        R.ModelShape.from_config({"vocab_size": 10})


def test_available_memory_reads_memavailable(tmp_path):
    p = tmp_path / "meminfo"
    p.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2000000 kB\n")
    assert R.available_memory(p) == 2_000_000 * 1024
    p.write_text("MemTotal: 5 kB\n")
    assert R.available_memory(p) is None
    assert R.available_memory(tmp_path / "none") is None


def test_training_estimate_grows_with_batch_and_length_and_checkpointing_bounds_it():
    shape = R.ModelShape.from_config(SMOL)
    base = R.training_bytes(shape, batch_size=8, max_length=320)
    assert R.training_bytes(shape, batch_size=16, max_length=320) > base
    assert R.training_bytes(shape, batch_size=8, max_length=640) > base
    assert R.training_bytes(shape, batch_size=8, max_length=320, lora_r=8) < base
    gc = R.training_bytes(shape, batch_size=8, max_length=320, gradient_checkpointing=True)
    assert gc < base / 3  # activations dominate without checkpointing
    assert gc > R.RUNTIME_BYTES + shape.weight_bytes
    # the activations are linear in the tokens: doubling the batch adds the same again
    more = R.training_bytes(shape, batch_size=16, max_length=320)
    half = R.training_bytes(shape, batch_size=4, max_length=320)
    assert abs((more - base) - 2 * (base - half)) < 1024


def test_scoring_estimate_grows_with_batch_tokens_and_model_size():
    shape = R.ModelShape.from_config(SMOL)
    assert R.scoring_bytes(shape, batch_tokens=4096) > R.scoring_bytes(shape, batch_tokens=1024)
    big = R.ModelShape.from_config({**SMOL, "hidden_size": 960, "num_hidden_layers": 32,
                                    "intermediate_size": 2560, "num_attention_heads": 15,
                                    "num_key_value_heads": 5})
    assert R.scoring_bytes(big) > R.scoring_bytes(shape)
    assert R.scoring_bytes(shape) > shape.weight_bytes


def test_check_memory_says_when_a_job_cannot_fit(monkeypatch):
    need = 3 * R.GB
    ok = R.check_memory(need, 8 * R.GB, what="Training")
    expected, available, fits, message = ok
    assert (expected, available, fits) == (need, 8 * R.GB, True)
    assert "3.0 GB" in message and "8.0 GB" in message
    no = R.check_memory(need, 2 * R.GB, what="Training")
    assert not no.ok and "only 2.0 GB" in no.message and "batch size" in no.message
    # the headroom counts: exactly the expected bytes available is not enough
    assert not R.check_memory(need, need).ok
    # free memory unknown on this system: the job may start, and the message says why
    monkeypatch.setattr(R, "available_memory", lambda: None)
    unknown = R.check_memory(need, None)
    assert unknown.ok is True and unknown.available_bytes is None
    assert "unknown" in unknown.message


def test_check_training_and_scoring_use_the_recipe():
    from lls.training.config import TrainConfig

    shape = R.ModelShape.from_config(SMOL)
    # the check estimates the plan the recipe will run: within its budget, on this machine
    cfg = TrainConfig(memory_budget_gb=64, activation_checkpointing="off")
    plain = R.check_training(shape, cfg, available_bytes=128 * R.GB)
    assert plain.ok and plain.expected_bytes == R.training_bytes(shape)
    cfg.activation_checkpointing = "on"
    assert R.check_training(shape, cfg, available_bytes=128 * R.GB).expected_bytes < \
        plain.expected_bytes
    auto = R.check_training(shape, TrainConfig(), available_bytes=128 * R.GB)
    assert auto.ok and auto.expected_bytes <= R.DEFAULT_BUDGET_BYTES
    assert "micro-batches of" in auto.message
    tight = R.check_training(shape, TrainConfig(memory_budget_gb=8), available_bytes=R.GB)
    assert not tight.ok and tight.message.startswith("Training (")
    assert "memory budget" in tight.message
    s = R.check_scoring(shape, 1024, available_bytes=R.GB // 2)
    assert not s.ok and s.message.startswith("Scoring needs")


def test_plan_keeps_the_batch_and_recomputes_only_when_one_pair_would_not_fit():
    shape = R.ModelShape.from_config(SMOL)

    def need(m, ck=False):
        return R.training_bytes(shape, batch_size=m, max_length=320, gradient_checkpointing=ck)

    def plan(budget, **kw):
        return R.plan_training(shape, batch_size=8, max_length=320, budget_bytes=budget, **kw)

    roomy = plan(need(8))
    assert (roomy.micro_batch, roomy.grad_accum, roomy.checkpointing) == (8, 1, False)
    # the largest divisor of the batch that fits, gradients accumulated to 8 pairs a step
    mid = plan(need(4) + 1)
    assert (mid.micro_batch, mid.grad_accum, mid.checkpointing, mid.fits) == (4, 2, False, True)
    assert plan(need(2)).micro_batch == 2 and plan(need(1)).micro_batch == 1
    # checkpointing only when even one pair at a time would not fit without it
    assert need(8, ck=True) < need(1)
    low = plan(need(1) - 1)
    assert low.checkpointing and low.micro_batch == 8 and low.fits
    none = plan(R.RUNTIME_BYTES)
    assert not none.fits and none.micro_batch == 1 and none.checkpointing
    assert "over the budget" in none.describe()
    # forced either way, or a fixed micro-batch; accumulation keeps batch x grad_accum pairs
    assert plan(need(8), checkpointing="on").checkpointing
    assert not plan(need(1) - 1, checkpointing="off").checkpointing
    fixed = R.plan_training(shape, batch_size=8, grad_accum=3, micro_batch=2,
                            budget_bytes=64 * R.GB)
    assert (fixed.micro_batch, fixed.grad_accum) == (2, 12)
    with pytest.raises(LLSError, match="divide"):
        R.plan_training(shape, batch_size=8, micro_batch=3)
    # the worst micro-batch is padded to the longest sequence, not to max_length
    short = R.plan_training(shape, batch_size=8, seq_len=100, budget_bytes=need(8))
    assert short.seq_len == 100 and short.expected_bytes < need(8)
    text = mid.describe()
    assert "8 pairs per step as 2 micro-batches of 4" in text and "no activation" in text


def test_default_budget_is_4_gb_or_three_quarters_of_what_is_free():
    assert R.memory_budget(available_bytes=64 * R.GB) == R.DEFAULT_BUDGET_BYTES == 4 * R.GB
    small = R.memory_budget(available_bytes=2 * R.GB)
    assert small == int(0.75 * (2 * R.GB - R.HEADROOM_BYTES))
    assert R.memory_budget(6.5, available_bytes=R.GB) == int(6.5 * R.GB)  # the user's word
    with pytest.raises(LLSError, match="positive"):
        R.memory_budget(0)


def test_bound_malloc_sets_glibc_thresholds():
    import platform

    # mallopt returns 1 on success; other C libraries have no mallopt (False, no error)
    assert R.bound_malloc() is (platform.libc_ver()[0] == "glibc")


def test_gguf_metadata_gives_the_same_shape_as_the_model_config(session_cache):
    """The bundled GGUF's metadata (read without loading weights) describes the model as its
    de-quantised config.json does, so a first-time user gets an estimate before any load."""
    from lls.models.load import ModelSpec, _gguf_config, bundled_gguf_path, load_model
    from lls.jobs.resources import ModelShape, check_training_job, model_shape

    meta = ModelShape.from_config(_gguf_config(bundled_gguf_path()))
    load_model(ModelSpec())  # materialises the de-quantised copy with its config.json
    assert model_shape(ModelSpec()) == meta
    assert meta.n_layers == 30 and meta.hidden == 576 and meta.vocab == 49152
    assert abs(meta.n_params - 134_515_008) < 1e6
    from lls.training.config import TrainConfig

    check = check_training_job(ModelSpec(), TrainConfig())
    assert check.expected_bytes > meta.n_params * 4 and "GB" in check.message


def test_unknown_model_shape_is_said_not_guessed(tmp_path):
    from lls.models.load import ModelSpec
    from lls.jobs.resources import check_scoring_job

    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")  # a directory model without config.json
    check = check_scoring_job(ModelSpec(str(d)))
    assert check.ok and check.expected_bytes == 0 and "unknown" in check.message
