"""The subtext of one selection: its tokens, words and phrases, its style, beside its twin.

`load(run, control)` reads a run's frame and per-token deltas once (and a control run's, for
"which tokens are specific to the target": the same pairs scored with another system
prompt, compared token by token); `sets(...)` turns a selection (top γ, a weight threshold,
or a contrastive ranking) into the selection, its random twin and the run's pairs; then
`unit_tables`, `style_table`, `pairs_of` and `summary` answer from them. The command line
(`python -m lls subtext`) and the Subtext page print the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.errors import LLSError
from ..models.load import load_tokenizer
from ..scoring.contrastive import check_compatible, contrastive_frame
from ..scoring.deltas import has_deltas, read_deltas
from ..scoring.runs import ScoreRun
from ..scoring.selection import Ranking, SelectionConfig, selection_indices, twin_flips
from .contributions import Sets, pair_contributions, unit_pairs, unit_table
from .style import style_effects
from .units import LEVELS, Occurrences, Tokens, occurrences, token_texts_of

RANK_BY = {"w": "the run's weight w", "w_contrastive": "w_target − w_control"}


@dataclass
class SubtextData:
    """A run's frame and per-token deltas (and a control's, aligned), read once."""

    key: str
    frame: pd.DataFrame
    tokens: Tokens
    covered: np.ndarray  # frame rows with deltas
    texts: dict[int, str]
    control_key: str | None = None
    w_control: np.ndarray | None = None  # per frame row, NaN where the control has no pair
    diff: Tokens | None = None  # delta_target - delta_control on the pairs both cover
    diff_covered: np.ndarray | None = None
    _occ: dict = field(default_factory=dict, repr=False)

    @property
    def n_tokens(self) -> np.ndarray:
        return (self.frame["n_c"].to_numpy() + self.frame["n_r"].to_numpy()).astype(np.float64)

    def occurrences(self, level: str, specific: bool = False) -> Occurrences:
        """The units of `level` (cached); `specific`: with target − control deltas."""
        if (level, specific) not in self._occ:
            toks = self.diff if specific else self.tokens
            if toks is None:
                raise LLSError("No control run with per-token deltas was given.")
            self._occ[(level, specific)] = occurrences(toks, self.texts, level)
        return self._occ[(level, specific)]


def _need_deltas(run: ScoreRun) -> None:
    if not has_deltas(run):
        raise LLSError(f"Run {run.key} has no per-token deltas for some of its pairs (it was "
                       "scored before they were stored): compute them with `python -m lls "
                       f"deltas --run {run.key[:10]}` or on the Subtext page, then try again.")


def _aligned_diff(frame: pd.DataFrame, tokens: Tokens, control: ScoreRun):
    """(w_control per row, target − control token deltas, rows covered by both)."""
    cf = contrastive_frame(frame, control.frame())
    w_c = pd.Series(cf["w_control"].to_numpy(), index=cf["id"]).reindex(frame["id"]).to_numpy()
    cframe = control.frame()
    cd = read_deltas(control)
    to_row = pd.Index(frame["id"]).get_indexer(cframe["id"].to_numpy())
    # a sampled control may hold a pair the other way round: its sides swap
    turned = cframe["chosen_scored"].to_numpy() != np.where(
        to_row >= 0, frame["chosen_scored"].to_numpy()[np.maximum(to_row, 0)], None)
    row = to_row[cd.row]
    side = np.where(turned[cd.row], 1 - cd.side, cd.side)
    width = int(max(tokens.pos.max(initial=0), cd.pos.max(initial=0))) + 1
    key_t = (tokens.row * 2 + tokens.side) * width + tokens.pos
    ok = row >= 0
    key_c = (row[ok] * 2 + side[ok]) * width + cd.pos[ok]
    at = pd.Index(key_c).get_indexer(key_t)
    tok_c = cd.token[ok]
    match = (at >= 0) & (tok_c[np.maximum(at, 0)] == tokens.token)
    bad_rows = np.unique(tokens.row[~match])
    keep = ~np.isin(tokens.row, bad_rows)
    delta_c = cd.delta[ok][np.maximum(at, 0)].astype(np.float64)
    diff = Tokens(tokens.row[keep], tokens.side[keep], tokens.pos[keep], tokens.token[keep],
                  (tokens.delta - delta_c)[keep])
    covered = np.zeros(len(frame), dtype=bool)
    covered[np.unique(diff.row)] = True
    return w_c, diff, covered


def load(run: ScoreRun, control: ScoreRun | None = None, tokenizer=None) -> SubtextData:
    """Read a run (and a control run on the same pairs) for the subtext view; both need
    per-token deltas (`lls.scoring.backfill` computes them for older runs)."""
    _need_deltas(run)
    frame = run.frame()
    d = read_deltas(run)
    tokens = Tokens.of(d)
    tok = tokenizer or load_tokenizer(run.config.model)
    data = SubtextData(run.key, frame, tokens, d.covered, token_texts_of(tok, tokens.token))
    if control is not None:
        check_compatible(run, control)
        _need_deltas(control)
        data.control_key = control.key
        data.w_control, data.diff, data.diff_covered = _aligned_diff(frame, tokens, control)
    return data


def sets(data: SubtextData, cfg: SelectionConfig, *, rank_by: str = "w", seed: int = 0) -> Sets:
    """The selection `cfg` keeps when pairs are ranked by `rank_by` ("w", or
    "w_contrastive" with a control), its seeded random twin, and the run's pairs; all among
    the pairs with deltas (and with the control's, when ranked contrastively)."""
    if rank_by not in RANK_BY:
        raise LLSError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}.")
    pool = data.covered.copy()
    w = data.frame["w"].to_numpy()
    if rank_by == "w_contrastive":
        if data.w_control is None:
            raise LLSError("Ranking by w_target − w_control needs a control run.")
        pool &= data.diff_covered & np.isfinite(data.w_control)
        w = w - data.w_control
    rows = np.flatnonzero(pool)
    ranking = Ranking(w[rows])
    sel = rows[selection_indices(ranking, cfg)]
    twin = rows[selection_indices(ranking, cfg, random=True, seed=seed)]
    flip = twin_flips(data.frame, twin, seed)
    return Sets(selection=sel, twin=twin, run=rows, twin_flip=flip)


