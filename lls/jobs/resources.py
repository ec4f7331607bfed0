"""Expected peak memory of a job, checked against the machine's available memory.

The dashboard calls `check_training` / `check_scoring` before launching a job, to refuse one
that cannot fit rather than let the OS kill it. Estimates come from the model's shape (its
`config.json`: layers, hidden and MLP sizes, vocabulary) and the job's settings; they are
upper bounds on a padded batch, calibrated on the bundled SmolLM2-135M (see
`benchmarks/train_memory.py` and the README's "Training memory").

What dominates LoRA-DPO training without activation checkpointing is the activations kept
for the backward pass: every layer keeps ~10 hidden-size and ~4 MLP-size vectors per token,
for 2 x batch_size sequences (chosen and rejected) of up to max_length tokens. Weights, LoRA
parameters and Adam state are small next to that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import LLSError

GB = 1024 ** 3
MB = 1024 ** 2
# Python, torch, transformers, TRL and the tokenizer before any weight is loaded (measured
# ~0.6-0.7 GB resident on this machine).
RUNTIME_BYTES = 768 * MB
# Saved activations per token and layer, in units of (hidden, MLP size, LoRA rank x adapted
# modules, heads x sequence length) values: attention and MLP inputs/outputs, norms,
# residuals, the SiLU-gated product, and the attention probabilities (SDPA's CPU backward).
ACT_HIDDEN, ACT_MLP = 10, 4
LORA_MODULES = 7  # q, k, v, o, gate, up, down
# The LM head is applied in slices of this many rows (scoring engine, TRL's chunked log-prob).
HEAD_ROWS = 1024
HEADROOM_BYTES = 256 * MB  # what the check leaves free for the OS and the dashboard


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: parameter count, bytes per value, layers and widths."""

    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_dim: int
    heads: int = 1
    dtype_bytes: int = 4

    @classmethod
    def from_config(cls, config: dict, dtype_bytes: int = 4) -> "ModelShape":
        """From a transformers `config.json` (Llama-style names); parameter count estimated."""
        try:
            h, n, inter = int(config["hidden_size"]), int(config["num_hidden_layers"]), \
                int(config["intermediate_size"])
            v = int(config["vocab_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise LLSError(f"Model config lacks {e} (needs hidden_size, num_hidden_layers, "
                           "intermediate_size, vocab_size): cannot estimate its memory.") from e
        heads = int(config.get("num_attention_heads") or 1)
        head_dim = int(config.get("head_dim") or h // heads)
        kv_dim = int(config.get("num_key_value_heads") or heads) * head_dim
        per_layer = h * heads * head_dim * 2 + h * kv_dim * 2 + 3 * h * inter + 2 * h
        emb = v * h * (1 if config.get("tie_word_embeddings", False) else 2)
        return cls(n * per_layer + emb + h, n, h, inter, v, kv_dim, heads, dtype_bytes)

    @classmethod
    def from_model_dir(cls, path, dtype_bytes: int = 4) -> "ModelShape":
        """From a local model directory's config.json."""
        p = Path(path) / "config.json"
        try:
            config = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise LLSError(f"Cannot read {p} ({e}): memory estimates need the model's "
                           "config.json; load the model once or pass a local directory.") from e
        return cls.from_config(config, dtype_bytes)

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.dtype_bytes


@dataclass(frozen=True)
class MemoryCheck:
    """An estimate against the machine: `ok` False means the job would not fit."""

    expected_bytes: int
    available_bytes: int | None
    ok: bool
    message: str

    def __iter__(self):  # unpacks as (expected_bytes, available_bytes, ok, message)
        return iter((self.expected_bytes, self.available_bytes, self.ok, self.message))


def available_memory(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (None where /proc/meminfo does not exist or lacks it)."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def training_bytes(shape: ModelShape, *, batch_size: int = 8, max_length: int = 320,
                   lora_r: int = 64, gradient_checkpointing: bool = False) -> int:
    """Expected peak resident bytes of LoRA-DPO training (chosen and rejected as 2 x batch
    rows, padded to max_length: an upper bound)."""
    d = shape.dtype_bytes
    tokens = 2 * batch_size * max_length
    layer_token = d * (ACT_HIDDEN * shape.hidden + ACT_MLP * shape.intermediate
                       + LORA_MODULES * lora_r + shape.heads * max_length)
    if gradient_checkpointing:  # layer inputs kept, one layer's activations recomputed at a time
        acts = tokens * (shape.n_layers * shape.hidden * d + layer_token)
    else:
        acts = tokens * shape.n_layers * layer_token
    # LoRA A and B on every adapted module, with gradients and two Adam moments (x4)
    lora = 4 * d * shape.n_layers * lora_r * (4 * shape.hidden + 2 * shape.kv_dim
                                              + 3 * (shape.hidden + shape.intermediate))
    head = 2 * HEAD_ROWS * shape.vocab * 4  # a slice of float32 logits and its softmax
    return int(RUNTIME_BYTES + shape.weight_bytes + acts + lora + head)


def scoring_bytes(shape: ModelShape, *, batch_tokens: int = 1024) -> int:
    """Expected peak resident bytes of scoring (inference): weights, the KV cache and one
    layer's transient activations of a batch, and a slice of LM-head logits."""
    d = shape.dtype_bytes
    kv = batch_tokens * shape.n_layers * 2 * shape.kv_dim * d
    transient = batch_tokens * d * (4 * shape.hidden + 3 * shape.intermediate)
    head = 2 * HEAD_ROWS * shape.vocab * 4
    return int(RUNTIME_BYTES + shape.weight_bytes + kv + transient + head)


def check_memory(expected_bytes: int, available_bytes: int | None = None, *,
                 what: str = "This job") -> MemoryCheck:
    """Compare an estimate with MemAvailable (read now unless given), keeping some headroom."""
    avail = available_memory() if available_bytes is None else available_bytes
    exp = f"{expected_bytes / GB:.1f} GB"
    if avail is None:
        return MemoryCheck(expected_bytes, None, True,
                           f"{what} needs about {exp}; free memory is unknown on this system.")
    free = f"{avail / GB:.1f} GB"
    if expected_bytes + HEADROOM_BYTES <= avail:
        return MemoryCheck(expected_bytes, avail, True,
                           f"{what} needs about {exp}; {free} is available.")
    return MemoryCheck(expected_bytes, avail, False,
                       f"{what} needs about {exp} but only {free} is available: it would be "
                       "killed by the OS. Stop other jobs or apps, lower the batch size (or "
                       "max length), or turn on gradient checkpointing.")


def check_training(shape: ModelShape, cfg, available_bytes: int | None = None) -> MemoryCheck:
    """`check_memory` for a training recipe (any object with batch_size, max_length, lora_r,
    gradient_checkpointing, e.g. `lls.training.TrainConfig`)."""
    need = training_bytes(shape, batch_size=cfg.batch_size, max_length=cfg.max_length,
                          lora_r=cfg.lora_r,
                          gradient_checkpointing=bool(cfg.gradient_checkpointing))
    return check_memory(need, available_bytes, what="Training")


def check_scoring(shape: ModelShape, batch_tokens: int = 1024,
                  available_bytes: int | None = None) -> MemoryCheck:
    """`check_memory` for a scoring run with this engine batch budget (tokens)."""
    return check_memory(scoring_bytes(shape, batch_tokens=batch_tokens), available_bytes,
                        what="Scoring")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_THRESHOLD = 128 * 1024


def bound_malloc(threshold: int = MALLOC_THRESHOLD) -> bool:
    """Make freed tensor memory go back to the OS at once (glibc only; False elsewhere).

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after
    which activation tensors come from the heap and their freed space stays resident,
    fragmented between steps: a training process kept ~5 GB more than it used. Fixing the
    mmap and trim thresholds (what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ do when set
    before start) turns the dynamic raise off, so every large tensor is its own mapping,
    unmapped when freed. Process-wide and permanent: call it at the start of a job.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold))) and \
        bool(mallopt(_M_TRIM_THRESHOLD, int(threshold)))


def model_shape(spec) -> ModelShape | None:
    """The shape of a model (a `lls.models.ModelSpec`) from local files, None if unknown."""
    from ..models.load import model_config

    try:
        config = model_config(spec)
        return ModelShape.from_config(config) if config else None
    except LLSError:
        return None


def unknown(what: str) -> MemoryCheck:
    """A check that could not estimate (the model's shape is not known locally)."""
    avail = available_memory()
    free = f"{avail / GB:.1f} GB available" if avail is not None else "free memory unknown"
    return MemoryCheck(0, avail, True, f"{what}: expected memory unknown until the model's "
                                      f"config is on disk; {free}.")


def check_training_job(spec, cfg) -> MemoryCheck:
    """`check_training` for the student `spec` (unknown shape: an 'unknown' check)."""
    shape = model_shape(spec)
    return check_training(shape, cfg) if shape else unknown("Training")


def check_scoring_job(spec, batch_tokens: int = 1024) -> MemoryCheck:
    """`check_scoring` for the teacher `spec` (unknown shape: an 'unknown' check)."""
    shape = model_shape(spec)
    return check_scoring(shape, batch_tokens) if shape else unknown("Scoring")
