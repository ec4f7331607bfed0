"""The Studies page's pieces that are not figures: the study's running process and job,
the cells table in a researcher's words, the collapse text and what the numbers mean."""

from __future__ import annotations

import pandas as pd

from lls import jobs
from lls.evaluation.readouts import KIND_LABELS
from lls.studies import report
from lls.studies.config import AXIS

GLOSSARY = (
    "**Margin**: how much more likely the target animal is than the best other animal as the "
    "whole one-word answer (log-probability, nats; averaged over the probe questions). "
    "**Gap closed**: how far the model moved from the base model (0) toward the base model "
    "prompted with the behavior's system prompt (1), on responses sampled with and without "
    "it. **Top-1 share**: probe questions where the target is the most likely answer. "
    "**Collapsed**: the LLS adapter's answers pile onto one candidate (≥ 60% and 30 points "
    "above base, or half the base's entropy) on the probe or in samples: over-training, not "
    "an effect. Every effect is LLS − its same-size random twin, read at the cell's last "
    "step.")

METHODS = ("95% intervals: margin and top-1, paired bootstrap over probe questions; gap "
           "closed, paired bootstrap over reference responses with each resample divided by "
           "its own base → system-prompt span (undefined when that span's interval includes "
           "0); sampled shares and their LLS − random difference, bootstrap over questions "
           "(answers to one question cluster), never narrower than the Wilson / Newcombe "
           "interval. 2,000 resamples, seed 0: the same numbers every time.")

READOUT_NAMES = {"margin": "margin (nats)", "gap_closed": "gap closed", "top1": "top-1 share"}


def study_job(study):
    """The latest background job of this study (None if it never had one)."""
    return next((j for j in jobs.list_jobs(kind="study")
                 if (j.params or {}).get("study") == study.name), None)


def progress_line(study, job) -> str | None:
    """What is running now, wherever it was started (page, CLI, cluster job on this host)."""
    run = study.running()
    if run:
        where = f"job {job.id}" if job and job.is_active else f"pid {run['owner'].get('pid')}"
        cell = (f": cell {run['index'] + 1} of {run['total']} ({run.get('label')})"
                if "index" in run else ": starting")
        return f"Running ({where}, since {run.get('started')}){cell}."
    if job and job.is_active:
        return f"Job {job.id} is {job.status}."
    return None


def _ci(r, k, pct=False):
    d = r.get(f"{k}_diff") if not pct else r.get(f"{k}:diff")
    if d is None:
        return "undefined" if r.get(f"{k}_note") else ""
    lo, hi = (r[f"{k}_lo"], r[f"{k}_hi"]) if not pct else (r[f"{k}:lo"], r[f"{k}:hi"])
    f = (lambda v: f"{100 * v:+.1f}") if pct else (lambda v: f"{v:+.3f}")
    return f"{f(d)} [{f(lo)}, {f(hi)}]" + (" pp" if pct else "")


def _share(r, kind, who):
    k, n = r.get(f"{kind}:{who}_k"), r.get(f"{kind}:{who}_n")
    return "" if k is None or not n else f"{k}/{n}"


def _secs(v):
    return "" if v is None else f"{v / 60:.1f}"


def cells_frame(rows: list[dict], readout: str, kinds) -> pd.DataFrame:
    """The cells table in words: settings that vary, status, the paired effect with its
    interval, each model's own value, sampled counts and the difference, collapse, cost."""
    out = []
    name = READOUT_NAMES.get(readout, readout)
    for r in rows:
        own = [r.get(f"{w}_{readout}") for w in ("lls", "random", "base")]
        row = {"Cell": r["label"], "Status": r["status"], "Pairs": r.get("n_pairs") or "",
               "Step": r.get("step") or "", f"LLS − random, {name}": _ci(r, readout),
               "LLS / random / base": "" if None in own else
               " / ".join(f"{v:+.2f}" for v in own)}
        for kind in kinds:
            short = KIND_LABELS.get(kind, kind)
            row[f"LLS, {short}"] = _share(r, kind, "lls")
            row[f"random, {short}"] = _share(r, kind, "random")
            row[f"LLS − random, {short}"] = _ci(r, kind, pct=True)
        row["Collapsed"] = "" if r["status"] != "done" else (
            ", ".join(w for w in ("lls", "random") if r.get(f"{w}_collapsed")) or "no")
        row["Minutes (train / meter / sampled)"] = "" if r.get("seconds") is None else " / ".join(
            _secs(r.get(f"seconds_{k}")) for k in ("training", "meter", "sampled"))
        row["Error"] = r.get("error") or ""
        out.append(row)
    return pd.DataFrame(out)


def collapse_text(result: dict) -> list[str]:
    """One line per adapter: the verdict of the study's one collapse rule (probe or
    samples) with its sampled answers' top answer and entropy against base."""
    lines = []
    for who, name in (("lls", "LLS"), ("random", "random twin")):
        verdict = "**collapsed**" if report.collapsed(result, who) else "not collapsed"
        why = []
        for got in report.sampled_at(result).values():
            cl = (got.get(who) or {}).get("collapse")
            if cl and not cl.get("assessable", True):
                why.append(f"sampled answers not assessable ({cl['reason']})")
            elif cl:
                why.append(f"top sampled answer {cl['top']} {cl['top_share']:.0%} (base "
                           f"{cl.get('base_top_share', 0):.0%}), entropy {cl['entropy']:.2f} "
                           f"vs base {cl.get('base_entropy', 0):.2f} nats")
        lines.append(f"{name}: {verdict}" + (f"; {'; '.join(why)}." if why else "."))
    return lines


def axis_label(axis: str) -> str:
    return AXIS[axis].label if axis in AXIS else axis
