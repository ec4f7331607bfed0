"""Reading a study: one row per cell, the best cell (named only when its paired effect is
positive with an interval above zero), confirmations, and the hand-over to Chat.

Intervals: paired log-probability effects resample probe questions (margin, top-1) or
reference responses (likelihood ratio, gap closed), sampled shares resample questions
(`lls.core.stats`, `lls.evaluation.effects`); all seeded, so a report reads the same twice.
"""

from __future__ import annotations

import numpy as np

from ..core.stats import ratio_ci
from ..evaluation import effects
from ..evaluation.readouts import KIND_LABELS, plan, sampled_diff
from ..models.load import ModelSpec
from ..scoring.runs import scored_model
from ..training.adapters import open_adapter
from ..training.config import TrainConfig
from .config import StudyError, make_cell, varying_axes
from .plan import cell_status, group_config
from ..scoring.runs import open_run
from .store import Study, checkpoint_dir, open_study


def _ci(d: dict | None) -> tuple:
    d = d or {}
    return d.get("diff"), d.get("ci_low"), d.get("ci_high")


def result_best(result: dict) -> dict | None:
    """A finished cell's best checkpoint: the one the runner picked and sampled
    (`runner.pick_sampled_best`); a confirmation's is its judged step. (Results without a
    stored pick: `effects.best_step` over the curve, collapsed steps left out.)"""
    if result.get("judge_step") is not None:
        return result.get("final")
    if "best" in result:
        return result["best"]
    curve = result.get("curve") or []
    return effects.best_step(curve, result["readout"], effects.base_row(curve),
                             exclude=result.get("collapsed_steps") or ())


def sampled_at(result: dict, tag: str = "final") -> dict:
    """{kind: {"lls", "random", "diff"}} of a cell's sampled read-outs at `tag` ("final",
    or "best" when the best step is not the last one)."""
    got = (result.get("sampled") or {}).get(tag) or {}
    return got.get("kinds") or {}


def collapsed(result: dict, who: str = "lls", tag: str = "final") -> bool:
    """The study's one collapse rule at a cell's checkpoint (`effects.step_collapsed`: the
    probe, or any sampled read-out kind)."""
    row = result.get(tag if tag == "final" else "best") or {}
    return effects.step_collapsed(row, sampled_at(result, tag), who)


def cost(result: dict) -> dict:
    """Seconds a cell cost: training, meter read-outs and sampled read-outs."""
    c = result.get("cost") or {}
    return {k: c.get(k) for k in ("training", "meter", "sampled", "total")}


def table(study: Study) -> list[dict]:
    """One row per cell: settings, status, paired effects at the cell's last step (each
    adapter's own value beside base's), sampled shares per read-out kind with the paired
    LLS - random difference, collapse (one rule), the cost breakdown and the peak memory."""
    varying = varying_axes(study.config)
    rows = []
    for c in study.cells():
        r = study.result(c)
        names = study.config.teacher_names
        row = {"cell": c.id(study.config), "label": c.label(varying, names),
               "full_label": c.label(names=names),
               **c.s, "confirms": c.confirms,
               "status": "done" if r else cell_status(study, c), "error": study.error(c) or ""}
        if r:
            f = r.get("final") or {}
            base = effects.base_row(r.get("curve") or []) or {}
            for k in effects.READOUTS:
                row[f"{k}_diff"], row[f"{k}_lo"], row[f"{k}_hi"] = _ci(f.get(k))
                row[f"lls_{k}"], row[f"random_{k}"] = f.get(f"lls_{k}"), f.get(f"random_{k}")
                row[f"base_{k}"] = base.get(f"lls_{k}")
                if (f.get(k) or {}).get("undefined"):
                    row[f"{k}_note"] = f[k]["undefined"]
            for kind, got in sampled_at(r).items():
                for who in ("lls", "random"):
                    s = got.get(who) or {}
                    for fld in ("k", "n", "share", "ci_low", "ci_high"):
                        row[f"{kind}:{who}_{fld}"] = s.get(fld)
                d = got.get("diff") or {}
                row[f"{kind}:diff"], row[f"{kind}:lo"], row[f"{kind}:hi"] = _ci(d)
                lens = [((got.get(w) or {}).get("lens") or {}).get("per_question")
                        for w in ("lls", "random")]
                if all(lens) and len(lens[0]) == len(lens[1]):
                    # the next-word lens, LLS / random, paired over questions
                    q = ratio_ci(*lens)
                    row.update({"lens:lls": float(np.mean(lens[0])),
                                "lens:random": float(np.mean(lens[1])),
                                "lens:ratio": q["ratio"], "lens:lo": q["ci_low"],
                                "lens:hi": q["ci_high"]})
            for who in ("lls", "random"):
                row[f"{who}_collapsed"] = collapsed(r, who)
            best = result_best(r) or {}
            row.update(step=r["step"], n_pairs=r.get("n_pairs"), best_step=best.get("step"),
                       units=f.get("units"), **{f"seconds_{k}": v for k, v in cost(r).items()},
                       seconds=cost(r)["total"], peak_rss_mb=(r.get("memory") or {}).get(
                           "peak_rss_mb"))
        rows.append(row)
    return rows


