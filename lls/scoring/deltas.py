"""Per-token deltas of a scoring run: what the system prompt did to each scored token.

For every scored completion token t of a pair, delta = log P(t | s, p, <t) - log P(t | p, <t).
Summed over the chosen response minus the rejected one and divided by (n_c + n_r), a pair's
deltas give back its LLS weight w (the engine computes both from the same per-token values).

They are stored beside the run's chunks, one chunk of deltas per chunk of pairs, under
`<run>/tokens/chunk-k.parquet` (a `lls.core.cache.ChunkStore`: atomic writes, sha256
sidecars), so the run's own frame (`ScoreRun.frame`) stays as small and fast as before.
Compact: per pair the token ids (int32) and deltas (float16) of both responses. A pair whose
responses tokenise differently with and without s (some chat templates) has none (nulls):
its per-token comparison is not defined.

New dataset runs write them while scoring (`lls.scoring.runs.score`); runs scored before,
and sampled runs, get them on demand (`lls.scoring.backfill`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.cache import ChunkStore
from .neutral import list_rows

TOKENS_DIR = "tokens"
DELTA_COLUMNS = ("index", "c_ids", "c_delta", "r_ids", "r_delta")
# Dictionary encoding only inflates token ids and float16 deltas (28% more bytes measured)
WRITE_OPTIONS = {"use_dictionary": False}


def token_store(run_path: Path) -> ChunkStore:
    """The chunk store of a run's per-token deltas (inside the run's directory)."""
    return ChunkStore(Path(run_path) / TOKENS_DIR)


def known_with_tokens(neutral, pairs, rendered) -> list[tuple | None]:
    """(lc, lr, lp_c, lp_r) per pair from the neutral cache, None where the pair must be
    computed: not cached with per-token values, or cached with token counts that differ from
    this rendering (recompute, never guess)."""
    out = []
    for v, r in zip(neutral.lookup(pairs, tokens=True), rendered):
        ok = v is not None and (v[2], v[3]) == (len(r.chosen_base), len(r.rejected_base))
        out.append((v[0], v[1], v[4], v[5]) if ok else None)
    return out


def pair_deltas(r, score, known=None):
    """(chosen deltas, rejected deltas) of one rendered pair (float32), None when they are not
    defined (the responses tokenise differently with and without s, or a value is missing).
    `score`: its `PairScore` from `score_rendered(per_token=True)` (None: no deltas);
    `known`: the neutral half's cached (lc, lr, lp_c, lp_r) when the engine did not compute it."""
    if r.chosen_sys != r.chosen_base or r.rejected_sys != r.rejected_base:
        return None
    tk = getattr(score, "tokens", None)
    if tk is None:
        return None
    base_c, base_r = (tk[2], tk[3]) if tk[2] is not None else (known[2], known[3])
    dc = np.asarray(tk[0], dtype=np.float32) - np.asarray(base_c, dtype=np.float32)
    dr = np.asarray(tk[1], dtype=np.float32) - np.asarray(base_r, dtype=np.float32)
    if not (np.isfinite(dc).all() and np.isfinite(dr).all()):
        return None
    return dc, dr


def deltas_table(indices, rendered, scores, known=None):
    """One chunk of deltas (pyarrow Table, `DELTA_COLUMNS`) for rows `indices` of a run."""
    import pyarrow as pa

    known = known or [None] * len(rendered)
    c_ids, c_d, r_ids, r_d = [], [], [], []
    for r, s, k in zip(rendered, scores, known):
        d = pair_deltas(r, s, k)
        c_ids.append(None if d is None else np.asarray(r.chosen_base, dtype=np.int32))
        r_ids.append(None if d is None else np.asarray(r.rejected_base, dtype=np.int32))
        c_d.append(None if d is None else d[0].astype(np.float16))
        r_d.append(None if d is None else d[1].astype(np.float16))
    ids, half = pa.list_(pa.int32()), pa.list_(pa.float16())
    return pa.table({"index": pa.array(np.asarray(indices, dtype=np.int64)),
                     "c_ids": pa.array(c_ids, type=ids), "c_delta": pa.array(c_d, type=half),
                     "r_ids": pa.array(r_ids, type=ids), "r_delta": pa.array(r_d, type=half)})


