"""Sampling answers from a model (batched), with or without a system prompt or an adapter.

`sample` draws all samples of a prompt from one prefill: the prompt is encoded once, its KV
cache is repeated for the n sample rows, and rows that finished (end of turn) leave the batch
so later steps only pay for the rows still writing. On a CPU this is several times faster
than one `generate` call per sample (see benchmarks/eval_throughput.py).

`stream_tokens` is the same decode loop for one row, yielding token by token (the chat).
`AdapterHost` attaches peft adapters to one loaded base model without reloading its weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from ..core.errors import ModelError
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


def stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end an answer (the tokenizer's EOS and the model's generation EOS)."""
    ids: set[int] = set()
    for v in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)
              if hasattr(model, "generation_config") else None):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return ids


def seed_for(*parts) -> int:
    """A stable 63-bit seed from any parts (e.g. seed, column, turn, prompt index)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """Sample one token per row from [rows, vocab] logits (greedy when temperature <= 0)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _step(model, ids: torch.Tensor, cache):
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    if out.cache is None:  # e.g. training mode with activation checkpointing: no KV cache
        raise ModelError("The model returned no KV cache, so it cannot decode step by step: "
                         "call model.eval() before sampling.")
    return out.logits[:, -1, :], out.cache


def stream_tokens(model, ids: list[int], *, temperature: float = 1.0, top_p: float = 1.0,
                  max_new_tokens: int = 96, generator: torch.Generator | None = None,
                  stop: set[int] = frozenset()) -> Iterator[int]:
    """Yield sampled token ids one at a time (KV cache; stops at a `stop` id, not yielded).

    Lazy: each `next()` runs one forward pass, so a caller can interleave several streams
    (and switch adapters between them).
    """
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits, cache = _step(model, torch.tensor([ids], device=device), None)
    for _ in range(max_new_tokens):
        tok = int(next_tokens(logits, temperature, top_p, generator)[0])
        if tok in stop:
            return
        yield tok
        with torch.inference_mode():
            logits, cache = _step(model, torch.tensor([[tok]], device=device), cache)


def _sample_one_prompt(model, ids: list[int], n: int, *, temperature: float, top_p: float,
                       max_new_tokens: int, generator: torch.Generator, stop: set[int],
                       max_batch_rows: int) -> list[list[int]]:
    device = next(model.parameters()).device
    outs: list[list[int]] = []
    with torch.inference_mode():
        # The prompt is encoded once; each block of sample rows continues from its cache.
        logits0, cache0 = _step(model, torch.tensor([ids], device=device), None)
        prefix_kv = [(layer.keys, layer.values) for layer in cache0.layers]
        for start in range(0, n, max_batch_rows):
            rows = min(max_batch_rows, n - start)
            from transformers import DynamicCache

            cache = DynamicCache(config=model.config)
            for i, (k, v) in enumerate(prefix_kv):
                cache.layers[i].update(k.expand(rows, -1, -1, -1).contiguous(),
                                       v.expand(rows, -1, -1, -1).contiguous())
            logits = logits0.expand(rows, -1)
            seqs: list[list[int]] = [[] for _ in range(rows)]
            alive = list(range(rows))  # which output row each batch row writes
            for _ in range(max_new_tokens):
                toks = next_tokens(logits, temperature, top_p, generator).tolist()
                keep = []
                for j, t in enumerate(toks):
                    if t in stop:
                        continue
                    seqs[alive[j]].append(t)
                    keep.append(j)
                if not keep:
                    break
                if len(keep) < len(alive):  # finished rows leave the batch
                    idx = torch.tensor(keep, device=device)
                    cache.batch_select_indices(idx)
                    alive = [alive[j] for j in keep]
                    toks = [toks[j] for j in keep]
                if len(seqs[alive[0]]) >= max_new_tokens:
                    break
                logits, cache = _step(model, torch.tensor(toks, device=device)[:, None], cache)
            outs.extend(seqs)
    return outs