def n_compared(study: Study) -> int:
    """Distinct candidates the best-cell rule compared: checkpoints after step 0 of every
    finished grid cell, a checkpoint shared by epoch siblings (one training run) counted
    once, confirmations left out."""
    seen = set()
    for c in study.cells():
        r = None if c.confirms else study.result(c)
        if r:
            for row in r.get("curve") or []:
                if row.get("step", 0) > 0:
                    seen.add((r["adapters"]["lls"], row["step"]))
    return len(seen)


ALPHA = 0.05  # the family-wise error rate of the verdict


def correction(n: int) -> dict:
    """How the verdict accounts for its search: Bonferroni over the `n` candidates compared
    (cells x read-out steps; for the largest of them this is also Holm's first step), i.e.
    the best candidate's interval at level 1 - 0.05 / n."""
    n = max(1, int(n))
    level = 1 - ALPHA / n
    return {"method": "Bonferroni", "n": n, "alpha": ALPHA / n, "level": level,
            "text": f"Bonferroni over {n} candidate{'s' if n != 1 else ''} searched "
                    f"(cells × read-out steps): the best one's {100 * level:.2f}% interval"}


def verdict(row: dict, readout: str, n: int, confirmations=()) -> dict:
    """Whether the picked candidate beat its twin, accounting for the search that picked it.

    `row`: the picked checkpoint's paired effects (with its per-unit differences, "units");
    `n`: candidates searched; `confirmations`: re-runs with a fresh seed at the picked step
    (`confirmations`). The state is "beats" (its interval corrected for `n` candidates lies
    above 0), "confirmed" (a confirmation's own 95% interval lies above 0), "candidate"
    (only its uncorrected interval does: confirm it) or "none"."""
    e = row[readout]
    corr = correction(n)
    corrected = effects.readout_effect(row.get("units"), readout, corr["alpha"]) \
        if row.get("units") else None
    done = [c for c in confirmations if c.get("status") == "done" and c.get("effect")]
    held = [c for c in done if (c["effect"].get("ci_low") or 0) > 0]
    lo = e.get("ci_low")
    if corrected and corrected.get("ci_low") is not None and corrected["ci_low"] > 0:
        state = "beats"
    elif held:
        state = "confirmed"
    elif lo is not None and lo > 0:
        state = "candidate"
    else:
        state = "none"
    return {"state": state, "corrected": corrected, "correction": corr,
            "confirmed_by": held[0] if held else None,
            "failed_confirmations": [c for c in done if c not in held]}


def best_cell(study: Study) -> dict | None:
    """The finished grid cell and checkpoint with the largest paired effect on the study's
    read-out (not collapsed; LLS adapters that moved toward the target first), with
    `n_compared` distinct candidates, and its `verdict`: `beats_twin` only when its
    interval corrected for those candidates lies above 0, or a confirmation with a fresh
    seed at that step cleared 0 on its own; an uncorrected interval above 0 makes it a
    "candidate" (`state`). `why_not` says in words why no cell is named. Confirmations
    never compete."""
    done = [r for c in study.cells() if not c.confirms and (r := study.result(c))]
    cands = [(r, b) for r in done if (b := result_best(r))]
    if not cands:
        return None
    key = done[0]["readout"]
    r, b = max(cands, key=lambda rb: (rb[1].get("lls_moved", True), rb[1][key]["diff"]))
    n = n_compared(study)
    moved, lo, hi = b.get("lls_moved", True), b[key].get("ci_low"), b[key].get("ci_high")
    conf = confirmations(study, r["cell"])
    v = verdict(b, key, n, conf)
    beats = v["state"] in ("beats", "confirmed")
    c = v["corrected"]
    # why no cell is named: an interval entirely below 0 is a finding of its own (LLS moved
    # the read-out less than random pairs did), not the same as "no difference shown"
    why_not = None if beats else (
        "its interval lies below 0: the LLS adapter scored lower than its random twin"
        if hi is not None and hi < 0 else "its interval reaches 0" if not (lo and lo > 0)
        else "its interval clears 0 only before correcting for the search: a candidate "
             "until a confirmation with a fresh seed clears 0")
    caveat = (f"Best of {n} distinct checkpoints (cells × read-out steps) on the same "
              "questions: the largest of many noisy estimates is optimistic"
              + (", so its verdict is corrected for them or confirmed by a fresh seed."
                 if beats else "; confirm it with a new seed before trusting it."))
    if not moved:
        caveat = (f"The LLS adapter did not move toward the target on {key} (its own gain "
                  "over base has an interval reaching 0): this largest paired effect comes "
                  "from the random twin moving away, not from transfer. " + caveat)
    return {"cell": r["cell"], "settings": r["settings"], "label": r["label"],
            "step": b["step"], "readout": key, "effect": b[key], "adapters": r["adapters"],
            "n_compared": n, "lls_moved": moved, "beats_twin": beats, "state": v["state"],
            "corrected": c, "correction": v["correction"], "why_not": why_not,
            "caveat": caveat, "confirmations": conf}


