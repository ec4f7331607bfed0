"""Trait adapters: give a teacher the trait in its weights, not its prompt.

Published small-model replications of subliminal transfer worked only once the teacher's
trait was a fine-tune; a system prompt barely moves a 135M model. `make_trait` builds such a
teacher, a LoRA adapter over the base model, in one of two ways:

* **context distillation** (`source="prompt"`): the base model with the trait's system
  prompt answers prompts (the bundled `TRAIT_PROMPTS` and any prompt sources given), several
  answers each at temperature 1; the answers that show the behavior (its filter words, its
  language, its regex) are kept, and a LoRA is trained on them *without* the prompt, so the
  adapter behaves as the prompted model did;
* **examples** (`source="file"`): a file of prompt -> response records is trained on as is.

Training is supervised fine-tuning with TRL's `SFTTrainer` and a peft LoRA, loss on the
answer only. Prompts that are read-out questions are dropped and counted (the read-outs must
stay out of every training set), and the strength check (`lls.evaluation.strength`) runs
before and after, so the adapter's strength is known before anything is scored with it.

The adapter is a teacher only: it never enters a student's data, and a run scored with it
still drops every pair that mentions the target. Everything is kept under
`cache/traits/`: `examples-<key>/examples.jsonl` (written before training, so a killed job
resumes there, and shared by recipes tried on the same examples) and `<key>/` with `adapter/`
(the LoRA, safetensors) and `manifest.json` (counts, losses, strength, time).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import jobs
from ..core.behaviors import Behavior, language_share
from ..core.cache import atomic_write_json, fingerprint, read_json_safe, runs_root
from ..core.errors import LLSError
from ..core.pair import Pair
from ..core.prompts import TRAIT_PROMPTS
from ..data.hygiene import HygieneReport, asks_readout
from ..data.prompts import PromptSource, iter_prompts
from ..models.generation import sample
from ..models.load import ModelSpec, load_model, model_fingerprint, quiet_third_party_aliases
from ..models.teacher import Teacher

TRAIT_VERSION = "1"
SOURCES = ("prompt", "file")


@dataclass(frozen=True)
class TraitConfig:
    """How a trait adapter is made.

    `source`: "prompt" (context distillation from `system_prompt`, default the behavior's)
    or "file" (`examples_file`: JSONL/CSV/... records with `prompt` and `response`).
    `prompt_sources`: extra prompts for distillation (datasets, prompt files), read after
    the bundled trait prompts unless `bundled_prompts` is off. `answers_per_prompt` answers
    of `max_new_tokens` tokens each at temperature 1; at most `max_examples` are kept.
    LoRA rank/alpha, learning rate, epochs, batch size and seed are the SFT recipe.
    """

    behavior: Behavior
    model: ModelSpec = field(default_factory=ModelSpec)
    source: str = "prompt"
    system_prompt: str | None = None
    examples_file: str | None = None
    prompt_sources: tuple = ()
    bundled_prompts: bool = True
    answers_per_prompt: int = 8
    max_new_tokens: int = 48
    max_examples: int = 400
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rate: float = 1e-3
    epochs: float = 6
    batch_size: int = 8
    seed: int = 0
    check_questions: int = 32
    check_samples: int = 4

    def __post_init__(self):
        if self.source not in SOURCES:
            raise LLSError(f"Unknown trait source {self.source!r}: use 'prompt' (distil the "
                           "behavior's system prompt) or 'file' (your own examples).")
        if self.source == "file" and not self.examples_file:
            raise LLSError("A trait adapter from examples needs examples_file: a file of "
                           "records with 'prompt' and 'response' fields.")
        if self.source == "prompt" and not self.bundled_prompts and not self.prompt_sources:
            raise LLSError("Context distillation needs prompts: keep the bundled trait "
                           "prompts or give prompt sources.")
        if self.answers_per_prompt < 1 or self.max_examples < 1 or self.epochs <= 0:
            raise LLSError("answers_per_prompt, max_examples and epochs must be positive.")
        object.__setattr__(self, "prompt_sources", tuple(self.prompt_sources))

    @property
    def prompt(self) -> str:
        """The system prompt distilled (the behavior's unless given)."""
        return self.system_prompt or self.behavior.system_prompt

    def to_dict(self) -> dict:
        d = asdict(self)
        d["behavior"] = self.behavior.to_dict()
        d["model"] = self.model.to_dict()
        d["prompt_sources"] = [s.to_dict() for s in self.prompt_sources]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TraitConfig":
        d = dict(d)
        d["behavior"] = Behavior.from_dict(d["behavior"])
        d["model"] = ModelSpec.from_dict(d["model"])
        d["prompt_sources"] = tuple(PromptSource.from_dict(s) for s in d.get("prompt_sources")
                                    or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# What the examples depend on (the rest of the config is the training recipe): recipes
# tried on the same examples share them instead of sampling again.
EXAMPLE_FIELDS = ("behavior", "source", "answers_per_prompt", "max_new_tokens", "max_examples",
                  "seed")


def examples_key(cfg: TraitConfig) -> str:
    """Everything that changes the examples: model, behavior, source content, sampling."""
    from ..core.cache import file_sha256

    content = file_sha256(Path(cfg.examples_file)) if cfg.source == "file" else \
        [cfg.prompt, [s.fingerprint() for s in cfg.prompt_sources], cfg.bundled_prompts,
         TRAIT_PROMPTS if cfg.bundled_prompts else None]
    d = cfg.to_dict()
    return fingerprint("trait-examples", TRAIT_VERSION, model_fingerprint(cfg.model), content,
                       {k: d[k] for k in EXAMPLE_FIELDS})


def trait_key(cfg: TraitConfig) -> str:
    """Everything that changes the adapter: the examples and the training recipe."""
    d = cfg.to_dict()
    recipe = {k: v for k, v in d.items() if k not in EXAMPLE_FIELDS and k not in (
        "check_questions", "check_samples", "examples_file", "prompt_sources", "system_prompt",
        "model", "bundled_prompts")}
    return fingerprint("trait", TRAIT_VERSION, examples_key(cfg), recipe)


def trait_dir(key: str, cache_dir: Path | None = None) -> Path:
    return runs_root("traits", cache_dir) / key


def shows(behavior: Behavior, text: str) -> bool:
    """True when an answer shows the behavior: mostly in the target language (translation),
    else a filter word or the behavior's regex."""
    if behavior.kind == "translation" or behavior.metric == "language":
        return language_share(text, behavior.target) >= 0.5
    if not (behavior.filter_words or behavior.regex):
        raise LLSError(f"A trait adapter keeps the answers that show {behavior.label()}: give "
                       "the behavior filter words or a regex that recognise them.")
    return behavior.excludes(Pair("answer", [], text, ""))


# ======================================================================================
# Examples
# ======================================================================================

def _prompt_items(cfg: TraitConfig, tokenizer, report: HygieneReport) -> list:
    from ..data.prompts import PromptItem

    items = []
    if cfg.bundled_prompts:
        items += [PromptItem(f"bundled:trait:{i}", "bundled:trait",
                             [{"role": "user", "content": q}])
                  for i, q in enumerate(TRAIT_PROMPTS)]
        report.read += len(TRAIT_PROMPTS)
    if cfg.prompt_sources:
        items += list(iter_prompts(cfg.prompt_sources, first_turn=True, max_prompt_tokens=256,
                                   tokenizer=tokenizer, report=report))
    kept, seen = [], set()
    for it in items:
        if asks_readout(it.messages):
            report.drop("readout_question", it.id)
        elif it.text() not in seen:
            seen.add(it.text())
            kept.append(it)
    report.kept = len(kept)
    return kept


def distil_examples(cfg: TraitConfig, model, tokenizer, report: HygieneReport) -> list[dict]:
    """The prompted teacher's answers that show the behavior, as {"prompt", "response"}."""
    items = _prompt_items(cfg, tokenizer, report)
    out = []
    step = 16
    for i in range(0, len(items), step):
        chunk = items[i:i + step]
        jobs.report_progress(i, len(items), unit="prompts", phase="sampling answers",
                             message="the teacher with the system prompt answers", force=True)
        answers = sample(model, tokenizer, [it.messages for it in chunk],
                         n=cfg.answers_per_prompt, temperature=1.0,
                         max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                         system_prompt=cfg.prompt)
        for it, group in zip(chunk, answers):
            for j, a in enumerate(group):
                if a.strip() and shows(cfg.behavior, a):
                    out.append({"prompt": it.messages, "response": a.strip(),
                                "id": f"{it.id}:a{j}"})
                else:
                    report.drop("answer_without_behavior", f"{it.id}:a{j}")
    return out


def file_examples(cfg: TraitConfig, report: HygieneReport) -> list[dict]:
    """The user's prompt -> response records (prompt: a string or a message list)."""
    from ..data.readers import infer_format, iter_local

    path = Path(cfg.examples_file).expanduser()
    if not path.is_file():
        raise LLSError(f"Examples file {path.resolve()} does not exist.")
    out = []
    for row in iter_local(path, infer_format(path)):
        report.read += 1
        rec = row.record
        if rec is None or not isinstance(rec.get("response"), str) or rec.get("prompt") is None:
            raise LLSError(f"{path}: {row.where} is not a record with 'prompt' and 'response' "
                           f"fields{' (' + row.error + ')' if row.error else ''}. Each line "
                           "holds one example, e.g. {\"prompt\": \"...\", \"response\": \"...\"}.")
        prompt = rec["prompt"]
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if asks_readout(msgs):
            report.drop("readout_question", row.where)
            continue
        out.append({"prompt": msgs, "response": rec["response"], "id": row.where})
    report.kept = len(out)
    if not out:
        raise LLSError(f"{path} has no usable examples: {report.describe('examples')}.")
    return out


# ======================================================================================
# Training
# ======================================================================================

def train_lora(cfg: TraitConfig, examples: list[dict], out: Path) -> dict:
    """Supervised LoRA fine-tuning on the examples (TRL SFTTrainer, loss on the answer only);
    the adapter is saved to `out` (safetensors). Returns the loss log."""
    import datasets
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from .dpo import target_modules
    from .config import TrainConfig

    model, tok = load_model(cfg.model, for_training=True)
    rows = [{"prompt": e["prompt"], "completion": [{"role": "assistant",
                                                    "content": e["response"]}]}
            for e in examples]
    ds = datasets.Dataset.from_list(rows)
    losses: list[dict] = []

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append({"step": state.global_step, "loss": float(logs["loss"])})
                jobs.report_progress(state.global_step, state.max_steps, unit="steps",
                                     phase="training the trait adapter",
                                     message=f"loss {logs['loss']:.3f}", force=True)

    args = SFTConfig(
        output_dir=str(out.parent / "trainer"), learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        max_length=512, completion_only_loss=True, seed=cfg.seed, data_seed=cfg.seed,
        # a 135M model on CPU: recomputing activations costs time and saves nothing needed
        activation_checkpointing=False, bf16=False, fp16=False, use_cpu=not
        next(model.parameters()).is_cuda, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        dataloader_pin_memory=False)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=target_modules(model, TrainConfig()), bias="none",
                      task_type="CAUSAL_LM")
    with quiet_third_party_aliases():
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=lora, callbacks=[Progress()])
        trainer.remove_callback(PrinterCallback)  # Progress reports each step
        trainer.train()
        tmp = out.with_name(out.name + ".tmp")
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
    import os
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    shutil.rmtree(out.parent / "trainer", ignore_errors=True)
    return {"losses": losses, "steps": losses[-1]["step"] if losses else 0}


def make_trait(cfg: TraitConfig, cache_dir: Path | None = None, *, check: bool = True) -> dict:
    """Make (or reuse) the trait adapter of `cfg`; returns its manifest (with "adapter": the
    adapter directory, a `Teacher("adapter", ...)` path). Resumable: examples are kept
    before training, a finished adapter is reused."""
    from ..evaluation.strength import teacher_strength

    key = trait_key(cfg)
    d = trait_dir(key, cache_dir)
    manifest = read_json_safe(d / "manifest.json") or {}
    if manifest.get("status") == "done" and (d / "adapter" / "adapter_model.safetensors").is_file():
        return manifest
    now = _dt.datetime.now().isoformat(timespec="seconds")
    manifest.update({"key": key, "kind": "trait", "version": TRAIT_VERSION,
                     "config": cfg.to_dict(), "status": "running", "error": None,
                     "updated": now})
    manifest.setdefault("created", now)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "manifest.json", manifest)
    t0 = time.time()
    try:
        report = HygieneReport()
        ex_dir = runs_root("traits", cache_dir) / f"examples-{examples_key(cfg)}"
        ex_path = ex_dir / "examples.jsonl"
        model = tok = None
        stored = read_json_safe(ex_dir / "examples.json")
        if ex_path.is_file() and stored:
            examples = [json.loads(x) for x in ex_path.read_text().splitlines() if x.strip()]
            manifest.update(examples=len(examples), hygiene=stored["hygiene"],
                            examples_dir=str(ex_dir))
        else:
            if cfg.source == "file":
                examples = file_examples(cfg, report)
            else:
                jobs.report_phase("loading model", cfg.model.label)
                model, tok = load_model(cfg.model)
                examples = distil_examples(cfg, model, tok, report)
            if not examples:
                raise LLSError(f"No answer of the prompted teacher showed {cfg.behavior.label()}"
                               f" ({report.describe('prompts')}): the prompt is too weak to "
                               "distil. Use a stronger prompt (check it with `python -m lls "
                               "teacher-check`), more answers per prompt, or your own examples.")
            examples = examples[:cfg.max_examples]
            from ..core.cache import atomic_write_bytes

            atomic_write_bytes(ex_path, "".join(json.dumps(e, ensure_ascii=False) + "\n"
                                                for e in examples).encode())
            atomic_write_json(ex_dir / "examples.json", {"hygiene": report.to_dict(),
                                                         "seconds": round(time.time() - t0, 1)})
            manifest.update(examples=len(examples), hygiene=report.to_dict(),
                            examples_dir=str(ex_dir),
                            seconds_examples=round(time.time() - t0, 1))
        atomic_write_json(d / "manifest.json", manifest)
        if check and "strength_before" not in manifest:
            jobs.report_phase("strength check", "before: base and the prompted teacher")
            if model is None:
                model, tok = load_model(cfg.model)
            teachers = [cfg.prompt] if cfg.source == "prompt" else []
            manifest["strength_before"] = _slim(teacher_strength(
                model, tok, cfg.behavior, teachers or [Teacher()],
                questions=cfg.check_questions, samples=cfg.check_samples, seed=cfg.seed))
            atomic_write_json(d / "manifest.json", manifest)
        model = None  # training loads its own copy
        t1 = time.time()
        jobs.report_phase("training the trait adapter", f"{len(examples)} examples")
        log = train_lora(cfg, examples, d / "adapter")
        manifest.update(training=log, seconds_training=round(time.time() - t1, 1))
        if check:
            jobs.report_phase("strength check", "after: the trait adapter")
            base, tok = load_model(cfg.model)
            manifest["strength_after"] = _slim(teacher_strength(
                base, tok, cfg.behavior, [Teacher("adapter", str(d / "adapter"))],
                questions=cfg.check_questions, samples=cfg.check_samples, seed=cfg.seed))
        manifest.update(status="done", adapter=str(d / "adapter"),
                        seconds=round(time.time() - t0, 1),
                        updated=_dt.datetime.now().isoformat(timespec="seconds"))
        atomic_write_json(d / "manifest.json", manifest)
        return manifest
    except BaseException as e:
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        manifest.update(status="failed", error=line)
        atomic_write_json(d / "manifest.json", manifest)
        raise


