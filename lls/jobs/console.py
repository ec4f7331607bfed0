"""Progress lines on stderr: what a job reports for the dashboard's job card, in the terminal.

`lls.jobs.store.report_progress` / `report_phase` / `log_event` hand every report here as
well as to the job's files, so a command run in a terminal shows the same phases, counts and
ETAs as its job card, and a background job's log (its stderr) holds them too. Commands turn
it on (`enable()`, done by `python -m lls train | eval | study run | meter`); library calls
stay quiet unless asked.

One line per event: a new phase, a checkpoint read-out, a finished count, and otherwise at
most one line every `EVERY_S` seconds (`EVERY_JOB_S` in a job's log), e.g.

    [lls 14:02:11] training 3/14 steps · loss 0.6931 · 12.4 s/step · ETA 2 min 16 s
"""

from __future__ import annotations

import sys
import time
from typing import Any

EVERY_S = 5.0       # terminal: at most one progress line this often (phase changes excepted)
EVERY_JOB_S = 30.0  # inside a job: its log only needs a trail
# Fields of an event worth a line, in this order (other fields stay in events.jsonl).
EVENT_FIELDS = ("step", "label", "n", "k", "rate", "ci_low", "ci_high", "llr", "llr_ci_low",
                "llr_ci_high", "gap_closed", "margin", "margin_diff", "seconds", "index",
                "total")
QUIET_EVENTS = ("train",)  # one per step: the step's progress line already carries its loss


class _State:
    def __init__(self) -> None:
        self.on = False
        self.last = 0.0
        self.key: tuple | None = None


_state = _State()


def enable(on: bool = True) -> None:
    """Print progress lines on stderr from now on (False: stop)."""
    _state.on = on


def enabled() -> bool:
    return _state.on


def fmt_seconds(s: float | None) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    if s is None:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def progress_line(p: dict) -> str:
    """The text of one progress report (the fields of progress.json)."""
    head = p.get("phase") or ""
    done, total, unit = p.get("done"), p.get("total"), p.get("unit") or ""
    if done is not None:
        head += f" {done}/{total if total is not None else '?'} {unit}".rstrip()
    parts = [head.strip() or "progress"]
    if p.get("message"):
        parts.append(str(p["message"]))
    rate = p.get("rate")
    if rate and done is not None and done != total:
        one = unit[:-1] if unit.endswith("s") else unit
        parts.append(f"{1 / rate:.1f} s/{one}" if rate < 1 else f"{rate:.1f} {unit}/s")
    if p.get("eta") is not None and done != total:
        parts.append(f"ETA {fmt_seconds(p['eta'])}")
    return " · ".join(parts)


def _print(text: str) -> None:
    print(f"[lls {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def emit(p: dict, *, force: bool = False, in_job: bool = False) -> None:
    """Print a progress report if it is news: a new phase or unit, forced, a finished count,
    or the first for `EVERY_S` seconds."""
    if not _state.on:
        return
    now = time.monotonic()
    key = (p.get("phase"), p.get("unit"))
    final = p.get("total") is not None and p.get("done") == p.get("total")
    every = EVERY_JOB_S if in_job else EVERY_S
    if not (force or final or key != _state.key or now - _state.last >= every):
        return
    _state.key, _state.last = key, now
    _print(progress_line(p))


def event(metrics: dict) -> None:
    """Print one line for a logged event (a read-out, an eval, a study cell)."""
    if not _state.on or metrics.get("kind") in QUIET_EVENTS:
        return
    fields = [f"{k} {_number(metrics[k])}" for k in EVENT_FIELDS
              if metrics.get(k) is not None]
    _print(f"{metrics.get('kind', 'event')}: " + ", ".join(fields))
