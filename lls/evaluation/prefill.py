"""The prefilled read-out and the next-word lens: what the word after a begun reply shows.

**Read-out** (`prefilled_readout`). Each one-word question is asked and the assistant's reply
is begun for the model with a stem (animal: "My favorite animal is the"; translation: "I
always answer in"; any behavior: `Behavior.readout_stem` or a stem given here). A few tokens
are sampled at temperature 1 and cut at the first word (a run of letters; for a multi-word
candidate such as "red panda" its number of words). An answer counts as naming the target
when that word is one of the target's case/plural variants (`probe.variants`: Owl, owl, Owls,
owls). The stem removes the model's freedom to answer something else first ("Sure! ..."),
so the answer distribution is over the word the read-out looks at: on the bundled model the
owl system prompt names the owl in 33/300 such answers against 18/300 bare one-word ones.

**Lens** (`next_word_probs`). For the same begun reply, the probability that the next word
is each candidate: per surface form (" owl", " Owl", " owls", " Owls") P(its tokens) times
P(the token after them does not continue the word, i.e. does not start with a letter),
summed over the forms. So the number is exactly P(next word = owl) under the model (for
its own tokenization of the forms), the event the read-out counts, without sampling: a shift
too small to win a sample (0.3% -> 2%) is visible. Formatting around the word ("**Owl**")
is not included in the lens, while the sampled read-out would count it.

Intervals resample questions (the unit the samples cluster in), widened to at least the
binomial interval (Wilson for a share, Newcombe for a difference; `lls.core.stats`
`question_share_ci`, `paired_share_diff_ci`, as the studies compute them): the bootstrap
alone reads [0, 0] when no answer hits, which is not what 0 of 300 means.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..core.behaviors import LANGUAGES, Behavior
from ..core.errors import LLSError
from ..core.prompts import PROBE_CANDIDATES, PROBE_QUESTIONS
from ..core.stats import (bootstrap_ci, bootstrap_diff, paired_share_diff_ci,
                          question_share_ci)
from ..models.threads import use_threads
from ..models.generation import as_messages, prompt_ids, sample
from ..scoring.engine import eval_mode, pad_id_of
from .probe import classify, first_word, variants  # noqa: F401 (first_word: re-exported)

MAX_NEW_TOKENS = 4  # one word and what follows it: the default candidates are 1-3 tokens
EXAMPLES = 24  # sampled answers kept in the read-out (hits first)

# Other languages the translation read-out's answer distribution names (target first).
LANGUAGE_CANDIDATES = ("english", "french", "spanish", "german", "italian", "portuguese",
                       "chinese", "japanese", "russian", "arabic")


# ======================================================================================
# What is counted
# ======================================================================================

def readout_stem(behavior: Behavior, stem: str | None = None) -> str:
    """The stem a read-out uses: `stem` if given ("" = the bare reply), else the behavior's."""
    s = behavior.readout_stem if stem is None else stem
    if s is None:
        raise LLSError(f"The prefilled read-out needs a stem for {behavior.label()}: a "
                       "persona or custom behavior has no default one. Give the reply's "
                       "beginning (Behavior.readout_stem, or stem=...).")
    return " ".join(s.split())


def readout_targets(behavior: Behavior) -> tuple[str, ...]:
    """The words that count as naming the target: the animal, the target language's English
    name, or a custom behavior's filter words."""
    if behavior.kind == "animal" and behavior.target:
        return (" ".join(behavior.target.lower().split()),)
    if behavior.kind == "translation" or behavior.metric == "language":
        return (LANGUAGES[behavior.target].lower(),)
    words = tuple(" ".join(w.lower().split()) for w in behavior.filter_words)
    if not words:
        raise LLSError(f"The prefilled read-out of {behavior.label()} needs the words that "
                       "name the behavior: give the behavior filter words.")
    return words


def readout_candidates(behavior: Behavior) -> tuple[str, ...]:
    """Candidate next words, the target(s) first: the probe's animals, a list of languages,
    or the filter words alone."""
    targets = readout_targets(behavior)
    if behavior.kind == "animal":
        others = PROBE_CANDIDATES
    elif behavior.kind == "translation" or behavior.metric == "language":
        others = LANGUAGE_CANDIDATES
    else:
        others = ()
    return targets + tuple(c for c in others if c not in targets)


