"""The neutral cache: the half of w without the system prompt, computed once per dataset.

w = (half with s) - (half without s). The neutral half, log P(r+|p), log P(r-|p) and the
token counts, depends on the teacher, the data and its reading options, truncation, the
prompt-length limit, the chat template and the neutral convention, never on the behavior.
So every scoring run with the same such settings (owl, cat, a control run ...) shares one
neutral cache under `cache/neutral/<neutral key>/` and only runs the half with s for pairs
already in it.

Values are keyed by pair content (a hash of prompt, chosen and rejected), not by chunk
position: a behavior's contamination filter keeps its own subset of pairs, so two runs'
chunk k hold different pairs. Each scoring run writes the neutral values it computed into
its own sub-directory (`<neutral key>/<run key>/chunk-k.parquet`, a `lls.core.cache.ChunkStore`:
atomic writes, sha256 sidecars), so concurrent runs and processes never write the same file,
and a corrupt chunk is ignored (its pairs are recomputed).

Each pair's per-token neutral log-probabilities are kept too (`lp_c`, `lp_r`, float32
lists), so a behavior's run that reuses the neutral half still gets per-token deltas
(`lls.scoring.deltas`). Chunks written before they were kept have no such columns: their
pairs count as cached for w, not for deltas.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.cache import ChunkStore, fingerprint, runs_root
from ..core.pair import Pair
from ..models.load import model_fingerprint

NEUTRAL_VERSION = "1"  # bump when the neutral half's numbers or the chunk schema change

COLUMNS = ("pair_hash", "id", "lc", "lr", "n_c", "n_r", "lp_c", "lp_r")


def neutral_key(cfg, template_hash: str) -> str:
    """The key of the neutral cache a scoring config (`lls.scoring.ScoreConfig`) uses.

    The data's `limit` is left out: values are keyed per pair, so a longer run of the same
    file reuses a shorter one's pairs. The behavior and the contamination filter are left out
    by design."""
    data_fp = replace(cfg.data, limit=None).fingerprint()
    return fingerprint("neutral", NEUTRAL_VERSION, model_fingerprint(cfg.model), data_fp,
                       cfg.truncation, cfg.max_prompt_tokens, template_hash, cfg.neutral)


def pair_hash(pair: Pair) -> int:
    """A 64-bit content hash of a pair (prompt messages, chosen, rejected), before truncation."""
    blob = json.dumps([pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False,
                      sort_keys=True).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


class NeutralCache:
    """The neutral values of one neutral key: read them all once, look pairs up, add more."""

    def __init__(self, key: str, cache_dir: Path | None = None):
        self.key = key
        self.path = runs_root("neutral", cache_dir) / key
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._values = np.zeros((0, 4), dtype=np.float64)  # lc, lr, n_c, n_r
        self._tokens = np.zeros(0, dtype=object)  # (lp_c, lp_r) float32 arrays, or None

    def stores(self) -> list[ChunkStore]:
        """One chunk store per scoring run that wrote neutral values."""
        if not self.path.is_dir():
            return []
        return [ChunkStore(p) for p in sorted(self.path.iterdir()) if p.is_dir()]

    def load(self) -> "NeutralCache":
        """Read every verified chunk into a sorted in-memory index (40 bytes per pair plus its
        per-token values: small next to a scoring run's own frame). Corrupt chunks are
        skipped. A pair cached twice is looked up in its copy with per-token values."""
        hashes, values, tokens = [], [], []
        for store in self.stores():
            for k in store.chunk_ids():
                t = store.read_chunk(k)
                if t is None:
                    continue
                hashes.append(t.column("pair_hash").to_numpy().astype(np.uint64))
                values.append(np.stack([t.column(c).to_numpy().astype(np.float64)
                                        for c in ("lc", "lr", "n_c", "n_r")], axis=1))
                tokens.append(_token_pairs(t))
        if hashes:
            h, v, tk = np.concatenate(hashes), np.concatenate(values), np.concatenate(tokens)
            has = np.array([x is not None for x in tk], dtype=bool)
            order = np.lexsort((~has, h))  # by hash; the copy with tokens first
            self._hashes, self._values, self._tokens = h[order], v[order], tk[order]
        return self

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, pairs: list[Pair], tokens: bool = False) -> list[tuple | None]:
        """(lc, lr, n_c, n_r) per pair, None where the pair is not cached. `tokens=True`:
        (lc, lr, n_c, n_r, lp_c, lp_r) with the per-token arrays, None where the pair is not
        cached with them."""
        if not len(self._hashes):
            return [None] * len(pairs)
        q = np.array([pair_hash(p) for p in pairs], dtype=np.uint64)
        pos = np.minimum(np.searchsorted(self._hashes, q), len(self._hashes) - 1)
        out = []
        for i, j in enumerate(pos):
            if self._hashes[j] != q[i] or (tokens and self._tokens[j] is None):
                out.append(None)
                continue
            lc, lr, n_c, n_r = self._values[j]
            row = (float(lc), float(lr), int(n_c), int(n_r))
            out.append(row + tuple(self._tokens[j]) if tokens else row)
        return out

    def write(self, run_key: str, k: int, pairs: list[Pair], scores, info: dict) -> None:
        """Store the neutral values `scores` (PairScores) of `pairs`, computed by chunk k of
        the scoring run `run_key`; merged with a valid chunk already there (a resumed run).
        A score's per-token neutral values (`PairScore.tokens`) are kept when it has them."""
        import pyarrow as pa

        if not pairs:
            return
        if not (self.path / "manifest.json").is_file():
            ChunkStore(self.path).write_manifest({
                "key": self.key, "kind": "neutral", "version": NEUTRAL_VERSION, **info,
                "created": _dt.datetime.now().isoformat(timespec="seconds")})
        table = pa.table({
            "pair_hash": pa.array([pair_hash(p) for p in pairs], type=pa.uint64()),
            "id": [p.id for p in pairs], "lc": [s.lc for s in scores],
            "lr": [s.lr for s in scores], "n_c": [s.n_c for s in scores],
            "n_r": [s.n_r for s in scores],
            "lp_c": pa.array([_floats(s, 2) for s in scores], type=pa.list_(pa.float32())),
            "lp_r": pa.array([_floats(s, 3) for s in scores], type=pa.list_(pa.float32()))})
        store = ChunkStore(self.path / run_key)
        old = store.read_chunk(k)
        if old is not None:
            table = pa.concat_tables([_with_token_columns(old), table])
        store.write_chunk(k, table)


def _floats(score, field: int):
    tokens = getattr(score, "tokens", None)
    return None if tokens is None or tokens[field] is None else np.asarray(tokens[field],
                                                                         dtype=np.float32)


def _token_pairs(table) -> np.ndarray:
    """(lp_c, lp_r) float32 arrays per row of a neutral chunk; None where it has none."""
    out = np.empty(table.num_rows, dtype=object)
    if "lp_c" not in table.column_names:
        return out  # a chunk written before per-token values were kept
    c, r = list_rows(table.column("lp_c")), list_rows(table.column("lp_r"))
    for i in range(table.num_rows):
        out[i] = None if c[i] is None or r[i] is None else (c[i], r[i])
    return out


def list_rows(column) -> list[np.ndarray | None]:
    """The rows of a pyarrow list column as numpy views (None for a null row), without
    going through Python lists."""
    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(col))]


def _with_token_columns(table):
    """An older neutral chunk with empty per-token columns, so new rows can join it."""
    import pyarrow as pa

    for name in ("lp_c", "lp_r"):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows,
                                                       type=pa.list_(pa.float32())))
    return table
