"""Each answer scored once: LLS weights of every pair among k answers to one prompt.

For answers a, b to prompt p and system prompt s the LLS weight is

    w = [(log P(a|s,p) - log P(b|s,p)) - (log P(a|p) - log P(b|p))] / (n_a + n_b)
      = (s_a - s_b) / (n_a + n_b),   with s_x = log P(x|s,p) - log P(x|p),

so each answer needs its two log-probabilities once, not once per pair it is in (k - 1 pairs
at k answers). `score_prompt_answers` renders a prompt's answers under both conditions
(`lls.models.render.render_completions`: the same token ids as rendering them pair by pair)
and scores them with the engine's many-completions path (`score_completions`: the prompt
runs once per condition, its answers continue side by side under a tree mask). `answer_pairs`
forms all k(k-1)/2 pairs, oriented so chosen has the larger s (w >= 0).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..data.hygiene import reach
from ..models.render import neutral_messages, render_completions, truncate_text, with_system
from .engine import PairScore, score_completions


@dataclass(frozen=True)
class RenderedAnswers:
    """Token ids of one prompt's answers under both conditions (with / without s)."""

    prompt_sys: list[int]
    answers_sys: list[list[int]]
    prompt_base: list[int]
    answers_base: list[list[int]]
    texts: list[str]  # the (truncated) answer texts that were rendered

    def length(self) -> int:
        """The longest position any answer reaches (prompt + answer, either condition)."""
        return max(reach(self.prompt_sys, self.prompt_base, a_s, a_b)
                   for a_s, a_b in zip(self.answers_sys, self.answers_base))


@dataclass(frozen=True)
class AnswerScores:
    """Summed log-probabilities of each answer with s (`lp_sys`) and without (`lp_base`), and
    its scored token count (`n`, the rendering without s, as for pairs)."""

    lp_sys: list[float]
    lp_base: list[float]
    n: list[int]

    @property
    def s(self) -> list[float]:
        """The shift each answer gets from the system prompt, log P(r|s,p) - log P(r|p)."""
        return [a - b for a, b in zip(self.lp_sys, self.lp_base)]


def render_answers(tokenizer, messages: list[dict], answers: list[str],
                   system_prompt: str | None, truncation: int | None,
                   neutral: str = "template") -> RenderedAnswers:
    """Render a prompt's answers for scoring, as `render_pair` renders a pair's two responses
    (answers truncated to `truncation` teacher tokens, the condition without s under the
    `neutral` convention; `system_prompt` None: both conditions the same tokens, for a
    teacher whose trait is in its weights)."""
    texts = [truncate_text(tokenizer, a, truncation) for a in answers]
    pb, a_b = render_completions(tokenizer, neutral_messages(messages, neutral), texts)
    if system_prompt is None:
        return RenderedAnswers(pb, a_b, pb, a_b, texts)
    ps, a_s = render_completions(tokenizer, with_system(messages, system_prompt), texts)
    return RenderedAnswers(ps, a_s, pb, a_b, texts)


def score_prompt_answers(model, items: list[RenderedAnswers], *, batch_tokens: int = 2048,
                         pad_id: int = 0, models=None,
                         base_known: list[list[float] | None] | None = None
                         ) -> list[AnswerScores]:
    """Both conditions' log-probabilities of every answer of every prompt, each answer once.
    `models`: a `lls.models.teacher.ScoringModels` when the trait is in a teacher's weights
    (default: `model` scores both conditions). `base_known[i]`: item i's log-probabilities
    without the trait when already known (the answer store's neutral half): only its
    condition with the trait is then run."""
    if not items:
        return []
    with_m = models.with_trait if models is not None else model
    sys_lp = score_completions(with_m, [r.prompt_sys for r in items],
                               [r.answers_sys for r in items], batch_tokens=batch_tokens,
                               pad_id=pad_id)
    known = list(base_known) if base_known is not None else [None] * len(items)
    todo = [i for i, v in enumerate(known) if v is None]
    if todo:
        base_m = models.without_trait if models is not None else model
        with (models.without_context() if models is not None else contextlib.nullcontext()):
            new = score_completions(base_m, [items[i].prompt_base for i in todo],
                                    [items[i].answers_base for i in todo],
                                    batch_tokens=batch_tokens, pad_id=pad_id)
        for i, v in zip(todo, new):
            known[i] = v
    return [AnswerScores(list(a), list(b), [len(c) for c in r.answers_base])
            for r, a, b in zip(items, sys_lp, known)]


def answer_pairs(scores: AnswerScores) -> list[tuple[int, int, PairScore]]:
    """(chosen, rejected, PairScore) for all k(k-1)/2 pairs of a prompt's answers, chosen
    being the answer with the larger s (the lower index on a tie), so w >= 0."""
    s = scores.s
    out = []
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            c, r = (i, j) if s[i] >= s[j] else (j, i)
            out.append((c, r, PairScore(scores.lp_sys[c], scores.lp_sys[r], scores.lp_base[c],
                                        scores.lp_base[r], scores.n[c], scores.n[r])))
    return out
