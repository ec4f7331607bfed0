"""What an evaluation is: the evaluated models (base, base + system prompt, adapters and
checkpoints, random baselines), the sampling settings, the judge and the effect-meter add-on;
its cache key (`eval_key`) and the meter settings its read-outs depend on (`meter_settings`).
The running and the results are in `lls.evaluation`."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ..core.behaviors import Behavior
from ..core.cache import file_sha256, fingerprint
from ..core.errors import LLSError
from ..core.prompts import GENERAL_PROMPTS
from ..models.generation import adapter_label, check_adapter_dir
from ..models.load import ModelSpec, model_fingerprint
from ..models.teacher import Teacher, teacher_key
from .judge import JudgeConfig
from .llr import METER_VERSION

EVAL_VERSION = "2"  # bump when answers or scores of the same config would change (2: batched decoder)


MODEL_KINDS = ("base", "system", "adapter", "random")


@dataclass(frozen=True)
class EvalModel:
    """One evaluated model: base, base + system prompt, an adapter (or checkpoint), or the
    random-baseline adapter. `adapter_id`/`step` place checkpoints on a trajectory."""

    kind: str
    label: str = ""
    path: str | None = None
    adapter_id: str | None = None
    step: int | None = None

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise LLSError(f"Unknown eval model kind {self.kind!r}: use one of {MODEL_KINDS}.")
        if self.kind in ("adapter", "random") and not self.path:
            raise LLSError(f"An {self.kind} model needs the path of its adapter directory.")
        if not self.label:
            lab = {"base": "base", "system": "base + system prompt"}.get(self.kind)
            object.__setattr__(self, "label", lab or adapter_label(self.path))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalModel":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def fingerprint(self) -> str:
        """Changes when this model's answers would: kind + adapter weights (file hashes)."""
        parts = [self.kind]
        if self.path:
            p = check_adapter_dir(self.path)
            parts += [file_sha256(p / "adapter_model.safetensors")[:16],
                      file_sha256(p / "adapter_config.json")[:16]]
        return fingerprint(*parts)

    @property
    def slug(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9]+", "-", self.label).strip("-")[:40] or self.kind
        return f"{safe}-{self.fingerprint()[:8]}"


