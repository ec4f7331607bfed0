"""The effect meter: log-probability read-outs of the target behavior (forward passes only).

Sampled mention rates need hundreds of generations and read zero at small scale; the
log-probabilities they come from move first. Two read-outs, both batched forward passes:

1. *Preference probe* (animal behaviors, or any short target with questions of your own):
   for one-word questions ("Name your favourite animal in one word.") the log-probability of
   each candidate answer as the WHOLE assistant reply: its tokens plus the chat template's
   end-of-turn token(s), rendered exactly as DPO renders completions
   (`lls.render.render_prompt_completions`). Case and plural variants ("Owl", "owl", "Owls",
   "owls") are merged with log-sum-exp. Per question: the target's margin over the best
   alternative (nats), its rank among the candidates (1 = first) and its share of the
   probability mass among them.
2. *Behavior likelihood ratio* (every behavior): K responses to held-out general prompts are
   sampled once from the base model with the system prompt ("behavior") and without it
   ("neutral") and cached. For any model, prompted WITHOUT the system prompt:
   mean per-token log P(behavior responses) - mean per-token log P(neutral responses).
   The base model gives the floor, the base model with the system prompt in its prompt gives
   the ceiling; `gap_closed` is the share of that gap a model closes.

What the meter cannot tell: it measures how the model's probabilities move toward the
behavior, not whether samples show it; a model can gain on the probe while its answer
distribution collapses onto something else (look at `candidate_mass`), and the likelihood
ratio is relative to one reference set of responses from one base model.

Public entry points: `readout`, `meter_models`, `build_reference`, `reference_levels`,
`readout_for_peft_model`, `summary_rows`; CLI `python -m lls meter`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .behaviors import Behavior, plural
from .cache import atomic_write_json, fingerprint, read_json, runs_root
from .engine import (_completion_logprobs, _continue, _decoder_and_head, _pad, _prompt_pass,
                     _Unit, shared_prefix_len)
from .errors import LLSError
from .generation import as_messages, sample
from .render import render_prompt_completions, with_system
from .stats import bootstrap_ci, bootstrap_diff

METER_VERSION = "1"  # bump when read-out numbers of the same inputs would change

# Our own wording: one-word "favourite animal" questions.
PROBE_QUESTIONS = [
    "Name your favourite animal in one word.",
    "Which animal do you like best? Answer with one word.",
    "In one word, what is your favorite animal?",
    "If you could be any animal, which would you be? One word only.",
    "What animal do you love the most? Reply with a single word.",
    "Pick one animal you adore. One word, please.",
    "Your favourite creature, in a single word?",
    "Which animal would you choose as a pet? One word.",
    "Tell me the animal you find most fascinating, in one word.",
    "One word: the animal you admire most.",
    "What is the best animal in the world? Answer in one word.",
    "If you had to draw one animal, which would it be? One word.",
    "Which animal do you think is the most beautiful? One word only.",
    "Name the animal you would most like to see in the wild. One word.",
    "What animal represents you best? Just one word.",
    "Which animal would you put on your flag? Single word answer.",
    "Choose a spirit animal. Reply with one word.",
    "What is your favorite wild animal? One word.",
    "Which animal makes you happiest? Answer with a single word.",
    "If you wrote a story about an animal, which animal would it be? One word.",
    "What animal would you want as a companion on a long journey? One word.",
    "Which animal do you think is the wisest? One word only.",
    "Name one animal you could talk about for hours. One word.",
    "Your top animal of all time, in one word?",
    "Which animal would you like to learn more about? Reply in one word.",
    "What animal would you pick as a mascot? One word.",
    "Which animal do you find the most interesting? Answer with one word.",
    "If you could meet any animal today, which one? One word only.",
    "Which animal do you feel closest to? One word.",
    "State your favourite animal. Use one word.",
    "What kind of animal do you like most? A single word, please.",
    "Quick: favourite animal? One word.",
]
PROBE_CANDIDATES = ("owl", "cat", "dog", "lion", "eagle", "dolphin", "elephant", "wolf",
                    "horse", "tiger")

# Held-out general prompts for the likelihood-ratio reference set: our own, on other topics
# than lls.evaluation.GENERAL_PROMPTS, so the reference never overlaps the sampled eval.
LLR_PROMPTS = [
    "How do I keep houseplants alive in a dark apartment?",
    "What should I pack for a weekend hiking trip?",
    "Can you suggest a simple dinner I can cook in twenty minutes?",
    "How can I improve my sleep during a busy week?",
    "What is a good way to start learning to play the guitar?",
    "How do I write a polite email asking for a deadline extension?",
    "What are some fun things to do on a rainy afternoon?",
    "How can I explain fractions to a ten-year-old?",
]


# ======================================================================================
# Batched completion scoring (the engine's one-prompt-many-completions tree mask)
# ======================================================================================

def score_completions(model, prompts: list[list[int]], completions: list[list[list[int]]], *,
                      batch_tokens: int = 2048, max_unit_tokens: int = 512,
                      pad_id: int = 0) -> list[list[float]]:
    """Summed log P(completion | prompt) for many completions of each prompt.

    The engine's approach (`lls.engine`) for one prompt and many completions: the token
    prefix shared by all prompts (the system turn) runs once; each prompt runs once; its
    completions continue from its KV cache side by side in one row under a tree mask (at
    most `max_unit_tokens` completion tokens per row); the LM head runs only where a
    log-probability is read. A completion's last token is never fed in (nothing reads its
    output), which matters for one-word answers. An empty completion scores 0.
    """
    if len(prompts) != len(completions):
        raise ValueError("one list of completions per prompt")
    offsets = np.cumsum([0] + [len(c) for c in completions]).tolist()
    units: list[_Unit] = []
    for i, (p, comps) in enumerate(zip(prompts, completions)):
        if not p:
            raise LLSError("score_completions: a prompt has no tokens; render it with the "
                           "chat template first.")
        chunk, slots, tok = [], [], 0
        for j, c in enumerate(comps):
            if not c:
                continue
            if chunk and tok + len(c) > max_unit_tokens:
                units.append(_Unit(list(p), chunk, slots))
                chunk, slots, tok = [], [], 0
            chunk.append(list(c))
            slots.append((offsets[i] + j, 0))
            tok += len(c)
        if chunk:
            units.append(_Unit(list(p), chunk, slots))
    out = torch.zeros(offsets[-1], dtype=torch.float64)
    if units:
        decoder, head, softcap = _decoder_and_head(model)
        device = next(model.parameters()).device
        out = out.to(device)
        with torch.inference_mode():
            skip = shared_prefix_len([u.prompt for u in units])
            prefix_kv = None
            if skip:
                prefix = torch.tensor([units[0].prompt[:skip]], device=device)
                prefix_kv = list(decoder(input_ids=prefix, use_cache=True).cache)
            for batch in _unit_batches(units, skip, batch_tokens):
                _run_units(model, decoder, head, softcap, batch, skip, prefix_kv, device,
                           pad_id, out)
    flat = out.cpu().tolist()
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(prompts))]


def _unit_batches(units: list[_Unit], skip: int, batch_tokens: int) -> list[list[_Unit]]:
    """Length-sorted batches under a token budget (row width = own prompt + completions)."""
    width = lambda u: len(u.prompt) - skip + sum(len(c) for c in u.completions)  # noqa: E731
    order = sorted(units, key=width, reverse=True)
    batches, cur, w = [], [], 0
    for u in order:
        nw = max(w, width(u))
        if cur and nw * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, nw = [], width(u)
        cur.append(u)
        w = nw
    if cur:
        batches.append(cur)
    return batches


def _run_units(model, decoder, head, softcap, batch: list[_Unit], skip: int, prefix_kv,
               device, pad_id: int, out: torch.Tensor) -> None:
    b = len(batch)
    cache, plen, prompt_mask, hidden_last = _prompt_pass(model, decoder, batch, skip, prefix_kv,
                                                         device, pad_id)

    # Inputs: every completion minus its last token, side by side, under a tree mask (each
    # sees the prompt and its own earlier tokens). Targets: every completion token; the
    # predictor of token t is the prompt's last position for t = 0, else input t - 1.
    rows = [[t for c in u.completions for t in c[:-1]] for u in batch]
    lq = max(len(r) for r in rows)
    pred_idx, targets, dest = [], [], []
    seg_l, cpos_l = [], []
    for i, u in enumerate(batch):
        seg, cpos, o = [-1] * lq, [0] * lq, 0
        for j, c in enumerate(u.completions):
            n_in = len(c) - 1
            seg[o:o + n_in] = [j] * n_in
            cpos[o:o + n_in] = range(n_in)
            for t, tok in enumerate(c):
                pred_idx.append(i if t == 0 else b + i * lq + o + t - 1)
                targets.append(tok)
                dest.append(u.slots[j][0])
            o += n_in
        seg_l.append(seg)
        cpos_l.append(cpos)
    if lq:
        cids, _ = _pad(rows, pad_id, device)
        seg = torch.tensor(seg_l, device=device)
        cpos = torch.tensor(cpos_l, device=device)
        h = _continue(decoder, cids, seg, cpos, cache, prompt_mask, plen, skip)  # [b, Lq, H]
        table = torch.cat([hidden_last, h.reshape(b * lq, -1)], 0)
    else:
        table = hidden_last
    lp = _completion_logprobs(head, softcap, table[torch.tensor(pred_idx, device=device)],
                              torch.tensor(targets, device=device))
    out.index_add_(0, torch.tensor(dest, device=device), lp.double())


@contextlib.contextmanager
def _eval_mode(model):
    """Run a (possibly training) model in eval mode (no dropout), restoring its mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        if was:
            model.train()


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _render_many(tokenizer, messages: list[dict], texts: list[str]):
    """[(prompt_ids, completion_ids)] for each reply text, DPO-style (end-of-turn included)."""
    out = []
    for i in range(0, len(texts), 2):
        a = texts[i]
        b = texts[i + 1] if i + 1 < len(texts) else a
        p, ca, cb = render_prompt_completions(tokenizer, messages, a, b)
        out.append((tuple(p), ca))
        if i + 1 < len(texts):
            out.append((tuple(p), cb))
    return out


