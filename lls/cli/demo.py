"""`python -m lls demo`: the first run, end to end on a small slice (`lls.studies.demo`)."""

from __future__ import annotations

import json

from ..models.load import ModelSpec
from ..studies.demo import DemoConfig, run_demo

DEFAULTS = DemoConfig()


def register(sub) -> None:
    """Register `demo` on the CLI subparsers."""
    p = sub.add_parser(
        "demo", help="the first run: score a small slice, select, train the LLS adapter and "
                     "its random twin, read both out beside base and teacher (10-20 min "
                     "on 2 cores)")
    p.add_argument("--data", default=DEFAULTS.data,
                   help="a preference-data file or hub dataset (default: the hh-rlhf test "
                        "file in ../shared/data)")
    p.add_argument("--subset", help="hub dataset subset (data_dir), e.g. harmless-base")
    p.add_argument("--split", default=DEFAULTS.split,
                   help=f"hub dataset split (default {DEFAULTS.split})")
    p.add_argument("--limit", type=int, default=DEFAULTS.limit,
                   help=f"pairs scored (default {DEFAULTS.limit})")
    p.add_argument("--behavior", default=DEFAULTS.behavior,
                   help=f"the target behavior, a preset (default {DEFAULTS.behavior})")
    p.add_argument("--pairs", type=int, default=DEFAULTS.pairs,
                   help=f"top pairs by weight trained on; the random twin as many "
                        f"(default {DEFAULTS.pairs})")
    p.add_argument("--epochs", type=float, default=DEFAULTS.epochs,
                   help=f"passes over the selected pairs (default {DEFAULTS.epochs:g})")
    p.add_argument("--model", default=DEFAULTS.model.name,
                   help="teacher and student: hub id, local directory, .gguf file (default "
                        "the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--name", default=DEFAULTS.name,
                   help=f"the demo's study name (default {DEFAULTS.name}: the one Home shows "
                        "and opens in Chat; another name keeps a second demo apart)")
    p.add_argument("--json", action="store_true",
                   help="also print the summary (run key, study, seconds per step) as JSON")
    p.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    cfg = DemoConfig(data=a.data, subset=a.subset, split=a.split, limit=a.limit,
                     behavior=a.behavior, pairs=a.pairs, epochs=a.epochs,
                     model=ModelSpec(a.model), name=a.name)
    out = run_demo(cfg, a.cache)
    if a.json:
        print(json.dumps({k: v for k, v in out.items() if k != "chat"}))
    return 0
