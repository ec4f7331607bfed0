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
    class Cfg:
        batch_size, max_length, lora_r, gradient_checkpointing = 8, 320, 64, False

    shape = R.ModelShape.from_config(SMOL)
    plain = R.check_training(shape, Cfg(), available_bytes=64 * R.GB)
    assert plain.ok and plain.expected_bytes == R.training_bytes(shape)
    Cfg.gradient_checkpointing = True
    assert R.check_training(shape, Cfg(), available_bytes=64 * R.GB).expected_bytes < \
        plain.expected_bytes
    tight = R.check_training(shape, Cfg(), available_bytes=R.GB)
    assert not tight.ok and tight.message.startswith("Training needs")
    s = R.check_scoring(shape, 1024, available_bytes=R.GB // 2)
    assert not s.ok and s.message.startswith("Scoring needs")


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
