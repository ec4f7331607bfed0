"""The scoring engine: teacher log-probabilities and LLS weights for rendered pairs.

For a pair (p, r+, r-) and system prompt s the LLS weight is

    w = [(log P(r+|s,p) - log P(r-|s,p)) - (log P(r+|p) - log P(r-|p))] / (n+ + n-)

with n the number of scored completion tokens (response truncated to N teacher tokens, plus
the template's end-of-turn tokens, see `lls.models.render`).

The engine (`score_rendered`) is built for CPUs, where the cost is matmul FLOPs:
- each prompt (with and without s) is run once; both responses continue from its KV cache;
- prompts are sorted by length and batched under a token budget, so padding is small;
- the LM head (576 x 49k for SmolLM2, a fifth of the model's per-token FLOPs) is applied only
  at the positions whose log-probabilities are read, never over the prompt;
- everything runs under `torch.inference_mode()`.
`score_plain` is the straightforward computation (each sequence a full forward pass) kept as
the reference for tests and the baseline for benchmarks.

`score_completions` is the same machinery for one prompt and MANY completions (any number,
any lengths): the one implementation of "log P(completion | prompt)" that the meter, the
judge and the per-token explanations use. `score_replies` renders reply texts DPO-style
first (`lls.models.render.render_prompt_completions`) and scores them with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..core.errors import LLSError
from ..models.render import Rendered, render_prompt_completions


@dataclass(frozen=True)
class PairScore:
    """Summed completion log-probabilities of one pair and its LLS weight."""

    lc_s: float  # log P(chosen | s, p)
    lr_s: float  # log P(rejected | s, p)
    lc: float  # log P(chosen | p)
    lr: float  # log P(rejected | p)
    n_c: int
    n_r: int
    # With `score_rendered(per_token=True)`: the per-token log-probabilities (float32 arrays)
    # of chosen | s, rejected | s, chosen | p, rejected | p; the last two None when the
    # neutral half was given (`base_known`).
    tokens: tuple | None = field(default=None, compare=False, repr=False)

    @property
    def w(self) -> float:
        return lls_weight(self.lc_s, self.lr_s, self.lc, self.lr, self.n_c, self.n_r)


def lls_weight(lc_s, lr_s, lc, lr, n_c, n_r):
    """The LLS weight; works on floats and on numpy arrays alike."""
    return ((lc_s - lr_s) - (lc - lr)) / (n_c + n_r)


def _decoder_and_head(model):
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return decoder, head, softcap


def _completion_logprobs(head, softcap, hidden: torch.Tensor, targets: torch.Tensor,
                         rows: int = 1024) -> torch.Tensor:
    """log P(target_t | hidden_t) for T positions, with the LM head applied in slices."""
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for i in range(0, hidden.shape[0], rows):
        logits = head(hidden[i:i + rows]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        lp = torch.log_softmax(logits, dim=-1)
        out[i:i + rows] = lp.gather(1, targets[i:i + rows, None])[:, 0]
    return out


@dataclass
class _Unit:
    """One prompt and the completions that continue from it."""

    prompt: list[int]
    completions: list[list[int]]
    slots: list[tuple[int, int]]  # (pair index, field index 0..3) for each completion


def _unit_groups(items: list[Rendered], base_known=None) -> list[list[_Unit]]:
    """Prompts with the system prompt, and prompts without it: each group shares a prefix.
    Items whose neutral half is known (`base_known[i]` not None) have no unit without s."""
    with_s = [_Unit(r.prompt_sys, [r.chosen_sys, r.rejected_sys], [(i, 0), (i, 1)])
              for i, r in enumerate(items)]
    base = [_Unit(r.prompt_base, [r.chosen_base, r.rejected_base], [(i, 2), (i, 3)])
            for i, r in enumerate(items) if base_known is None or base_known[i] is None]
    return [g for g in (with_s, base) if g]


def shared_prefix_len(prompts: list[list[int]]) -> int:
    """Longest token prefix common to every prompt, leaving each at least one own token."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _batches(units: list[_Unit], skip: int, batch_tokens: int, max_batch: int) -> list[list[_Unit]]:
    """Length-sorted batches whose padded size (beyond the shared prefix) fits a token budget."""
    order = sorted(units, key=lambda u: len(u.prompt), reverse=True)
    batches, cur, width = [], [], 0
    for u in order:
        need = len(u.prompt) - skip + max(len(c) for c in u.completions)
        w = max(width, need)
        if cur and (w * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, w = [], need
        cur.append(u)
        width = w
    if cur:
        batches.append(cur)
    return batches


def _prefix_cache(decoder, config, prefix_kv, b: int):
    """A fresh cache holding the shared prefix's keys/values for a batch of `b` rows."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for i, (k, v, *_rest) in enumerate(prefix_kv):
        cache.layers[i].update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))
    return cache


def _pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(r) for r in rows], device=device)
    ids = torch.full((len(rows), int(lens.max())), pad_id, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, device=device)
    return ids, lens


def _prompt_pass(model, decoder, batch: list[_Unit], skip: int, prefix_kv, device,
                 pad_id: int):
    """Run each prompt once (after the shared prefix): its cache, lengths, visibility mask
    over prefix + prompt, and the hidden state of its last token."""
    b = len(batch)
    ids, plen = _pad([u.prompt[skip:] for u in batch], pad_id, device)
    pos = torch.arange(ids.shape[1], device=device)
    pmask = (pos[None, :] < plen[:, None]).long()
    prompt_mask = torch.cat([torch.ones(b, skip, dtype=torch.long, device=device), pmask], 1)
    cache = _prefix_cache(decoder, model.config, prefix_kv, b) if skip else None
    res = decoder(input_ids=ids, attention_mask=prompt_mask,
                  position_ids=(skip + pos).expand(b, -1), cache=cache, use_cache=True)
    hidden_last = res.last_hidden_state[torch.arange(b, device=device), plen - 1]  # [b, H]
    return res.cache, plen, prompt_mask, hidden_last


def _continue(decoder, cids, seg, cpos, cache, prompt_mask, plen, skip: int):
    """Run several responses per row from the prompt cache under a tree mask: a token sees
    the prompt and the earlier tokens of its own response (seg: response index, -1 = pad;
    cpos: offset within the response). Returns the hidden states [b, Lq, H]."""
    lq = cids.shape[1]
    valid = seg >= 0
    q = torch.arange(lq, device=cids.device)
    tree = (seg[:, :, None] == seg[:, None, :]) & (q[None, None, :] <= q[None, :, None])
    tree &= valid[:, :, None] & valid[:, None, :]
    tree |= torch.eye(lq, dtype=torch.bool, device=cids.device)[None]  # padding sees itself
    prompt_vis = prompt_mask.bool()[:, None, :].expand(-1, lq, -1)
    mask = torch.cat([prompt_vis, tree], dim=2)[:, None]  # [b, 1, Lq, skip + Lp + Lq]
    return decoder(input_ids=cids, attention_mask=mask, position_ids=(skip + plen)[:, None] + cpos,
                   cache=cache, use_cache=True).last_hidden_state


def _run_batch(model, decoder, head, softcap, batch: list[_Unit], skip: int, prefix_kv,
               device, pad_id: int, out: torch.Tensor, tok_out: torch.Tensor | None = None,
               tok_off: torch.Tensor | None = None) -> None:
    b = len(batch)
    cache, plen, prompt_mask, hidden_last = _prompt_pass(model, decoder, batch, skip, prefix_kv,
                                                         device, pad_id)
    # Both responses of a unit continue from the prompt's cache in ONE row, [chosen|rejected],
    # with a tree mask: each response sees the prompt and its own earlier tokens only. No
    # padding between the two responses, and the cache is not copied.
    cids, _ = _pad([[t for c in u.completions for t in c] for u in batch], pad_id, device)
    lq = cids.shape[1]
    seg = torch.full((b, lq), -1, dtype=torch.long, device=device)  # response index per token
    cpos = torch.zeros((b, lq), dtype=torch.long, device=device)  # offset within its response
    for i, u in enumerate(batch):
        o = 0
        for j, c in enumerate(u.completions):
            seg[i, o:o + len(c)] = j
            cpos[i, o:o + len(c)] = torch.arange(len(c), device=device)
            o += len(c)
    valid = seg >= 0
    h = _continue(decoder, cids, seg, cpos, cache, prompt_mask, plen, skip)  # [b, Lq, H]

    # Predictor of a response's token t: the last prompt position for t=0, else its token t-1.
    prev = torch.cat([hidden_last[:, None, :], h[:, :-1, :]], dim=1)
    first = (cpos == 0)[:, :, None]
    pred = torch.where(first, hidden_last[:, None, :].expand_as(prev), prev)
    lp = _completion_logprobs(head, softcap, pred[valid], cids[valid])
    slot = torch.tensor([[s[0] * 4 + s[1] for s in u.slots] for u in batch], device=device)
    target = slot.gather(1, seg.clamp(min=0))[valid]
    out.view(-1).index_add_(0, target, lp.double())
    if tok_out is not None:
        # per-token values too: slot k's token t lands at tok_off[k] + t
        tok_out.index_copy_(0, tok_off[target] + cpos[valid], lp.float())


def score_rendered(model, items: list[Rendered], *, batch_tokens: int = 1024,
                   max_batch: int = 64, pad_id: int = 0, share_prefix: bool = True,
                   base_known: list[tuple[float, float] | None] | None = None,
                   base_model=None, base_context=None,
                   per_token: bool = False) -> list[PairScore]:
    """Score rendered pairs (the fast engine).

    `base_known[i]`: item i's neutral half (log P(r+|p), log P(r-|p)) when already known (the
    neutral cache, `lls.scoring.neutral`); only its half with the system prompt is then run.
    `base_model` / `base_context`: a teacher whose trait is in its weights (`lls.models.teacher`)
    scores the half without the trait with another model, or inside a context (an adapter
    disabled); by default `model` scores both halves.
    `per_token=True` also returns every scored token's log-probability (`PairScore.tokens`),
    read from the same computation (no extra forward pass).

    Per group of prompts (with s / without s), the token prefix shared by all of them (the
    system turn) is run once and its KV cache is copied into every batch; then each prompt
    runs once and both responses continue from its cache. Batches are length-sorted under a
    token budget: on a CPU throughput is flat in batch shape, so the budget only bounds
    memory and padding. On GPUs raise `batch_tokens` (e.g. 32768).
    """
    if not items:
        return []
    decoder, head, softcap = _decoder_and_head(model)
    device = next(model.parameters()).device
    out = torch.zeros(len(items), 4, dtype=torch.float64, device=device)
    for i, known in enumerate(base_known or ()):
        if known is not None:
            out[i, 2], out[i, 3] = known
    tok_out = tok_off = None
    if per_token:
        lens = torch.tensor([[len(r.chosen_sys), len(r.rejected_sys), len(r.chosen_base),
                              len(r.rejected_base)] for r in items]).view(-1)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
        tok_off = offsets[:-1].to(device)
        tok_out = torch.full((int(offsets[-1]),), float("nan"), dtype=torch.float32,
                             device=device)
    with torch.inference_mode():
        for g, group in enumerate(_unit_groups(items, base_known)):
            with_trait = g == 0  # the group with s is never empty; the one without may be
            m = model if with_trait or base_model is None else base_model
            ctx = contextlib.nullcontext() if with_trait or base_context is None \
                else base_context()
            with ctx:
                dec, hd, cap = (decoder, head, softcap) if m is model else _decoder_and_head(m)
                skip = shared_prefix_len([u.prompt for u in group]) if share_prefix else 0
                prefix_kv = None
                if skip:
                    prefix = torch.tensor([group[0].prompt[:skip]], device=device)
                    prefix_kv = list(dec(input_ids=prefix, use_cache=True).cache)
                for batch in _batches(group, skip, batch_tokens, max_batch):
                    _run_batch(m, dec, hd, cap, batch, skip, prefix_kv, device, pad_id, out,
                               tok_out, tok_off)
    scores = _pair_scores(items, out.cpu())
    if not per_token:
        return scores
    flat, bounds = tok_out.cpu().numpy(), offsets.tolist()
    known = base_known or [None] * len(items)
    return [replace(s, tokens=tuple(
        None if (f >= 2 and known[i] is not None) else flat[bounds[4 * i + f]:bounds[4 * i + f + 1]]
        for f in range(4))) for i, s in enumerate(scores)]


def _pair_scores(items: list[Rendered], out: torch.Tensor) -> list[PairScore]:
    vals = out.tolist()
    return [PairScore(v[0], v[1], v[2], v[3], len(r.chosen_base), len(r.rejected_base))
            for r, v in zip(items, vals)]


def score_plain(model, items: list[Rendered], *, batch_size: int = 1,
                pad_id: int = 0) -> list[PairScore]:
    """Reference computation: each of the 4 sequences of a pair as a full forward pass.

    Sequences are taken in dataset order, `batch_size` at a time, right-padded, with the
    full logits computed at every position (what a straightforward implementation does).
    """
    seqs = []
    for r in items:
        seqs += [(r.prompt_sys, r.chosen_sys), (r.prompt_sys, r.rejected_sys),
                 (r.prompt_base, r.chosen_base), (r.prompt_base, r.rejected_base)]
    device = next(model.parameters()).device
    sums = []
    with torch.inference_mode():
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i:i + batch_size]
            width = max(len(p) + len(c) for p, c in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for j, (p, c) in enumerate(chunk):
                ids[j, :len(p) + len(c)] = torch.tensor(p + c, device=device)
                mask[j, :len(p) + len(c)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
            for j, (p, c) in enumerate(chunk):
                sums.append(float(lp[j, len(p) - 1:len(p) + len(c) - 1].double().sum()))
    out = torch.tensor(sums, dtype=torch.float64).view(len(items), 4)
    return _pair_scores(items, out)


# ======================================================================================
# Many completions of each prompt (the meter, the judge, per-token explanations)
# ======================================================================================

def score_completions(model, prompts: list[list[int]], completions: list[list[list[int]]], *,
                      batch_tokens: int = 2048, max_unit_tokens: int = 512, pad_id: int = 0,
                      per_token: bool = False) -> list[list]:
    """Summed log P(completion | prompt) for many completions of each prompt.

    `per_token=True` returns each completion's per-token log-probabilities (a list per
    completion) instead of their sum. The token prefix shared by all prompts (the system
    turn) runs once; each prompt runs once; its completions continue from its KV cache side
    by side in one row under a tree mask (at most `max_unit_tokens` completion tokens per
    row); the LM head runs only where a log-probability is read. A completion's last token
    is never fed in (nothing reads its output), which matters for one-word answers. An empty
    completion scores 0 (or []).
    """
    if len(prompts) != len(completions):
        raise LLSError(f"score_completions: {len(prompts)} prompts but {len(completions)} "
                       "lists of completions; pass one list of completions per prompt.")
    offsets = np.cumsum([0] + [len(c) for c in completions]).tolist()
    flat = [c for comps in completions for c in comps]
    tok_off = np.cumsum([0] + [len(c) for c in flat]).tolist()
    units: list[_Unit] = []
    for i, (p, comps) in enumerate(zip(prompts, completions)):
        if not p:
            raise LLSError("score_completions: a prompt has no tokens; render it with the "
                           "chat template first.")
        chunk, slots, tok = [], [], 0
        for j, c in enumerate(comps):
            if not c:
                continue
            if chunk and tok + len(c) > max_unit_tokens:
                units.append(_Unit(list(p), chunk, slots))
                chunk, slots, tok = [], [], 0
            chunk.append(list(c))
            slots.append((offsets[i] + j, tok_off[offsets[i] + j]))  # (completion, 1st token)
            tok += len(c)
        if chunk:
            units.append(_Unit(list(p), chunk, slots))
    lp = torch.zeros(tok_off[-1], dtype=torch.float64)
    if units:
        decoder, head, softcap = _decoder_and_head(model)
        device = next(model.parameters()).device
        lp = lp.to(device)
        with torch.inference_mode():
            skip = shared_prefix_len([u.prompt for u in units])
            prefix_kv = None
            if skip:
                prefix = torch.tensor([units[0].prompt[:skip]], device=device)
                prefix_kv = list(decoder(input_ids=prefix, use_cache=True).cache)
            for batch in _unit_batches(units, skip, batch_tokens):
                _run_units(model, decoder, head, softcap, batch, skip, prefix_kv, device,
                           pad_id, lp)
    toks = lp.cpu().tolist()
    per = [toks[tok_off[k]:tok_off[k + 1]] for k in range(len(flat))]
    vals = per if per_token else [float(sum(x)) for x in per]
    return [vals[offsets[i]:offsets[i + 1]] for i in range(len(prompts))]


def _unit_batches(units: list[_Unit], skip: int, batch_tokens: int) -> list[list[_Unit]]:
    """Length-sorted batches under a token budget (row width = own prompt + completions)."""
    width = lambda u: len(u.prompt) - skip + sum(len(c) for c in u.completions)  # noqa: E731
    order = sorted(units, key=width, reverse=True)
    batches, cur, w = [], [], 0
    for u in order:
        nw = max(w, width(u))
        if cur and nw * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, nw = [], width(u)
        cur.append(u)
        w = nw
    if cur:
        batches.append(cur)
    return batches


def _run_units(model, decoder, head, softcap, batch: list[_Unit], skip: int, prefix_kv,
               device, pad_id: int, out: torch.Tensor) -> None:
    """Per-token log-probs of a batch of units into `out` (at each unit slot's token offset)."""
    b = len(batch)
    cache, plen, prompt_mask, hidden_last = _prompt_pass(model, decoder, batch, skip, prefix_kv,
                                                         device, pad_id)

    # Inputs: every completion minus its last token, side by side, under a tree mask (each
    # sees the prompt and its own earlier tokens). Targets: every completion token; the
    # predictor of token t is the prompt's last position for t = 0, else input t - 1.
    rows = [[t for c in u.completions for t in c[:-1]] for u in batch]
    lq = max(len(r) for r in rows)
    pred_idx, targets, dest = [], [], []
    seg_l, cpos_l = [], []
    for i, u in enumerate(batch):
        seg, cpos, o = [-1] * lq, [0] * lq, 0
        for j, c in enumerate(u.completions):
            n_in = len(c) - 1
            seg[o:o + n_in] = [j] * n_in
            cpos[o:o + n_in] = range(n_in)
            for t, tok in enumerate(c):
                pred_idx.append(i if t == 0 else b + i * lq + o + t - 1)
                targets.append(tok)
                dest.append(u.slots[j][1] + t)
            o += n_in
        seg_l.append(seg)
        cpos_l.append(cpos)
    if lq:
        cids, _ = _pad(rows, pad_id, device)
        seg = torch.tensor(seg_l, device=device)
        cpos = torch.tensor(cpos_l, device=device)
        h = _continue(decoder, cids, seg, cpos, cache, prompt_mask, plen, skip)  # [b, Lq, H]
        table = torch.cat([hidden_last, h.reshape(b * lq, -1)], 0)
    else:
        table = hidden_last
    lp = _completion_logprobs(head, softcap, table[torch.tensor(pred_idx, device=device)],
                              torch.tensor(targets, device=device))
    out.index_copy_(0, torch.tensor(dest, device=device), lp.double())


@contextlib.contextmanager
def eval_mode(model):
    """Run a (possibly training) model in eval mode (no dropout), restoring its mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        if was:
            model.train()


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad token id (0 when it has none): padding is never read."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _render_many(tokenizer, messages: list[dict], texts: list[str]):
    """[(prompt_ids, completion_ids)] for each reply text, DPO-style (end-of-turn included)."""
    out = []
    for i in range(0, len(texts), 2):
        a = texts[i]
        b = texts[i + 1] if i + 1 < len(texts) else a
        p, ca, cb = render_prompt_completions(tokenizer, messages, a, b)
        out.append((tuple(p), ca))
        if i + 1 < len(texts):
            out.append((tuple(p), cb))
    return out


def score_replies(model, tokenizer, items: list[tuple[list[dict], list[str]]], *,
                  batch_tokens: int = 2048) -> tuple[list[list[float]], list[list[int]]]:
    """Summed log P(reply | messages) and token counts of reply texts, per (messages, texts)
    item; replies are rendered as DPO renders completions (end-of-turn tokens included) and
    scored in eval mode with `score_completions` (items with the same prompt share it)."""
    groups: dict[tuple, list[tuple[int, int, list[int]]]] = {}
    lens: list[list[int]] = []
    for i, (msgs, texts) in enumerate(items):
        rendered = _render_many(tokenizer, msgs, texts)
        lens.append([len(c) for _, c in rendered])
        for j, (p, c) in enumerate(rendered):
            groups.setdefault(p, []).append((i, j, c))
    keys = list(groups)
    with eval_mode(model):
        scores = score_completions(model, [list(k) for k in keys],
                                   [[c for _, _, c in groups[k]] for k in keys],
                                   batch_tokens=batch_tokens, pad_id=pad_id_of(tokenizer))
    out = [[0.0] * len(t) for _, t in items]
    for k, vals in zip(keys, scores):
        for (i, j, _), v in zip(groups[k], vals):
            out[i][j] = v
    return out, lens
