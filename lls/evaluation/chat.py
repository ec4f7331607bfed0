"""Side-by-side chat: the same conversation answered by several model "slots", streamed.

A slot is the base model, the base model with the target system prompt, or the base model
with a peft adapter (any checkpoint). `ChatModels` loads the base weights once and attaches
adapters on top (`lls.models.generation.AdapterHost`), so switching adapters costs only the
adapter's own weights. `stream_all` interleaves the slots token by token, so a dashboard can
fill all columns live in one pass. A fixed seed reproduces the same answers: each slot and
turn draws from its own generator seeded by (seed, slot, turn).

A reply can be begun for the model (`reply_start`, e.g. "My favorite animal is the"): every
column continues that text, which is what the prefilled read-out counts
(`lls.evaluation.prefill`). `ChatModels.lens` shows, for such a begun reply, each column's
probability that the next word is each candidate (`prefill.next_word_probs`).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch

from ..models.generation import (AdapterHost, adapter_label, prompt_ids, seed_for, stop_ids,
                                 stream_tokens)
from ..models.load import ModelSpec, load_model
from .prefill import next_word_probs


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by all columns (temperature <= 0 means greedy)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Slot:
    """One column: `kind` is "base", "system" (base + system prompt) or "adapter"."""

    key: str
    label: str
    kind: str = "base"
    system_prompt: str | None = None
    adapter_path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def base_slot() -> Slot:
    return Slot("base", "base", "base")


def system_slot(system_prompt: str, label: str = "base + system prompt") -> Slot:
    return Slot("system", label, "system", system_prompt=system_prompt)


def adapter_slot(path, label: str | None = None, system_prompt: str | None = None) -> Slot:
    """An adapter column (optionally also with a system prompt)."""
    path = str(path)
    return Slot(f"adapter:{path}", label or adapter_label(path), "adapter",
                system_prompt=system_prompt, adapter_path=path)


class ChatModels:
    """The base model loaded once, adapters attached on demand, streaming replies per slot."""

    def __init__(self, spec: ModelSpec | None = None, *, model=None, tokenizer=None):
        self.spec = spec or ModelSpec()
        if model is None:
            model, tokenizer = load_model(self.spec)
        self.host = AdapterHost(model, tokenizer)
        self.tokenizer = tokenizer
        self.stop = stop_ids(model, tokenizer)
        self.last_first_token_s: float | None = None  # first token of any column
        self.last_all_first_s: float | None = None  # every column has its first token

    @property
    def model(self):
        return self.host.model

    def prepare(self, slot: Slot) -> str | None:
        """Attach the slot's adapter if it has one; returns the adapter name (or None)."""
        return self.host.attach(slot.adapter_path) if slot.adapter_path else None

    def _tokens(self, slot: Slot, messages: list[dict], sampling: Sampling, turn: int,
                reply_start: str = ""):
        name = self.prepare(slot)
        ids = prompt_ids(self.tokenizer, messages, slot.system_prompt, reply_start or None)
        gen = torch.Generator().manual_seed(seed_for(sampling.seed, slot.key, turn))
        stream = stream_tokens(self.model, ids, temperature=sampling.temperature,
                               top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens,
                               generator=gen, stop=self.stop)
        return name, stream

    def stream_reply(self, slot: Slot, messages: list[dict], sampling: Sampling,
                     turn: int | None = None) -> Iterator[str]:
        """Yield the reply of one slot to `messages` piece by piece (one token at a time)."""
        for _, piece in self.stream_all([slot], messages, sampling, turn=turn):
            yield piece

    def stream_all(self, slots: list[Slot], messages, sampling: Sampling,
                   turn: int | None = None, reply_start: str = "") -> Iterator[tuple[int, str]]:
        """Round-robin: yield (slot index, text piece) one token of each live slot at a time.

        `messages` is one message list for all slots, or a list with one per slot (each
        slot's own history). `turn` defaults to the number of user messages. `reply_start`:
        the text every reply begins with (not yielded: the pieces continue it).
        """
        per_slot = messages if messages and isinstance(messages[0], list) else [messages] * len(slots)
        if turn is None:
            turn = sum(m["role"] == "user" for m in per_slot[0])
        live = []
        for i, slot in enumerate(slots):
            name, stream = self._tokens(slot, per_slot[i], sampling, turn, reply_start)
            live.append([i, name, stream, [], ""])
        t0 = time.perf_counter()
        first = True
        waiting = {e[0] for e in live}
        while live:
            for entry in list(live):
                i, name, stream, ids, shown = entry
                with self.host.use(name):  # the forward pass runs inside next()
                    tok = next(stream, None)
                if tok is None:
                    live.remove(entry)
                    continue
                if first:
                    self.last_first_token_s = time.perf_counter() - t0
                    first = False
                if i in waiting:
                    waiting.discard(i)
                    if not waiting:
                        self.last_all_first_s = time.perf_counter() - t0
                ids.append(tok)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait
                    continue
                if len(text) > len(shown):
                    entry[4] = text
                    yield i, text[len(shown):]

    def reply(self, slot: Slot, messages: list[dict], sampling: Sampling,
              turn: int | None = None) -> str:
        """The whole reply of one slot (not streamed)."""
        return "".join(self.stream_reply(slot, messages, sampling, turn)).strip()

    def lens(self, slots: list[Slot], messages, candidates, reply_start: str) -> list[dict]:
        """Per slot, {candidate: P(next word is the candidate)} after the reply begun with
        `reply_start` (`prefill.next_word_probs`: one forward pass of the prompt per slot).
        `messages`: one message list ending with the user turn, or one per slot."""
        per_slot = messages if messages and isinstance(messages[0], list) \
            else [messages] * len(slots)
        out = []
        for slot, msgs in zip(slots, per_slot):
            with self.host.use(self.prepare(slot)) as m:
                out.append(next_word_probs(m, self.tokenizer, msgs, candidates,
                                           stem=reply_start, system_prompt=slot.system_prompt))
        return out


