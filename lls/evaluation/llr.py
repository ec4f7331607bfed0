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
from ..core.stats import (CLUSTER_METHOD, GAP_UNDEFINED, boots_for, cluster_diff_ci,
                          cluster_diff_replicates, gap_ratio)
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
    over the reference prompts (`llr_interval`); each response's prompt is kept beside its
    value so paired differences resample prompts too."""
    a = per_token_logprobs(model, tokenizer, reference, reference.behavior,
                           system_prompt=system_prompt)
    b = per_token_logprobs(model, tokenizer, reference, reference.neutral,
                           system_prompt=system_prompt)
    units = {"behavior": a.tolist(), "neutral": b.tolist(),
             "behavior_prompt": [int(r["prompt_index"]) for r in reference.behavior],
             "neutral_prompt": [int(r["prompt_index"]) for r in reference.neutral]}
    ci = llr_interval(units)
    out = {"value": ci["diff"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
           "mean_behavior": float(a.mean()), "mean_neutral": float(b.mean()),
           "k_behavior": len(a), "k_neutral": len(b), "per_response": units}
    if base is not None:
        out["diff_vs_base"] = llr_diff(out, base)
    return out


def units(readout: dict) -> dict | None:
    """The per-response values of a likelihood-ratio read-out (its "llr" dict or the whole
    read-out) with each response's prompt: {"behavior", "neutral", "behavior_prompt",
    "neutral_prompt"} as arrays. A read-out from before prompts were recorded gets one
    cluster per response (its intervals say so, `llr_interval`). None if it has none."""
    r = (readout or {}).get("llr", readout) or {}
    pr = r.get("per_response")
    if not pr:
        return None
    b, n = np.asarray(pr["behavior"], dtype=np.float64), np.asarray(pr["neutral"], dtype=np.float64)
    bp, np_ = pr.get("behavior_prompt"), pr.get("neutral_prompt")
    known = bp is not None and np_ is not None
    return {"behavior": b, "neutral": n,
            "behavior_prompt": np.asarray(bp if known else np.arange(len(b))),
            "neutral_prompt": np.asarray(np_ if known else len(b) + np.arange(len(n))),
            "by_prompt": known}


def llr_interval(u: dict, alpha: float = 0.05) -> dict:
    """mean(behavior) - mean(neutral) of per-response units (`units`, or a difference of
    two models' units) with its interval over reference prompts (`cluster_diff_ci`)."""
    out = cluster_diff_ci(u["behavior"], u["neutral"], u["behavior_prompt"],
                          u["neutral_prompt"], alpha=alpha)
    if u.get("by_prompt") is False:
        out["method"] = OLD_METHOD
    return out


def unit_diff(a: dict, b: dict, what: str = "likelihood-ratio read-outs") -> dict:
    """a - b response by response (`units` of two models read on one reference set):
    refuses two read-outs whose responses are not the same ones."""
    for side in ("behavior", "neutral"):
        if len(a[side]) != len(b[side]) or \
                not np.array_equal(a[f"{side}_prompt"], b[f"{side}_prompt"]):
            raise LLSError(f"The two {what} hold different reference responses ({side}: "
                           f"{len(a[side])} vs {len(b[side])}): pair read-outs of one "
                           "reference set only.")
    return {"behavior": a["behavior"] - b["behavior"], "neutral": a["neutral"] - b["neutral"],
            "behavior_prompt": a["behavior_prompt"], "neutral_prompt": a["neutral_prompt"],
            "by_prompt": a.get("by_prompt", True) and b.get("by_prompt", True)}


def with_prompts(readout: dict | None, cache_dir: Path | None = None) -> dict | None:
    """A read-out (or {"base", "system"} levels) whose likelihood-ratio responses carry
    their prompts: read-outs from before prompts were recorded get them from their cached
    reference set (`<cache>/meter/<key>/reference.json`), so their intervals resample
    prompts too. Returned unchanged when it has them or the reference set is gone."""
    if not readout:
        return readout
    if "llr" not in readout and all(isinstance(v, dict) for v in readout.values()):
        return {k: with_prompts(v, cache_dir) for k, v in readout.items()}
    pr = (readout.get("llr") or {}).get("per_response")
    key = readout.get("reference")
    if not pr or "behavior_prompt" in pr or not key:
        return readout
    ref = read_json(runs_root("meter", cache_dir) / key / "reference.json")
    if not ref or ref.get("key") != key or len(ref["behavior"]) != len(pr["behavior"]) or \
            len(ref["neutral"]) != len(pr["neutral"]):
        return readout
    pr = {**pr, "behavior_prompt": [int(r["prompt_index"]) for r in ref["behavior"]],
          "neutral_prompt": [int(r["prompt_index"]) for r in ref["neutral"]]}
    return {**readout, "llr": {**readout["llr"], "per_response": pr}}


def check_same_reference(a: dict, b: dict, what: str = "the two read-outs") -> None:
    """Refuse to pair two meter read-outs unless they were read on one reference set (its
    key) by one meter version: else their per-response values are unrelated responses."""
    ka, kb = a.get("reference"), b.get("reference")
    va, vb = a.get("meter_version", "2"), b.get("meter_version", "2")
    if ka != kb or str(va) != str(vb):
        raise LLSError(f"Cannot pair {what}: they were read on different reference sets "
                       f"(reference {ka!r}, meter version {va} vs reference {kb!r}, meter "
                       f"version {vb}), so their responses are not the same ones. Read both "
                       "again with the same meter (e.g. `python -m lls meter` on both "
                       "adapters, or run the study's queue again).")


def llr_diff(cur: dict, base: dict) -> dict:
    """LLR(this model) - LLR(base) with a bootstrap CI: the same responses score under both
    models, so each response is paired with itself and prompts are resampled."""
    return llr_interval(unit_diff(units(cur), units(base)))


def gap_closed(num: dict, span: dict, alpha: float = 0.05) -> dict:
    """The one gap closed: a move on the likelihood ratio (`num`: per-response units of a
    difference, e.g. model - base, or LLS - random) as a share of the base -> base + system
    prompt span (`span`: system - base units), with its interval over reference prompts
    (each resample divided by its own span) and the one guard (`gap_ratio`: undefined when
    the span's interval includes 0)."""
    kw = dict(n_boot=boots_for(alpha))
    nr = cluster_diff_replicates(num["behavior"], num["neutral"], num["behavior_prompt"],
                                 num["neutral_prompt"], **kw)
    sr = cluster_diff_replicates(span["behavior"], span["neutral"], span["behavior_prompt"],
                                 span["neutral_prompt"], **kw)
    point = lambda u: float(u["behavior"].mean() - u["neutral"].mean())  # noqa: E731
    out = gap_ratio(point(num), point(span), nr, sr, alpha)
    out["method"] = GAP_METHOD if num.get("by_prompt", True) else OLD_METHOD
    return out


def model_gap_closed(model: dict, base: dict, system: dict) -> dict:
    """A model's own gap closed (`gap_closed` of model - base over system - base) from three
    read-outs on one reference set."""
    m, b, s = units(model), units(base), units(system)
    return gap_closed(unit_diff(m, b), unit_diff(s, b))


def gap_text(g: dict | None, pct: bool = True) -> str:
    """A gap closed in words: '+35% [+12%, +60%]', or the undefined text (never a
    percentage of a span the system prompt barely opened)."""
    if not g:
        return ""
    if g.get("diff") is None:
        return GAP_UNDEFINED if g.get("undefined") else ""
    f = (lambda v: f"{100 * v:+.0f}%") if pct else (lambda v: f"{v:+.3f}")
    lo, hi = g.get("ci_low"), g.get("ci_high")
    return f(g["diff"]) + (f" [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None else "")


CLUSTER_NOTE = "bootstrap over reference prompts"
GAP_METHOD = (CLUSTER_METHOD + "; each resample divided by its own base -> system prompt "
              "span, undefined when the span's interval includes 0")
OLD_METHOD = ("bootstrap over reference responses (this read-out predates the prompt "
              "record, so answers to one prompt are resampled as if independent: too narrow)")
