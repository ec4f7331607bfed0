"""Cancelling a training run cleanly: SIGTERM from the job system, and sections it must not cut.

The job runner sends SIGTERM to cancel (and SIGKILLs after 10 s). Outside a guarded section
the handler raises `TrainingCancelled` at once; inside one (saving a checkpoint) it only sets a
flag, and training stops right after the section, so no checkpoint is left half written.
"""

from __future__ import annotations

import signal

from .. import jobs
from ..core.errors import LLSError


class TrainingCancelled(LLSError):
    """The job system asked this training run to stop (checkpoints are kept)."""


class _Stop:
    requested = False
    guard = 0  # >0 while saving: a SIGTERM then only sets the flag (no half-written checkpoint)


def _on_sigterm(signum, frame) -> None:
    _Stop.requested = True
    if _Stop.guard == 0:
        raise TrainingCancelled("training cancelled")


def stop_requested() -> bool:
    """True once a SIGTERM arrived or the job system recorded a cancel request."""
    return _Stop.requested or jobs.cancel_requested()


def raise_if_stopped() -> None:
    """Stop training now (checkpoints so far are complete)."""
    if stop_requested():
        raise TrainingCancelled("training cancelled")


class guarded:
    """A section a SIGTERM must not cut in half (saving); with `then_stop`, a cancel that
    arrived meanwhile stops training right after it (the job runner SIGKILLs after 10 s)."""

    def __init__(self, then_stop: bool = True):
        self.then_stop = then_stop

    def __enter__(self):
        _Stop.guard += 1

    def __exit__(self, *exc):
        _Stop.guard -= 1
        if exc[0] is None and self.then_stop and _Stop.guard == 0 and stop_requested():
            raise TrainingCancelled("training cancelled")


class sigterm_cancels:
    """Within a job: SIGTERM cancels training (restores the previous handler on exit)."""

    def __init__(self, active: bool):
        self.active = active
        self.previous = None

    def __enter__(self):
        _Stop.requested, _Stop.guard = False, 0
        if self.active:
            self.previous = signal.signal(signal.SIGTERM, _on_sigterm)

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)
