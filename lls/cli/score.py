"""`python -m lls score` and `python -m lls runs`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from tqdm import tqdm

from ..core.distributed import barrier, process_info
from ..core.errors import LLSError
from ..data.validate import validate_source
from ..scoring.contrastive import control_config, parse_control
from ..scoring.runs import ScoreConfig, delete_run, list_runs, run_key, run_status, score
from .common import (add_behavior_args, add_data_args, add_model_args, add_teacher_args,
                     data_spec, model_spec, teacher)


def cmd_score(a) -> int:
    if a.config:
        cfg = ScoreConfig.from_dict(json.loads(a.config))
    else:
        if not a.data:
            raise LLSError("score needs --data (a file or hub dataset name) or --config JSON.")
        b, trait = teacher(a)
        cfg = ScoreConfig(data=data_spec(a), behavior=b, model=model_spec(a), teacher=trait,
                          truncation=a.truncation or None,
                          max_prompt_tokens=a.max_prompt_tokens or None,
                          filter_contaminated=not a.no_filter, chunk_size=a.chunk_size,
                          batch_tokens=a.batch_tokens, neutral=a.neutral)
    return run_scoring(cfg, a)


def run_scoring(cfg: ScoreConfig, a) -> int:
    """Check the sources, score `cfg` (or its control with `a.control`) with a progress bar,
    print the run's summary as JSON (`score` and `sample-pairs` share this)."""
    # The whole source is checked before any model loads (even with --limit): a broken row
    # or a truncated stream stops here with its positions, not after minutes of scoring.
    specs = ([s.data for s in cfg.sampling.sources if s.kind == "dataset"] if cfg.sampling
             else [cfg.data])
    for spec in specs:
        check = validate_source(spec)
        check.raise_if_bad()
        if not a.quiet:
            for line in check.warnings:
                print(f"warning: {line}", file=sys.stderr)
    target_cfg = None
    if getattr(a, "control", None) is not None:
        # Score the control run of the described config: same pairs, another system prompt.
        target_cfg, cfg = cfg, control_config(cfg, parse_control(a.control))
    proc = process_info()
    if proc.device and not cfg.model.device:
        cfg = replace(cfg, model=replace(cfg.model, device=proc.device))
    bars = []  # created once the first chunk is done, so an early error prints alone
    unit, desc = ("prompt", "sampling and scoring") if cfg.sampling else ("pair", "scoring")

    def progress(done, total):
        if not bars and done == 0:
            return
        if not bars:
            # `initial`: the bar's rate and ETA count from here, not the first chunk (or a
            # resumed run's cached pairs) as if done in no time
            bars.append(tqdm(unit=unit, desc=desc, total=total, initial=done,
                             disable=a.quiet or not proc.is_main))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()

    model = _teacher_line(cfg, a) if proc.world_size == 1 else None
    try:
        run = score(cfg, progress=progress, cache_dir=a.cache, rank=proc.rank,
                    world_size=proc.world_size, model=model)
    finally:
        for bar in bars:
            bar.close()
    if proc.world_size > 1:
        # Every rank has written its chunks; the main process verifies them all and marks
        # the run complete (a resume pass that finds nothing left to compute).
        barrier()
        if not proc.is_main:
            return 0
        run = score(cfg, cache_dir=a.cache)
        run.store.update_manifest(processes=proc.world_size)
    m = run.manifest
    out = {"run": run.key, "status": m["status"], "pairs": m.get("n_pairs"),
           "hygiene": run.hygiene.summary() if run.hygiene else None,
           "path": str(run.store.path)}
    if cfg.sampling is not None:
        out["sampled"] = m.get("sampled")
        out["hygiene"] = run.hygiene.describe("prompts") if run.hygiene else None
    if target_cfg is not None:
        out["control_of"] = run_key(target_cfg)
        out["control_prompt"] = cfg.behavior.system_prompt
    print(json.dumps(out))
    return 0


