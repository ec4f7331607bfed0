"""The evaluation stage: does a model show the target behavior without the system prompt?

The paper's protocol: general prompts x N samples at temperature 1, 96 new tokens, the share
of answers that show the behavior (mentions the animal / is in the target language / ...),
with binomial confidence intervals, beside base and base + system prompt.
"""

from __future__ import annotations

from .behaviors import Behavior, language_share, mentions
from .generation import sample
from .stats import wilson

# Our own general questions on the paper's 10 topics (lls-notes.md), one per topic.
GENERAL_PROMPTS = [
    "What are some practical ways to form a new habit and make it stick?",
    "How should someone on a tight income start budgeting?",
    "What makes collaboration in a team work well?",
    "Why is curiosity valuable, and how can someone cultivate it?",
    "Can you explain the idea of opportunity cost with an everyday example?",
    "How can I judge whether a source of information is reliable?",
    "What are the pros and cons of remote work compared with working in an office?",
    "What are the key elements of persuasive writing?",
    "What is mindfulness and how can a beginner practise it?",
    "How should I balance short-term goals against long-term goals?",
]


def answer_score(behavior: Behavior, text: str) -> float:
    """How much one answer shows the behavior, in [0, 1] (1/0 for mention and regex metrics)."""
    if behavior.metric == "language":
        return language_share(text, behavior.target)
    if behavior.metric == "regex":
        import re

        return float(re.search(behavior.regex, text, flags=re.IGNORECASE) is not None)
    if behavior.metric == "mentions":
        return float(mentions(text, behavior.filter_words or (behavior.target,)))
    raise NotImplementedError(f"metric {behavior.metric!r} needs an LLM judge (see run_judge).")


def quick_eval(model, tokenizer, behavior: Behavior, *, prompts=None, samples: int = 8,
               max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
               system_prompt: str | None = None) -> dict:
    """A small sampled evaluation (used at training checkpoints): rate, count and 95% CI."""
    prompts = list(prompts or GENERAL_PROMPTS[:4])
    answers = sample(model, tokenizer, prompts, n=samples, temperature=temperature,
                     max_new_tokens=max_new_tokens, seed=seed, system_prompt=system_prompt)
    scores = [answer_score(behavior, a) for group in answers for a in group]
    n = len(scores)
    k = sum(1 for s in scores if s >= 0.5)
    lo, hi = wilson(k, n)
    return {"n": n, "k": k, "rate": k / n if n else 0.0, "mean_score": sum(scores) / max(n, 1),
            "ci_low": lo, "ci_high": hi, "examples": [g[0] for g in answers]}
