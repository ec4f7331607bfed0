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

COLUMNS = ("pair_hash", "id", "lc", "lr", "n_c", "n_r")


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

    def stores(self) -> list[ChunkStore]:
        """One chunk store per scoring run that wrote neutral values."""
        if not self.path.is_dir():
            return []
        return [ChunkStore(p) for p in sorted(self.path.iterdir()) if p.is_dir()]

    def load(self) -> "NeutralCache":
        """Read every verified chunk into a sorted in-memory index (24 bytes per pair plus the
        key: small next to a scoring run's own frame). Corrupt chunks are skipped."""
        hashes, values = [], []
        for store in self.stores():
            for k in store.chunk_ids():
                t = store.read_chunk(k)
                if t is None:
                    continue
                hashes.append(t.column("pair_hash").to_numpy().astype(np.uint64))
                values.append(np.stack([t.column(c).to_numpy().astype(np.float64)
                                        for c in ("lc", "lr", "n_c", "n_r")], axis=1))
        if hashes:
            h, v = np.concatenate(hashes), np.concatenate(values)
            order = np.argsort(h, kind="stable")
            self._hashes, self._values = h[order], v[order]
        return self

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, pairs: list[Pair]) -> list[tuple[float, float, int, int] | None]:
        """(lc, lr, n_c, n_r) per pair, None where the pair is not cached."""
        if not len(self._hashes):
            return [None] * len(pairs)
        q = np.array([pair_hash(p) for p in pairs], dtype=np.uint64)
        pos = np.minimum(np.searchsorted(self._hashes, q), len(self._hashes) - 1)
        out = []
        for i, j in enumerate(pos):
            if self._hashes[j] == q[i]:
                lc, lr, n_c, n_r = self._values[j]
                out.append((float(lc), float(lr), int(n_c), int(n_r)))
            else:
                out.append(None)
        return out

    def write(self, run_key: str, k: int, pairs: list[Pair], scores, info: dict) -> None:
        """Store the neutral values `scores` (PairScores) of `pairs`, computed by chunk k of
        the scoring run `run_key`; merged with a valid chunk already there (a resumed run)."""
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
            "n_r": [s.n_r for s in scores]})
        store = ChunkStore(self.path / run_key)
        old = store.read_chunk(k)
        if old is not None:
            table = pa.concat_tables([old, table])
        store.write_chunk(k, table)
