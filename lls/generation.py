"""Sampling answers from a model (batched), with or without a system prompt.

All samples of a prompt come from one `generate` call (`num_return_sequences`), and several
prompts share a call when they fit, left-padded: on a CPU this is several times faster than
one call per sample (see benchmarks/eval_throughput.py).
"""

from __future__ import annotations

import torch

from .render import with_system


def prompt_ids(tokenizer, messages: list[dict], system_prompt: str | None = None) -> list[int]:
    """Token ids of a conversation ready for the assistant's next turn."""
    msgs = with_system(messages, system_prompt) if system_prompt else messages
    out = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                        return_dict=True)
    return list(out["input_ids"])


def as_messages(prompt) -> list[dict]:
    """A question string or a message list, as a message list."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def sample(model, tokenizer, prompts, *, n: int = 1, temperature: float = 1.0,
           top_p: float = 1.0, max_new_tokens: int = 96, seed: int = 0,
           system_prompt: str | None = None, max_batch_rows: int = 64) -> list[list[str]]:
    """`n` sampled answers for each prompt (a string or a message list).

    Deterministic for a given seed, model and batch layout. Rows of one `generate` call are
    at most `max_batch_rows` (prompts x samples).
    """
    convs = [prompt_ids(tokenizer, as_messages(p), system_prompt) for p in prompts]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_call = max(1, max_batch_rows // max(n, 1))
    answers: list[list[str]] = []
    torch.manual_seed(seed)
    for start in range(0, len(convs), per_call):
        group = convs[start:start + per_call]
        width = max(len(c) for c in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(group):  # left padding: generation continues at the right edge
            ids[i, width - len(c):] = torch.tensor(c)
            mask[i, width - len(c):] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None, max_new_tokens=max_new_tokens,
                num_return_sequences=n, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for i in range(len(group)):
            answers.append([t.strip() for t in texts[i * n:(i + 1) * n]])
    return answers
