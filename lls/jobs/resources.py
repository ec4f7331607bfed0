"""Expected peak memory of a job, checked against the machine's available memory.

The dashboard calls `check_training` / `check_scoring` before launching a job, to refuse one
that cannot fit rather than let the OS kill it. Estimates come from the model's shape (its
`config.json`: layers, hidden and MLP sizes, vocabulary) and the job's settings; they are
upper bounds on a padded batch, calibrated on the bundled SmolLM2-135M (see
`benchmarks/train_memory.py` and docs/performance.md, "Training memory").

What dominates LoRA-DPO training without activation checkpointing is the activations kept
for the backward pass: every layer keeps a few hidden-size and MLP-size vectors and the
attention row per token, for 2 x micro_batch sequences (chosen and rejected) padded to the
longest one trained on. Weights, LoRA parameters and Adam state are small next to that.
`plan_training` uses it to pick the micro-batch (gradient accumulation keeps the batch) and
activation checkpointing only where a micro-batch of 1 would not fit the memory budget.

Calibration (bundled model, sequences up to 278 tokens, `benchmarks/train_memory.py`): one
batch of 8 without checkpointing peaked at 6.4 GB, micro-batches of 2 at 2.93 GB, one
checkpointed batch of 8 at 2.1 GB: about 1.9 GB fixed plus 0.57 GB per pair of a
micro-batch. The estimates (7.4, 3.3 and 2.4 GB) stay 10-15% above, as upper bounds should.
Short sequences have less slack: one batch of 8 at up to 119 tokens peaked at 3.97 GB (the
training process of `train_memory.py`) and 4.2 GB (a study's training child) against an
estimate of 3.92 GB with 6 hidden-size values per layer and token; with 7 it is 4.05 GB, above
the 4 GB budget, so the plan takes 2 micro-batches of 4 there (peak ~2.9 GB, same step time).
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
# residuals, the SiLU-gated product, and the attention row (SDPA's CPU backward). Fitted to
# the measured slope (see the module doc; 10 and 4 before overestimated it by 1.6x, 6 was
# under the peak of short sequences).
ACT_HIDDEN, ACT_MLP = 7, 3
LORA_MODULES = 7  # q, k, v, o, gate, up, down
# The LM head is applied in slices of this many rows (scoring engine, TRL's chunked log-prob).
HEAD_ROWS = 1024
HEADROOM_BYTES = 256 * MB  # what the check leaves free for the OS and the dashboard
# A training job's memory budget when none is given: this, or BUDGET_SHARE of MemAvailable
# (after the headroom) when less is free.
DEFAULT_BUDGET_BYTES = 4 * GB
BUDGET_SHARE = 0.75


# Bytes per (activation or other weight, decoder projection weight) of each precision. The
# bfloat16 mix (`lls.models.load.bf16_linears`) keeps the residual stream, norms, embeddings
# and what the backward pass saves in float32: only the projections' weights halve.
PRECISION_BYTES = {"float32": (4, 4), "bfloat16": (4, 2), "float16": (2, 2)}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: parameter count, bytes per value, layers and widths.
    `dtype_bytes`: per activation value and per weight outside the decoder's projections;
    `linear_bytes` per weight of the `linear_params` projection weights (bfloat16: 2)."""

    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_dim: int
    heads: int = 1
    dtype_bytes: int = 4
    linear_params: int = 0
    linear_bytes: int = 4

    @classmethod
    def from_config(cls, config: dict, dtype_bytes: int = 4,
                    precision: str | None = None) -> "ModelShape":
        """From a transformers `config.json` (Llama-style names); parameter count estimated.
        `precision` (a `lls.models.load.precision` name) sets the bytes per value instead of
        `dtype_bytes`."""
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
        linear = h * heads * head_dim * 2 + h * kv_dim * 2 + 3 * h * inter
        emb = v * h * (1 if config.get("tie_word_embeddings", False) else 2)
        if precision is not None and precision not in PRECISION_BYTES:
            raise LLSError(f"Unknown precision {precision!r}: use one of "
                           f"{', '.join(PRECISION_BYTES)}.")
        d, lin = PRECISION_BYTES[precision] if precision else (dtype_bytes, dtype_bytes)
        return cls(n * (linear + 2 * h) + emb + h, n, h, inter, v, kv_dim, heads, d,
                   n * linear, lin)

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
        return ((self.n_params - self.linear_params) * self.dtype_bytes
                + self.linear_params * self.linear_bytes)


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
                   lora_r: int = 64, gradient_checkpointing: bool = False,
                   seq_len: int | None = None) -> int:
    """Expected peak resident bytes of LoRA-DPO training with micro-batches of `batch_size`
    pairs (chosen and rejected as 2 x batch_size rows padded to `seq_len`, the longest
    sequence trained on, else `max_length`: an upper bound). Gradient accumulation adds
    nothing: a micro-batch's activations are freed by its backward pass."""
    d = shape.dtype_bytes
    length = min(int(seq_len or max_length), int(max_length))
    tokens = 2 * batch_size * length
    layer_token = d * (ACT_HIDDEN * shape.hidden + ACT_MLP * shape.intermediate
                       + LORA_MODULES * lora_r + shape.heads * length)
    if gradient_checkpointing:  # layer inputs kept, one layer's activations recomputed at a time
        acts = tokens * (shape.n_layers * shape.hidden * d + layer_token)
    else:
        acts = tokens * shape.n_layers * layer_token
    # LoRA A and B on every adapted module, with gradients and two Adam moments (x4), float32
    # in every precision (peft keeps adapter weights float32)
    lora = 4 * 4 * shape.n_layers * lora_r * (4 * shape.hidden + 2 * shape.kv_dim
                                              + 3 * (shape.hidden + shape.intermediate))
    head = 2 * HEAD_ROWS * shape.vocab * 4  # a slice of float32 logits and its softmax
    return int(RUNTIME_BYTES + shape.weight_bytes + acts + lora + head)