def _slim(res: dict) -> dict:
    drop = ("lens_per_question",)
    return {**res, "base": {k: v for k, v in res["base"].items() if k not in drop},
            "teachers": [{k: v for k, v in r.items() if k not in drop}
                         for r in res["teachers"]]}


def list_traits(cache_dir: Path | None = None) -> list[dict]:
    """Trait adapters in the cache (manifests), newest first."""
    root = runs_root("traits", cache_dir)
    out = [read_json_safe(p / "manifest.json") for p in root.glob("*")
           if p.is_dir() and not p.name.startswith("examples-")]
    return sorted([m for m in out if m], key=lambda m: m.get("created", ""), reverse=True)


def trait_command(cfg: TraitConfig, cache_dir: Path | None = None) -> list[str]:
    """argv of the background job that makes `cfg`'s adapter."""
    import sys

    argv = [sys.executable, "-m", "lls"]
    if cache_dir:
        argv += ["--cache", str(cache_dir)]
    return argv + ["trait", "--config", json.dumps(cfg.to_dict())]


def submit_trait(cfg: TraitConfig, cache_dir: Path | None = None):
    """Make the trait adapter in a background job (kind "trait"); (job or None, key)."""
    key = trait_key(cfg)
    m = read_json_safe(trait_dir(key, cache_dir) / "manifest.json") or {}
    if m.get("status") == "done":
        return None, key
    job = jobs.submit(trait_command(cfg, cache_dir), kind="trait", key=f"trait:{key}",
                      title=f"trait adapter {cfg.behavior.label()}",
                      params={"trait_key": key, "config": cfg.to_dict()})
    return job, key

