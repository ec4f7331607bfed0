"""The batched decoder every sampling path runs on: rows of many prompts decoded together.

`decode(model, prompts, n)` returns `n` sampled continuations (token ids) of each prompt.

- Prompts are sorted by length and prefilled in left-padded batches; a prompt's KV cache is
  copied to each of its rows.
- Up to `max_rows` rows step together: left padding with an attention mask and per-row
  position ids. A row leaves the batch as soon as it ends (a stop token or its own max
  length) and waiting rows take its place (continuous batching), so a step never pays for
  rows that are done and the batch stays full until the queue is empty.
- Row j of prompt i draws from its own `torch.Generator` seeded `seed_for(seeds[i], j)`: its
  tokens depend on its seed and the model only, not on the batch size or on which other
  prompts shared its steps, up to float rounding: the rows of a step and its thread count
  move a logit by up to ~6e-5, which changed 3-6 of the meter's 128 reference answers from
  some token on (docs/development.md, "Decoding internals").

Decode steps and prefills run on the thread counts `lls.models.threads` chooses.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.errors import ModelError
from .threads import StepThreads, threads_for, use_threads

PREFILL_TOKENS = 8192  # padded prompt tokens per prefill forward pass (bounds its memory)


def seed_for(*parts) -> int:
    """A stable 63-bit seed from any parts (e.g. seed, column, turn, prompt index)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def model_width(model) -> int:
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 1024)


# ======================================================================================
# Choosing tokens
# ======================================================================================