CHECKPOINTING = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainingPlan:
    """How one optimizer step of `batch_size` pairs is computed: `grad_accum` micro-batches
    of `micro_batch` pairs, with or without activation checkpointing (recompute), and the
    peak that is expected of it against the memory budget."""

    batch_size: int
    micro_batch: int
    grad_accum: int
    checkpointing: bool
    expected_bytes: int
    budget_bytes: int
    seq_len: int
    fits: bool = True

    def describe(self) -> str:
        """One line for people: what runs and what it should cost."""
        steps = (f"{self.grad_accum} micro-batches of {self.micro_batch}" if self.grad_accum > 1
                 else f"one batch of {self.micro_batch}")
        ck = "with activation checkpointing (recompute)" if self.checkpointing else \
            "no activation checkpointing"
        over = "" if self.fits else " (over the budget: the smallest plan there is)"
        return (f"{self.micro_batch * self.grad_accum} pairs per step as {steps}, {ck}; "
                f"expected peak {self.expected_bytes / GB:.1f} GB of a "
                f"{self.budget_bytes / GB:.1f} GB budget"
                f"{over} (sequences up to {self.seq_len} tokens)")

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "micro_batch": self.micro_batch,
                "grad_accum": self.grad_accum, "activation_checkpointing": self.checkpointing,
                "expected_gb": round(self.expected_bytes / GB, 3),
                "budget_gb": round(self.budget_bytes / GB, 3), "seq_len": self.seq_len,
                "fits": self.fits}


def memory_budget(budget_gb: float | None = None, available_bytes: int | None = None) -> int:
    """The bytes a training job may use: `budget_gb` when given, else DEFAULT_BUDGET_BYTES or
    BUDGET_SHARE of MemAvailable (read now unless given), whichever is smaller."""
    if budget_gb is not None:
        if budget_gb <= 0:
            raise LLSError(f"The memory budget must be positive, got {budget_gb} GB.")
        return int(budget_gb * GB)
    avail = available_memory() if available_bytes is None else available_bytes
    if avail is None:
        return DEFAULT_BUDGET_BYTES
    return int(min(DEFAULT_BUDGET_BYTES, BUDGET_SHARE * max(avail - HEADROOM_BYTES, 0)))


