"""Which units carry a selection's weight, beside its random twin and the whole run.

For a unit u (a token, word or phrase, `lls.subtext.units`) on one side of the pairs, its
contribution to a pair is the sum of +delta / (n_c + n_r) over its occurrences in the chosen
response, or of -delta / (n_c + n_r) over those in the rejected one; over a set of pairs,
its total contribution is part of the set's summed weight Σw. "Raised in chosen" ranks the
chosen side's units (the system prompt made them likelier where the labellers' choice is),
"lowered in rejected" the rejected side's (made less likely in the other answer).

Each unit's per-pair contribution (total / pairs in the set) is compared with the same
statistic over the selection's random twin (same size; a sampled run's twin turns some pairs
round, which swaps their sides) and over the whole run: the lift is the difference, with a
95% percentile bootstrap interval over pairs (the selection and the twin resampled on their
own; the whole run is a fixed reference, its own sampling error being far smaller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.stats import N_BOOT, percentile_ci, resample_index
from .units import Occurrences

SIDES = {0: "raised in chosen", 1: "lowered in rejected"}
METHOD = ("contribution = ±delta / (n_c + n_r) summed over a unit's occurrences (+ chosen, "
          "− rejected); lift = per-pair contribution in the selection minus in the random "
          "twin (or the whole run), 95% percentile bootstrap over pairs (2,000 resamples)")


@dataclass
class Sets:
    """The pairs compared (frame rows): the selection, its random twin (`twin_flip`: which of
    its pairs are turned round, None for none) and the run's pairs that have deltas."""

    selection: np.ndarray
    twin: np.ndarray
    run: np.ndarray
    twin_flip: np.ndarray | None = None


def pair_contributions(occ: Occurrences, n_tokens: np.ndarray) -> np.ndarray:
    """Each occurrence's contribution to its pair's w: ±delta / (n_c + n_r)."""
    sign = np.where(occ.side == 0, 1.0, -1.0)
    return sign * occ.delta / n_tokens[occ.row]


def _oriented(occ: Occurrences, contrib: np.ndarray, rows: np.ndarray, flip):
    """(mask, side, contrib) of the occurrences in `rows`, turned round where `flip`."""
    mask = np.isin(occ.row, rows)
    side, c = occ.side.copy(), contrib.copy()
    if flip is not None and np.asarray(flip).any():
        flipped = np.asarray(rows)[np.asarray(flip, dtype=bool)]
        turn = mask & np.isin(occ.row, flipped)
        side[turn] = 1 - side[turn]
        c[turn] = -c[turn]
    return mask, side, c


def _per_pair(occ: Occurrences, mask, side, contrib, rows: np.ndarray,
              feats: list[tuple[int, int]]) -> np.ndarray:
    """[len(rows), F]: each pair's contribution from each feature (code, side)."""
    x = np.zeros((len(rows), len(feats)))
    if not len(feats) or not len(rows):
        return x
    fkeys = pd.Index([c * 2 + sd for c, sd in feats])
    idx = np.flatnonzero(mask)
    col = fkeys.get_indexer(occ.code[idx].astype(np.int64) * 2 + side[idx])
    keep = col >= 0
    idx, col = idx[keep], col[keep]
    at = pd.Index(np.asarray(rows)).get_indexer(occ.row[idx])
    np.add.at(x, (at, col), contrib[idx])
    return x


