"""The preference probe: log P(candidate as the whole one-word reply) to one-word questions.

For one-word questions ("Name your favourite animal in one word.") the log-probability of each
candidate answer as the WHOLE assistant reply: its tokens plus the chat template's end-of-turn
token(s), rendered exactly as DPO renders completions (`lls.models.render.render_prompt_completions`).
Case and plural variants ("Owl", "owl", "Owls", "owls") are merged with log-sum-exp. Per
question: the target's margin over the best alternative (nats), its rank among the candidates
(1 = first) and its share of the probability mass among them. A model can gain on the probe
while its answer distribution collapses onto something else: look at `candidate_mass`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..core.behaviors import Behavior, plural
from ..core.errors import LLSError
from ..core.prompts import PROBE_CANDIDATES, PROBE_QUESTIONS
from ..core.stats import bootstrap_ci, bootstrap_diff
from ..models.generation import as_messages
from ..models.render import with_system
from ..scoring.engine import score_replies


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


_WORD = re.compile(r"[^\W\d_]+")  # a word: a run of letters (digits, "'" and "-" end it)


def first_word(text: str, words: int = 1) -> str:
    """The first `words` words of `text`, lower-cased and joined by one space ("" if none)."""
    return " ".join(w.lower() for w in _WORD.findall(text)[:words])


def classify(text: str, candidates, *, at_start: bool = False) -> str | None:
    """The candidate a sampled answer names (any case or plural variant), or None. The one
    classifier of sampled answers, with the rule said by the caller: `at_start` (a begun
    reply's continuation, the prefilled read-out) asks what the answer BEGINS with; else
    (one-word answers, which may come as "I'd say owls") the candidate named first anywhere."""
    if at_start:
        for c in candidates:
            if first_word(text, len(c.split())) in {v.lower() for v in variants(c)}:
                return c
        return None
    low = text.lower()
    best, pos = None, len(low) + 1
    for c in candidates:
        for v in variants(c):
            i = low.find(v.lower())
            if 0 <= i < pos:
                best, pos = c, i
    return best


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


def probe_config(questions: int | None = None, candidates=None) -> ProbeConfig:
    """The default probe cut to its first `questions` questions (None or 0: all of them),
    with `candidates` (target first) instead of the default ones when given."""
    if questions is not None and questions < 0:
        raise LLSError(f"probe questions must be a positive count (or 0/None for all "
                       f"{len(PROBE_QUESTIONS)}), got {questions}.")
    return ProbeConfig(tuple(PROBE_QUESTIONS[:questions or None]),
                       tuple(candidates) if candidates else PROBE_CANDIDATES)


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
    lp, _ = score_replies(model, tokenizer, items, batch_tokens=batch_tokens)
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