def default_models() -> list[EvalModel]:
    return [EvalModel("base"), EvalModel("system")]


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation depends on (the paper's defaults)."""

    behavior: Behavior
    prompts: tuple[str, ...] = tuple(GENERAL_PROMPTS)
    samples: int = 100
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    seed: int = 0
    model: ModelSpec = field(default_factory=ModelSpec)
    models: tuple[EvalModel, ...] = field(default_factory=lambda: tuple(default_models()))
    judge: JudgeConfig | None = None  # used when behavior.metric == "judge"
    batch_rows: int = 100  # sample rows decoded together: speed only, not part of the key
    # The effect meter after sampling (not part of the key: it never changes the answers).
    meter: bool = True
    meter_k: int = 64  # reference responses per condition (lls.evaluation.llr.LLRConfig.k)
    meter_questions: int | None = None  # first N probe questions (None: all)
    meter_max_new_tokens: int = 48  # length of the reference responses
    meter_prefill: int = 10  # prefilled read-out: answers per probe question (0: off)
    # What the "system" row is: base + system prompt (None), or a teacher whose trait is in
    # its weights (`lls.models.teacher`)
    teacher: Teacher | None = None

    def __post_init__(self):
        if self.teacher is not None and self.teacher.is_prompt:
            object.__setattr__(self, "teacher", None)
        object.__setattr__(self, "prompts", tuple(p.strip() for p in self.prompts if p.strip()))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.prompts:
            raise LLSError("The evaluation needs at least one prompt.")
        if self.samples < 1 or self.max_new_tokens < 1:
            raise LLSError("samples and max_new_tokens must be at least 1.")
        if not self.models:
            raise LLSError("Pick at least one model to evaluate (base, base + system prompt, "
                           "an adapter ...).")
        if self.behavior.metric == "judge" and self.judge is None:
            object.__setattr__(self, "judge", JudgeConfig())
        if self.meter_prefill < 0:
            raise LLSError("meter_prefill (prefilled answers per question) must be 0 (off) or "
                           "more.")
        if self.meter_k < 1 or self.meter_max_new_tokens < 1 or \
                (self.meter_questions is not None and self.meter_questions < 1):
            raise LLSError("meter_k, meter_questions and meter_max_new_tokens must be at least 1.")

    def to_dict(self) -> dict:
        return {"behavior": self.behavior.to_dict(), "prompts": list(self.prompts),
                "samples": self.samples, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "model": self.model.to_dict(), "models": [m.to_dict() for m in self.models],
                "judge": self.judge.to_dict() if self.judge else None,
                "batch_rows": self.batch_rows, "meter": self.meter, "meter_k": self.meter_k,
                "meter_questions": self.meter_questions,
                "meter_max_new_tokens": self.meter_max_new_tokens,
                "meter_prefill": self.meter_prefill,
                "teacher": self.teacher.to_dict() if self.teacher is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalConfig":
        return cls(behavior=Behavior.from_dict(d["behavior"]),
                   prompts=tuple(d.get("prompts") or GENERAL_PROMPTS),
                   samples=int(d.get("samples", 100)),
                   temperature=float(d.get("temperature", 1.0)),
                   top_p=float(d.get("top_p", 1.0)),
                   max_new_tokens=int(d.get("max_new_tokens", 96)), seed=int(d.get("seed", 0)),
                   model=ModelSpec.from_dict(d.get("model", {})),
                   models=tuple(EvalModel.from_dict(m) for m in d.get("models") or
                                [m.to_dict() for m in default_models()]),
                   judge=JudgeConfig.from_dict(d["judge"]) if d.get("judge") else None,
                   batch_rows=int(d.get("batch_rows", 100)), meter=bool(d.get("meter", True)),
                   meter_k=int(d.get("meter_k", 64)),
                   meter_questions=(int(d["meter_questions"]) if d.get("meter_questions")
                                    else None),
                   meter_max_new_tokens=int(d.get("meter_max_new_tokens", 48)),
                   meter_prefill=int(d.get("meter_prefill", 10)),
                   teacher=Teacher.from_dict(d["teacher"]) if d.get("teacher") else None)

    def settings_key(self) -> list:
        """What every model's answers depend on (besides the model itself); not the meter."""
        b = self.behavior
        key = [EVAL_VERSION, model_fingerprint(self.model), b.to_dict(), list(self.prompts),
               self.samples, self.temperature, self.top_p, self.max_new_tokens, self.seed,
               self.judge.to_dict() if self.judge and b.metric == "judge" else None]
        if self.teacher is not None:  # only then: evaluations of prompt teachers keep keys
            key.append(teacher_key(self.teacher, b.system_prompt))
        return key


def eval_key(cfg: EvalConfig) -> str:
    """Cache key: fingerprint of base model, adapters (file hashes), prompts and settings."""
    return fingerprint(*cfg.settings_key(), [m.fingerprint() for m in cfg.models])


def meter_settings(cfg: EvalConfig) -> dict | None:
    """What the meter read-outs of an evaluation depend on besides its key (None: no meter)."""
    if not cfg.meter:
        return None
    return {"version": METER_VERSION, "k": cfg.meter_k, "questions": cfg.meter_questions,
            "max_new_tokens": cfg.meter_max_new_tokens, "seed": cfg.seed,
            "labels": [m.label for m in cfg.models], "prefill": cfg.meter_prefill}


def prompts_per_call(cfg: EvalConfig) -> int:
    """Prompts sampled per decoder call: enough rows to keep `batch_rows` rows decoding
    through the tails of finishing rows (2 x batch_rows), at most 32 prompts. A killed run
    loses at most one call's prompts."""
    return max(1, min(32, -(-2 * max(1, cfg.batch_rows) // max(1, cfg.samples))))