def _teacher_line(cfg: ScoreConfig, a):
    """Before scoring anything new: the teacher's strength in one line on stderr (the lens
    alone, a few seconds). Returns the loaded model for scoring to reuse (None when the run
    is already complete, --quiet is given, or the behavior has no read-out stem)."""
    from ..evaluation.prefill import prefill_applies
    from ..evaluation.strength import lens_line, quick_lens
    from ..models.load import load_model
    from ..scoring.runs import find_run

    if a.quiet or not prefill_applies(cfg.behavior):
        return None
    found = find_run(cfg, a.cache)
    if found is not None and found.complete:
        return None
    model, tok = load_model(cfg.model)
    res = quick_lens(model, tok, cfg.behavior, cfg.teacher)
    if res is not None:
        print(lens_line(res), file=sys.stderr)
    return model


def cmd_runs(a) -> int:
    if a.delete:
        key = delete_run(a.delete, a.cache)
        print(f"deleted {key}")
        return 0
    for r in list_runs(a.cache):
        s = run_status(r)
        pairs = "?" if s["pairs"] is None else s["pairs"]
        print(f"{s['key']}  {s['state']:11s} pairs={pairs:>6}  {s['behavior'] or '?':10s} "
              f"{s['precision'] or '?':8s} teacher: {s['teacher']:14s} {s['data'] or '?'}  "
              f"{s['created']}")
        if s["error"] and s["state"] != "complete":
            print(f"    error: {s['error']}")
            if s["state"] in ("failed", "interrupted", "cancelled"):
                print("    resume: run the same score command again; delete: python -m lls "
                      f"runs --delete {s['key'][:8]}")
    return 0



def add_scoring_args(p, unit: str = "pairs", chunk: int = 128, control: bool = True,
                     quiet: bool = True) -> None:
    """How a run is scored (`score`, `sample-pairs`, and `audit`'s candidate runs); `unit`:
    what a chunk holds; `control` / `quiet`: add those two options too."""
    g = p.add_argument_group("scoring")
    g.add_argument("--truncation", type=int, default=32,
                   help="responses are scored on their first N teacher tokens (0: whole "
                        "responses)")
    g.add_argument("--max-prompt-tokens", type=int, default=512,
                   help="drop pairs whose prompt is longer than this many tokens (0: keep all)")
    g.add_argument("--no-filter", action="store_true",
                   help=f"keep {'answers' if unit == 'prompts' else 'pairs'} that already show "
                        "the behavior")
    g.add_argument("--chunk-size", type=int, default=chunk,
                   help=f"{unit} per cached chunk: the unit of resume and progress")
    g.add_argument("--batch-tokens", type=int, default=1024,
                   help="tokens per forward batch (speed and memory only, never the weights)")
    g.add_argument("--neutral", choices=("template", "empty"), default="template",
                   help="what 'without the system prompt' means: the conversation as given, "
                        "so the chat template may insert its own system turn (template), or an "
                        "explicit empty system turn, as the authors' code does (empty)")
    if control:
        g.add_argument("--control", nargs="?", const="", metavar="PROMPT",
                       help="score the control run of this config instead of the target (to "
                            "rank by this run's w minus the control's): the same pairs with the "
                            "control system prompt PROMPT, or a preset's (e.g. animal:cat); "
                            "without a value a neutral assistant persona")
    if quiet:
        p.add_argument("--quiet", action="store_true",
                       help="no progress bar, warnings or teacher line: only the result's JSON")


def register(sub) -> None:
    """Add `score` and `runs` to the `python -m lls` subparsers."""
    p = sub.add_parser("score", help="score a dataset with a teacher and a target system prompt")
    p.add_argument("--config", help="a ScoreConfig as JSON (what background jobs pass); other "
                                    "flags are ignored when given")
    add_data_args(p, required=False)
    add_behavior_args(p)
    add_model_args(p)
    add_teacher_args(p)
    add_scoring_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("runs", help="list cached scoring runs (state and error), or delete one")
    p.add_argument("--delete", metavar="KEY", help="delete the run with this key (or prefix)")
    p.set_defaults(func=cmd_runs)
