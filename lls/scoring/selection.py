"""The selection stage: which scored pairs a student is trained on, and export.

LLS keeps the pairs with w > 0, sorts them by w descending and keeps the top
ceil(gamma * n) of the whole dataset (n = all scored pairs, not only positive ones); a weight
threshold is the alternative. The paper's baseline is a random subset of the same size.
`Ranking` sorts once, so moving gamma or the threshold afterwards costs a binary search.

The random twin keeps a dataset's own orientation (chosen as the labellers chose). A sampled
run's orientation is itself an LLS choice (chosen = the answer with the larger shift s), so
its twin flips a seeded coin per pair (`twin_flips`), else the "random" baseline would train
on pairs all leaning towards the behavior.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import LLSError

EXPORT_FORMATS = ("jsonl", "parquet", "hf")


@dataclass(frozen=True)
class SelectionConfig:
    """`gamma`: keep the top fraction of the whole dataset (paper: 0.05). `threshold`: keep
    w > threshold instead (when set, it wins over gamma). `positive_only`: never keep w <= 0."""

    gamma: float | None = 0.05
    threshold: float | None = None
    positive_only: bool = True

    def __post_init__(self):
        if self.threshold is None and self.gamma is None:
            raise LLSError("Give gamma (a fraction in (0, 1]) or a weight threshold.")
        if self.gamma is not None and not 0 < self.gamma <= 1:
            raise LLSError(f"gamma must be in (0, 1], got {self.gamma}.")

    def to_dict(self) -> dict:
        return asdict(self)


def top_count(n: int, gamma: float) -> int:
    """ceil(gamma * n): the size of a top-gamma selection of n pairs (before w > 0 caps it)."""
    # round first: 0.07 * 100 is 7.000000000000001 in floating point, not 7
    return int(math.ceil(round(gamma * n, 9))) if n else 0


class Ranking:
    """Pairs sorted by weight, descending (ties keep dataset order), for fast re-selection."""

    def __init__(self, w):
        self.w = np.asarray(w, dtype=np.float64)
        if np.isnan(self.w).any():
            raise LLSError("Some weights are NaN; rescore the run (its chunks may be corrupt).")
        self.order = np.argsort(-self.w, kind="stable")
        self.sorted_w = self.w[self.order]
        self.n = len(self.w)
        self.n_positive = int((self.w > 0).sum())

    def count(self, cfg: SelectionConfig) -> int:
        """How many pairs `cfg` keeps (O(log n))."""
        if cfg.threshold is not None:
            k = self._above(cfg.threshold)
        else:
            k = top_count(self.n, cfg.gamma)
        if cfg.positive_only:
            k = min(k, self.n_positive)
        return int(k)

    def _above(self, t: float) -> int:
        # number of sorted (descending) weights strictly above t
        return int(np.searchsorted(-self.sorted_w, -t, side="left"))

    def select(self, cfg: SelectionConfig) -> np.ndarray:
        """Row indices of the selection, highest weight first."""
        return self.order[: self.count(cfg)]

    def cutoff(self, cfg: SelectionConfig) -> float | None:
        """The smallest selected weight (where the threshold line sits), None if empty."""
        k = self.count(cfg)
        return float(self.sorted_w[k - 1]) if k else None


def select(w, cfg: SelectionConfig | None = None) -> np.ndarray:
    """Indices of the LLS selection for weights `w`, highest weight first."""
    return Ranking(w).select(cfg or SelectionConfig())


def selection_indices(w, cfg: SelectionConfig, *, random: bool = False,
                      seed: int = 0) -> np.ndarray:
    """The one way a selection becomes row indices (CLI, training, explorer): the LLS top by
    `cfg` (best first), or with `random` a seeded same-size random subset (sorted)."""
    ranking = w if isinstance(w, Ranking) else Ranking(w)
    idx = ranking.select(cfg)
    if random:
        idx = random_subset(ranking.n, len(idx), seed)
    return np.asarray(idx)


def random_subset(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of `size` indices out of `n`: the paper's baseline."""
    if size > n:
        raise LLSError(f"Cannot draw {size} random pairs out of {n}.")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def twin_flips(frame, indices, seed: int = 0) -> np.ndarray | None:
    """Which rows of a random twin's selection to swap (chosen <-> rejected), one seeded coin
    per pair (from the seed and the pair's id, so a pair's coin does not depend on what else
    was drawn); None when the frame's orientation is the data's own (no sampled run)."""
    if frame.attrs.get("orientation") != "by_score":
        return None
    ids = frame["id"].to_numpy()[np.asarray(indices, dtype=np.int64)]
    return np.array([hashlib.sha256(f"twin:{seed}:{i}".encode()).digest()[0] & 1 == 1
                     for i in ids], dtype=bool)


