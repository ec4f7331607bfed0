"""The behavior likelihood ratio: how much more likely a model finds responses sampled WITH
the system prompt than responses sampled without it.

K responses to held-out general prompts (`lls.core.prompts.LLR_PROMPTS`) are sampled once from the
base model with the system prompt ("behavior") and without it ("neutral") and cached (the
reference set). For any model, prompted WITHOUT the system prompt:
mean per-token log P(behavior responses) - mean per-token log P(neutral responses).
The base model gives the floor, the base model with the system prompt in its prompt gives the
ceiling; `gap_closed` is the share of that gap a model closes. The ratio is relative to one
reference set of responses from one base model.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import jobs
from ..core.behaviors import Behavior
from ..core.cache import atomic_write_json, fingerprint, read_json, runs_root
from ..core.errors import LLSError
from ..core.prompts import LLR_PROMPTS
from ..core.stats import bootstrap_diff
from ..models.decoder import seed_for
from ..models.generation import as_messages, base_weights, sample
from ..models.render import with_system
from ..models.teacher import Teacher, teacher_key, teacher_view
from ..scoring.engine import eval_mode, score_replies

METER_VERSION = "2"  # bump when read-out numbers of the same inputs would change (2: batched decoder)


@dataclass(frozen=True)
class LLRConfig:
    """The reference set: `k` responses per condition over `prompts` (k is rounded up to a
    multiple of the number of prompts), sampled at `temperature` with `max_new_tokens`."""

    prompts: tuple[str, ...] = tuple(LLR_PROMPTS)
    k: int = 64
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "prompts", tuple(p.strip() for p in self.prompts if p.strip()))
        if not self.prompts:
            raise LLSError("The likelihood-ratio read-out needs at least one prompt.")
        if self.k < 1 or self.max_new_tokens < 1:
            raise LLSError("k and max_new_tokens must be at least 1.")

    @property
    def per_prompt(self) -> int:
        return math.ceil(self.k / len(self.prompts))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompts"] = list(self.prompts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LLRConfig":
        d = dict(d)
        d["prompts"] = tuple(d.get("prompts") or LLR_PROMPTS)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Reference:
    """Sampled reference responses: `behavior` (base + system prompt) and `neutral` (base),
    each a list of {"prompt_index", "text"}."""

    key: str | None
    system_prompt: str
    config: LLRConfig
    behavior: list[dict]
    neutral: list[dict]
    path: str | None = None

    def to_dict(self) -> dict:
        return {"version": METER_VERSION, "key": self.key, "system_prompt": self.system_prompt,
                "config": self.config.to_dict(), "behavior": self.behavior,
                "neutral": self.neutral}

    @classmethod
    def from_dict(cls, d: dict, path: str | None = None) -> "Reference":
        return cls(d.get("key"), d["system_prompt"], LLRConfig.from_dict(d["config"]),
                   d["behavior"], d["neutral"], path)


def _model_fp(model) -> str | None:
    fp = getattr(model, "lls_fingerprint", None)
    if fp is None and hasattr(model, "get_base_model"):
        fp = getattr(model.get_base_model(), "lls_fingerprint", None)
    return fp


def reference_key(model_fp: str, system_prompt: str, cfg: LLRConfig) -> str:
    """Cache key of a reference set: base model, system prompt and sampling settings."""
    return fingerprint("meter-reference", METER_VERSION, model_fp, system_prompt,
                       list(cfg.prompts), cfg.k, cfg.seed, cfg.max_new_tokens, cfg.temperature)


def build_reference(model, tokenizer, behavior: Behavior, llr: LLRConfig | None = None, *,
                    model_fp: str | None = None, cache_dir: Path | None = None,
                    teacher: Teacher | None = None) -> Reference:
    """Sample (or load from `<cache>/meter/<key>/reference.json`) the reference responses.

    Samples from the base weights (a peft model's adapters are disabled), the behavior's
    responses from the teacher (`teacher`: base + system prompt by default, or a teacher
    whose trait is in its weights, `lls.models.teacher`). Cached only when the model's
    fingerprint is known (`load_model` sets it; else pass `model_fp`).
    """
    cfg = llr or LLRConfig()
    fp = model_fp or _model_fp(model)
    key = reference_key(fp, teacher_key(teacher, behavior.system_prompt), cfg) if fp else None
    path = runs_root("meter", cache_dir) / key / "reference.json" if key else None
    if path is not None:
        d = read_json(path)
        if d and d.get("key") == key:
            return Reference.from_dict(d, str(path))
    n = 2 * len(cfg.prompts) * cfg.per_prompt
    jobs.report_progress(0, n, unit="answers", phase="meter reference set", force=True,
                         message="both conditions decoded together")
    texts = reference_texts(model, tokenizer, behavior.system_prompt, cfg, teacher=teacher)
    jobs.report_progress(n, n, unit="answers", phase="meter reference set", force=True)
    ref = Reference(key, behavior.system_prompt, cfg, texts["behavior"], texts["neutral"],
                    str(path) if path else None)
    if path is not None:
        d = ref.to_dict()
        d["created"] = _dt.datetime.now().isoformat(timespec="seconds")
        atomic_write_json(path, d)
    return ref


def reference_texts(model, tokenizer, system_prompt: str, cfg: LLRConfig,
                    teacher: Teacher | None = None) -> dict:
    """The reference responses, sampled from the base weights: {"behavior": [...], "neutral":
    [...]}, each a list of {"prompt_index", "text"}. Both conditions are decoded together
    (a teacher whose trait is in its weights: one after the other); prompt i draws from the
    same seed in both (`seed_for(cfg.seed, i)`)."""
    msgs = [as_messages(p) for p in cfg.prompts]
    seeds = [seed_for(cfg.seed, i) for i in range(len(msgs))]
    kw = dict(n=cfg.per_prompt, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    with eval_mode(model):
        if teacher is None or teacher.is_prompt:
            with base_weights(model) as base:
                answers = sample(base, tokenizer,
                                 [with_system(m, system_prompt) for m in msgs] + msgs,
                                 seeds=seeds + seeds, **kw)
        else:
            with teacher_view(model, teacher, system_prompt) as (tm, _):
                answers = sample(tm, tokenizer, msgs, seeds=seeds, **kw)
            with base_weights(model) as base:
                answers += sample(base, tokenizer, msgs, seeds=seeds, **kw)
    half = len(msgs)
    return {cond: [{"prompt_index": i, "text": t} for i, group in enumerate(part)
                   for t in group]
            for cond, part in (("behavior", answers[:half]), ("neutral", answers[half:]))}


def per_token_logprobs(model, tokenizer, reference: Reference, responses: list[dict], *,
                       system_prompt: str | None = None, batch_tokens: int = 2048) -> np.ndarray:
    """Per-token log P of each response (summed log-prob / its tokens incl. end-of-turn)."""
    by_prompt: dict[int, list[int]] = {}
    for n, r in enumerate(responses):
        by_prompt.setdefault(int(r["prompt_index"]), []).append(n)
    items, order = [], []
    for pi, idx in by_prompt.items():
        msgs = as_messages(reference.config.prompts[pi])
        items.append((with_system(msgs, system_prompt) if system_prompt else msgs,
                      [responses[n]["text"] for n in idx]))
        order.append(idx)
    lp, lens = score_replies(model, tokenizer, items, batch_tokens=batch_tokens)
    out = np.empty(len(responses))
    for idx, vals, ls in zip(order, lp, lens):
        for n, v, L in zip(idx, vals, ls):
            out[n] = v / max(L, 1)
    return out


def llr_readout(model, tokenizer, reference: Reference, *, system_prompt: str | None = None,
                base: dict | None = None) -> dict:
    """Mean per-token log P(behavior) - mean per-token log P(neutral), with a bootstrap CI
    over responses (the two sets resampled independently)."""
    a = per_token_logprobs(model, tokenizer, reference, reference.behavior,
                           system_prompt=system_prompt)
    b = per_token_logprobs(model, tokenizer, reference, reference.neutral,
                           system_prompt=system_prompt)
    v, lo, hi = bootstrap_diff(a, b, paired=False)
    out = {"value": v, "ci_low": lo, "ci_high": hi, "mean_behavior": float(a.mean()),
           "mean_neutral": float(b.mean()), "k_behavior": len(a), "k_neutral": len(b),
           "per_response": {"behavior": a.tolist(), "neutral": b.tolist()}}
    if base is not None:
        out["diff_vs_base"] = llr_diff(out, base)
    return out


def llr_diff(cur: dict, base: dict, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """LLR(this model) - LLR(base) with a bootstrap CI: the same responses score under both
    models, so each set is resampled once and paired within."""
    da = np.asarray(cur["per_response"]["behavior"]) - np.asarray(base["per_response"]["behavior"])
    db = np.asarray(cur["per_response"]["neutral"]) - np.asarray(base["per_response"]["neutral"])
    rng = np.random.default_rng(seed)
    boots = (da[rng.integers(0, len(da), (n_boot, len(da)))].mean(1)
             - db[rng.integers(0, len(db), (n_boot, len(db)))].mean(1))
    return {"diff": float(da.mean() - db.mean()), "ci_low": float(np.quantile(boots, 0.025)),
            "ci_high": float(np.quantile(boots, 0.975))}


def gap_closed(value: float, floor: float, ceiling: float) -> float | None:
    """(value - floor) / (ceiling - floor): 0 at the base model, 1 at base + system prompt
    (None when floor and ceiling coincide)."""
    if ceiling is None or floor is None or not math.isfinite(ceiling - floor) or \
            abs(ceiling - floor) < 1e-12:
        return None
    return float((value - floor) / (ceiling - floor))
