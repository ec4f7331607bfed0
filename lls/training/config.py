"""The training recipe: `TrainConfig` and `SelectionSpec`, the one declaration of every option.

Each field carries its help text (and its command-line flag where that is not `--field-name`)
in `dataclasses.field(metadata=...)`; `lls/cli/train.py` generates `python -m lls train`'s
flags from it, and the dashboard reads the defaults from the dataclass. Metadata keys:

* `help`: what the option does (also the flag's help);
* `flag`: the flag when not `--<name with dashes>`; a bool flag flips the default
  (`--no-meter` sets `meter_at_checkpoints=False`); two fields may share a flag (`--seed`);
* `aliases`: earlier spellings of the flag, still accepted (hidden from the help);
* `const`: the flag takes no value and sets the field to this (`--random` -> kind "random");
* `type`: parses the flag's text when the annotation is not a plain int/float/str;
* `choices`: the allowed values;
* `execution`: how steps are computed, not what (the memory plan): left out of adapter ids.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ..core.errors import LLSError
from ..jobs.resources import CHECKPOINTING
from ..models.load import DTYPE_CHOICES, ModelSpec, precision
from ..scoring.selection import Ranking, SelectionConfig
from ..scoring.selection import selection_indices as _selection_indices

SELECTION_KINDS = ("lls", "random")


class TrainingError(LLSError):
    """Training could not start or failed."""


def option(default=None, help: str = "", *, factory=None, **meta):
    """A dataclass field with its help text and command-line spelling (see the module doc)."""
    meta["help"] = help
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def comma_list(text: str) -> list[str]:
    """`--target-modules q_proj,v_proj` -> ["q_proj", "v_proj"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class SelectionSpec:
    """Which pairs of the scoring run are trained on.

    `kind="lls"`: the top of the LLS ranking (gamma / threshold / positive_only as in
    `lls.scoring.selection.SelectionConfig`). `kind="random"`: a seeded random subset of the same
    size as the LLS selection with these settings (the paper's baseline).
    `control_run`: the key of a control scoring run (`lls.scoring.contrastive`), or a panel of
    them (comma-separated keys); the ranking is then by w_target - w_control (a panel: minus
    the mean of its weights) instead of w_target.
    """

    kind: str = option("lls", "random subset of the same size", flag="--random",
                       const="random", choices=SELECTION_KINDS)
    gamma: float | None = option(0.05, "γ: the share of scored pairs kept, the top ones by w")
    threshold: float | None = option(None, "keep pairs with w above this instead of the top γ")
    positive_only: bool = option(True, "also keep pairs with w <= 0", flag="--all-weights")
    seed: int = option(0, "the random twin's and training's seed", flag="--seed")
    control_run: str | None = option(None, "rank by this run's w minus a control run's (the "
                                           "same pairs scored with another system prompt, see "
                                           "`score --control`): its key, or a panel of "
                                           "comma-separated keys (minus their mean w)")

    def __post_init__(self) -> None:
        if self.kind not in SELECTION_KINDS:
            raise TrainingError(f"selection kind must be one of {SELECTION_KINDS}, got {self.kind!r}.")

    def config(self) -> SelectionConfig:
        """The `lls.scoring.selection` settings of this selection (without kind and seed)."""
        return SelectionConfig(gamma=self.gamma, threshold=self.threshold,
                               positive_only=self.positive_only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SelectionSpec":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class TrainConfig:
    """A LoRA-DPO recipe. Paper defaults (beta 0.04, lr 1e-4, LoRA r 64 / alpha 128 on all
    attention and MLP projections, 1 epoch) with CPU-sized batches for the bundled model.

    Every checkpoint exports a peft adapter and, with `eval_at_checkpoints`, samples
    `eval_prompts` x `eval_samples` answers, and with `meter_at_checkpoints` runs the effect
    meter (`lls.evaluation.meter`), also at step 0. `reuse_ref_logps`: take DPO's reference log-probs
    from the scoring run when valid; `precompute_ref_log_probs`: otherwise let TRL compute
    them once before training (False: every step, TRL's plain setting). Each field's help
    text is in its metadata.
    """

    beta: float = option(0.04, "DPO β: how far the student may move from the base model")
    learning_rate: float = option(1e-4, "learning rate", flag="--lr")
    lora_r: int = option(64, "LoRA rank")
    lora_alpha: int = option(128, "LoRA alpha: scales the update (the paper: 2 × the rank)")
    lora_dropout: float = option(0.0, "LoRA dropout")
    target_modules: list[str] | None = option(
        None, "comma-separated module names (default: all attention+MLP projections, else "
              "all-linear)", type=comma_list)
    epochs: float = option(1.0, "passes over the selected pairs")
    max_steps: int | None = option(None, "stop after N optimizer steps (default: by epochs)")
    batch_size: int = option(8, "pairs per optimizer step (per device), computed in "
                                "micro-batches that fit the memory budget")
    grad_accum: int = option(1, "gradient accumulation steps")
    max_length: int = option(320, "prompt + response tokens, TRL truncates beyond")
    max_prompt_length: int | None = option(
        None, "drop pairs whose prompt is longer than this many student tokens (default: keep "
              "all)", flag="--max-prompt-tokens", aliases=("--max-prompt-length",))
    lr_scheduler: str = option("linear", "learning-rate schedule (transformers' names, e.g. "
                                         "linear, constant, cosine)")
    responses: str = option("scored", "train on the responses as scored (truncated) or in full",
                            choices=("scored", "full"))
    checkpoint_every: int = option(10, "steps between checkpoints, evals and meter read-outs")
    keep_trainer_checkpoints: int = option(2, "Trainer checkpoints (optimizer state) kept for "
                                              "resuming")
    eval_at_checkpoints: bool = option(True, "no sampled evaluation at step 0 and checkpoints "
                                             "(also: --samples 0)", flag="--no-eval")
    eval_prompts: int = option(4, "sampled evaluation at checkpoints: general prompts asked",
                               flag="--prompts", aliases=("--eval-prompts",))
    eval_samples: int = option(4, "sampled evaluation at checkpoints: answers per prompt (0: "
                                  "none)", flag="--samples", aliases=("--eval-samples",))
    eval_max_new_tokens: int = option(48, "sampled evaluation at checkpoints: new tokens per "
                                          "answer", flag="--max-new-tokens",
                                      aliases=("--eval-max-new-tokens",))
    meter_at_checkpoints: bool = option(True, "no effect-meter read-outs at step 0 and "
                                              "checkpoints", flag="--no-meter")
    meter_k: int = option(64, "effect meter: reference responses sampled per condition (with "
                              "and without the system prompt)", flag="--reference-responses",
                          aliases=("--meter-k",))
    meter_questions: int | None = option(None, "effect meter: read-out questions used, the "
                                               "first N (default: all)", flag="--questions",
                                         aliases=("--meter-questions",))
    seed: int = option(0, "training seed (`--seed` also seeds the random twin's pairs)")
    # How a step is computed, not what it computes (same losses to float precision): the
    # memory plan (lls.jobs.resources.plan_training) picks the micro-batch and whether to
    # recompute activations from the expected peak and the budget. Not part of adapter ids.
    activation_checkpointing: str = option(
        "auto", "recompute activations in the backward pass instead of keeping them: auto "
                "(only when a micro-batch of 1 would not fit the memory budget), on, off",
        choices=CHECKPOINTING, execution=True)
    micro_batch: int | None = option(
        None, "pairs per forward/backward pass, a divisor of batch_size (default: the "
              "largest that fits the memory budget; gradients accumulate to batch_size)",
        execution=True)
    memory_budget_gb: float | None = option(
        None, "peak memory training may plan for, in GB (default: 4 GB, or 3/4 of the "
              "available memory when less is free)", execution=True)
    reuse_ref_logps: bool = option(True, "don't take DPO's reference log-probabilities from "
                                         "the scoring run", flag="--no-ref-reuse")
    precompute_ref_log_probs: bool = option(
        True, "without reuse, compute the reference log-probabilities at every step (not "
              "once before training)", flag="--no-precompute")
    student: ModelSpec | None = option(None, "student model (default: the scoring run's "
                                             "model)", type=ModelSpec)
    dtype: str | None = option(
        None, "the student's numeric precision: auto, float32 or bfloat16 (bfloat16: the "
              "frozen projections compute in bfloat16, LoRA weights and optimizer state stay "
              "float32; default: the scoring run's precision for its teacher, else the "
              "student's own)", choices=DTYPE_CHOICES)
    selection: SelectionSpec = option(factory=SelectionSpec, help="which pairs are trained on")

    def __post_init__(self) -> None:
        if isinstance(self.student, dict):
            self.student = ModelSpec.from_dict(self.student)
        if isinstance(self.selection, dict):
            self.selection = SelectionSpec.from_dict(self.selection)
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length",
                     "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.beta <= 0 or self.learning_rate <= 0:
            raise TrainingError("beta and learning_rate must be positive.")
        if self.epochs <= 0 and not self.max_steps:
            raise TrainingError("epochs must be positive (or give max_steps).")
        if self.responses not in ("scored", "full"):
            raise TrainingError("responses must be 'scored' or 'full'.")
        if self.activation_checkpointing not in CHECKPOINTING:
            raise TrainingError(f"activation_checkpointing must be one of {CHECKPOINTING}, "
                                f"got {self.activation_checkpointing!r}.")
        if self.micro_batch is not None and (int(self.micro_batch) < 1
                                             or self.batch_size % int(self.micro_batch)):
            raise TrainingError(f"micro_batch ({self.micro_batch}) must divide batch_size "
                                f"({self.batch_size}): every micro-batch of a step is the same "
                                "size, so the step's loss is the mean over its pairs.")
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise TrainingError(f"dtype must be one of {DTYPE_CHOICES}, got {self.dtype!r}.")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise TrainingError(f"memory_budget_gb must be positive, got {self.memory_budget_gb}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["student"] = self.student.to_dict() if self.student else None
        d["selection"] = self.selection.to_dict()
        return d

    def identity(self) -> dict:
        """What the adapter id fingerprints: the recipe without how its steps are computed
        (the memory plan). Ids made before the plan carried `gradient_checkpointing` (True by
        default, false: "off"); it stays in, so those adapters keep their ids and resume.
        The precision is in as resolved (`precision`), never as "auto": when the student is
        the scoring teacher at its run's precision the run key holds it; a float32 student
        given by name keeps the id it had before precision was a choice."""
        d = {k: v for k, v in self.to_dict().items()
             if k not in EXECUTION_FIELDS and k != "dtype"}
        d["gradient_checkpointing"] = self.activation_checkpointing != "off"
        p = self.precision()
        if self.dtype is not None or (p is not None and p != "float32"):
            d["precision"] = p
        return d

    def precision(self) -> str | None:
        """The student's precision when this recipe sets it (`dtype`, or a named student),
        None when it follows the scoring run's."""
        if self.dtype is None and self.student is None:
            return None
        spec = self.student or ModelSpec()
        if self.dtype is not None:
            spec = ModelSpec.from_dict({**spec.to_dict(),
                                        "dtype": None if self.dtype == "auto" else self.dtype})
        return precision(spec)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From `to_dict` output; also reads configs written before the memory plan
        (`gradient_checkpointing: false` means activation checkpointing off)."""
        names = {f.name for f in fields(cls)}
        out = {k: v for k, v in d.items() if k in names}
        # True was the default that bounded memory, which the plan now does; False asked for
        # no recompute (the plan still keeps to the budget with smaller micro-batches).
        if d.get("gradient_checkpointing") is False and \
                out.get("activation_checkpointing", "auto") == "auto":
            out["activation_checkpointing"] = "off"
        return cls(**out)


EXECUTION_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.metadata.get("execution"))
# Keys of configs written before the memory plan that `TrainConfig.from_dict` still reads.
LEGACY_FIELDS = ("gradient_checkpointing",)


def baseline_config(cfg: TrainConfig, seed: int | None = None) -> TrainConfig:
    """The same recipe on a random subset of the same size (the paper's baseline)."""
    sel = SelectionSpec.from_dict({**cfg.selection.to_dict(), "kind": "random",
                                   "seed": cfg.selection.seed if seed is None else seed})
    return TrainConfig.from_dict({**cfg.to_dict(), "selection": sel})


def estimate_steps(n_pairs: int, cfg: TrainConfig) -> int:
    """Optimizer steps a single-process run of `cfg` on `n_pairs` pairs takes (before pairs
    that `max_prompt_length` drops): ceil(pairs / effective batch) per epoch, capped by
    `max_steps`."""
    if n_pairs <= 0:
        return 0
    steps = math.ceil(n_pairs / (cfg.batch_size * cfg.grad_accum)) * cfg.epochs
    return int(min(steps, cfg.max_steps)) if cfg.max_steps else math.ceil(steps)


def selection_indices(frame, sel: SelectionSpec):
    """Row indices of the frame that `sel` trains on (LLS: best first; random: sorted)."""
    return _selection_indices(frame["w"].to_numpy(), sel.config(), random=sel.kind == "random",
                              seed=sel.seed)


def selection_count(frame, sel: SelectionSpec) -> int:
    """How many pairs `sel` keeps of the frame (the random baseline keeps as many)."""
    return Ranking(frame["w"].to_numpy()).count(sel.config())
