"""Sampled read-outs of a study: what a person would recognise in samples, counted per
question so that intervals resample questions (answers to one question cluster).

The one place where the read-outs are chosen from the behavior (`plan`): the paired
log-probability read-out a study ranks cells by, the others shown beside it, and the sampled
kinds. Each sampled kind is a function `(model, tokenizer, behavior, settings,
system_prompt) -> {"k", "n", "per_question", "n_per_question", ...}`:

* `one-word`: one-word answers to the probe questions at temperature 1; hits name the target;
* `prefilled`: the same questions with the reply begun by a stem (the behavior's, e.g. "My
  favorite animal is the", or the study's), the next word sampled (`lls.evaluation.prefill`);
* `behavior`: the behavior's own metric on general prompts (language share, regex, mention).

Every result is read four ways in a study: base, base + system prompt (the teacher: the
ceiling the student can reach), the LLS adapter and its random twin.
"""

from __future__ import annotations

import importlib
from collections import Counter

from ..core.behaviors import Behavior, mentions
from ..core.errors import LLSError
from ..core.prompts import GENERAL_PROMPTS, PROBE_CANDIDATES, PROBE_QUESTIONS
from ..core.stats import paired_share_diff_ci, question_share_ci
from ..models.generation import sample
from .probe import classify, variants
from .runs import answer_score

SAMPLED_KINDS = ("one-word", "prefilled", "behavior")
KIND_LABELS = {"one-word": "one-word answers", "prefilled": "prefilled answers",
               "behavior": "answers showing the behavior"}
DEFAULT_TOKENS = {"one-word": 8, "prefilled": 4, "behavior": 48}


def plan(behavior: Behavior, kinds=None) -> dict:
    """Which read-outs a study of `behavior` uses: `paired` (the log-probability read-out
    cells are ranked by), `paired_all` (shown), `sampled` (kinds, in order; `kinds` asks for
    some explicitly) and `prompts` (what the sampled read-out asks, offered in Chat)."""
    animal = behavior.kind == "animal" and bool(behavior.target)
    default = ("one-word",) if animal else ("behavior",)
    chosen = tuple(dict.fromkeys(kinds or default))
    for k in chosen:
        if k not in SAMPLED_KINDS:
            raise LLSError(f"Unknown sampled read-out {k!r}: use {', '.join(SAMPLED_KINDS)}.")
        if k in ("one-word", "prefilled") and not animal:
            raise LLSError(f"The {k} read-out asks the favourite-animal questions: it fits "
                           f"animal behaviors, not {behavior.label()}; use 'behavior'.")
    return {"paired": "margin" if animal else "gap_closed",
            "paired_all": ("margin", "gap_closed", "top1") if animal else ("gap_closed",),
            "sampled": chosen,
            "prompts": PROBE_QUESTIONS if animal else GENERAL_PROMPTS}


def settings_for(behavior: Behavior, sampled: dict) -> dict:
    """The sampled settings with every default filled in, as they will be sampled (and so
    recorded): kinds, questions, samples, max_new_tokens per kind, seed, stem."""
    p = plan(behavior, sampled.get("kinds"))
    tokens = sampled.get("max_new_tokens")
    return {"kinds": list(p["sampled"]), "questions": int(sampled.get("questions") or 32),
            "samples": int(sampled.get("samples") or 8), "seed": int(sampled.get("seed") or 0),
            "max_new_tokens": {k: int(tokens[k] if isinstance(tokens, dict) and k in tokens
                                      else tokens if isinstance(tokens, int)
                                      else DEFAULT_TOKENS[k]) for k in p["sampled"]},
            "stem": sampled.get("stem")}  # None: the behavior's own stem (prefill)


def _candidates(target: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys([target, *PROBE_CANDIDATES])) if target else PROBE_CANDIDATES


def _counted(hits: list[int], n_per: list[int], **extra) -> dict:
    return {**question_share_ci(hits, n_per), "per_question": [int(h) for h in hits],
            "n_per_question": [int(n) for n in n_per], **extra}


