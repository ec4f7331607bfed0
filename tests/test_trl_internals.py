"""The private TRL names the training glue overrides or patches are still there: if TRL moves
one, this fails loudly instead of training silently without reference reuse, guarded saves
or the CPU gather path (`lls.training.trl_internals`)."""

import inspect

import pytest

from lls.core.errors import LLSError
from lls.training import trl_internals


def test_every_trl_internal_the_glue_uses_exists():
    assert trl_internals.missing() == []


def test_overridden_methods_keep_the_signatures_the_glue_calls():
    from trl import DPOTrainer

    assert list(inspect.signature(DPOTrainer._precompute_ref_logps).parameters) == [
        "self", "dataset", "name", "batch_size"]
    assert list(inspect.signature(DPOTrainer._save_checkpoint).parameters)[:3] == [
        "self", "model", "trial"]
    assert list(inspect.signature(DPOTrainer.get_batch_samples).parameters) == [
        "self", "epoch_iterator", "num_batches", "device"]
    # the micro-batch weighting reads how many micro-batches the step has
    import transformers.trainer

    assert "self.current_gradient_accumulation_steps = len(batch_samples)" in \
        inspect.getsource(transformers.trainer)


def test_cpu_gather_switch_is_patched_and_restored():
    import torch
    from trl.trainer import utils as trl_utils

    original = trl_utils._use_triton
    assert original(torch.device("cpu")) is False  # TRL's own rule: no gather on CPU
    with trl_internals.use_triton_on_cpu():
        assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton is original


def test_a_trl_without_the_overridden_methods_is_refused(monkeypatch):
    from trl import DPOTrainer

    monkeypatch.delattr(DPOTrainer, "_precompute_ref_logps")
    assert "trl.DPOTrainer._precompute_ref_logps" in trl_internals.missing()
    with pytest.raises(LLSError, match="_precompute_ref_logps.*trl_internals"):
        trl_internals.require_dpo_overrides()
