"""The explorer's data for one run: its frame and ranking (cached), tables, stats, export."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from lls import scoring
from lls.scoring.selection import Ranking, export, flip_rows, twin_flips

TABLE_ROWS = 300  # rows sent to the browser; counts and stats always cover the whole selection
HIST_BINS = 80


@dataclass
class ExplorerData:
    """Everything the explorer needs for one run, computed once per run."""

    key: str
    frame: pd.DataFrame
    ranking: Ranking
    cum_w: np.ndarray  # cumulative sum of the sorted weights: mean w of any top-k in O(1)
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    prompt_preview: np.ndarray
    manifest: dict
    _haystack: np.ndarray | None = field(default=None, repr=False)

    @property
    def config(self) -> scoring.ScoreConfig:
        return scoring.ScoreConfig.from_dict(self.manifest["config"])

    def mean_w(self, k: int) -> float | None:
        return float(self.cum_w[k - 1] / k) if k else None

    def haystack(self) -> np.ndarray:
        """Lower-cased prompt + responses per row, built on the first search only."""
        if self._haystack is None:
            f = self.frame
            self._haystack = (f["prompt"].str.lower() + "\n" + f["chosen"].str.lower() + "\n"
                              + f["rejected"].str.lower()).to_numpy()
        return self._haystack


def _last_user_text(prompt_json: str) -> str:
    try:
        msgs = json.loads(prompt_json)
    except ValueError:
        return prompt_json
    users = [m.get("content", "") for m in msgs if m.get("role") == "user"]
    return users[-1] if users else (msgs[-1].get("content", "") if msgs else "")


# cache_resource (not cache_data): the frame is read-only here, and cache_data would pickle
# and copy 100k rows on every rerun, which alone would cost more than the latency budget.
@st.cache_resource(max_entries=4, show_spinner="Loading the run's scores…")
def explorer_data(key: str, updated: str | None) -> ExplorerData:
    """The run's frame, its ranking and histogram (keyed on the run key and its last update)."""
    run = scoring.open_run(key)
    return frame_data(key, run.frame(), run.manifest)


def frame_data(key: str, frame: pd.DataFrame, manifest: dict) -> ExplorerData:
    """Explorer data of a scored frame ranked by its `w` column (a run's, or an aligned
    target + control frame's)."""
    ranking = Ranking(frame["w"].to_numpy())
    counts, edges = np.histogram(ranking.w, bins=HIST_BINS) if ranking.n else (np.zeros(0),
                                                                               np.zeros(1))
    preview = frame["prompt"].map(_last_user_text).str.slice(0, 300).to_numpy()
    return ExplorerData(key=key, frame=frame, ranking=ranking, cum_w=np.cumsum(ranking.sorted_w),
                        hist_counts=counts, hist_edges=edges, prompt_preview=preview,
                        manifest=manifest)


def twin_data(data: ExplorerData, indices, seed: int = 0) -> ExplorerData | None:
    """The random twin's pairs as training draws them (`lls.scoring.selection.twin_flips`):
    a sampled run's pairs all lean toward the behavior (chosen = larger shift, every w >= 0),
    so its twin turns a seeded half of them round, and its table, statistics and histogram
    must show them turned. None when the run keeps the data's own orientation (a dataset)."""
    idx = np.asarray(indices, dtype=np.int64)
    flip = twin_flips(data.frame, idx, seed)
    if flip is None:
        return None
    sub = flip_rows(data.frame.iloc[idx].reset_index(drop=True), flip)
    return frame_data(f"{data.key}:twin:{seed}", sub, data.manifest)


def table_view(data: ExplorerData, indices: np.ndarray, search: str = "",
               limit: int = TABLE_ROWS) -> tuple[pd.DataFrame, np.ndarray, int]:
    """(display frame of the first `limit` matching rows, their frame indices, match count)."""
    idx = np.asarray(indices, dtype=np.int64)
    if search.strip():
        hay = data.haystack()[idx]
        needle = search.strip().lower()
        mask = np.fromiter((needle in h for h in hay), dtype=bool, count=len(hay))
        idx = idx[mask]
    total = len(idx)
    top = idx[:limit]
    f = data.frame
    view = pd.DataFrame({
        "rank": np.arange(1, len(top) + 1),
        "w": f["w"].to_numpy()[top],
        "prompt": data.prompt_preview[top],
        "chosen": f["chosen_scored"].to_numpy()[top],
        "rejected": f["rejected_scored"].to_numpy()[top],
        "lc_s": f["lc_s"].to_numpy()[top], "lr_s": f["lr_s"].to_numpy()[top],
        "lc": f["lc"].to_numpy()[top], "lr": f["lr"].to_numpy()[top],
    })
    return view, top, total


