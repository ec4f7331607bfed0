"""The Studies page's pieces that are not figures: the study's running process and job,
the cells table in a researcher's words, the collapse text and what the numbers mean."""

from __future__ import annotations

import pandas as pd

from lls import jobs
from lls.evaluation.readouts import KIND_LABELS  # noqa: F401  (the page's labels)
from lls.studies import report
from lls.studies import text as T
from lls.studies.config import AXIS

METHODS, READOUT_NAMES = T.METHODS, T.READOUT_NAMES
GLOSSARY_TERMS, STUDY_NOTE = T.GLOSSARY_TERMS, T.STUDY_NOTE


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


def cells_frame(rows: list[dict], readout: str, kinds) -> pd.DataFrame:
    """The cells table in words (`lls.studies.text.cells_table`, shared with the CLI and
    the HTML report) for the read-out picked on the page."""
    return pd.DataFrame(T.cells_table(rows, [readout], kinds))


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
