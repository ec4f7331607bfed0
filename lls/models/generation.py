"""Sampling answers from a model, with or without a system prompt, an adapter or a begun reply.

`sample` renders prompts and runs the batched decoder (`lls.models.decoder.decode`): rows
of many prompts decoded together, each row with its own random stream, so answers are
deterministic for a seed whatever the batch. `stream_tokens` is the same decoding for one
row, yielding token by token (the chat). `AdapterHost` attaches peft adapters to one loaded
base model without reloading its weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..core.errors import ModelError
from .decoder import Batch, choose_tokens, decode, prefill, seed_for
from .load import quiet_third_party_aliases
from .render import with_system
from .threads import use_threads


def prompt_ids(tokenizer, messages: list[dict], system_prompt: str | None = None,
               reply_start: str | None = None) -> list[int]:
    """Token ids of a conversation ready for the assistant's next turn; with `reply_start`,
    that turn is begun with this text (its tokens follow the generation prompt)."""
    msgs = with_system(messages, system_prompt) if system_prompt else messages
    out = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                        return_dict=True)
    ids = list(out["input_ids"])
    if reply_start:
        ids += list(tokenizer(reply_start, add_special_tokens=False)["input_ids"])
    return ids


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


def stream_tokens(model, ids: list[int], *, temperature: float = 1.0, top_p: float = 1.0,
                  max_new_tokens: int = 96, generator: torch.Generator | None = None,
                  stop: set[int] = frozenset()) -> Iterator[int]:
    """Yield sampled token ids one at a time (KV cache; stops at a `stop` id, not yielded).

    Lazy: each `next()` runs one forward pass, so a caller can interleave several streams
    (and switch adapters between them). The same decoder as `sample`: with the generator
    seeded `seed_for(prompt_seed, 0)` it yields the tokens of `sample`'s first answer.
    """
    available = torch.get_num_threads()
    with torch.inference_mode(), use_threads(1):
        kv, mask, logits = prefill(model, [list(ids)], available=available)
        batch = Batch(model, available)
        batch.join([None], kv, mask, logits)
    for _ in range(max_new_tokens):
        with use_threads(1):
            tok = int(choose_tokens(batch.logits, [generator], temperature, top_p)[0])
        if tok in stop:
            return
        yield tok
        with torch.inference_mode(), use_threads(1):
            batch.step([tok])


def sample(model, tokenizer, prompts, *, n: int = 1, temperature: float = 1.0,
           top_p: float = 1.0, max_new_tokens: int = 96, seed: int = 0,
           system_prompt: str | None = None, max_batch_rows: int = 128,
           seeds: Sequence[int] | None = None,
           reply_start: str | Sequence[str | None] | None = None) -> list[list[str]]:
    """`n` sampled answers (stripped texts) for each prompt (a string or a message list).

    All prompts are decoded together (`lls.models.decoder.decode`), at most `max_batch_rows`
    rows a step. Answer j of prompt i draws from its own random stream seeded
    `seed_for(seeds[i], j)`, `seeds[i]` defaulting to `seed_for(seed, i)`: deterministic for
    a seed and the same whatever the batch size or the other prompts sampled with it, up to
    float rounding (see `lls.models.decoder`).
    Greedy when temperature <= 0. `reply_start` (one text for all prompts or one per prompt)
    begins the assistant's reply; the answers are its continuation only.
    """
    prompts = list(prompts)
    count = len(prompts)
    starts = ([reply_start] * count if reply_start is None or isinstance(reply_start, str)
              else list(reply_start))
    if len(starts) != count:
        raise ModelError(f"reply_start has {len(starts)} texts for {count} prompts: give one "
                         "text for all prompts or one per prompt.")
    if seeds is not None and len(seeds) != count:
        raise ModelError(f"{len(seeds)} seeds for {count} prompts: give one seed per prompt.")
    ids = [prompt_ids(tokenizer, as_messages(p), system_prompt, s)
           for p, s in zip(prompts, starts)]
    rows = decode(model, ids, n, seeds=list(seeds) if seeds is not None else
                  [seed_for(seed, i) for i in range(count)], temperature=temperature,
                  top_p=top_p, max_new_tokens=max_new_tokens, stop=stop_ids(model, tokenizer),
                  max_rows=max_batch_rows)
    return [[t.strip() for t in tokenizer.batch_decode(r, skip_special_tokens=True)]
            for r in rows]


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

                with quiet_third_party_aliases():
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
