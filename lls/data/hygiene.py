"""Hygiene: what reading a source kept and dropped, why, and what to do about it.

Rows that are unusable for LLS (empty, identical responses, ties, too long for the model, ...)
are counted in a `HygieneReport` instead of crashing a run. This module also measures prompt
and pair lengths in tokens, for the prompt-length and context-window limits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ..core import prompts as _bundled

# Display order of the drop reasons. The last six are sampled pairs' (`lls.scoring.sampled`):
# prompts read from a source, then the student's answers to them.
HYGIENE_REASONS = ("malformed", "truncated", "tie", "both_bad", "different_prompts", "empty",
                   "identical", "prompt_too_long", "too_long", "filtered", "multi_turn",
                   "duplicate_prompt", "readout_question", "empty_answer", "answer_filtered",
                   "identical_answer", "few_answers", "answer_without_behavior")

# What each reason means, in the user's words (pages and messages show these, never the code).
LABELS = {
    "malformed": "broken rows",
    "truncated": "compressed file cut short",
    "tie": "ties (neither response preferred)",
    "both_bad": "both responses judged bad",
    "different_prompts": "chosen and rejected continue different conversations",
    "empty": "empty prompt or response",
    "identical": "chosen and rejected are the same text",
    "prompt_too_long": "prompt longer than the limit",
    "too_long": "longer than the model's context window",
    "filtered": "already show the behavior",
    "multi_turn": "conversations with more than one user turn",
    "duplicate_prompt": "prompts seen before",
    "readout_question": "prompts that are questions a read-out asks (in-sample)",
    "empty_answer": "empty answers",
    "answer_filtered": "answers that show the behavior",
    "identical_answer": "answers repeating another answer to the same prompt",
    "few_answers": "prompts left with fewer than two answers",
    "answer_without_behavior": "answers that do not show the behavior",
}
_EXAMPLES_PER_REASON = 5

# What to do about each drop reason; interface-neutral (the CLI flag and the Setup control).
ADVICE = {
    "malformed": "fix or remove the broken rows (their positions are listed), or skip them "
                 "(command line: --skip-malformed; Setup page: 'Skip malformed rows')",
    "truncated": "the compressed file ends early: re-download or re-compress it "
                 "(gzip -t checks a file)",
    "tie": "ties say neither response is better, so they cannot be a preference pair: "
           "nothing to fix",
    "both_bad": "'both bad' comparisons have no preferred response: nothing to fix",
    "different_prompts": "chosen and rejected continue different conversations: check that "
                         "both columns come from the same comparison",
    "empty": "a prompt or a response is empty: check that the columns are mapped to the right "
             "fields (command line: --columns; Setup page: 'Map your columns')",
    "identical": "chosen and rejected are the same text: check that they are mapped to two "
                 "different responses (command line: --columns; Setup page: 'Map your columns')",
    "prompt_too_long": "raise the prompt limit (command line: --max-prompt-tokens, 0 keeps "
                       "all; Setup page: 'Drop prompts longer than')",
    "too_long": "prompt plus response exceed the model's context window: lower the truncation "
                "(command line: --truncation; Setup page: 'Truncate responses to N teacher tokens') or use a model with a "
                "longer context",
    "filtered": "these pairs already show the behavior: loosen the filter words (command "
                "line: --filter-words or --no-filter; Setup page: the filter words box)",
    "multi_turn": "only single-turn prompts are sampled by default: take the first user turn "
                  "of longer conversations (command line: --first-turn; Setup page: 'Also use "
                  "the first turn of longer conversations')",
    "duplicate_prompt": "the same prompt appears more than once (or in two sources): it is "
                        "sampled once, nothing to fix",
    "readout_question": "these prompts are questions the evaluations read the behavior on: "
                        "dropped so the read-outs stay out of sample, nothing to fix",
    "empty_answer": "the model ended its answer at once: nothing to fix (more answers per "
                    "prompt give more pairs)",
    "answer_filtered": "these answers already show the behavior, as the paper drops such "
                       "pairs: loosen the filter words to keep them",
    "identical_answer": "the model gave the same answer twice: a higher temperature gives "
                        "more varied answers",
    "few_answers": "fewer than two answers were left to pair: more answers per prompt "
                   "(command line: --k; Setup page: 'Answers per prompt') keep more prompts",
    "answer_without_behavior": "a trait adapter learns only from answers that show the "
                               "behavior: a stronger system prompt or more answers per prompt "
                               "keep more",
}


def label(reason: str) -> str:
    """A drop reason in the user's words ("different_prompts" -> "chosen and rejected
    continue different conversations"); unknown reasons are shown with spaces."""
    return LABELS.get(reason, reason.replace("_", " "))