def write_deltas(run_path: Path, k: int, table) -> None:
    """Write chunk k of a run's deltas (atomic, verified)."""
    token_store(run_path).write_chunk(k, table, **WRITE_OPTIONS)


def chunks_missing(run) -> list[int]:
    """The chunks of a (finished) run that have no valid chunk of deltas yet."""
    store = token_store(run.path)
    return [k for k in run.store.chunk_ids() if run.store.chunk_ok(k) and not store.chunk_ok(k)]


def has_deltas(run) -> bool:
    """True when every chunk of the run has its per-token deltas."""
    return bool(run.store.chunk_ids()) and not chunks_missing(run)


@dataclass
class RunDeltas:
    """A run's per-token deltas as flat arrays, one entry per scored token.

    `row`: the pair's row in the run's frame; `side`: 0 chosen, 1 rejected; `pos`: position
    in its response; `token`: token id; `delta`: the delta (float32, from float16).
    `covered[i]`: whether frame row i has deltas."""

    row: np.ndarray
    side: np.ndarray
    pos: np.ndarray
    token: np.ndarray
    delta: np.ndarray
    covered: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def _flat(column, first_row: int):
    """(row, pos, values) of every element of a pyarrow list column, null rows left out."""
    col = column.combine_chunks()
    off = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False)[off[0]:off[-1]]
    lens = np.diff(off)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    keep = np.repeat(valid, lens)
    row = np.repeat(np.arange(len(lens), dtype=np.int64) + first_row, lens)
    pos = np.arange(off[-1] - off[0], dtype=np.int64) - np.repeat(off[:-1] - off[0], lens)
    return row[keep], pos[keep].astype(np.int32), values[keep]


def read_deltas(run) -> RunDeltas:
    """All stored deltas of a run, aligned with its frame's rows (chunks in order, as
    `ScoreRun.frame` reads them); a chunk without deltas leaves its rows uncovered."""
    store = token_store(run.path)
    parts: dict[str, list] = {k: [] for k in ("row", "side", "pos", "token", "delta")}
    covered, first = [], 0
    for k in run.store.chunk_ids():
        t = store.read_chunk(k)
        if t is None:
            n = run.store.read_chunk(k).num_rows
            covered.append(np.zeros(n, dtype=bool))
            first += n
            continue
        cov = np.ones(t.num_rows, dtype=bool)
        for side, (ic, dc) in enumerate((("c_ids", "c_delta"), ("r_ids", "r_delta"))):
            cov &= t.column(ic).is_valid().to_numpy(zero_copy_only=False)
            row, pos, ids = _flat(t.column(ic), first)
            _, _, ds = _flat(t.column(dc), first)
            parts["row"].append(row)
            parts["side"].append(np.full(len(row), side, dtype=np.int8))
            parts["pos"].append(pos)
            parts["token"].append(ids.astype(np.int64))
            parts["delta"].append(ds.astype(np.float32))
        covered.append(cov)
        first += t.num_rows
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    # a response's tokens in order, chosen before rejected, pairs in frame order
    order = np.lexsort((cat["pos"], cat["side"], cat["row"])) if len(cat["row"]) else \
        np.zeros(0, dtype=np.int64)
    return RunDeltas(row=cat["row"][order].astype(np.int64),
                     side=cat["side"][order].astype(np.int8),
                     pos=cat["pos"][order].astype(np.int32),
                     token=cat["token"][order].astype(np.int64),
                     delta=cat["delta"][order].astype(np.float32),
                     covered=np.concatenate(covered) if covered else np.zeros(0, dtype=bool))


def storage_bytes(run) -> tuple[int, int]:
    """(bytes of the run's chunks, bytes of its chunks of deltas) on disk."""
    size = lambda d: sum(p.stat().st_size for p in Path(d).glob("chunk-*"))  # noqa: E731
    return size(run.path), size(Path(run.path) / TOKENS_DIR)