def unit_tables(data: SubtextData, s: Sets, *, levels=LEVELS, top: int = 20,
                specific: bool = False, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Per level, the units carrying the selection's Σw (`unit_table`). `specific`: with
    target − control deltas, i.e. the part of w the target's prompt adds over the control's
    (the selection restricted to pairs both runs cover)."""
    w = data.frame["w"].to_numpy()
    if specific:
        if data.diff is None:
            raise LLSError("Tokens specific to the target need a control run.")
        w = w - np.nan_to_num(data.w_control)
        keep = data.diff_covered
        s = Sets(s.selection[keep[s.selection]], s.twin[keep[s.twin]], s.run[keep[s.run]],
                 None if s.twin_flip is None else s.twin_flip[keep[s.twin]])
    return {lv: unit_table(data.occurrences(lv, specific), data.n_tokens, w, s, top=top,
                           seed=seed) for lv in levels}


def style_table(data: SubtextData, s: Sets, seed: int = 0) -> pd.DataFrame:
    """Style effects of the selection against its twin (`lls.subtext.style`)."""
    return style_effects(data.frame, s.selection, s.twin, s.twin_flip, seed=seed)


def pairs_of(data: SubtextData, s: Sets, level: str, unit: str, direction: str,
             specific: bool = False) -> pd.DataFrame:
    """The selection's pairs holding `unit` on the side `direction` names, with the frame's
    id, w and scored texts, largest contribution first."""
    out = unit_pairs(data.occurrences(level, specific), data.n_tokens, s.selection, unit,
                     direction)
    f = data.frame
    for col in ("id", "w", "chosen_scored", "rejected_scored"):
        out[col] = f[col].to_numpy()[out["row"].to_numpy(dtype=np.int64)] if len(out) else []
    return out


def pair_tokens(data: SubtextData, row: int) -> tuple[tuple, tuple]:
    """((chosen ids, deltas), (rejected ids, deltas)) of one frame row, from the store."""
    t = data.tokens
    m = t.row == row
    c, r = m & (t.side == 0), m & (t.side == 1)
    return (t.token[c], t.delta[c]), (t.token[r], t.delta[r])


def summary(data: SubtextData, s: Sets) -> dict:
    """Sizes, mean weights and the sum identity check (the largest gap between a pair's
    w and its summed token contributions, over the selection)."""
    w = data.frame["w"].to_numpy()
    occ = data.occurrences("token")
    per_pair = np.bincount(occ.row, weights=pair_contributions(occ, data.n_tokens),
                           minlength=len(w))
    tw = w[s.twin].copy()
    if s.twin_flip is not None:
        tw[np.asarray(s.twin_flip, dtype=bool)] *= -1
    return {"run": data.key, "pairs": int(len(data.frame)), "pairs_with_deltas": int(len(s.run)),
            "selected": int(len(s.selection)), "twin": int(len(s.twin)),
            "mean_w_selection": float(w[s.selection].mean()) if len(s.selection) else None,
            "mean_w_twin": float(tw.mean()) if len(tw) else None,
            "sum_w_selection": float(w[s.selection].sum()),
            "identity_max_gap": float(np.abs(per_pair[s.selection] - w[s.selection]).max())
            if len(s.selection) else None,
            "control_run": data.control_key}
