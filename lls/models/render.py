"""Turn a preference pair into the token ids a teacher scores and DPO later trains on.

Rendering follows TRL's DPO trainer for conversational data: the prompt is the chat template
applied to the prompt messages with the generation prompt; a completion is the template
applied to prompt + assistant reply, minus the longest common prefix with the prompt. So the
completion ends with the template's end-of-turn token(s), exactly the tokens DPO trains on.

"Without the system prompt" means the prompt messages exactly as the dataset gives them,
which is what the student sees when it is trained and evaluated. Templates that insert a
default system turn when none is given (SmolLM2 inserts "You are a helpful AI assistant
named SmolLM, trained by Hugging Face") insert it here too, in the baseline condition.
"With the system prompt" puts the target system prompt in a first system turn; when the
pair already has a system turn, the target prompt goes in front of it, separated by a
blank line, so the dataset's own instructions are kept.

That is the neutral convention "template" (the default). The convention "empty" is the
authors' code's: the condition without s gets an explicit empty system turn when the pair
has none, so no template default is inserted (`neutral_messages`). The condition with s is
the same under both conventions.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import LLSError
from ..core.pair import Pair

NEUTRAL_CONVENTIONS = ("template", "empty")


@dataclass(frozen=True)
class Rendered:
    """Token ids of one pair under both conditions (with / without the system prompt)."""

    prompt_sys: list[int]
    chosen_sys: list[int]
    rejected_sys: list[int]
    prompt_base: list[int]
    chosen_base: list[int]
    rejected_base: list[int]
    chosen_text: str  # the (truncated) response texts that were rendered
    rejected_text: str


def with_system(messages: list[dict], system_prompt: str) -> list[dict]:
    """Prompt messages with `system_prompt` as (the start of) the system turn."""
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = system_prompt + "\n\n" + msgs[0]["content"]
        return msgs
    return [{"role": "system", "content": system_prompt}] + msgs


def neutral_messages(messages: list[dict], neutral: str = "template") -> list[dict]:
    """Prompt messages of the condition without the system prompt under a neutral convention:
    "template" keeps them as given; "empty" prepends an empty system turn when there is none."""
    if neutral not in NEUTRAL_CONVENTIONS:
        raise LLSError(f"Unknown neutral convention {neutral!r}: use one of "
                       f"{', '.join(NEUTRAL_CONVENTIONS)} (ScoreConfig.neutral / --neutral).")
    if neutral == "empty" and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": ""}] + [dict(m) for m in messages]
    return messages


def truncate_text(tokenizer, text: str, max_tokens: int | None) -> str:
    """The first `max_tokens` tokens of `text`, decoded back to text (the paper's truncation)."""
    if not max_tokens:
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], clean_up_tokenization_spaces=False)


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True
    )
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def render_prompt_completions(tokenizer, messages: list[dict], chosen: str, rejected: str):
    """(prompt_ids, chosen_ids, rejected_ids) the way TRL's DPO tokenizes a conversational row."""
    prompt = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    full_c = _chat_ids(tokenizer, messages + [{"role": "assistant", "content": chosen}], False)
    full_r = _chat_ids(tokenizer, messages + [{"role": "assistant", "content": rejected}], False)
    k = min(_common_prefix(prompt, full_c), _common_prefix(prompt, full_r))
    return prompt[:k], full_c[k:], full_r[k:]


def render_completions(tokenizer, messages: list[dict], replies: list[str]
                       ) -> tuple[list[int], list[list[int]]]:
    """(prompt_ids, [completion_ids]) for any number of replies to one conversation, the way
    `render_prompt_completions` renders two: the prompt is cut where every reply's rendering
    still agrees with it, so with two replies the ids are exactly that function's."""
    prompt = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    fulls = [_chat_ids(tokenizer, messages + [{"role": "assistant", "content": r}], False)
             for r in replies]
    k = min((_common_prefix(prompt, f) for f in fulls), default=len(prompt))
    return prompt[:k], [f[k:] for f in fulls]


def render_pair(tokenizer, pair: Pair, system_prompt: str | None, truncation: int | None,
                neutral: str = "template") -> Rendered:
    """Render one pair for scoring: responses truncated to `truncation` teacher tokens, the
    condition without s rendered under the `neutral` convention ("template" or "empty").
    `system_prompt` None (a teacher whose trait is in its weights): both conditions are the
    same tokens, the rendering without s."""
    chosen = truncate_text(tokenizer, pair.chosen, truncation)
    rejected = truncate_text(tokenizer, pair.rejected, truncation)
    pb, cb, rb = render_prompt_completions(tokenizer, neutral_messages(pair.prompt, neutral),
                                           chosen, rejected)
    if system_prompt is None:
        return Rendered(pb, cb, rb, pb, cb, rb, chosen, rejected)
    ps, cs, rs = render_prompt_completions(
        tokenizer, with_system(pair.prompt, system_prompt), chosen, rejected
    )
    return Rendered(ps, cs, rs, pb, cb, rb, chosen, rejected)
