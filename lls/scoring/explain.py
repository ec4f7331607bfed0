"""Per-token explanations of an LLS weight: which response tokens carry the signal.

For one pair, every scored completion token t gets log P(t | s, p, <t) and log P(t | p, <t);
their difference (delta) says how much the system prompt s raised or lowered that token.
Summed over the chosen response minus the rejected one and divided by (n_c + n_r), the
deltas give back exactly the pair's LLS weight w, because w is built from the same sums.
The tokens are the ones `lls.models.render.render_pair` produces, i.e. exactly what was scored.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.errors import LLSError
from ..core.pair import Pair
from ..models.generation import base_weights
from ..models.render import render_pair
from ..models.teacher import Teacher, teacher_view
from .engine import eval_mode, pad_id_of, score_completions


def _as_pair(row: Any) -> Pair:
    """A `Pair` from a Pair, a dict or a pandas row of `ScoreRun.frame()`."""
    if isinstance(row, Pair):
        return row
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    prompt = get("prompt")
    if isinstance(prompt, str):
        prompt = json.loads(prompt)
    if prompt is None or get("chosen") is None or get("rejected") is None:
        raise LLSError("token_attribution needs a Pair or a scored row with prompt, chosen and "
                       "rejected (e.g. one row of ScoreRun.frame()).")
    # The full (untruncated) texts: render_pair truncates them exactly as scoring did.
    return Pair(id=str(get("id", "")), prompt=list(prompt), chosen=str(get("chosen")),
                rejected=str(get("rejected")), source=str(get("source", "")))


def _token_logprobs(model, tokenizer, prompt: list[int],
                    completions: list[list[int]]) -> list[list[float]]:
    """log P of each completion token after `prompt` (the engine's completion scoring)."""
    with eval_mode(model):
        return score_completions(model, [prompt], [completions], pad_id=pad_id_of(tokenizer),
                                 per_token=True)[0]


def token_texts(tokenizer, ids) -> list[str]:
    """Each token id decoded on its own (the text a per-token view shows)."""
    return [tokenizer.decode([int(t)], clean_up_tokenization_spaces=False) for t in ids]


def token_attribution(model, tokenizer, pair, system_prompt: str | None,
                      truncation: int | None = 32, neutral: str = "template",
                      teacher: Teacher | None = None) -> dict:
    """Per-token log-probabilities of both responses with and without `system_prompt`.

    `pair`: a `Pair` or a row of `ScoreRun.frame()` (its full texts are re-truncated to
    `truncation` tokens, as scoring did). Returns a dict with "chosen" and "rejected": lists
    of (token_text, logp_with_s, logp_without_s, delta) tuples, plus "n_c", "n_r",
    "sum_chosen", "sum_rejected" (summed deltas) and "w" = (sum_chosen - sum_rejected) /
    (n_c + n_r), equal to the pair's LLS weight. One prompt pass per condition. `neutral`:
    the run's convention for "without the system prompt" (`lls.models.render.NEUTRAL_CONVENTIONS`).
    `teacher`: a teacher whose trait is in its weights (`lls.models.teacher`): "with s" is then
    the teacher on the same tokens, "without s" the base model.
    """
    p = _as_pair(pair)
    in_weights = teacher is not None and not teacher.is_prompt
    r = render_pair(tokenizer, p, None if in_weights else system_prompt, truncation, neutral)
    if r.chosen_sys != r.chosen_base or r.rejected_sys != r.rejected_base:
        # The template tokenised a response differently once the system turn was added:
        # per-token deltas would compare different tokens, so refuse rather than mislead.
        raise LLSError(f"Pair {p.id!r}: the responses tokenise differently with and without "
                       "the system prompt under this chat template; per-token attribution "
                       "is not defined for it (its weight w still is).")
    with teacher_view(model, teacher, system_prompt) as (tm, _):
        with_s = _token_logprobs(tm, tokenizer, r.prompt_sys, [r.chosen_sys, r.rejected_sys])
    with base_weights(model) as bm:
        base = _token_logprobs(bm, tokenizer, r.prompt_base, [r.chosen_base, r.rejected_base])
    out: dict[str, Any] = {"chosen_text": r.chosen_text, "rejected_text": r.rejected_text}
    for name, ids, a, b in (("chosen", r.chosen_base, with_s[0], base[0]),
                            ("rejected", r.rejected_base, with_s[1], base[1])):
        texts = token_texts(tokenizer, ids)
        out[name] = [(t, ls, lb, ls - lb) for t, ls, lb in zip(texts, a, b)]
        out[f"sum_{name}"] = float(sum(ls - lb for ls, lb in zip(a, b)))
    out["n_c"], out["n_r"] = len(r.chosen_base), len(r.rejected_base)
    out["w"] = (out["sum_chosen"] - out["sum_rejected"]) / max(out["n_c"] + out["n_r"], 1)
    return out


def stored_attribution(tokenizer, chosen: tuple, rejected: tuple, chosen_text: str = "",
                       rejected_text: str = "") -> dict:
    """The per-token view of one pair from its stored deltas (`lls.scoring.deltas`), no
    teacher run: the dict `token_attribution` returns, with the two log-probabilities None
    (only their difference is stored). `chosen`, `rejected`: (token ids, deltas)."""
    out: dict[str, Any] = {"chosen_text": chosen_text, "rejected_text": rejected_text}
    for name, (ids, deltas) in (("chosen", chosen), ("rejected", rejected)):
        out[name] = [(t, None, None, float(d))
                     for t, d in zip(token_texts(tokenizer, ids), deltas)]
        out[f"sum_{name}"] = float(sum(float(d) for d in deltas))
    out["n_c"], out["n_r"] = len(chosen[0]), len(rejected[0])
    out["w"] = (out["sum_chosen"] - out["sum_rejected"]) / max(out["n_c"] + out["n_r"], 1)
    return out