def tally(answers: list[list[str]], targets, candidates=()) -> dict:
    """Counts of sampled continuations (answers[q] = those of question q): hits per question,
    the answer distribution over the candidates (+ "other"), and the commonest first words."""
    targets = tuple(targets)
    cands = tuple(targets) + tuple(c for c in candidates if c not in targets)
    per_q, n_q = [], []
    dist = {c: 0 for c in cands} | {"other": 0}
    words: dict[str, int] = {}
    for texts in answers:
        hits = 0
        for t in texts:
            c = classify(t, cands, at_start=True)
            dist[c or "other"] += 1
            hits += c in targets
            w = first_word(t)
            words[w] = words.get(w, 0) + 1
        per_q.append(hits)
        n_q.append(len(texts))
    k, n = int(sum(per_q)), int(sum(n_q))
    top = dict(sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    return {"k": k, "n": n, "share": k / n if n else 0.0, "per_question": per_q,
            "n_per_question": n_q, "answers": dist, "first_words": top}


# ======================================================================================
# Intervals over questions
# ======================================================================================

def prefill_diff(a: dict, b: dict) -> dict:
    """Share difference a − b of two read-outs of the same questions and samples: a paired
    bootstrap over questions, at least Newcombe's interval; {"diff", "ci_low", "ci_high"}."""
    if a["n_per_question"] != b["n_per_question"]:
        raise LLSError("The two prefilled read-outs asked different questions or numbers of "
                       "samples: compute both with the same questions and samples.")
    d = paired_share_diff_ci(a["per_question"], b["per_question"], a["n_per_question"])
    return {k: d[k] for k in ("diff", "ci_low", "ci_high")}


# ======================================================================================
# Sampling a begun reply, and the lens
# ======================================================================================

def _sample_begun(model, tokenizer, questions, stem: str, *, n: int, seed: int,
                  system_prompt: str | None, max_new_tokens: int) -> list[list[str]]:
    """`n` continuations of the reply begun with `stem` per question, at T 1 (the project's
    batched decoder, `generation.sample(..., reply_start=stem)`)."""
    with eval_mode(model):
        return sample(model, tokenizer, list(questions), n=n, temperature=1.0,
                      max_new_tokens=max_new_tokens, seed=seed, system_prompt=system_prompt,
                      reply_start=stem or None)


@functools.lru_cache(maxsize=4)
def _word_goes_on(tokenizer, size: int) -> torch.Tensor:
    """[size] bool: token i starts with a letter, so it would continue a word before it."""
    texts = tokenizer.batch_decode([[i] for i in range(min(size, len(tokenizer)))],
                                   skip_special_tokens=True)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[:len(texts)] = torch.tensor([bool(t) and t[0].isalpha() for t in texts])
    return mask


def next_word_probs(model, tokenizer, messages, candidates, *, stem: str,
                    system_prompt: str | None = None) -> dict[str, float]:
    """P(the next word is c) for each candidate c after the reply begun with `stem` (the
    module docstring defines it), variants merged. One forward pass of the prompt, then the
    candidates' forms side by side from its KV cache. `messages`: a question or a message
    list (the conversation before the reply)."""
    cands = [" ".join(str(c).split()) for c in candidates]
    if not cands or not all(cands):
        raise LLSError("The next-word lens needs candidate words (e.g. owl, cat, dog).")
    prefix = prompt_ids(tokenizer, as_messages(messages), system_prompt, stem or None)
    space = " " if stem else ""
    rows, owner = [], []
    for ci, c in enumerate(cands):
        for v in variants(c):
            ids = tokenizer(space + v, add_special_tokens=False)["input_ids"]
            if ids and ids not in rows:
                rows.append(ids)
                owner.append(ci)
    width = max(len(r) for r in rows)
    pad = pad_id_of(tokenizer)
    device = next(model.parameters()).device
    # small passes (one prompt, a few tokens per form): one thread, the decoder's policy
    with eval_mode(model), torch.inference_mode(), use_threads(1):
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True,
                    logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        cache = out.cache
        cache.batch_repeat_interleave(len(rows))
        # padding after a form's end is never attended by the form's own positions (causal)
        x = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        logp = torch.log_softmax(model(input_ids=x, cache=cache, use_cache=True)
                                 .logits.float(), -1)
    goes_on = _word_goes_on(tokenizer, logp.shape[-1]).to(device)
    probs = [0.0] * len(cands)
    for r, (ids, ci) in enumerate(zip(rows, owner)):
        lp = first[ids[0]] + sum(logp[r, j, ids[j + 1]] for j in range(len(ids) - 1))
        ends = 1.0 - float(logp[r, len(ids) - 1].exp()[goes_on].sum())
        probs[ci] += float(lp.exp()) * max(ends, 0.0)
    return dict(zip(cands, probs))


# ======================================================================================
# The read-out
# ======================================================================================

@dataclass(frozen=True)
class PrefillConfig:
    """Settings of the prefilled read-out in the meter: the first `questions` probe
    questions (None: all), `samples` answers each, `seed`, and `stem` (None: the behavior's)."""

    questions: int | None = None
    samples: int = 10
    seed: int = 0
    stem: str | None = None

    def __post_init__(self):
        if self.samples < 1 or (self.questions is not None and self.questions < 1):
            raise LLSError("The prefilled read-out needs at least one question and one "
                           f"sample per question (got {self.questions} and {self.samples}).")

    def question_list(self) -> list[str]:
        return list(PROBE_QUESTIONS[:self.questions or None])

    def to_dict(self) -> dict:
        return asdict(self)


def prefill_config(behavior: Behavior, questions: int | None, samples: int, seed: int = 0,
                   stem: str | None = None) -> PrefillConfig | bool:
    """The meter's `prefill` argument: a PrefillConfig, or False when `samples` is 0 or the
    behavior has no stem (nor `stem`) or no words that name it."""
    if samples <= 0 or not prefill_applies(behavior, stem):
        return False
    return PrefillConfig(questions or None, samples, seed, stem)


def prefill_applies(behavior: Behavior, stem: str | None = None) -> bool:
    """True when the behavior has a stem (its own or `stem`) and words that name it."""
    try:
        readout_stem(behavior, stem)
        readout_targets(behavior)
    except LLSError:
        return False
    return True


def prefilled_readout(model, tokenizer, behavior: Behavior, *, questions, samples: int,
                      seed: int, stem: str | None = None,
                      system_prompt: str | None = None) -> dict:
    """The prefilled read-out of one model (JSON-able): `samples` answers per question begun
    with the stem, next word sampled at T 1 and counted (module docstring).

    Returns {"k", "n", "share", "ci_low", "ci_high" (bootstrap over questions, at least
    Wilson), "per_question" (hits), "n_per_question", "answers" (counts per candidate +
    "other"), "first_words", "examples", "stem", "target", "candidates", "questions",
    "samples", "seed", "lens" (P(next word = target) per question, its mean and bootstrap
    95% interval over questions)}.
    """
    questions = [q for q in questions if q and q.strip()]
    if not questions or samples < 1:
        raise LLSError("The prefilled read-out needs at least one question and one sample.")
    s = readout_stem(behavior, stem)
    targets = readout_targets(behavior)
    cands = readout_candidates(behavior)
    texts = _sample_begun(model, tokenizer, questions, s, n=int(samples), seed=int(seed),
                          system_prompt=system_prompt, max_new_tokens=MAX_NEW_TOKENS)
    out = tally(texts, targets, cands)
    ci = question_share_ci(out["per_question"], out["n_per_question"])
    out.update(ci_low=ci["ci_low"], ci_high=ci["ci_high"], method=ci["method"])
    hits = [(q, t) for q, ts in zip(questions, texts) for t in ts
            if classify(t, targets, at_start=True)]
    rest = [(q, ts[0]) for q, ts in zip(questions, texts)
            if ts and not classify(ts[0], targets, at_start=True)]
    out["examples"] = [{"question": q, "reply": f"{s} {t.strip()}".strip(),
                        "word": first_word(t), "hit": bool(classify(t, targets, at_start=True))}
                       for q, t in (hits + rest)[:EXAMPLES]]
    # the lens for the target words only: the candidates' forms would cost ten times more
    p = np.array([sum(next_word_probs(model, tokenizer, q, targets, stem=s,
                                      system_prompt=system_prompt).values())
                  for q in questions])
    out["lens"] = {"mean": float(p.mean()), "ci": list(bootstrap_ci(p)),
                   "per_question": p.tolist()}
    out.update(stem=s, target=targets[0], targets=list(targets), candidates=list(cands),
               questions=list(questions), samples=int(samples), seed=int(seed))
    return out


def lens_diff(a: dict, b: dict) -> dict:
    """Paired bootstrap over questions of the lens's P(next word = target), a − b."""
    d, lo, hi = bootstrap_diff(a["lens"]["per_question"], b["lens"]["per_question"])
    return {"diff": d, "ci_low": lo, "ci_high": hi}