def plural(n: int, word: str) -> str:
    """"1 row", "2 rows"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class HygieneReport:
    """What reading a source kept and dropped, and why. Complete once the iterator ends.

    `warnings` holds loud one-line notes (e.g. a truncated stream that was skipped on request).
    """

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # kept rows counted under a reason (e.g. a dataset run's prompts that are read-out
    # questions: counted, not dropped, so the run's pairs and key stay as they were)
    noted: dict[str, int] = field(default_factory=dict)

    def note(self, reason: str, pair_id: str) -> None:
        """Count one KEPT row under `reason` (examples under "<reason>_kept")."""
        self.noted[reason] = self.noted.get(reason, 0) + 1
        ids = self.examples.setdefault(f"{reason}_kept", [])
        if len(ids) < _EXAMPLES_PER_REASON:
            ids.append(pair_id)

    def drop(self, reason: str, pair_id: str) -> None:
        """Count one dropped row under `reason`, keeping the first few ids as examples."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < _EXAMPLES_PER_REASON:
            ids.append(pair_id)

    def summary(self) -> str:
        """One line, e.g. "read 2312, kept 2303; dropped: different_prompts 5, empty 4"."""
        line = f"read {self.read}, kept {self.kept}"
        if self.dropped:
            parts = [f"{r} {n}" for r, n in sorted(self.dropped.items(), key=_reason_order)]
            line += "; dropped: " + ", ".join(parts)
        return line

    def describe(self, unit: str = "rows") -> str:
        """One line in the user's words, e.g. "2312 rows read, 2303 kept; dropped: chosen and
        rejected continue different conversations 5" (`unit`: what was read)."""
        line = f"{self.read} {unit} read, {self.kept} kept"
        if self.dropped:
            parts = [f"{label(r)} {n}" for r, n in sorted(self.dropped.items(), key=_reason_order)]
            line += "; dropped: " + ", ".join(parts)
        return line

    def advice(self) -> str:
        """What to do, for the drop reasons present, largest count first."""
        reasons = sorted(self.dropped, key=lambda r: (-self.dropped[r], _reason_order((r, 0))))
        return "; ".join(f"{label(r)}: {ADVICE[r]}" for r in reasons if r in ADVICE)

    def to_dict(self) -> dict:
        d = {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped),
             "examples": {k: list(v) for k, v in self.examples.items()}}
        if self.warnings:
            d["warnings"] = list(self.warnings)
        if self.noted:
            d["noted"] = dict(self.noted)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HygieneReport":
        return cls(read=d["read"], kept=d["kept"], dropped=dict(d.get("dropped", {})),
                   examples={k: list(v) for k, v in d.get("examples", {}).items()},
                   warnings=list(d.get("warnings", [])), noted=dict(d.get("noted", {})))


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalise_question(text: str) -> str:
    """A question as compared with the read-out questions: case, accents' composition,
    punctuation and spacing do not count ("What's your favorite animal?" ==
    "whats your favorite animal")."""
    t = unicodedata.normalize("NFKC", text or "").casefold().replace("'", "").replace("’", "")
    return " ".join(_PUNCT.sub(" ", t).split())


# The questions the read-outs ask: sampled evaluations (general prompts), the preference
# probe and the one-word / prefilled read-outs (probe questions), the likelihood-ratio
# reference (its prompts).
READOUT_QUESTIONS = frozenset(normalise_question(q) for q in (
    *_bundled.GENERAL_PROMPTS, *_bundled.PROBE_QUESTIONS, *_bundled.LLR_PROMPTS))


def asks_readout(messages: list[dict]) -> bool:
    """Whether a prompt's last user turn is one of the read-out questions (normalised)."""
    users = [m.get("content", "") for m in messages or [] if m.get("role") == "user"]
    return bool(users) and normalise_question(users[-1]) in READOUT_QUESTIONS


def _reason_order(item: tuple[str, int]) -> tuple[int, str]:
    reason = item[0]
    rank = HYGIENE_REASONS.index(reason) if reason in HYGIENE_REASONS else len(HYGIENE_REASONS)
    return rank, reason


def count_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Prompt length in tokens.

    With a chat template, the templated prompt (with the generation prompt) is counted,
    which is what the model will see; otherwise the message contents joined by newlines.
    `tokenizer` may also be a plain callable text -> token sequence.
    """
    if getattr(tokenizer, "chat_template", None) and hasattr(tokenizer, "apply_chat_template"):
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "\n".join(m["content"] for m in messages)
    if hasattr(tokenizer, "encode"):
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return len(tokenizer.encode(text))
    return len(tokenizer(text))


# Tokenizers without a known limit report a huge sentinel (int(1e30)): not a real limit.
_NO_LIMIT = 10**9


def context_limit(tokenizer: Any = None, config: Any = None) -> int | None:
    """The model's context window in tokens: the smaller of the tokenizer's
    `model_max_length` and the config's `max_position_embeddings` that are known, else None."""
    limits = []
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < _NO_LIMIT:
        limits.append(n)
    n = getattr(config, "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        limits.append(n)
    return min(limits) if limits else None


def reach(prompt_sys, prompt_base, response_sys, response_base) -> int:
    """The longest position one rendered response reaches: its prompt plus the response,
    with the system prompt or without (the engine runs each response from the prompt's
    last position). The one measure the context-window check compares with the limit."""
    return max(len(prompt_sys) + len(response_sys), len(prompt_base) + len(response_base))


def rendered_length(rendered: Any) -> int:
    """The longest position a rendered pair reaches (`reach` of its longer response)."""
    r = rendered
    return max(reach(r.prompt_sys, r.prompt_base, r.chosen_sys, r.chosen_base),
               reach(r.prompt_sys, r.prompt_base, r.rejected_sys, r.rejected_base))
