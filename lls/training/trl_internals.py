"""The private TRL and transformers names the training glue relies on, kept in one place.

TRL 1.x exposes no public hook for these, so `lls.training.dpo` overrides or patches them:

- `DPOTrainer._precompute_ref_logps(dataset, name, batch_size)`: overridden to take DPO's
  reference log-probs from the scoring run instead of recomputing them;
- `Trainer._save_checkpoint(model, trial)`: overridden to guard a checkpoint save against a
  cancel arriving mid-write;
- `Trainer.get_batch_samples(epoch_iterator, num_batches, device)` and the
  `current_gradient_accumulation_steps` it sets: read to weight micro-batches by their pairs
  (an uneven last step of gradient accumulation is then the mean over its pairs);
- `Trainer._get_train_sampler(train_dataset)`: overridden to sort each step's pairs by length
  (`lls.training.sampler`) so micro-batches carry less padding;
- `trl.trainer.utils._use_triton(device)`: patched so the fused LM head gathers completion
  positions on CPU too (a pure speed-up; without it training is slower, never wrong).

`missing()` lists the ones the installed TRL no longer has; `tests/test_trl_internals.py` fails
loudly on it, and `require_dpo_overrides()` refuses to train with a message instead of silently
running a trainer whose overrides are never called.
"""

from __future__ import annotations

import contextlib

from ..core.errors import LLSError

DPO_OVERRIDES = ("_precompute_ref_logps", "_save_checkpoint", "get_batch_samples",
                 "_get_train_sampler")
USE_TRITON = "_use_triton"


def _trl_utils():
    from trl.trainer import utils as trl_utils
    return trl_utils


def missing() -> list[str]:
    """The internals above that the installed TRL does not have (empty when all are there)."""
    from trl import DPOTrainer

    gone = [f"trl.DPOTrainer.{name}" for name in DPO_OVERRIDES if not hasattr(DPOTrainer, name)]
    if not callable(getattr(_trl_utils(), USE_TRITON, None)):
        gone.append(f"trl.trainer.utils.{USE_TRITON}")
    return gone


def require_dpo_overrides() -> None:
    """Raise when DPOTrainer lost a method `lls.training.dpo` overrides (the override would be dead)."""
    from trl import DPOTrainer, __version__

    gone = [name for name in DPO_OVERRIDES if not hasattr(DPOTrainer, name)]
    if gone:
        raise LLSError(f"TRL {__version__}'s DPOTrainer has no {', '.join(gone)}: LLS Studio's training "
                       "glue overrides them (reference log-prob reuse, guarded checkpoint saves). "
                       "Install a TRL version from requirements.txt, or update "
                       "lls/training/trl_internals.py and lls/training/dpo.py for this one.")


@contextlib.contextmanager
def use_triton_on_cpu():
    """Make TRL's fused LM head take its gather path on CPU (see `lls.training.dpo`); a no-op
    if TRL moved the switch."""
    try:
        trl_utils = _trl_utils()
        original = getattr(trl_utils, USE_TRITON)
    except (ImportError, AttributeError):
        yield
        return
    setattr(trl_utils, USE_TRITON, lambda device: device.type == "cpu" or original(device))
    try:
        yield
    finally:
        setattr(trl_utils, USE_TRITON, original)