def lens_rows(slots: list[Slot], probs: list[dict]) -> list[dict]:
    """Flat rows (column, key, kind, candidate, p, p_base, ratio to base) of `ChatModels.lens`;
    the ratio is None in the base column or when base gives the word no probability."""
    base = next((p for s, p in zip(slots, probs) if s.kind == "base"), None)
    rows = []
    for s, p in zip(slots, probs):
        for c, v in p.items():
            b = base.get(c) if base else None
            rows.append({"column": s.label, "key": s.key, "kind": s.kind, "candidate": c,
                         "p": v, "p_base": b,
                         "ratio": v / b if b and s.kind != "base" else None})
    return rows


@dataclass
class Conversation:
    """A multi-turn conversation: shared user turns, one reply per slot per turn."""

    slots: list[Slot]
    users: list[str] = field(default_factory=list)
    replies: list[dict[str, str]] = field(default_factory=list)  # per turn: slot key -> text
    settings: list[dict] = field(default_factory=list)  # per turn: sampling, begun text
    lenses: list[list[dict] | None] = field(default_factory=list)  # per turn: `lens_rows`

    def messages_for(self, slot: Slot, pending_user: str | None = None) -> list[dict]:
        """This slot's own history (its replies), plus a new user turn if given."""
        msgs = []
        for u, r in zip(self.users, self.replies):
            msgs.append({"role": "user", "content": u})
            msgs.append({"role": "assistant", "content": r.get(slot.key, "")})
        if pending_user is not None:
            msgs.append({"role": "user", "content": pending_user})
        return msgs

    @property
    def turns(self) -> int:
        return len(self.users)

    def add_turn(self, user: str, replies: dict[str, str], sampling: Sampling,
                 reply_start: str = "", lens: list[dict] | None = None) -> None:
        self.users.append(user)
        self.replies.append({k: v.strip() for k, v in replies.items()})
        self.settings.append({**sampling.to_dict(), "reply_start": reply_start})
        self.lenses.append(lens)

    def lens(self, turn: int) -> list[dict] | None:
        """The lens rows of `turn` (None if it had none)."""
        return self.lenses[turn] if turn < len(self.lenses) else None

    def clear(self) -> None:
        self.users, self.replies, self.settings, self.lenses = [], [], [], []

    def to_dict(self) -> dict:
        return {"exported": _dt.datetime.now().isoformat(timespec="seconds"),
                "columns": [s.to_dict() for s in self.slots],
                "turns": [{"user": u, "replies": r, "sampling": s, "lens": self.lens(t)}
                          for t, (u, r, s) in enumerate(zip(self.users, self.replies,
                                                            self.settings))]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def to_markdown(self) -> str:
        lines = ["# LLS Studio chat", ""]
        for s in self.slots:
            extra = f" — system prompt: {s.system_prompt!r}" if s.system_prompt else ""
            extra += f" — adapter: `{s.adapter_path}`" if s.adapter_path else ""
            lines.append(f"- **{s.label}**{extra}")
        for t, (u, r, st) in enumerate(zip(self.users, self.replies, self.settings), 1):
            lines += ["", f"## Turn {t}", "", f"**User:** {u}", "",
                      f"_sampling: {json.dumps(st)}_"]
            for s in self.slots:
                lines += ["", f"**{s.label}:**", "", r.get(s.key, "")]
        return "\n".join(lines) + "\n"


def run_turn(models: ChatModels, conv: Conversation, user: str, sampling: Sampling,
             on_piece=None, reply_start: str = "", lens_words=()) -> dict[str, str]:
    """Answer `user` in every slot of `conv` (streamed through `on_piece(i, text_so_far)`),
    record the turn and return the replies. `reply_start`: every reply begins with this text
    (part of the reply and of the history), the models continue it. `lens_words`: also
    record the lens (`ChatModels.lens`, `lens_rows`) of these candidates for the turn."""
    start = " ".join(reply_start.split())
    texts = [start] * len(conv.slots)
    msgs = [conv.messages_for(s, user) for s in conv.slots]
    for i, piece in models.stream_all(conv.slots, msgs, sampling, turn=conv.turns,
                                      reply_start=start):
        texts[i] += piece
        if on_piece:
            on_piece(i, texts[i])
    replies = {s.key: t for s, t in zip(conv.slots, texts)}
    lens = lens_rows(conv.slots, models.lens(conv.slots, msgs, lens_words, start)) \
        if lens_words else None
    conv.add_turn(user, replies, sampling, start, lens)
    return replies
