"""`python -m lls study create | run | status | list | confirm`: sweeps where every LLS
adapter has its same-size random twin (`lls.studies.study`)."""

from __future__ import annotations

import json

from ..core.cache import read_json_safe
from ..studies.study import (StudyConfig, StudyError, best_cell, confirm_best, create_study,
                     list_studies, open_study, table)
from ..studies.runner import run_study, submit_cells, submit_study

# CLI flag -> grid axis (comma-separated values)
GRID_FLAGS = {"gamma": "gamma", "threshold": "threshold", "ranking": "ranking",
              "epochs": "epochs", "lr": "learning_rate", "beta": "beta", "lora_r": "lora_r",
              "seed": "seed"}


def _values(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def cmd_create(a) -> int:
    grid = {axis: _values(getattr(a, flag)) for flag, axis in GRID_FLAGS.items()
            if getattr(a, flag)}
    try:
        recipe = json.loads(a.recipe) if a.recipe else {}
    except ValueError as e:
        raise StudyError(f"--recipe is not JSON ({e}); e.g. '{{\"batch_size\": 8}}'.") from None
    sampled = {"questions": a.sample_questions, "samples": a.sample_n,
               "max_new_tokens": a.sample_max_new_tokens, "seed": 0}
    study = create_study(StudyConfig(name=a.name, run=a.run, grid=grid,
                                     control_run=a.control_run, recipe=recipe,
                                     lr_scheduler=a.scheduler, sampled=sampled,
                                     checkpoints_per_epoch=a.checkpoints_per_epoch), a.cache)
    cells = study.cells()
    print(json.dumps({"study": study.name, "path": str(study.path), "cells": len(cells),
                      "queue": [c.label() for c in cells]}, ensure_ascii=False, indent=1))
    return 0


def cmd_run(a) -> int:
    if a.background:
        job = submit_study(a.name, a.cache)
        print(json.dumps({"study": a.name, "job": job.id, "status": job.status}))
        return 0
    if a.executor != "here":
        import submitit

        ex = submitit.AutoExecutor(folder=a.submitit_folder, cluster=None if
                                   a.executor == "slurm" else "local")
        if a.slurm_partition:
            ex.update_parameters(slurm_partition=a.slurm_partition)
        ex.update_parameters(timeout_min=a.timeout_min)
        js = submit_cells(a.name, ex, a.cache)
        print(json.dumps({"study": a.name, "submitted": [j.job_id for j in js]}))
        return 0
    res = run_study(a.name, a.cache)
    print(json.dumps({"study": a.name, "finished_now": len(res)}))
    return 0


def _fmt(v, d=3):
    return "-" if v is None else (f"{v:+.{d}f}" if isinstance(v, float) else str(v))


def _ci_cell(r: dict, k: str) -> str:
    d = r.get(k + "_diff")
    return "-" if d is None else f"{d:+.2f} [{r[k + '_lo']:+.2f}, {r[k + '_hi']:+.2f}]"


def _share(k, n, lo, hi) -> str:
    if k is None or not n:
        return "-"
    return f"{k}/{n} ({100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}])"


def _pp(r: dict) -> str:
    if r.get("sampled_diff") is None:
        return "-"
    return (f"{100 * r['sampled_diff']:+.1f} [{100 * r['sampled_lo']:+.1f}, "
            f"{100 * r['sampled_hi']:+.1f}]")


def _own(r: dict, k: str) -> str:
    vals = [r.get(f"{w}_{k}") for w in ("lls", "random", "base")]
    return "-" if None in vals else f"{vals[0]:+.2f} / {vals[1]:+.2f} ({vals[2]:+.2f})"


def markdown(rows: list[dict], best: dict | None, levels: dict | None = None) -> str:
    """The cells as a Markdown table (for notes and papers): paired LLS - random effects with
    95% CIs, sampled shares with Wilson CIs, collapse flags, seconds; `levels` (base and base +
    system prompt sampled once per study) go above it."""
    out = []
    for who, label in (("base", "base"), ("system", "base + system prompt")):
        lv = (levels or {}).get(who)
        if lv:
            out.append(f"Sampled {label}: "
                       f"{_share(lv['k'], lv['n'], lv['ci_low'], lv['ci_high'])}  ")
    out += ["| cell | pairs | step | margin (nats) | gap closed | top-1 share | sampled LLS | "
           "sampled random | sampled LLS − random (pp) | margin LLS / random (base) | collapse | "
           "seconds |", "|" + "---|" * 12]
    for r in rows:
        collapsed = ", ".join(w for w in ("lls", "random") if r.get(w + "_collapsed")) or "no"
        out.append(f"| {r['label']} ({r['status']}) | {r.get('n_pairs') or '-'} | "
                   f"{r.get('step') or '-'} | {_ci_cell(r, 'margin')} | "
                   f"{_ci_cell(r, 'gap_closed')} | {_ci_cell(r, 'top1')} | "
                   f"{_share(*(r.get(f'lls_{k}') for k in ('k', 'n', 'lo', 'hi')))} | "
                   f"{_share(*(r.get(f'random_{k}') for k in ('k', 'n', 'lo', 'hi')))} | "
                   f"{_pp(r)} | {_own(r, 'margin')} | "
                   f"{collapsed if r['status'] == 'done' else '-'} | "
                   f"{'-' if r.get('seconds') is None else round(r['seconds'])} |")
    if best:
        e = best["effect"]
        out.append(f"\nBest: {best['label']} at step {best['step']}, {best['readout']} "
                   f"{e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]. "
                   f"{best['caveat']}")
    return "\n".join(out)


def cmd_status(a) -> int:
    study = open_study(a.name, a.cache)
    rows = table(study)
    best = best_cell(study)
    if a.json:
        print(json.dumps({"cells": rows, "best": best}, ensure_ascii=False, default=str))
        return 0
    if a.markdown:
        levels = (read_json_safe(study.path / "sampled_levels.json") or {}).get("levels")
        print(markdown(rows, best, levels))
        return 0
    for r in rows:
        eff = "  ".join(f"{k} {_fmt(r.get(k + '_diff'))} [{_fmt(r.get(k + '_lo'))}, "
                        f"{_fmt(r.get(k + '_hi'))}]" for k in ("margin", "gap_closed", "top1")
                        if r.get(k + "_diff") is not None)
        samp = "  ".join(f"{w} {r[w + '_share']:.3f} [{r[w + '_lo']:.3f}, {r[w + '_hi']:.3f}]"
                         f"{' COLLAPSED' if r.get(w + '_collapsed') else ''}"
                         for w in ("lls", "random") if r.get(w + "_share") is not None)
        print(f"{r['cell']}  {r['status']:8s} {r['label']}  {eff}  {samp}  "
              f"{_fmt(r.get('seconds'), 0)} s{'  ' + r['error'] if r.get('error') else ''}")
    if best:
        print(f"best: {best['label']} @ step {best['step']}: {best['readout']} "
              f"{_fmt(best['effect']['diff'])} [{_fmt(best['effect']['ci_low'])}, "
              f"{_fmt(best['effect']['ci_high'])}] — {best['caveat']}")
    return 0


def cmd_list(a) -> int:
    for s in list_studies(a.cache):
        done = sum(1 for c in s.cells() if s.result(c))
        print(f"{s.name}  run={s.config.run[:12]}  cells {done}/{len(s.cells())}  "
              f"{json.dumps(s.config.grid)}")
    return 0


def cmd_confirm(a) -> int:
    settings = confirm_best(a.name, a.cache)
    print(json.dumps({"study": a.name, "queued": settings}))
    return 0


def register(sub) -> None:
    """Add `study` (create, run, status, list, confirm) to the `python -m lls` subparsers."""
    p = sub.add_parser("study", help="sweeps of LLS adapters, each with its random twin")
    ss = p.add_subparsers(dest="study_command", required=True)
    c = ss.add_parser("create", help="create a study, or extend one (finished cells are kept)")
    c.add_argument("name")
    c.add_argument("--run", required=True, help="scoring run key (or a unique prefix)")
    c.add_argument("--control-run", help="control run (for --ranking contrastive)")
    for flag, axis in GRID_FLAGS.items():
        c.add_argument(f"--{flag.replace('_', '-')}", dest=flag,
                       help=f"comma-separated values of {axis} (default: the paper's)")
    c.add_argument("--recipe", help="TrainConfig fields every cell shares, as JSON")
    c.add_argument("--scheduler", default="constant",
                   help="learning-rate schedule; 'constant' lets an epochs grid share one "
                        "run per setting (default %(default)s)")
    c.add_argument("--sample-questions", type=int, default=32,
                   help="probe questions in the sampled read-out (default %(default)s)")
    c.add_argument("--checkpoints-per-epoch", type=int, default=2,
                   help="meter read-outs per epoch (default 2; 1 = epoch ends only, cheaper)")
    c.add_argument("--sample-n", type=int, default=8, help="samples per question (default 8)")
    c.add_argument("--sample-max-new-tokens", type=int, default=8)
    c.set_defaults(func=cmd_create)
    r = ss.add_parser("run", help="work through the queue (foreground by default)")
    r.add_argument("name")
    r.add_argument("--background", action="store_true", help="as a background job")
    r.add_argument("--executor", choices=["here", "slurm", "local"], default="here",
                   help="'slurm' / 'local': one submitit job per cell group")
    r.add_argument("--submitit-folder", default="cache/submitit")
    r.add_argument("--slurm-partition")
    r.add_argument("--timeout-min", type=int, default=240)
    r.set_defaults(func=cmd_run)
    s = ss.add_parser("status", help="cells, paired effects and the best cell")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.add_argument("--markdown", action="store_true", help="the cells as a Markdown table")
    s.set_defaults(func=cmd_status)
    ss.add_parser("list", help="studies in the cache").set_defaults(func=cmd_list)
    f = ss.add_parser("confirm", help="queue the best cell again with a new seed")
    f.add_argument("name")
    f.set_defaults(func=cmd_confirm)
