"""Units of text a selection's weight is split over: tokens, words, and 2- and 3-word phrases.

A pair's LLS weight is a sum over its scored tokens: token t of the chosen response adds
+delta_t / (n_c + n_r) to w, a token of the rejected response adds -delta_t / (n_c + n_r). A
unit's contribution is the sum of its tokens' contributions, so the contributions of a
pair's tokens (or of its words) add up to its w exactly.

Words are merged from tokens: a new word starts at a response's first token, at a token that
begins with whitespace, and at every token that holds no letter or digit (punctuation, a
line break) or is a special token (end of turn, shown ⟨<|im_end|>⟩), which is a word of
its own, except an apostrophe between letters ("I’m", "don’t"); words are compared
lower-cased and stripped. Phrases are 2 or 3 consecutive words of one response; they overlap,
so a phrase's contribution is that of the tokens inside its occurrences (each list is read
on its own, not summed with another).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVELS = ("token", "word", "2-gram", "3-gram")
LEVEL_NAMES = {"token": "tokens", "word": "words", "2-gram": "2-word phrases",
               "3-gram": "3-word phrases"}


@dataclass
class Tokens:
    """Scored tokens as flat arrays, responses in order (`lls.scoring.deltas.RunDeltas`
    layout): frame row, side (0 chosen, 1 rejected), position, token id, delta."""

    row: np.ndarray
    side: np.ndarray
    pos: np.ndarray
    token: np.ndarray
    delta: np.ndarray

    @classmethod
    def of(cls, d) -> "Tokens":
        return cls(d.row, d.side, d.pos, d.token, np.asarray(d.delta, dtype=np.float64))


@dataclass
class Occurrences:
    """One entry per occurrence of a unit: frame row, side, unit code, summed delta, first
    token position; `labels[code]` names the unit."""

    row: np.ndarray
    side: np.ndarray
    code: np.ndarray
    delta: np.ndarray
    start: np.ndarray
    length: np.ndarray  # tokens in the occurrence
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def shown(text: str) -> str:
    """A token or word as a table shows it: whitespace made visible."""
    if text.strip():
        return text.strip()
    return text.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥") or "∅"


def shown_token(text: str) -> str:
    """A token as a table shows it: its spaces and line breaks visible ("␣owl", "↵")."""
    return text.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥") or "∅"


def token_texts_of(tokenizer, ids: np.ndarray) -> dict[int, str]:
    """Each distinct token id decoded on its own; the tokenizer's special tokens (end of
    turn ...) wrapped in ⟨ ⟩, which marks them as words of their own."""
    from ..scoring.explain import token_texts

    uniq = np.unique(ids).tolist()
    special = set(getattr(tokenizer, "all_special_ids", []) or []) | \
        set((getattr(tokenizer, "added_tokens_decoder", None) or {}).keys())
    return {i: (f"⟨{t}⟩" if i in special else t)
            for i, t in zip(uniq, token_texts(tokenizer, uniq))}


_APOSTROPHES = ("'", "’")


def _is_wordlike(text: str) -> bool:
    return not text.startswith("⟨") and any(c.isalnum() for c in text)


def word_starts(tokens: Tokens, texts: dict[int, str]) -> np.ndarray:
    """Whether each token begins a word (see the module's rule)."""
    uniq = np.array(sorted(texts), dtype=np.int64)
    space = np.array([texts[i][:1].isspace() for i in uniq.tolist()], dtype=bool)
    wordlike = np.array([_is_wordlike(texts[i]) for i in uniq.tolist()], dtype=bool)
    joiner = np.array([texts[i] in _APOSTROPHES for i in uniq.tolist()], dtype=bool)
    at = np.searchsorted(uniq, tokens.token)
    sp, wl, jn = space[at], wordlike[at], joiner[at]
    prev_wl = np.concatenate([[False], wl[:-1]])
    prev_jn = np.concatenate([[False], jn[:-1]])
    first = tokens.pos == 0
    # an apostrophe token glues its neighbours: "I" "’" "m" is one word, "I’m"
    return first | sp | (~wl & ~(jn & prev_wl)) | (~prev_wl & ~(prev_jn & wl))


def occurrences(tokens: Tokens, texts: dict[int, str], level: str) -> Occurrences:
    """The occurrences of every unit of `level` ("token", "word", "2-gram", "3-gram")."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    n = len(tokens.token)
    if level == "token":
        codes, uniq = pd.factorize(tokens.token)
        labels = np.array([shown_token(texts[int(t)]) for t in uniq], dtype=object)
        return Occurrences(tokens.row, tokens.side, codes, tokens.delta,
                           tokens.pos.astype(np.int64), np.ones(n, dtype=np.int64), labels)
    starts = word_starts(tokens, texts)
    wid = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    nwords = len(first)
    delta = np.bincount(wid, weights=tokens.delta, minlength=nwords)
    length = np.bincount(wid, minlength=nwords)
    bounds = np.append(first, n)
    pieces = [texts[int(t)] for t in tokens.token]
    words = np.array([shown("".join(pieces[a:b])).lower().replace("’", "'")
                      for a, b in zip(bounds[:-1], bounds[1:])], dtype=object)
    row, side, start = tokens.row[first], tokens.side[first], tokens.pos[first].astype(np.int64)
    if level == "word":
        codes, labels = pd.factorize(words)
        return Occurrences(row, side, codes, delta, start, length, np.asarray(labels,
                                                                              dtype=object))
    k = int(level[0])
    # a phrase starts at word j when words j..j+k-1 are in the same response
    same = np.ones(max(nwords - k + 1, 0), dtype=bool)
    for j in range(1, k):
        same &= (row[j:nwords - k + 1 + j] == row[:nwords - k + 1]) & \
                (side[j:nwords - k + 1 + j] == side[:nwords - k + 1])
    at = np.flatnonzero(same)
    text = words[at].copy()
    d = delta[at].copy()
    ln = length[at].copy()
    for j in range(1, k):
        text = text + " " + words[at + j]
        d += delta[at + j]
        ln += length[at + j]
    codes, labels = pd.factorize(text)
    return Occurrences(row[at], side[at], codes, d, start[at], ln,
                       np.asarray(labels, dtype=object))