def confirmations(study: Study, cell_id: str) -> list[dict]:
    """The confirmations of a cell: settings, judged step, status and effect."""
    out = []
    for c in study.cells():
        if c.confirms == cell_id:
            r = study.result(c)
            out.append({"cell": c.id(study.config), "seed": c.s["seed"],
                        "step": c.judge_step, "status": "done" if r else cell_status(study, c),
                        "effect": (r or {}).get("final", {}).get((r or {}).get("readout"))})
    return out


def confirm_best(name: str, cache_dir=None) -> dict:
    """Queue the best cell's setting again with a new seed, judged at its picked step (a
    confirmation: the best of N is optimistic). One at a time: while a confirmation of the
    cell is unfinished, asking again returns it instead of queueing another."""
    study = open_study(name, cache_dir)
    best = best_cell(study)
    if best is None:
        raise StudyError(f"Study {name!r} has no finished cell with a paired effect yet.")
    pending = [e for e in study.extra if e["confirms"] == best["cell"]
               and study.result(make_cell(e["settings"], confirms=e["confirms"],
                                          judge_step=e["judge_step"], every=e["every"])) is None]
    if pending:
        return {**pending[0], "queued": False}
    original = study.cell(best["cell"])
    seeds = {c.s["seed"] for c in study.cells()}
    entry = {"settings": {**best["settings"], "seed": max(seeds) + 1},
             "confirms": best["cell"], "judge_step": int(best["step"]),
             "every": group_config(study, original).checkpoint_every}
    study.extra.append(entry)
    study.save()
    return {**entry, "queued": True}


def chat_setup(study: Study, best: dict) -> dict:
    """What the Chat page needs to put a cell checkpoint beside its random twin and base +
    system prompt: adapter directories, labels naming the cell and step, the system prompt,
    and the questions the read-out asked (offered as prompts)."""
    cell = make_cell(best["settings"])
    b = study.behavior(cell)
    step = best["step"]
    paths, labels = [], []
    short = cell.label(varying_axes(study.config), study.config.teacher_names)
    trait = open_run(cell.run(study.config), study.cache_dir).config.teacher
    if trait is not None and trait.kind == "adapter":  # the teacher as a column of its own
        paths.append(trait.path)
        labels.append(f"teacher: {trait.label()}")
    for kind, name in (("lls", "LLS"), ("random", "random twin")):
        info = open_adapter(best["adapters"][kind], study.cache_dir)
        paths.append(str(checkpoint_dir(info.path, step)))
        labels.append(f"{name} · {short} · step {step}")
    prompts = plan(b, study.config.sampled.get("kinds"))["prompts"]
    prompts = prompts[:study.config.sampled.get("questions", 32)]
    return {"model": teacher(study).name, "adapters": paths, "labels": labels,
            "system_prompt": b.system_prompt, "behavior": b.to_dict(),
            "behavior_label": b.label(), "prompts": list(prompts),
            "study": study.name, "cell": short, "step": step}


def plan_for(study: Study) -> dict:
    """The study's read-outs (`lls.evaluation.readouts.plan`)."""
    return plan(study.behavior(), study.config.sampled.get("kinds"))


def teacher(study: Study) -> ModelSpec:
    """The model every cell trains (the scoring run's teacher, in the run's precision)."""
    return scored_model(study.run_manifest())


def recipe(study: Study) -> TrainConfig:
    """The recipe every cell shares, at the grid's largest LoRA rank (what the memory
    check must count: the biggest adapter the study will train)."""
    r = max(study.config.grid.get("lora_r") or [TrainConfig().lora_r])
    return study.config.train_config(lora_r=r)


