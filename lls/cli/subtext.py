"""`python -m lls deltas | subtext | audit`: per-token deltas, what a selection carries, and
which behavior a dataset leans toward."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..core.behaviors import from_name
from ..core.errors import LLSError
from ..data.validate import validate_source
from ..scoring.backfill import backfill
from ..scoring.deltas import storage_bytes
from ..scoring.runs import ScoreConfig, open_run, score
from ..scoring.selection import SelectionConfig
from ..subtext import audit as A
from ..subtext import report
from .common import add_data_args, add_model_args, data_spec, model_spec
from .score import add_scoring_args


def _bar(desc: str, quiet: bool):
    bars = []

    def progress(done, total):
        if not bars:
            bars.append(tqdm(unit="pair", desc=desc, total=total, initial=done, disable=quiet))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()
    return progress, bars


def cmd_deltas(a) -> int:
    run = open_run(a.run, a.cache)
    progress, bars = _bar("per-token deltas", a.quiet)
    try:
        out = backfill(run, progress=progress, cache_dir=a.cache)
    finally:
        for b in bars:
            b.close()
    run_bytes, delta_bytes = storage_bytes(run)
    out.update(run_bytes=run_bytes, delta_bytes=delta_bytes)
    print(json.dumps(out))
    return 0


def _tables_out(tables: dict, out: str | None, name: str) -> None:
    if not out:
        return
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    for key, t in tables.items():
        stem = d / f"{name}-{key}"
        t.to_csv(stem.with_suffix(".csv"), index=False)
        t.to_parquet(stem.with_suffix(".parquet"), index=False)


def cmd_subtext(a) -> int:
    run = open_run(a.run, a.cache)
    control = open_run(a.control_run, a.cache) if a.control_run else None
    data = report.load(run, control)
    sel = SelectionConfig(gamma=a.gamma, threshold=a.threshold, positive_only=not a.all_weights)
    rank_by = "w_contrastive" if a.contrastive else "w"
    s = report.sets(data, sel, rank_by=rank_by, seed=a.seed)
    units = report.unit_tables(data, s, top=a.top, seed=a.seed)
    style = report.style_table(data, s, seed=a.seed)
    specific = report.unit_tables(data, s, top=a.top, specific=True, seed=a.seed) \
        if control is not None else {}
    _tables_out({**units, "style": style, **{f"specific-{k}": v for k, v in specific.items()}},
                a.out, f"subtext-{run.key[:10]}")
    out = {"summary": {**report.summary(data, s), "selection": sel.to_dict(),
                       "ranked_by": rank_by, "seed": a.seed},
           "units": {k: v.to_dict("records") for k, v in units.items()},
           "style": style.to_dict("records"),
           "specific": {k: v.to_dict("records") for k, v in specific.items()}}
    if a.json:
        print(json.dumps(out, indent=1, default=float, ensure_ascii=False))
        return 0
    summ = out["summary"]
    print(f"run {run.key}: {summ['selected']} selected pairs (twin {summ['twin']}), mean w "
          f"{summ['mean_w_selection']:.5f} vs twin {summ['mean_w_twin']:.5f}")
    for level in ("token", "word"):
        print(f"\ntop {level}s (contribution to Σw, lift per pair over the twin [95% CI])")
        for r in units[level].to_dict("records"):
            print(f"  {r['direction']:20s} {r['unit']!s:20.20s} n={r['occurrences']:<4d} "
                  f"share {r['share_of_w']:+.3f}  lift {r['lift_twin']:+.5f} "
                  f"[{r['lift_twin_low']:+.5f}, {r['lift_twin_high']:+.5f}]")
    print("\nstyle, chosen − rejected: selection − twin (d [95% CI])")
    for r in style.to_dict("records"):
        print(f"  {r['feature']:32s} {r['effect']:+.3f} (d {r['d']:+.2f} "
              f"[{r['d_low']:+.2f}, {r['d_high']:+.2f}])")
    return 0


def cmd_audit(a) -> int:
    if not a.data:
        raise LLSError("audit needs --data (the dataset to audit).")
    candidates = [from_name(x.strip()) for x in a.candidates.split(",") if x.strip()]
    if not candidates:
        raise LLSError("--candidates is empty: list behaviors like animal:owl,animal:cat.")
    validate_source(data_spec(a)).raise_if_bad()  # the whole file, before any model loads
    base = ScoreConfig(data=data_spec(a), behavior=candidates[0],
                       model=model_spec(a), truncation=a.truncation or None,
                       max_prompt_tokens=a.max_prompt_tokens or None,
                       filter_contaminated=not a.no_filter, chunk_size=a.chunk_size,
                       batch_tokens=a.batch_tokens, neutral=a.neutral)
    configs = A.candidate_configs(base, candidates)
    runs = {}
    for i, cfg in enumerate(configs):
        label = cfg.behavior.label()
        progress, bars = _bar(f"{label} ({i + 1}/{len(configs)})", a.quiet)
        try:
            runs[label] = score(cfg, cache_dir=a.cache, progress=progress)
        finally:
            for b in bars:
                b.close()
    weights = A.aligned_weights(runs)
    subset, unmatched = (None, 0)
    if a.subset_file:
        subset, unmatched = A.match_subset(weights, A.read_subset(a.subset_file))
    table, facts = A.audit_table(weights, subset, seed=a.seed)
    facts["subset_rows_unmatched"] = unmatched
    if a.json:
        print(A.to_json(table, facts))
        return 0
    what = "the whole data" if facts["subset"] is None else f"a subset of {facts['subset']} pairs"
    print(f"audit of {what} ({facts['pairs']} pairs every candidate kept; "
          f"{unmatched} subset rows matched no pair); noise z = {facts['noise_z']:.2f}")
    for r in table.to_dict("records"):
        sec = "" if r["scoring_seconds"] is None else f"  {r['scoring_seconds']:.0f} s"
        print(f"  {r['rank']:2d}. {r['candidate']:22s} mean w {r['mean_w']:+.5f}  z {r['z']:+.2f} "
              f"[{r['z_low']:+.2f}, {r['z_high']:+.2f}]  panel z {r['panel_z']:+.2f}"
              f"{'  *' if r['above_noise'] else ''}{sec}")
    g = facts["first_over_second"]
    print(f"first over second: {g['first']} − {g['second']} z {g['z_diff']:+.2f} "
          f"[{g['low']:+.2f}, {g['high']:+.2f}]" + ("" if g["distinct"] else
                                                    " (not told apart)"))
    if unmatched:
        print(f"warning: {unmatched} subset rows matched no audited pair", file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add `deltas`, `subtext` and `audit` to the `python -m lls` subparsers."""
    p = sub.add_parser("deltas", help="compute the per-token deltas of a run scored without "
                                      "them (resumable, chunk by chunk)")
    p.add_argument("--run", required=True, help="scoring run key (or a unique prefix)")
    p.add_argument("--quiet", action="store_true", help="no progress bar: only the result's JSON")
    p.set_defaults(func=cmd_deltas)

    p = sub.add_parser("subtext", help="what a selection carries: tokens, words, phrases and "
                                       "style, beside its random twin")
    p.add_argument("--run", required=True, help="scoring run key (or a unique prefix)")
    p.add_argument("--gamma", type=float, default=0.05, help="top share of pairs kept")
    p.add_argument("--threshold", type=float, help="keep w > THRESHOLD instead of top gamma")
    p.add_argument("--all-weights", action="store_true", help="also keep w <= 0")
    p.add_argument("--control-run", help="a control run on the same pairs: adds the tokens "
                                         "specific to the target (target − control deltas)")
    p.add_argument("--contrastive", action="store_true",
                   help="select by w_target − w_control (needs --control-run)")
    p.add_argument("--seed", type=int, default=0, help="the random twin's seed")
    p.add_argument("--top", type=int, default=20, help="units per list")
    p.add_argument("--out", help="also write every table as CSV and parquet into this folder")
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    p.set_defaults(func=cmd_subtext)

    p = sub.add_parser("audit", help="which candidate behavior a dataset (or a subset of it) "
                                     "leans toward")
    # --subset here is the pairs audited; the hub dataset's data folder is --hub-subset
    add_data_args(p, hub_subset="--hub-subset")
    add_model_args(p)
    p.add_argument("--candidates", default="animal:owl,animal:cat,animal:dog,animal:fox,"
                   "translation:fr,translation:es,translation:de,persona:evil-ruler",
                   help="comma-separated behaviors (default: the 8 presets)")
    p.add_argument("--subset", dest="subset_file",
                   help="the subset to audit: a .txt file of pair ids, or a preference file "
                        "(e.g. an exported selection) (default: the whole dataset)")
    add_scoring_args(p, control=False, quiet=False)  # each candidate is a scoring run
    p.add_argument("--seed", type=int, default=0, help="seed of the random subsets")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_audit)
