"""`python -m lls select` and `python -m lls export`."""

from __future__ import annotations

import json

from ..scoring.runs import open_run
from ..scoring.selection import Ranking, SelectionConfig, export, selection_indices, twin_flips
from .common import GAMMA_HELP, add_run_arg


def _selection(a):
    return SelectionConfig(gamma=a.gamma, threshold=a.threshold,
                           positive_only=not a.all_weights)


def add_select_args(p) -> None:
    add_run_arg(p)
    p.add_argument("--gamma", type=float, default=0.05, help=GAMMA_HELP)
    p.add_argument("--threshold", type=float, help="keep pairs with w above this instead of "
                                                   "the top γ")
    p.add_argument("--all-weights", action="store_true", help="also keep pairs with w <= 0")
    p.add_argument("--random", action="store_true",
                   help="the random twin: a random subset of the same size")
    p.add_argument("--seed", type=int, default=0, help="the random twin's seed")


def _indices(a, frame):
    ranking = Ranking(frame["w"].to_numpy())
    return ranking, selection_indices(ranking, _selection(a), random=a.random, seed=a.seed)


def cmd_select(a) -> int:
    run = open_run(a.run, a.cache)
    frame = run.frame()
    ranking, idx = _indices(a, frame)
    sub = frame.iloc[idx]
    out = {"run": run.key, "pairs": ranking.n, "positive": ranking.n_positive,
           "selected": len(idx), "kind": "random" if a.random else "lls",
           "mean_w": float(sub["w"].mean()) if len(idx) else None,
           "min_w": float(sub["w"].min()) if len(idx) else None,
           "top": [{"id": r["id"], "w": round(float(r["w"]), 5),
                    "chosen": r["chosen_scored"][:60], "rejected": r["rejected_scored"][:60]}
                   for r in sub.head(a.show).to_dict("records")]}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


def cmd_export(a) -> int:
    run = open_run(a.run, a.cache)
    frame = run.frame()
    _, idx = _indices(a, frame)
    settings = {"run": run.key, "score_config": run.manifest.get("config"),
                "selection": _selection(a).to_dict(), "random": a.random, "seed": a.seed}
    flip = twin_flips(frame, idx, a.seed) if a.random else None  # sampled runs' twin
    path = export(frame, idx, a.out, fmt=a.format, settings=settings, responses=a.responses,
                  flip=flip)
    print(json.dumps({"exported": len(idx), "path": str(path)}))
    return 0




def register(sub) -> None:
    """Add `select` and `export` to the `python -m lls` subparsers."""
    p = sub.add_parser("select", help="show an LLS (or random) selection of a scored run")
    add_select_args(p)
    p.add_argument("--show", type=int, default=5, help="how many top pairs to print")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("export", help="export a selection as a DPO-ready dataset")
    add_select_args(p)
    p.add_argument("--out", required=True, help="output path (.jsonl, .parquet, or a directory)")
    p.add_argument("--format", choices=["jsonl", "parquet", "hf"],
                   help="jsonl, parquet, or hf (a folder the datasets library loads) "
                        "(default: from --out's extension)")
    p.add_argument("--responses", choices=["scored", "full"], default="scored",
                   help="the responses as scored (truncated) or in full")
    p.set_defaults(func=cmd_export)