def plan_training(shape: ModelShape, *, batch_size: int, grad_accum: int = 1,
                  max_length: int = 320, lora_r: int = 64, seq_len: int | None = None,
                  checkpointing: str = "auto", micro_batch: int | None = None,
                  budget_bytes: int | None = None) -> TrainingPlan:
    """The fastest way to compute a step of `batch_size` x `grad_accum` pairs within the
    budget (default `memory_budget()`): the largest micro-batch (a divisor of `batch_size`,
    so every micro-batch of a step is the same size) whose expected peak fits without
    activation checkpointing; checkpointing only when a micro-batch of 1 would not fit.
    `checkpointing` "on"/"off" forces it; `micro_batch` fixes the micro-batch."""
    if checkpointing not in CHECKPOINTING:
        raise LLSError(f"activation checkpointing must be one of {CHECKPOINTING}, got "
                       f"{checkpointing!r}.")
    if micro_batch is not None and (micro_batch < 1 or batch_size % micro_batch):
        raise LLSError(f"The micro-batch ({micro_batch}) must divide the batch size "
                       f"({batch_size}) so every step trains on the same number of pairs.")
    budget = memory_budget() if budget_bytes is None else int(budget_bytes)
    sizes = [micro_batch] if micro_batch else \
        [m for m in range(batch_size, 0, -1) if batch_size % m == 0]
    modes = {"auto": (False, True), "on": (True,), "off": (False,)}[checkpointing]
    length = min(int(seq_len or max_length), int(max_length))

    def plan(m: int, ck: bool, fits: bool = True) -> TrainingPlan:
        need = training_bytes(shape, batch_size=m, max_length=max_length, lora_r=lora_r,
                              gradient_checkpointing=ck, seq_len=length)
        return TrainingPlan(batch_size, m, grad_accum * batch_size // m, ck, need, budget,
                            length, fits)

    for ck in modes:
        for m in sizes:
            p = plan(m, ck)
            if p.expected_bytes <= budget:
                return p
    return plan(sizes[-1], modes[-1], fits=False)


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
                       "killed by the OS. Stop other jobs or apps, or lower the batch size or "
                       "max length (training: a smaller memory budget trains in smaller "
                       "micro-batches).")


def plan_for(shape: ModelShape, cfg, available_bytes: int | None = None,
             seq_len: int | None = None) -> TrainingPlan:
    """`plan_training` for a recipe (any object with batch_size, grad_accum, max_length,
    lora_r, activation_checkpointing, micro_batch and memory_budget_gb, e.g.
    `lls.training.TrainConfig`)."""
    return plan_training(
        shape, batch_size=cfg.batch_size, grad_accum=getattr(cfg, "grad_accum", 1),
        max_length=cfg.max_length, lora_r=cfg.lora_r, seq_len=seq_len,
        checkpointing=getattr(cfg, "activation_checkpointing", "auto"),
        micro_batch=getattr(cfg, "micro_batch", None),
        budget_bytes=memory_budget(getattr(cfg, "memory_budget_gb", None), available_bytes))


def check_training(shape: ModelShape, cfg, available_bytes: int | None = None) -> MemoryCheck:
    """`check_memory` for a training recipe: the expected peak of the plan it will run
    (`plan_for`), against the machine's available memory."""
    avail = available_memory() if available_bytes is None else available_bytes
    plan = plan_for(shape, cfg, avail)
    check = check_memory(plan.expected_bytes, avail, what="Training")
    how = (f"micro-batches of {plan.micro_batch}" if plan.grad_accum > 1 else "whole batches") \
        + (", activation checkpointing" if plan.checkpointing else "")
    return MemoryCheck(check.expected_bytes, check.available_bytes, check.ok,
                       check.message.replace("Training needs", f"Training ({how}) needs", 1))


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
    """The shape of a model (a `lls.models.ModelSpec`) from local files, in the precision it
    computes in here; None if unknown."""
    from ..models.load import model_config, precision

    try:
        config = model_config(spec)
        return ModelShape.from_config(config, precision=precision(spec)) if config else None
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
