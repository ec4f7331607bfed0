"""`python -m lls study create | run | status | list | confirm | report`: sweeps where every LLS
adapter has its same-size random twin (`lls.studies`)."""

from __future__ import annotations

import json

from ..core.stats import GAP_UNDEFINED
from ..evaluation.readouts import KIND_LABELS
from ..studies.config import AXIS, GRID_FLAGS, StudyConfig, StudyError, parse_values
from ..studies import text as T
from ..studies.report import best_cell, confirm_best, hygiene, plan_for, table, target
from ..studies.export import write_report
from ..studies.runner import run_study, submit_cells, submit_study
from ..studies.store import create_study, list_studies, open_study
from .common import add_run_arg, alias


def cmd_create(a) -> int:
    grid = {axis: parse_values(getattr(a, flag)) for flag, axis in GRID_FLAGS.items()
            if getattr(a, flag)}
    try:
        recipe = json.loads(a.recipe) if a.recipe else None
    except ValueError as e:
        raise StudyError(f"--recipe is not JSON ({e}); e.g. '{{\"batch_size\": 8}}'.") from None
    sampled = {"questions": a.questions, "samples": a.samples,
               "max_new_tokens": a.max_new_tokens, "seed": 0,
               "kinds": parse_values(a.sampled) or None, "stem": a.stem}
    study = create_study(StudyConfig(name=a.name, run=a.run, grid=grid,
                                     control_run=a.control_run, recipe=recipe,
                                     lr_scheduler=a.lr_scheduler, sampled=sampled,
                                     checkpoints_per_epoch=a.checkpoints_per_epoch), a.cache)
    cells = study.cells()
    print(json.dumps({"study": study.name, "path": str(study.path), "cells": len(cells),
                      "recipe": study.config.recipe, "sampled": study.config.sampled,
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


def markdown(study, rows: list[dict], best: dict | None, levels: list | None = None,
             kinds=("one-word",)) -> str:
    """The cells as a Markdown table (for notes and papers): paired LLS - random effects with
    95% CIs, sampled shares and their paired difference per read-out kind, collapse, minutes
    (training / meter / sampled); `levels` ((teacher, levels) of each teacher: base and the
    teacher, sampled once per study) go above it, the verdict with its correction below."""
    out = []
    for kind in kinds:
        for i, (name, lvs) in enumerate(levels or []):
            for who, label in (("base", "base"), ("system", f"teacher {name}")):
                lv = (lvs.get(kind) or {}).get(who)
                if lv and lv.get("n") and (who == "system" or i == 0):
                    out.append(f"Sampled {KIND_LABELS.get(kind, kind)}, {label}: "
                               f"{T.level_text(lv)}  ")
    out.append(T.markdown_table(T.cells_table(rows, plan_for(study)["paired_all"], kinds)))
    out.append("\n" + T.READ_AT + "\n\n" + T.verdict_line(best))
    return "\n".join(out)


def cmd_status(a) -> int:
    study = open_study(a.name, a.cache)
    rows = table(study)
    best = best_cell(study)
    kinds = study.config.sampled.get("kinds", [])
    if a.json:
        print(json.dumps({"cells": rows, "best": best, "target": target(study)},
                         ensure_ascii=False, default=str))
        return 0
    levels = study.teacher_levels()
    if a.markdown:
        print(markdown(study, rows, best, levels, kinds))
        return 0
    t = target(study)
    print(f"study {study.name}: {t['behavior']} · {t['model']} · {t['data']} "
          f"({t['pairs']} pairs, run {t['run'][:12]})")
    if study.upgraded_from:
        print(f"(made by study version {study.upgraded_from}: its cells are read again when "
              "the queue runs; finished adapters are reused)")
    print(T.READ_AT)
    for kind in kinds:  # the floor and the ceilings every cell's shares sit between
        got = []
        for i, (name, lvs) in enumerate(levels):
            lv = lvs.get(kind) or {}
            if i == 0 and lv.get("base"):
                got.append(f"base {T.level_text(lv['base'])}")
            if lv.get("system"):
                got.append(f"teacher {name} {T.level_text(lv['system'])}")
        if got:
            print(f"sampled {KIND_LABELS.get(kind, kind)}: " + ", ".join(got))
    hyg = hygiene(study)
    if hyg.get("readout_overlap_text"):
        print(hyg["readout_overlap_text"])
    for r in rows:
        print(f"{r['cell']}  {r['status']:8s} {r['full_label']}"
              + (f"  error: {r['error']}" if r.get("error") else ""))
        if r["status"] != "done":
            continue
        for k in ("margin", "gap_closed", "top1"):
            if r.get(k + "_diff") is not None or r.get(k + "_note"):
                own = "" if r.get(k + "_note") else T.own_text(r, k)
                print(f"    {k:10s} LLS − random {T.ci_text(r, k)}"
                      + (f"   LLS / random (base) {own}" if own else "")
                      + (f"   ({r[k + '_note'].removeprefix(GAP_UNDEFINED).strip(' (')}"
                         if r.get(k + "_note") else ""))
        for kind in kinds:
            print(f"    sampled {KIND_LABELS.get(kind, kind)}: LLS "
                  f"{T.share_text(r, kind, 'lls') or '-'}, random "
                  f"{T.share_text(r, kind, 'random') or '-'}, LLS − random "
                  f"{T.pp_text(r, kind) or '-'}")
        print(f"    step {r['step']} ({r['n_pairs']} pairs), collapsed: "
              f"{T.collapsed_text(r)}; seconds: training {r['seconds_training']}, meter "
              f"read-outs {r['seconds_meter']}, sampled read-outs {r['seconds_sampled']}; "
              f"peak memory of the study process {r.get('peak_rss_mb')} MB")
    print(T.verdict_line(best))
    return 0


def cmd_report(a) -> int:
    path = write_report(a.name, a.out, a.cache)
    print(json.dumps({"study": a.name, "report": str(path),
                      "bytes": path.stat().st_size}))
    return 0


def cmd_list(a) -> int:
    for s in list_studies(a.cache):
        done = sum(1 for c in s.cells() if s.result(c))
        print(f"{s.name}  run={s.config.run[:12]}  cells {done}/{len(s.cells())}  "
              f"{json.dumps(s.config.grid)}")
    return 0


def cmd_confirm(a) -> int:
    got = confirm_best(a.name, a.cache)
    print(json.dumps({"study": a.name, "confirmation": got,
                      "note": "queued: run the queue to train it" if got["queued"] else
                      "a confirmation of this cell is already queued (one at a time)"}))
    return 0


def register(sub) -> None:
    """Add `study` (create, run, status, list, report, confirm) to the `python -m lls`
    subparsers."""
    p = sub.add_parser("study", help="sweeps of LLS adapters, each with its random twin")
    ss = p.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    c = ss.add_parser("create", help="create a study, or extend one (finished cells are kept)")
    c.add_argument("name", help="the study's name (letters, digits, . _ -)")
    add_run_arg(c)
    c.add_argument("--control-run", metavar="KEY",
                   help="control run key, or comma-separated keys of a panel (for --ranking "
                        "contrastive)")
    for flag, axis in GRID_FLAGS.items():
        c.add_argument(f"--{flag.replace('_', '-')}", dest=flag,
                       help=f"comma-separated values of {AXIS[axis].label} (default: the "
                            "recipe's, else the paper's)" if axis != "teacher" else
                       "comma-separated scoring runs of the same pairs and behavior, one per "
                       "teacher (e.g. another prompt, a trait adapter): cells for each "
                       "(default: --run's teacher only)")
    c.add_argument("--recipe", help="TrainConfig fields every cell shares, as JSON (extending "
                                    "a study: leave it out to keep the stored one)")
    alias(c, c.add_argument("--lr-scheduler", default="constant",
                            help="learning-rate schedule; 'constant' lets an epochs grid share "
                                 "one run per setting"), "--scheduler")
    alias(c, c.add_argument("--questions", type=int, default=None,
                            help="sampled read-outs: questions asked (default: 32 for a new "
                                 "study, else the stored value)"), "--sample-questions")
    alias(c, c.add_argument("--samples", type=int, default=None,
                            help="sampled read-outs: answers per question (default: 8 for a "
                                 "new study, else the stored value)"), "--sample-n")
    alias(c, c.add_argument("--max-new-tokens", type=int, default=None,
                            help="sampled read-outs: new tokens per answer (default per "
                                 "read-out: one-word 8, prefilled 4, behavior 48)"),
          "--sample-max-new-tokens")
    c.add_argument("--checkpoints-per-epoch", type=int, default=None,
                   help="meter read-outs per epoch (default: 2 for a new study; 1 = epoch "
                        "ends only, cheaper)")
    c.add_argument("--sampled", help="sampled read-outs, comma-separated: one-word, prefilled "
                                     "(animal behaviors), behavior (default: one-word for "
                                     "animals, else behavior)")
    c.add_argument("--stem", help="the begun reply of the prefilled read-out (default: the "
                                  "behavior's, e.g. 'My favorite animal is the')")
    c.set_defaults(func=cmd_create)
    r = ss.add_parser("run", help="work through the queue (foreground by default)")
    r.add_argument("name", help="the study's name")
    r.add_argument("--background", action="store_true", help="as a background job")
    r.add_argument("--executor", choices=["here", "slurm", "local"], default="here",
                   help="where cells run: here, or one submitit job per cell group on a Slurm "
                        "cluster (slurm) or on this machine (local)")
    r.add_argument("--submitit-folder", default="cache/submitit",
                   help="where submitit keeps its job logs")
    r.add_argument("--slurm-partition", help="the Slurm partition (default: the cluster's)")
    r.add_argument("--timeout-min", type=int, default=240,
                   help="a submitit job's time limit, in minutes")
    r.set_defaults(func=cmd_run)
    s = ss.add_parser("status", help="cells, paired effects and the best cell")
    s.add_argument("name", help="the study's name")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object (cells, best cell, target)")
    s.add_argument("--markdown", action="store_true", help="the cells as a Markdown table")
    s.set_defaults(func=cmd_status)
    ss.add_parser("list", help="studies in the cache").set_defaults(func=cmd_list)
    h = ss.add_parser("report", help="the study as one self-contained HTML file (charts "
                                     "inlined: opens with no network)")
    h.add_argument("name", help="the study's name")
    h.add_argument("--out", required=True, help="where to write the .html file")
    h.set_defaults(func=cmd_report)
    f = ss.add_parser("confirm", help="queue the best cell again with a new seed")
    f.add_argument("name", help="the study's name")
    f.set_defaults(func=cmd_confirm)