def orientation_signs(frame, other) -> np.ndarray:
    """+1 where `other` (a frame of the same pairs, aligned by id) holds a pair the way
    `frame` does, -1 where it holds it the other way round (sampled runs orient each pair by
    their own weight: chosen = the answer with the larger shift), NaN where `other` lacks
    it. A weight of `other` times this sign is its weight in `frame`'s orientation."""
    chosen = other.drop_duplicates("id").set_index("id")["chosen"]
    theirs = frame["id"].map(chosen)
    sign = np.where(theirs.to_numpy() == frame["chosen"].to_numpy(), 1.0, -1.0)
    return np.where(theirs.isna().to_numpy(), np.nan, sign)


_SWAP = (("chosen", "rejected"), ("chosen_scored", "rejected_scored"), ("lc_s", "lr_s"),
         ("lc", "lr"), ("n_c", "n_r"))


def flip_rows(sub, flip) -> "object":
    """A copy of the frame rows `sub` with the rows where `flip` is True turned round:
    responses, their log-probabilities and token counts swapped, w negated."""
    out = sub.copy()
    flip = np.asarray(flip, dtype=bool)
    if not flip.any():
        return out
    for a, b in _SWAP:
        va, vb = sub[a].to_numpy(copy=True), sub[b].to_numpy(copy=True)
        out[a] = np.where(flip, vb, va)
        out[b] = np.where(flip, va, vb)
    out["w"] = np.where(flip, -sub["w"].to_numpy(), sub["w"].to_numpy())
    return out


def to_trl_rows(frame, indices, *, responses: str = "scored", flip=None) -> list[dict]:
    """Rows in TRL's conversational preference format, with the LLS scores alongside.

    `responses="scored"` exports the truncated responses that were scored (what the paper
    trains on); "full" exports the untruncated ones. `flip` (one bool per index, see
    `twin_flips`) turns those pairs round.
    """
    if responses not in ("scored", "full"):
        raise LLSError("responses must be 'scored' or 'full'.")
    c_col, r_col = ("chosen_scored", "rejected_scored") if responses == "scored" else ("chosen", "rejected")
    sub = frame.iloc[np.asarray(indices, dtype=np.int64)]
    if flip is not None:
        sub = flip_rows(sub, flip)
    rows = []
    for rank, rec in enumerate(sub.to_dict("records")):
        rows.append({
            "prompt": json.loads(rec["prompt"]),
            "chosen": [{"role": "assistant", "content": rec[c_col]}],
            "rejected": [{"role": "assistant", "content": rec[r_col]}],
            "id": rec["id"], "rank": rank, "w": rec["w"], "lc_s": rec["lc_s"],
            "lr_s": rec["lr_s"], "lc": rec["lc"], "lr": rec["lr"], "n_c": int(rec["n_c"]),
            "n_r": int(rec["n_r"]),
        })
    return rows


def export(frame, indices, path: str | Path, *, fmt: str | None = None,
           settings: dict | None = None, responses: str = "scored", flip=None) -> Path:
    """Write a selection as a DPO-ready dataset: JSONL, parquet, or `save_to_disk` ("hf").

    Each row carries its scores; `settings` (run key, selection config, ...) go into a
    sidecar `<path>.lls.json`, the parquet schema metadata and the dataset description.
    """
    path = Path(path)
    fmt = fmt or {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "hf")
    if fmt not in EXPORT_FORMATS:
        raise LLSError(f"Unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}.")
    rows = to_trl_rows(frame, indices, responses=responses, flip=flip)
    meta = {"lls": settings or {}, "n": len(rows), "responses": responses,
            "format": "TRL conversational preference (prompt/chosen/rejected messages)"}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        table = table.replace_schema_metadata({b"lls": json.dumps(meta).encode()})
        pq.write_table(table, path)
    else:
        from datasets import Dataset, DatasetInfo

        ds = Dataset.from_list(rows, info=DatasetInfo(description=json.dumps(meta)))
        ds.save_to_disk(str(path))
    sidecar = path.with_name(path.name + ".lls.json")
    sidecar.write_text(json.dumps(meta, indent=1, default=str))
    return path