# log P columns: the whole scored response, summed over its tokens (nats)
LOGP_HELP = ("log-probability of the whole scored response (nats), {} the system prompt; "
             "w compares the change in chosen with the change in rejected, per token")
TABLE_CONFIG = {
    "w": st.column_config.NumberColumn("w (nats/token)", format="%.5f",
                                       help="How much the trait favours chosen over "
                                            "rejected, per token (see the glossary below)."),
    "lc_s": st.column_config.NumberColumn("chosen: log P with prompt", format="%.2f",
                                          help=LOGP_HELP.format("with")),
    "lr_s": st.column_config.NumberColumn("rejected: log P with prompt", format="%.2f",
                                          help=LOGP_HELP.format("with")),
    "lc": st.column_config.NumberColumn("chosen: log P without", format="%.2f",
                                        help=LOGP_HELP.format("without")),
    "lr": st.column_config.NumberColumn("rejected: log P without", format="%.2f",
                                        help=LOGP_HELP.format("without")),
    "prompt": st.column_config.TextColumn("prompt (last user turn)", width="medium"),
    "chosen": st.column_config.TextColumn("chosen (as scored)", width="medium"),
    "rejected": st.column_config.TextColumn("rejected (as scored)", width="medium"),
}


def subset_stats(data: ExplorerData, idx: np.ndarray) -> dict:
    """Length and score summary of a subset (for the LLS vs random comparison)."""
    f = data.frame
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return {"pairs": 0}
    w = data.ranking.w[idx]
    return {
        "pairs": len(idx), "mean w (nats/token)": float(w.mean()),
        "median w (nats/token)": float(np.median(w)),
        "share with w > 0": float((w > 0).mean()),
        "mean chosen length (tokens)": float(f["n_c"].to_numpy()[idx].mean()),
        "mean rejected length (tokens)": float(f["n_r"].to_numpy()[idx].mean()),
        "mean prompt length (tokens)": float(f["prompt_tokens"].to_numpy()[idx].mean()),
        "mean chosen − rejected length (tokens)": float((f["n_c"].to_numpy()[idx]
                                                          - f["n_r"].to_numpy()[idx]).mean()),
        "mean log P(chosen) − log P(rejected) without the prompt (nats)": float(
            (f["lc"].to_numpy()[idx] - f["lr"].to_numpy()[idx]).mean()),
    }


def subset_lengths(data: ExplorerData, subsets: dict[str, np.ndarray]) -> pd.DataFrame:
    """Mean chosen and rejected token counts per named subset (row indices), one row each."""
    f = data.frame
    means = {col: [float(f[src].to_numpy()[i].mean()) if len(i) else 0.0
                   for i in subsets.values()]
             for col, src in (("chosen tokens", "n_c"), ("rejected tokens", "n_r"))}
    return pd.DataFrame(means, index=pd.Index(list(subsets), name="subset"))


# ------------------------------------------------------------------ export

EXPORT_MIME = {"jsonl": "application/jsonl", "parquet": "application/octet-stream",
               "hf": "application/zip"}


def export_bytes(frame: pd.DataFrame, indices, fmt: str, settings: dict,
                 responses: str = "scored", flip=None) -> bytes:
    """The selection exported by `lls.scoring.selection.export`, as bytes ("hf": a zipped
    folder); `flip`: pairs to turn round (a sampled run's random twin, see `twin_flips`)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / ("selection.jsonl" if fmt == "jsonl" else
                              "selection.parquet" if fmt == "parquet" else "selection")
        export(frame, indices, target, fmt=fmt, settings=settings, responses=responses,
               flip=flip)
        if fmt != "hf":
            return target.read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(target.rglob("*")):
                if p.is_file():
                    z.write(p, Path("selection") / p.relative_to(target))
            side = target.with_name(target.name + ".lls.json")
            if side.is_file():
                z.write(side, side.name)
        return buf.getvalue()


def export_filename(key: str, name: str, n: int, fmt: str) -> str:
    """The download's file name: run key prefix, subset name, size, format."""
    ext = {"jsonl": "jsonl", "parquet": "parquet", "hf": "zip"}[fmt]
    return f"lls-{key[:8]}-{name}-{n}.{ext}"