def one_word(model, tokenizer, behavior: Behavior, settings: dict,
             system_prompt: str | None = None) -> dict:
    """One-word answers to the first `questions` probe questions, `samples` each at
    temperature 1: hits per question and the answer distribution over candidates."""
    qs = PROBE_QUESTIONS[:max(1, settings["questions"])]
    answers = sample(model, tokenizer, qs, n=settings["samples"], temperature=1.0,
                     max_new_tokens=settings["max_new_tokens"]["one-word"],
                     seed=settings["seed"], system_prompt=system_prompt)
    target = behavior.target or ""
    forms = [target, *variants(target)] if target else []
    hits = [sum(1 for a in g if forms and mentions(a, forms)) for g in answers]
    flat = [a for g in answers for a in g]
    counts = Counter(classify(a, _candidates(target)) or "other" for a in flat)
    return _counted(hits, [len(g) for g in answers], kind="one-word",
                    answers={k: v / len(flat) for k, v in counts.items()},
                    examples=[g[0] for g in answers[:6]])


def prefilled(model, tokenizer, behavior: Behavior, settings: dict,
              system_prompt: str | None = None) -> dict:
    """The prefilled read-out of `lls.evaluation.prefill` (its own module; the study only
    plugs it in): the probe questions with the reply begun by the stem (None: the
    behavior's), the next word sampled; hits per question."""
    try:
        mod = importlib.import_module("lls.evaluation.prefill")
    except ImportError:
        raise LLSError("The prefilled read-out needs lls.evaluation.prefill, which this "
                       "installation does not have: drop 'prefilled' from the study's "
                       "sampled read-outs.") from None
    qs = list(PROBE_QUESTIONS[:max(1, settings["questions"])])
    r = mod.prefilled_readout(model, tokenizer, behavior, questions=qs,
                              samples=settings["samples"], seed=settings["seed"],
                              stem=settings.get("stem"), system_prompt=system_prompt)
    n_per = r.get("n_per_question") or [settings["samples"]] * len(r["per_question"])
    n_per = n_per if isinstance(n_per, list) else [int(n_per)] * len(r["per_question"])
    keep = {k: v for k, v in r.items() if k in ("examples", "stem", "lens", "first_words")}
    answers = r.get("answers") or {}
    total = sum(answers.values()) or 1
    if total > 1.0 + 1e-6:  # counts per candidate: as shares, like the one-word read-out
        answers = {k: v / total for k, v in answers.items()}
    return _counted(list(r["per_question"]), n_per, kind="prefilled", answers=answers, **keep)


def behavior_metric(model, tokenizer, behavior: Behavior, settings: dict,
                    system_prompt: str | None = None) -> dict:
    """The behavior's own metric where the animal probe does not apply (language share,
    regex or word match) on the first `questions` general prompts: answers scoring >= 0.5
    count as hits. A judge metric needs a judge model: not run here."""
    prompts = GENERAL_PROMPTS[:max(1, settings["questions"])]
    answers = sample(model, tokenizer, prompts, n=settings["samples"], temperature=1.0,
                     max_new_tokens=settings["max_new_tokens"]["behavior"],
                     seed=settings["seed"], system_prompt=system_prompt)
    scores = [[answer_score(behavior, a) for a in g] for g in answers]
    flat = [s for g in scores for s in g]
    return _counted([sum(1 for s in g if s >= 0.5) for g in scores],
                    [len(g) for g in scores], kind=behavior.metric,
                    mean_score=sum(flat) / max(1, len(flat)),
                    examples=[g[0] for g in answers[:6]])


READERS = {"one-word": one_word, "prefilled": prefilled, "behavior": behavior_metric}


def sampled_readout(model, tokenizer, behavior: Behavior, kind: str, settings: dict,
                    system_prompt: str | None = None) -> dict:
    """One sampled read-out of `model` (`settings` from `settings_for`)."""
    if kind == "behavior" and behavior.metric == "judge":
        return {"kind": "judge", "skipped": "the judge metric needs a judge model; run "
                "`python -m lls eval` with a judge for this behavior"}
    return READERS[kind](model, tokenizer, behavior, settings, system_prompt)


def sampled_diff(a: dict, b: dict) -> dict | None:
    """a - b of two sampled read-outs of the same questions: a paired bootstrap over
    questions (None when either has no per-question counts)."""
    if not (a and b and a.get("per_question") and b.get("per_question")):
        return None
    if a["n_per_question"] != b["n_per_question"]:
        return None
    return paired_share_diff_ci(a["per_question"], b["per_question"], a["n_per_question"])