def choose_tokens(logits: torch.Tensor, generators: Sequence[torch.Generator | None],
                  temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """One token per row of [rows, vocab] logits; row r draws from `generators[r]` (None: the
    global generator). Greedy when temperature <= 0; top_p keeps the smallest set of most
    likely tokens whose probability reaches top_p.

    Inverse-CDF sampling: each row takes one uniform number from its own generator per token,
    so its stream does not depend on the other rows.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() if temperature == 1 else logits.float() / temperature,
                          dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    idx = _inverse_cdf(probs, u.to(probs.device))
    return (order.gather(-1, idx[:, None]).squeeze(-1) if order is not None else idx)


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor, block: int = 256) -> torch.Tensor:
    """The first index where the cumulative probability of each row exceeds u x its total.
    In two levels (block sums, then one block's cumulative sum): a full-vocabulary cumsum
    is sequential and took as long as a quarter of a decode step."""
    rows, vocab = probs.shape
    pad = -vocab % block
    blocks = torch.nn.functional.pad(probs, (0, pad)).view(rows, -1, block)
    sums = blocks.sum(-1, dtype=torch.float64)
    cdf = sums.cumsum(-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    b = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[1] - 1)
    before = (cdf.gather(1, b) - sums.gather(1, b))
    inner = before + blocks[torch.arange(rows, device=probs.device), b[:, 0]].double().cumsum(-1)
    i = torch.searchsorted(inner, target, right=True).clamp_(max=block - 1)
    return (b * block + i).squeeze(-1).clamp_(max=vocab - 1)


# ======================================================================================
# Forward passes
# ======================================================================================

def prefill(model, prompts: Sequence[list[int]], *, available: int | None = None):
    """Encode prompts in one left-padded forward pass.

    Returns (kv, mask, logits): per layer (keys, values) of shape [prompts, heads, length,
    head dim], the [prompts, length] attention mask (0 on padding) and the [prompts, vocab]
    logits of each prompt's next token.
    """
    if any(len(p) == 0 for p in prompts):
        raise ModelError("Cannot decode from an empty prompt: it has no tokens.")
    device = next(model.parameters()).device
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (length - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts],
                        device=device)
    pos = (mask.cumsum(-1) - 1).clamp_(min=0)
    n = available or torch.get_num_threads()
    with use_threads(threads_for(ids.numel(), model_width(model), n)):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1)
    if out.cache is None:  # e.g. training mode with activation checkpointing: no KV cache
        raise ModelError("The model returned no KV cache, so it cannot decode step by step: "
                         "call model.eval() before sampling.")
    return [(layer.keys, layer.values) for layer in out.cache.layers], mask, out.logits[:, -1]


def _pad_left(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    extra = length - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@dataclass
class _Row:
    prompt: int
    index: int
    generator: torch.Generator | None
    limit: int
    tokens: list[int] = field(default_factory=list)


@functools.cache
def _buffered_layer_class():
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        """transformers' DynamicLayer with spare columns after the cached ones: a decode step
        writes its keys and values in place instead of concatenating (copying) the whole
        cache, which took a fifth of a 64-row step. `keys`/`values` are views of the filled
        columns."""

        def fill(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
            self.device, self.length = keys.device, keys.shape[2]
            self.kbuf = keys.new_empty(*keys.shape[:2], self.length + spare, keys.shape[3])
            self.vbuf = values.new_empty(*values.shape[:2], self.length + spare,
                                         values.shape[3])
            self.kbuf[:, :, :self.length] = keys
            self.vbuf[:, :, :self.length] = values
            self.is_initialized = True
            self._views()

        def _views(self) -> None:
            self.keys = self.kbuf[:, :, :self.length]
            self.values = self.vbuf[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            n = key_states.shape[-2]
            if self.length + n > self.kbuf.shape[2]:  # out of room: double it
                self.fill(self.keys, self.values, max(n, self.length))
            self.kbuf[:, :, self.length:self.length + n] = key_states
            self.vbuf[:, :, self.length:self.length + n] = value_states
            self.length += n
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
            self._views()

        def drop_left(self, columns: int) -> None:
            """Forget the first `columns` columns (padding in every row)."""
            self.kbuf, self.vbuf = self.kbuf[:, :, columns:], self.vbuf[:, :, columns:]
            self.length -= columns
            self._views()

    return BufferedLayer


class Batch:
    """Rows decoding together: one KV cache, left-padded (attention mask, per-row positions)."""

    def __init__(self, model, available: int):
        from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

        kinds = {type(layer) for layer in DynamicCache(config=model.config).layers}
        if kinds - {DynamicLayer}:
            raise ModelError(f"{type(model).__name__} has {', '.join(k.__name__ for k in kinds)} "
                             "cache layers: the batched decoder supports full-attention models "
                             "only (no sliding-window or linear attention layers).")
        self.model, self.available = model, available
        self.width = model_width(model)
        self._cache_cls, self._layer_cls = Cache, _buffered_layer_class()
        self.cache = None
        self.mask = self.pos = self.logits = None  # [rows, length], [rows], [rows, vocab]
        self.rows: list[_Row] = []
        self.threads: StepThreads | None = None  # made at the first step (its size known)

    def join(self, rows: list, kv, mask: torch.Tensor, logits: torch.Tensor,
             spare: int = 64) -> None:
        """Add rows with their prompt caches (`kv` per layer [rows, heads, length, dim], left
        padded as `mask` says) and the logits of their first token; `spare`: room for that
        many more tokens before the cache grows."""
        pos = mask.sum(-1)
        if self.rows:
            length = max(self.mask.shape[1], mask.shape[1])
            kv = [(torch.cat([_pad_left(layer.keys, length, 2), _pad_left(k, length, 2)]),
                   torch.cat([_pad_left(layer.values, length, 2), _pad_left(v, length, 2)]))
                  for layer, (k, v) in zip(self.cache.layers, kv)]
            mask = torch.cat([_pad_left(self.mask, length, 1), _pad_left(mask, length, 1)])
            pos = torch.cat([self.pos, pos])
            logits = torch.cat([self.logits, logits])
        layers = [self._layer_cls() for _ in kv]
        for layer, (k, v) in zip(layers, kv):
            layer.fill(k, v, max(1, spare))
        self.cache = self._cache_cls(layers=layers)
        self.mask, self.pos, self.logits = mask, pos, logits
        self.rows = self.rows + rows

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at positions `keep` (the others are done)."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[k] for k in keep]
        if not keep:
            self.cache = self.mask = self.pos = self.logits = None
            return
        idx = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask, self.pos = self.mask[idx], self.pos[idx]
        # columns that are padding in every remaining row are dropped
        first = int(self.mask.any(0).to(torch.int8).argmax())
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.drop_left(first)

    def step(self, tokens: list[int]) -> None:
        """One forward pass: each row's next token in, the logits of the one after out."""
        device = self.mask.device
        ids = torch.tensor(tokens, device=device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        if self.threads is None:
            self.threads = StepThreads(threads_for(len(tokens), self.width, self.available),
                                       self.available)
        n = self.threads.pick()
        t = time.perf_counter()
        with use_threads(n):
            out = self.model(input_ids=ids, attention_mask=self.mask,
                             position_ids=self.pos[:, None], cache=self.cache, use_cache=True,
                             logits_to_keep=1)
        self.logits = out.logits[:, -1]
        self.threads.record(n, time.perf_counter() - t, len(tokens))
        self.pos = self.pos + 1


def _per_prompt(value, count: int, what: str) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    out = [int(v) for v in value]
    if len(out) != count:
        raise ModelError(f"{what} has {len(out)} values for {count} prompts: give one per "
                         "prompt or a single number.")
    return out


def decode(model, prompts: Sequence[list[int]], n: int | Sequence[int] = 1, *,
           seeds: Sequence[int] | None = None, temperature: float = 1.0, top_p: float = 1.0,
           max_new_tokens: int | Sequence[int] = 96, stop=frozenset(),
           max_rows: int = 128) -> list[list[list[int]]]:
    """`n` continuations (token ids, stop token excluded) of each prompt (token ids).

    Row j of prompt i samples from a generator seeded `seed_for(seeds[i], j)` (`seeds`
    defaults to `seed_for(0, i)`); at most `max_rows` rows step together; `n` and
    `max_new_tokens` may be given per prompt. The model must be in eval mode.
    """
    count = len(prompts)
    ns = _per_prompt(n, count, "n")
    limits = _per_prompt(max_new_tokens, count, "max_new_tokens")
    seeds = list(seeds) if seeds is not None else [seed_for(0, i) for i in range(count)]
    if len(seeds) != count:
        raise ModelError(f"{len(seeds)} seeds for {count} prompts: give one seed per prompt.")
    out = [[[] for _ in range(ns[i])] for i in range(count)]
    order = sorted((i for i in range(count) if ns[i] > 0 and limits[i] > 0),
                   key=lambda i: (len(prompts[i]), i))
    queue = deque((i, j) for i in order for j in range(ns[i]))
    waiting = {i: ns[i] for i in order}  # rows of each prompt not yet in the batch
    ready: dict[int, tuple] = {}  # prefilled prompt -> (kv, length, logits)
    max_rows = max(1, int(max_rows))
    admit = max(1, max_rows // 8)  # join waiting rows once this many places are free
    greedy = temperature <= 0
    stop = set(stop)
    available = torch.get_num_threads()
    # one thread for the bookkeeping too (joins, sampling): small ops collapse the same way
    with torch.inference_mode(), use_threads(1):
        batch = Batch(model, available)
        while queue or batch.rows:
            free = max_rows - len(batch.rows)
            if queue and free > 0 and (not batch.rows or free >= min(admit, len(queue))):
                take = [queue.popleft() for _ in range(min(free, len(queue)))]
                _prefill_missing(model, prompts, [i for i, _ in take], ready, batch.available)
                rows = [_Row(i, j, None if greedy else
                             torch.Generator().manual_seed(seed_for(seeds[i], j)), limits[i],
                             out[i][j]) for i, j in take]
                batch.join(rows, *_rows_cache([ready[i] for i, _ in take]),
                           spare=max(r.limit - len(r.tokens) for r in batch.rows + rows))
                for i, _ in take:
                    waiting[i] -= 1
                    if not waiting[i]:
                        ready.pop(i, None)  # every row has its copy: free the prompt's cache
            tokens = choose_tokens(batch.logits, [r.generator for r in batch.rows],
                                   temperature, top_p).tolist()
            keep = []
            for k, (row, tok) in enumerate(zip(batch.rows, tokens)):
                if tok in stop:
                    continue
                row.tokens.append(tok)
                if len(row.tokens) < row.limit:
                    keep.append(k)
            batch.keep(keep)
            if batch.rows:
                batch.step([tokens[k] for k in keep])
    return out


def _prefill_missing(model, prompts, needed: list[int], ready: dict, available: int) -> None:
    """Prefill the prompts in `needed` that are not in `ready` (batches of similar length,
    at most PREFILL_TOKENS padded tokens each)."""
    todo = sorted({i for i in needed if i not in ready}, key=lambda i: (len(prompts[i]), i))
    while todo:
        group = [todo.pop(0)]
        while todo and len(prompts[todo[0]]) * (len(group) + 1) <= PREFILL_TOKENS:
            group.append(todo.pop(0))
        kv, mask, logits = prefill(model, [prompts[i] for i in group], available=available)
        length = mask.shape[1]
        for b, i in enumerate(group):
            lp = len(prompts[i])
            ready[i] = ([(k[b:b + 1, :, length - lp:], v[b:b + 1, :, length - lp:])
                         for k, v in kv], lp, logits[b:b + 1])


def _rows_cache(entries: list[tuple]):
    """The KV cache, mask and first-token logits of new rows (one entry per row: its
    prompt's prefill, rows of a prompt next to each other), left-padded to the longest."""
    length = max(lp for _, lp, _ in entries)
    groups: list[list] = []  # [entry, rows]
    for e in entries:
        if groups and groups[-1][0] is e:
            groups[-1][1] += 1
        else:
            groups.append([e, 1])

    def rows_of(part: int, li: int) -> torch.Tensor:
        return torch.cat([_pad_left(e[0][li][part], length, 2).expand(r, -1, -1, -1)
                          for e, r in groups])

    kv = [(rows_of(0, li), rows_of(1, li)) for li in range(len(entries[0][0]))]
    device = entries[0][2].device
    mask = torch.tensor([[0] * (length - lp) + [1] * lp for _, lp, _ in entries], device=device)
    logits = torch.cat([e[2].expand(r, -1) for e, r in groups])
    return kv, mask, logits