def _boot_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, F] bootstrap replicates of the column means of x (rows resampled)."""
    n = x.shape[0]
    if n == 0:
        return np.full((n_boot, x.shape[1]), np.nan)
    idx = resample_index(n, n_boot=n_boot, seed=seed)
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    return counts @ x / n


def unit_table(occ: Occurrences, n_tokens: np.ndarray, w: np.ndarray, sets: Sets, *,
               top: int = 20, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """The `top` units of each side by total contribution to the selection's Σw, with
    counts, mean delta, share of Σw and lifts against the twin and the whole run."""
    contrib = pair_contributions(occ, n_tokens)
    sel = np.asarray(sets.selection, dtype=np.int64)
    s_mask = np.isin(occ.row, sel)
    df = pd.DataFrame({"code": occ.code[s_mask], "side": occ.side[s_mask],
                       "row": occ.row[s_mask], "delta": occ.delta[s_mask],
                       "contribution": contrib[s_mask]})
    columns = ["direction", "unit", "occurrences", "pairs", "mean_delta", "contribution",
               "share_of_w", "per_pair", "twin_per_pair", "lift_twin", "lift_twin_low",
               "lift_twin_high", "run_per_pair", "lift_run", "lift_run_low", "lift_run_high"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    g = df.groupby(["side", "code"]).agg(occurrences=("row", "size"), pairs=("row", "nunique"),
                                         mean_delta=("delta", "mean"),
                                         contribution=("contribution", "sum")).reset_index()
    picked = pd.concat([g[g.side == s].nlargest(top, "contribution") for s in (0, 1)])
    feats = [(int(c), int(s)) for c, s in zip(picked.code, picked.side)]
    twin = np.asarray(sets.twin, dtype=np.int64)
    run = np.asarray(sets.run, dtype=np.int64)
    x_s = _per_pair(occ, s_mask, occ.side, contrib, sel, feats)
    t_mask, t_side, t_contrib = _oriented(occ, contrib, twin, sets.twin_flip)
    x_t = _per_pair(occ, t_mask, t_side, t_contrib, twin, feats)
    r_mask = np.isin(occ.row, run)
    run_total = pd.DataFrame({"code": occ.code[r_mask], "side": occ.side[r_mask],
                              "c": contrib[r_mask]}).groupby(["side", "code"])["c"].sum()
    run_pp = np.array([run_total.get((s, c), 0.0) for c, s in feats]) / max(len(run), 1)
    boot_s = _boot_means(x_s, n_boot, seed)
    boot_t = _boot_means(x_t, n_boot, seed + 1)
    pp_s, pp_t = x_s.mean(0) if len(sel) else np.zeros(len(feats)), \
        x_t.mean(0) if len(twin) else np.full(len(feats), np.nan)
    total_w = float(w[sel].sum())
    ci_t = [percentile_ci(boot_s[:, j] - boot_t[:, j]) for j in range(len(feats))]
    ci_r = [percentile_ci(boot_s[:, j] - run_pp[j]) for j in range(len(feats))]
    out = pd.DataFrame({
        "direction": [SIDES[s] for _, s in feats],
        "unit": [occ.labels[c] for c, _ in feats],
        "occurrences": picked.occurrences.to_numpy(), "pairs": picked.pairs.to_numpy(),
        "mean_delta": picked.mean_delta.to_numpy(),
        "contribution": picked.contribution.to_numpy(),
        "share_of_w": picked.contribution.to_numpy() / total_w if total_w else np.nan,
        "per_pair": pp_s, "twin_per_pair": pp_t, "lift_twin": pp_s - pp_t,
        "lift_twin_low": [c[0] for c in ci_t], "lift_twin_high": [c[1] for c in ci_t],
        "run_per_pair": run_pp, "lift_run": pp_s - run_pp,
        "lift_run_low": [c[0] for c in ci_r], "lift_run_high": [c[1] for c in ci_r],
    })
    return out[columns].reset_index(drop=True)


def unit_pairs(occ: Occurrences, n_tokens: np.ndarray, rows: np.ndarray, unit: str,
               direction: str) -> pd.DataFrame:
    """The pairs among `rows` where `unit` occurs on the side `direction` names, with its
    contribution there and where it sits (token position and length, for highlighting),
    largest contribution first."""
    side = next(s for s, name in SIDES.items() if name == direction)
    codes = np.flatnonzero(occ.labels == unit)
    mask = np.isin(occ.row, rows) & np.isin(occ.code, codes) & (occ.side == side)
    contrib = pair_contributions(occ, n_tokens)[mask]
    df = pd.DataFrame({"row": occ.row[mask], "start": occ.start[mask],
                       "length": occ.length[mask], "contribution": contrib})
    if df.empty:
        return pd.DataFrame(columns=["row", "contribution", "occurrences", "spans"])
    return (df.groupby("row")
            .agg(contribution=("contribution", "sum"), occurrences=("start", "size"),
                 spans=("start", lambda s: [(int(a), int(b)) for a, b in
                                            zip(s, df.loc[s.index, "length"])]))
            .reset_index().sort_values("contribution", ascending=False, kind="stable")
            .reset_index(drop=True))