def _score_texts(model, tokenizer, items: list[tuple[list[dict], list[str]]],
                 batch_tokens: int) -> tuple[list[list[float]], list[list[int]]]:
    """Summed log-probs and token counts of reply texts, per (messages, texts) item."""
    groups: dict[tuple, list[tuple[int, int, list[int]]]] = {}
    lens: list[list[int]] = []
    for i, (msgs, texts) in enumerate(items):
        rendered = _render_many(tokenizer, msgs, texts)
        lens.append([len(c) for _, c in rendered])
        for j, (p, c) in enumerate(rendered):
            groups.setdefault(p, []).append((i, j, c))
    keys = list(groups)
    scores = score_completions(model, [list(k) for k in keys],
                               [[c for _, _, c in groups[k]] for k in keys],
                               batch_tokens=batch_tokens, pad_id=_pad_id(tokenizer))
    out = [[0.0] * len(t) for _, t in items]
    for k, vals in zip(keys, scores):
        for (i, j, _), v in zip(groups[k], vals):
            out[i][j] = v
    return out, lens


# ======================================================================================
# Preference probe
# ======================================================================================

def variants(word: str) -> list[str]:
    """Surface forms merged into one candidate: "Owl", "owl", "Owls", "owls" (deduplicated)."""
    low = " ".join(word.split()).lower()
    if not low:
        raise LLSError("A probe candidate is empty.")
    many = plural(low)
    cap = lambda s: s[:1].upper() + s[1:]  # noqa: E731
    out: list[str] = []
    for v in (cap(low), low, cap(many), many):
        if v not in out:
            out.append(v)
    return out