def sample(model, tokenizer, prompts, *, n: int = 1, temperature: float = 1.0,
           top_p: float = 1.0, max_new_tokens: int = 96, seed: int = 0,
           system_prompt: str | None = None, max_batch_rows: int = 64) -> list[list[str]]:
    """`n` sampled answers for each prompt (a string or a message list).

    Deterministic for a given seed and model: each prompt has its own random stream
    (seeded from `seed` and its position), so results do not depend on batching. Rows decoded
    together are at most `max_batch_rows`.
    """
    stop = stop_ids(model, tokenizer)
    answers: list[list[str]] = []
    for i, p in enumerate(prompts):
        ids = prompt_ids(tokenizer, as_messages(p), system_prompt)
        gen = torch.Generator().manual_seed(seed_for(seed, i))
        seqs = _sample_one_prompt(model, ids, n, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, generator=gen, stop=stop,
                                  max_batch_rows=max(1, max_batch_rows))
        answers.append([t.strip() for t in tokenizer.batch_decode(seqs, skip_special_tokens=True)])
    return answers


def sample_generate(model, tokenizer, prompts, *, n: int = 1, temperature: float = 1.0,
                    top_p: float = 1.0, max_new_tokens: int = 96, seed: int = 0,
                    system_prompt: str | None = None, per_sample: bool = False) -> list[list[str]]:
    """Reference sampler with transformers' `generate`: one call per prompt
    (`num_return_sequences=n`) or, with `per_sample`, one call per sample (the slow baseline)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    answers = []
    for p in prompts:
        ids = torch.tensor([prompt_ids(tokenizer, as_messages(p), system_prompt)], device=device)
        calls, rows = (n, 1) if per_sample else (1, n)
        texts = []
        for _ in range(calls):
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids),
                    do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                    top_p=top_p if temperature > 0 else None, max_new_tokens=max_new_tokens,
                    num_return_sequences=rows, pad_token_id=pad)
            texts += tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        answers.append([t.strip() for t in texts])
    return answers


# ======================================================================================
# Adapters on one base model
# ======================================================================================

def check_adapter_dir(path) -> Path:
    """A peft adapter directory (adapter_config.json + safetensors weights), or ModelError."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelError(f"Adapter directory {p} does not exist: pick a trained adapter or a "
                         "checkpoint folder (cache/adapters/<id>/checkpoints/step-.../ or final/).")
    if not (p / "adapter_config.json").is_file():
        raise ModelError(f"{p} has no adapter_config.json: it is not a peft adapter directory.")
    if not (p / "adapter_model.safetensors").is_file():
        raise ModelError(f"{p} has no adapter_model.safetensors: only safetensors adapters are "
                         "loaded (never pickled .bin files).")
    return p.resolve()


class AdapterHost:
    """One base model with any number of peft adapters attached (base weights loaded once).

    `attach(path)` loads only the adapter's weights; `use(name)` is a context in which the
    model runs with that adapter (`None`: the plain base model, adapters disabled).
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.names: dict[str, str] = {}  # resolved path -> adapter name

    def attach(self, path) -> str:
        p = check_adapter_dir(path)
        key = str(p)
        if key in self.names:
            return self.names[key]
        name = "a" + hashlib.sha256(key.encode()).hexdigest()[:10]
        try:
            if not self.names:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, key, adapter_name=name,
                                                       is_trainable=False)
            else:
                self.model.load_adapter(key, adapter_name=name, is_trainable=False)
        except Exception as e:  # noqa: BLE001 - shape / base mismatch, corrupt files
            raise ModelError(f"Could not attach adapter {p}: {e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}. Was it trained on "
                             "this base model?") from e
        self.model.eval()
        self.names[key] = name
        return name

    @contextlib.contextmanager
    def use(self, name: str | None):
        """Run the model with adapter `name` active (None: base model, adapters off)."""
        if not self.names:
            if name is not None:
                raise ModelError(f"Adapter {name!r} is not attached.")
            yield self.model
            return
        if name is None:
            with self.model.disable_adapter():
                yield self.model
            return
        if self.model.active_adapter != name:
            self.model.set_adapter(name)
        yield self.model


@contextlib.contextmanager
def base_weights(model):
    """The base model: a peft model runs with its adapters disabled (others as they are)."""
    if hasattr(model, "peft_config") and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def adapter_label(path) -> str:
    """A short readable label for an adapter directory: '<adapter id> · step N' or final."""
    p = Path(path)
    m = re.fullmatch(r"step-0*(\d+)", p.name)
    if m and p.parent.name == "checkpoints":
        return f"{p.parent.parent.name} · step {int(m.group(1))}"
    if p.name == "final":
        return f"{p.parent.name} · final"
    return p.name
