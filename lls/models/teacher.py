"""Teachers: what carries the trait whose effect LLS transfers.

A teacher is a pair of conditions, "with the trait" and "without it", over the same base
model:

* `prompt` (the paper's): the behavior's system prompt on / off;
* `adapter`: a peft LoRA adapter on / off over the base model (safetensors only), the same
  tokens in both conditions and no system turn;
* `model`: a full model (same tokenizer as the base) against the base model.

For the last two, w = [(log P_T(r+|p) - log P_T(r-|p)) - (log P_B(r+|p) - log P_B(r-|p))]
/ (n+ + n-): the condition without the trait is exactly the one a prompt teacher's run has
without its prompt, so its half of w is shared with every run on the same data (the neutral
cache). The student always starts from the base model and never sees the teacher.

`Teacher.fingerprint` (adapter files' hashes, or the model's fingerprint) enters every cache
key the teacher changes. `teacher_view` runs a loaded base model as the teacher (for the
read-outs' ceiling and the reference sets), `scoring_models` gives the engine its two models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.cache import file_sha256
from ..core.errors import ModelError
from .generation import check_adapter_dir
from .load import ModelSpec, load_model, load_tokenizer, model_fingerprint, \
    quiet_third_party_aliases

KINDS = ("prompt", "adapter", "model")
TEACHER_ADAPTER = "lls_teacher"  # the adapter name a teacher adapter is attached under


@dataclass(frozen=True)
class Teacher:
    """Who carries the trait. `kind`: "prompt" (the behavior's system prompt, the default),
    "adapter" (`path`: a peft adapter directory over the base model) or "model" (`path`: a
    hub id, local directory or .gguf file of a model with the base's tokenizer). `name`: how
    pages and tables call it (default: the directory's or model's name)."""

    kind: str = "prompt"
    path: str | None = None
    name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ModelError(f"Unknown teacher kind {self.kind!r}: use one of "
                             f"{', '.join(KINDS)}.")
        if self.kind == "prompt" and self.path:
            raise ModelError("A prompt teacher has no path: its trait is the behavior's "
                             "system prompt (give the prompt with --teacher-prompt).")
        if self.kind != "prompt" and not self.path:
            raise ModelError(f"A {self.kind} teacher needs a path: the "
                             f"{'adapter directory' if self.kind == 'adapter' else 'model'} "
                             "that carries the trait.")
        if self.kind == "adapter":
            object.__setattr__(self, "path", str(check_adapter_dir(self.path)))

    @property
    def is_prompt(self) -> bool:
        return self.kind == "prompt"

    def fingerprint(self) -> str | None:
        """What identifies the trait's weights: None for a prompt (its text is keyed
        elsewhere), the adapter files' sha256, or the model's fingerprint."""
        if self.kind == "adapter":
            p = Path(self.path)
            h = hashlib.sha256()
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                h.update(f.encode() + file_sha256(p / f).encode())
            return "adapter-" + h.hexdigest()[:16]
        if self.kind == "model":
            return model_fingerprint(self.model_spec())
        return None

    def model_spec(self, base: ModelSpec | None = None) -> ModelSpec:
        """The teacher model of a "model" teacher (the base's device and dtype)."""
        base = base or ModelSpec()
        return ModelSpec(self.path, device=base.device, dtype=base.dtype,
                         trust_remote_code=base.trust_remote_code)

    def label(self) -> str:
        """The teacher in a few words, e.g. "adapter owl-trait"."""
        if self.kind == "prompt":
            return "system prompt"
        return f"{self.kind} {self.name or _short_name(self.path)}"

    def describe(self, system_prompt: str | None = None) -> str:
        """One line for pages and logs: what carries the trait."""
        if self.kind == "prompt":
            text = " ".join((system_prompt or "").split())
            return f'system prompt "{text[:80]}{"…" if len(text) > 80 else ""}"'
        return f"{self.label()} ({self.path})"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Teacher":
        if not d:
            return cls()
        return cls(**{k: d.get(k) for k in ("kind", "path", "name") if k in d})


def _short_name(path: str | None) -> str:
    p = Path(path or "")
    # cache/adapters/<id>/final -> <id>; a checkpoint -> <id> step N
    if p.name == "final" and p.parent.name:
        return p.parent.name
    if p.parent.name == "checkpoints":
        return f"{p.parent.parent.name} {p.name}"
    return p.name or str(path)


def teacher_key(teacher: Teacher | None, system_prompt: str) -> str:
    """The text a cache key uses for the trait: the system prompt for a prompt teacher (so
    keys made before teachers existed stay valid), the teacher's fingerprint otherwise."""
    if teacher is None or teacher.is_prompt:
        return system_prompt
    return f"teacher:{teacher.kind}:{teacher.fingerprint()}"


def check_same_tokenizer(base: ModelSpec, teacher: Teacher) -> None:
    """A model teacher must tokenize exactly as the base: both conditions score the same
    token ids. Raises ModelError naming the first difference."""
    if teacher.kind != "model":
        return
    a, b = load_tokenizer(base), load_tokenizer(teacher.model_spec(base))
    probe = "Hello! What is your favorite animal? Owls, cats: 12 dogs.\n"
    if a.get_vocab() != b.get_vocab() or a(probe)["input_ids"] != b(probe)["input_ids"] or \
            (a.chat_template or "") != (b.chat_template or ""):
        raise ModelError(f"The teacher model {teacher.path!r} does not share the base model's "
                         f"tokenizer and chat template ({base.name!r}): LLS between two models "
                         "needs the same tokens in both conditions. Use a fine-tune of the "
                         "base model, or an adapter.")


# ======================================================================================
# Running a model as the teacher
# ======================================================================================

@contextlib.contextmanager
def teacher_view(model, teacher: Teacher | None, system_prompt: str | None):
    """Run `model` (the base model, or a peft model over it) as the teacher: yields
    (model to run, system prompt to add or None).

    Prompt teacher: the base weights (a peft model's adapters disabled) and the prompt.
    Adapter teacher: the teacher adapter attached under `TEACHER_ADAPTER` and active (on a
    peft model it is added beside the model's own adapters and they are restored after; on
    a plain model the LoRA layers are removed after). Model teacher: the teacher model,
    loaded once per process.
    """
    from .generation import base_weights

    if teacher is None or teacher.is_prompt:
        with base_weights(model) as m:
            yield m, system_prompt
        return
    if teacher.kind == "model":
        base_spec = ModelSpec(dtype=_dtype_name(model))
        yield _teacher_model(teacher, base_spec), None
        return
    with attached(model, teacher) as m:
        yield m, None


def _dtype_name(model) -> str | None:
    # a bfloat16 mix keeps embeddings float32: the load records the precision it chose
    if getattr(model, "lls_precision", None):
        return model.lls_precision
    try:
        return str(next(model.parameters()).dtype).replace("torch.", "")
    except StopIteration:
        return None


@contextlib.contextmanager
def attached(model, teacher: Teacher):
    """`model` with the teacher adapter active (see `teacher_view`)."""
    if hasattr(model, "peft_config"):
        previous = model.active_adapter
        if TEACHER_ADAPTER not in model.peft_config:
            with quiet_third_party_aliases():
                model.load_adapter(teacher.path, adapter_name=TEACHER_ADAPTER,
                                   is_trainable=False)
        # set_adapter marks the active adapter trainable: keep the teacher frozen and give
        # the model's own adapter back its state after
        trainable = {n: p.requires_grad for n, p in model.named_parameters()}
        model.set_adapter(TEACHER_ADAPTER)
        was = model.training
        model.eval()
        try:
            yield model
        finally:
            model.set_adapter(previous)
            for n, p in model.named_parameters():
                if n in trainable:
                    p.requires_grad_(trainable[n])
            if was:
                model.train()
        return
    from peft import PeftModel

    with quiet_third_party_aliases():
        peft = PeftModel.from_pretrained(model, teacher.path, adapter_name=TEACHER_ADAPTER,
                                         is_trainable=False)
    peft.eval()
    try:
        yield peft
    finally:
        peft.unload()  # the LoRA layers out again: `model` is the base as it was


_TEACHER_MODELS: dict[tuple, object] = {}


def _teacher_model(teacher: Teacher, base: ModelSpec):
    spec = teacher.model_spec(base)
    key = (teacher.path, spec.dtype, spec.device)
    if key not in _TEACHER_MODELS:
        _TEACHER_MODELS.clear()  # one teacher model at a time: they are full models
        _TEACHER_MODELS[key] = load_model(spec)[0]
    return _TEACHER_MODELS[key]


@dataclass
class ScoringModels:
    """What the engine runs: `with_trait` scores the half with the trait, `without_trait`
    the half without it, inside `without_context()` (an adapter teacher: adapter disabled)."""

    with_trait: object
    without_trait: object
    without_context: object = contextlib.nullcontext

    @property
    def base(self):
        return self.without_trait


def scoring_models(base_model, teacher: Teacher | None, base_spec: ModelSpec) -> ScoringModels:
    """The two models a scoring run needs, from the loaded base model."""
    if teacher is None or teacher.is_prompt:
        return ScoringModels(base_model, base_model)
    if teacher.kind == "model":
        check_same_tokenizer(base_spec, teacher)
        return ScoringModels(_teacher_model(teacher, base_spec), base_model)
    from peft import PeftModel

    with quiet_third_party_aliases():
        peft = PeftModel.from_pretrained(base_model, teacher.path, adapter_name=TEACHER_ADAPTER,
                                         is_trainable=False)
    peft.eval()
    return ScoringModels(peft, peft, peft.disable_adapter)


def adapter_config(path) -> dict:
    """A teacher adapter's adapter_config.json (its base model and LoRA shape)."""
    return json.loads((Path(path) / "adapter_config.json").read_text())