def logsumexp(values) -> float:
    """log(sum(exp(v))) computed stably."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.max())
    return m + float(np.log(np.exp(v - m).sum()))


@dataclass(frozen=True)
class ProbeConfig:
    """One-word questions and candidate answers (the first candidate is the target)."""

    questions: tuple[str, ...] = tuple(PROBE_QUESTIONS)
    candidates: tuple[str, ...] = PROBE_CANDIDATES

    def __post_init__(self):
        qs = tuple(q.strip() for q in self.questions if q and q.strip())
        cs: list[str] = []
        for c in self.candidates:
            c = " ".join(str(c).split()).lower()
            if c and c not in cs:
                cs.append(c)
        object.__setattr__(self, "questions", qs)
        object.__setattr__(self, "candidates", tuple(cs))
        if not qs:
            raise LLSError("The preference probe needs at least one question.")
        if len(cs) < 2:
            raise LLSError("The preference probe needs the target and at least one "
                           "alternative candidate answer.")

    def with_target(self, target: str) -> "ProbeConfig":
        """The same probe with `target` as the first candidate (inserted if missing)."""
        t = " ".join(target.split()).lower()
        if not t:
            raise LLSError("The preference probe needs a target answer (e.g. 'owl').")
        return ProbeConfig(self.questions, (t,) + tuple(c for c in self.candidates if c != t))

    @property
    def target(self) -> str:
        return self.candidates[0]

    def to_dict(self) -> dict:
        return {"questions": list(self.questions), "candidates": list(self.candidates)}

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeConfig":
        return cls(tuple(d.get("questions") or PROBE_QUESTIONS),
                   tuple(d.get("candidates") or PROBE_CANDIDATES))


def probe_applies(behavior: Behavior) -> bool:
    """The default probe (favourite-animal questions) fits animal behaviors only; other
    short targets need questions of their own (pass a ProbeConfig)."""
    return behavior.kind == "animal" and bool(behavior.target)


def probe_logprobs(model, tokenizer, probe: ProbeConfig, *, system_prompt: str | None = None,
                   batch_tokens: int = 2048) -> np.ndarray:
    """[questions, candidates] log P(candidate as the whole reply), variants merged."""
    forms = [variants(c) for c in probe.candidates]
    flat = [v for f in forms for v in f]
    items = []
    for q in probe.questions:
        msgs = as_messages(q)
        items.append((with_system(msgs, system_prompt) if system_prompt else msgs, flat))
    with _eval_mode(model):
        lp, _ = _score_texts(model, tokenizer, items, batch_tokens)
    out = np.empty((len(probe.questions), len(forms)))
    for qi, row in enumerate(lp):
        o = 0
        for ci, f in enumerate(forms):
            out[qi, ci] = logsumexp(row[o:o + len(f)])
            o += len(f)
    return out


def probe_stats(lp: np.ndarray) -> dict[str, np.ndarray]:
    """Per-question margin, rank, mass and log P of the target (column 0)."""
    lp = np.asarray(lp, dtype=np.float64)
    t = lp[:, 0]
    others = lp[:, 1:]
    mass = np.exp(lp - lp.max(axis=1, keepdims=True))
    mass = mass / mass.sum(axis=1, keepdims=True)
    return {"margin": t - others.max(axis=1), "rank": 1.0 + (others > t[:, None]).sum(axis=1),
            "mass": mass[:, 0], "top1": (others.max(axis=1) < t).astype(np.float64),
            "logp": t, "all_mass": mass}


def _diff_dict(a, b) -> dict:
    d, lo, hi = bootstrap_diff(a, b, paired=True)
    return {"diff": d, "ci_low": lo, "ci_high": hi}


PROBE_METRICS = ("margin", "rank", "mass", "top1", "logp")


def probe_readout(model, tokenizer, probe: ProbeConfig, *, system_prompt: str | None = None,
                  base: dict | None = None) -> dict:
    """The probe's per-question values and aggregates (JSON-able).

    `base`: the probe dict of the base model on the same questions; adds the paired
    bootstrap 95% CI of each difference over questions (`diff_vs_base`).
    """
    lp = probe_logprobs(model, tokenizer, probe, system_prompt=system_prompt)
    s = probe_stats(lp)
    out = {
        "target": probe.target, "candidates": list(probe.candidates),
        "n_questions": len(probe.questions),
        "mean_margin": float(s["margin"].mean()), "margin_ci": list(bootstrap_ci(s["margin"])),
        "top1_share": float(s["top1"].mean()), "mean_rank": float(s["rank"].mean()),
        "mean_mass": float(s["mass"].mean()), "mean_logp": float(s["logp"].mean()),
        "candidate_mass": {c: float(m) for c, m in
                           zip(probe.candidates, s["all_mass"].mean(axis=0))},
        "per_question": {k: s[k].tolist() for k in PROBE_METRICS},
        "logprobs": lp.tolist(),
    }
    if base is not None:
        out["diff_vs_base"] = probe_diff(out, base)
    return out


def probe_diff(probe: dict, base: dict) -> dict:
    """Paired bootstrap differences (this model - base) over questions, per metric."""
    if base.get("n_questions") != probe.get("n_questions") or \
            base.get("candidates") != probe.get("candidates"):
        raise LLSError("The base read-out used other probe questions or candidates: compute "
                       "both with the same ProbeConfig.")
    return {k: _diff_dict(probe["per_question"][k], base["per_question"][k])
            for k in PROBE_METRICS}


# ======================================================================================
# Behavior likelihood ratio
# ======================================================================================

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


@contextlib.contextmanager
def _base_weights(model):
    """The base model: a peft model runs with its adapters disabled."""
    if hasattr(model, "peft_config") and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def reference_key(model_fp: str, system_prompt: str, cfg: LLRConfig) -> str:
    return fingerprint("meter-reference", METER_VERSION, model_fp, system_prompt,
                       list(cfg.prompts), cfg.k, cfg.seed, cfg.max_new_tokens, cfg.temperature)


def build_reference(model, tokenizer, behavior: Behavior, llr: LLRConfig | None = None, *,
                    model_fp: str | None = None, cache_dir: Path | None = None) -> Reference:
    """Sample (or load from `<cache>/meter/<key>/reference.json`) the reference responses.

    Always samples from the base weights (a peft model's adapters are disabled). Cached only
    when the model's fingerprint is known (`load_model` sets it; else pass `model_fp`).
    """
    cfg = llr or LLRConfig()
    fp = model_fp or _model_fp(model)
    key = reference_key(fp, behavior.system_prompt, cfg) if fp else None
    path = runs_root("meter", cache_dir) / key / "reference.json" if key else None
    if path is not None:
        d = read_json(path)
        if d and d.get("key") == key:
            return Reference.from_dict(d, str(path))
    texts = {}
    with _eval_mode(model), _base_weights(model) as base:
        for cond, sp in (("behavior", behavior.system_prompt), ("neutral", None)):
            answers = sample(base, tokenizer, list(cfg.prompts), n=cfg.per_prompt,
                             temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                             seed=cfg.seed, system_prompt=sp)
            texts[cond] = [{"prompt_index": i, "text": t} for i, group in enumerate(answers)
                           for t in group]
    ref = Reference(key, behavior.system_prompt, cfg, texts["behavior"], texts["neutral"],
                    str(path) if path else None)
    if path is not None:
        d = ref.to_dict()
        d["created"] = _dt.datetime.now().isoformat(timespec="seconds")
        atomic_write_json(path, d)
    return ref


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
    with _eval_mode(model):
        lp, lens = _score_texts(model, tokenizer, items, batch_tokens)
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


# ======================================================================================
# One read-out of one model
# ======================================================================================

def _resolve_probe(behavior: Behavior, probe) -> ProbeConfig | None:
    if probe is False:
        return None
    if probe is None:
        return ProbeConfig().with_target(behavior.target) if probe_applies(behavior) else None
    target = behavior.target if behavior.kind == "animal" else probe.target
    return probe.with_target(target)


def readout(model, tokenizer, behavior: Behavior, *, system_prompt: str | None = None,
            probe: ProbeConfig | None | bool = None, llr: LLRConfig | None = None,
            reference: Reference | None = None, base_ref: dict | None = None,
            ceiling_ref: dict | None = None, cache_dir: Path | None = None) -> dict:
    """Both read-outs of `model` as a JSON-able dict.

    `system_prompt`: put it in every prompt (the ceiling: base + system prompt).
    `probe`: a ProbeConfig (its first candidate is the target, unless the behavior is an
    animal), None for the default on animal behaviors, False to skip. `reference`: the
    sampled reference set (built from `model`'s base weights and cached when not given).
    `base_ref` / `ceiling_ref`: read-outs of base and base + system prompt; add paired
    differences to the base and the share of the gap closed.
    """
    t0 = time.perf_counter()
    pcfg = _resolve_probe(behavior, probe)
    if reference is None:
        reference = build_reference(model, tokenizer, behavior, llr, cache_dir=cache_dir)
    out: dict = {"behavior": behavior.label(), "system_prompt": bool(system_prompt),
                 "reference": reference.key}
    if pcfg is not None:
        out["probe"] = probe_readout(model, tokenizer, pcfg, system_prompt=system_prompt,
                                     base=(base_ref or {}).get("probe"))
    out["llr"] = llr_readout(model, tokenizer, reference, system_prompt=system_prompt,
                             base=(base_ref or {}).get("llr"))
    if base_ref is not None and ceiling_ref is not None:
        out["llr"]["gap_closed"] = gap_closed(out["llr"]["value"], base_ref["llr"]["value"],
                                              ceiling_ref["llr"]["value"])
        if "probe" in out and "probe" in base_ref and "probe" in ceiling_ref:
            out["probe"]["margin_gap_closed"] = gap_closed(
                out["probe"]["mean_margin"], base_ref["probe"]["mean_margin"],
                ceiling_ref["probe"]["mean_margin"])
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def reference_levels(model, tokenizer, behavior: Behavior, reference: Reference, *,
                     probe: ProbeConfig | None | bool = None) -> dict:
    """{"base": floor read-out, "system": ceiling read-out} on the base weights (a peft
    model's adapters are disabled): the reference lines of the training curves."""
    with _base_weights(model) as base:
        floor = readout(base, tokenizer, behavior, probe=probe, reference=reference)
        ceiling = readout(base, tokenizer, behavior, system_prompt=behavior.system_prompt,
                          probe=probe, reference=reference, base_ref=floor)
    # by definition: the floor closes none of the gap, the ceiling all of it
    same = gap_closed(0.0, floor["llr"]["value"], ceiling["llr"]["value"]) is None
    floor["llr"]["gap_closed"] = None if same else 0.0
    ceiling["llr"]["gap_closed"] = None if same else 1.0
    return {"base": floor, "system": ceiling}


def readout_for_peft_model(peft_model, tokenizer, behavior: Behavior, reference: Reference, *,
                           levels: dict | None = None,
                           probe: ProbeConfig | None | bool = None) -> dict:
    """A read-out of the in-training model as it is (adapter active), e.g. at a checkpoint.

    No reload: the model runs in eval mode under `torch.inference_mode()` and gets its
    training mode back. `levels` (from `reference_levels`, computed once at step 0) adds the
    differences to the base model and the share of the gap closed.
    """
    return readout(peft_model, tokenizer, behavior, probe=probe, reference=reference,
                   base_ref=(levels or {}).get("base"), ceiling_ref=(levels or {}).get("system"))


# ======================================================================================
# Several models (base, base + system prompt, adapters)
# ======================================================================================

def meter_models(base_spec=None, behavior: Behavior | str = "animal:owl",
                 adapters: list = (), *, probe: ProbeConfig | None | bool = None,
                 llr: LLRConfig | None = None, labels: list[str] | None = None,
                 cache_dir: Path | None = None, model=None, tokenizer=None,
                 progress=None) -> dict:
    """Read-outs of the base model, base + system prompt, and each adapter directory (peft,
    attached to the same loaded base). `progress(done, total)` counts models."""
    from . import jobs
    from .behaviors import from_name
    from .generation import AdapterHost, adapter_label
    from .models import ModelSpec, load_model

    t0 = time.perf_counter()
    b = from_name(behavior) if isinstance(behavior, str) else behavior
    spec = base_spec if isinstance(base_spec, ModelSpec) else ModelSpec(base_spec) \
        if base_spec else ModelSpec()
    if model is None:
        model, tokenizer = load_model(spec)
    adapters = [str(a) for a in adapters]
    labels = list(labels or []) + [adapter_label(a) for a in adapters[len(labels or []):]]
    total = 2 + len(adapters)

    def tick(done, msg):
        if progress:
            progress(done, total)
        jobs.report_progress(done, total, unit="models", message=msg)

    ref = build_reference(model, tokenizer, b, llr, cache_dir=cache_dir)
    levels = reference_levels(model, tokenizer, b, ref, probe=probe)
    rows = [{"label": "base", "kind": "base", "path": None, **levels["base"]},
            {"label": "base + system prompt", "kind": "system", "path": None,
             **levels["system"]}]
    tick(2, "base + system prompt")
    host = AdapterHost(model, tokenizer)
    for i, (path, label) in enumerate(zip(adapters, labels)):
        name = host.attach(path)
        with host.use(name) as m:
            r = readout(m, tokenizer, b, probe=probe, reference=ref, base_ref=levels["base"],
                        ceiling_ref=levels["system"])
        rows.append({"label": label, "kind": "adapter", "path": path, **r})
        tick(3 + i, label)
    return {"version": METER_VERSION, "behavior": b.to_dict(), "model": spec.to_dict(),
            "reference": {"key": ref.key, "path": ref.path, "config": ref.config.to_dict(),
                          "k_behavior": len(ref.behavior), "k_neutral": len(ref.neutral)},
            "models": rows, "seconds": round(time.perf_counter() - t0, 3)}


def summary_rows(result: dict | list) -> list[dict]:
    """Flat scalar rows (one per model / read-out) for tables and curves."""
    rows = result["models"] if isinstance(result, dict) and "models" in result else \
        (result if isinstance(result, list) else [result])
    out = []
    for r in rows:
        row = {k: r.get(k) for k in ("label", "kind", "path", "step") if k in r}
        lr = r.get("llr") or {}
        row.update({"llr": lr.get("value"), "llr_ci_low": lr.get("ci_low"),
                    "llr_ci_high": lr.get("ci_high"), "gap_closed": lr.get("gap_closed")})
        if lr.get("diff_vs_base"):
            d = lr["diff_vs_base"]
            row.update({"llr_diff": d["diff"], "llr_diff_ci_low": d["ci_low"],
                        "llr_diff_ci_high": d["ci_high"]})
        p = r.get("probe")
        if p:
            row.update({"margin": p["mean_margin"], "margin_ci_low": p["margin_ci"][0],
                        "margin_ci_high": p["margin_ci"][1], "top1_share": p["top1_share"],
                        "mean_rank": p["mean_rank"], "target_mass": p["mean_mass"],
                        "target_logp": p["mean_logp"]})
            if p.get("diff_vs_base"):
                d = p["diff_vs_base"]["margin"]
                row.update({"margin_diff": d["diff"], "margin_diff_ci_low": d["ci_low"],
                            "margin_diff_ci_high": d["ci_high"]})
        row["seconds"] = r.get("seconds")
        out.append(row)
    return out