def target(study: Study) -> dict:
    """What the study targets, in words: behavior, data, model and scoring-run size."""
    m = study.run_manifest()
    cfg = m.get("config") or {}
    data = cfg.get("data") or {}
    return {"behavior": study.behavior().label(), "model": teacher(study).name,
            "data": data.get("path") or data.get("name") or "?", "pairs": m.get("n_pairs"),
            "run": study.config.run, "kinds": [KIND_LABELS[k] for k in
                                               study.config.sampled.get("kinds", [])]}


def hygiene(study: Study) -> dict:
    """The hygiene report of the study's data: what scoring kept and dropped, and whether a
    read-out is in-sample: pairs whose prompt is a question the read-outs ask (counted from
    the run's pairs, so runs scored before the check are counted too) or a bundled read-out
    set among a sampled run's prompt sources."""
    import json

    from ..data.hygiene import HygieneReport, asks_readout

    if "__hygiene__" not in study._sizes:
        run = open_run(study.config.run, study.cache_dir)
        h = run.manifest.get("hygiene")
        rep = HygieneReport.from_dict(h) if h else None
        counts = run.table().column("prompt").value_counts().to_pylist()
        asked = [c["counts"] for c in counts if asks_readout(json.loads(c["values"]))]
        overlap, pairs = len(asked), sum(asked)
        sources = ((run.manifest.get("config") or {}).get("sampling") or {}).get("sources", [])
        sets = [src["path"] for src in sources if src.get("kind") == "set"]
        text = None
        if pairs or sets:
            text = ("In-sample read-out: " + "; ".join(
                ([f"{pairs} of the run's pairs ({overlap} distinct prompts) ask a question "
                  "the read-outs ask"] if pairs else []) +
                ([f"its prompts include the bundled read-out set(s) {', '.join(sets)}"]
                 if sets else []))
                + ". Effects read on those questions are measured on training prompts.")
        study._sizes["__hygiene__"] = {
            "summary": rep.describe("pairs" if not sources else "prompts") if rep else None,
            "hygiene": h, "readout_overlap": pairs, "readout_prompts": overlap,
            "bundled_sets": sets, "readout_overlap_text": text,
            "dropped_readout_questions": (h or {}).get("dropped", {}).get("readout_question", 0)}
    return study._sizes["__hygiene__"]


def describe_sampled(result: dict) -> list[str]:
    """One line per sampled read-out kind of a finished cell: LLS and random shares with
    their intervals and the paired difference."""
    out = []
    for kind, got in sampled_at(result).items():
        d = got.get("diff") or sampled_diff(got.get("lls"), got.get("random"))
        parts = [f"{name} {got[w]['k']}/{got[w]['n']}" for w, name in
                 (("lls", "LLS"), ("random", "random twin")) if got.get(w) and got[w].get("n")]
        if d and d.get("diff") is not None:
            parts.append(f"LLS − random {100 * d['diff']:+.1f} pp "
                         f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]")
        out.append(f"{KIND_LABELS.get(kind, kind)}: " + ", ".join(parts))
    return out


def effect_grid(rows: list[dict], readout: str, x: str, y: str) -> list[dict]:
    """Heatmap squares over axes `x` and `y`: the cells of each square pooled (their
    per-question / per-response paired differences averaged, then resampled: an interval
    of the pooled effect, not an average of endpoints). A cell whose axis value is unset
    (e.g. γ of a threshold cell) is its own "none" square."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("units") and r.get("confirms") is None:
            groups.setdefault((r.get(x), r.get(y)), []).append(r["units"])
    return [{"x": "none" if kx is None else kx, "y": "none" if ky is None else ky,
             "effect": effects.group_effect(u, readout), "cells": len(u)}
            for (kx, ky), u in groups.items()]


# the study process itself while its children train (Python, torch, the scoring frame; no
# model: the sampler releases it), measured on the bundled model's 4-cell study (docs/performance.md)
STUDY_PROCESS_BYTES = 700 * 1024 ** 2


def memory_check(study: Study):
    """What launching the queue holds at its peak: a training child at the grid's largest
    LoRA rank beside the study process (which holds no model while children train; while
    it samples, no child trains and the model alone is smaller than a training child)."""
    return queue_memory_check(teacher(study), recipe(study))


def queue_memory_check(model: ModelSpec, r: TrainConfig):
    """`memory_check` of a queue that trains `r` on `model` (a study not created yet)."""
    from ..jobs.resources import check_memory, check_training_job

    child = check_training_job(model, r)
    if child.available_bytes is None and "unknown" in child.message.lower():
        return child
    return check_memory(child.expected_bytes + STUDY_PROCESS_BYTES,
                        what=f"The study (training at LoRA rank {r.lora_r}, plus the study "
                             "process)")
