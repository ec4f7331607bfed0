"""Progress in the terminal and on the job cards from one mechanism (lls.jobs.store reports,
lls.jobs.console prints): phases, counts, rate, ETA, read-out events."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from lls.jobs import console
from lls.jobs import store as jobs


@pytest.fixture
def fresh(monkeypatch):
    """Fresh reporter and console state (console off)."""
    monkeypatch.setattr(jobs, "_progress_state", jobs._ProgressState())
    monkeypatch.setattr(console, "_state", console._State())


@pytest.fixture
def clock(fresh, monkeypatch):
    """A controllable clock (seconds) for the reporter and the console."""
    now = [1000.0]
    monkeypatch.setattr(jobs.time, "time", lambda: now[0])
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    return now


def _lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [re.sub(r"^\[lls \d\d:\d\d:\d\d\] ", "", ln) for ln in err.splitlines()]


def test_reports_print_nothing_unless_the_console_is_on(clock, capsys, monkeypatch):
    monkeypatch.delenv(jobs.ENV_JOB_DIR, raising=False)
    jobs.report_phase("loading model")
    jobs.report_progress(1, 2, unit="steps", phase="training")
    jobs.log_event(kind="meter", step=2, llr=0.5)
    assert capsys.readouterr().err == ""


def test_console_prints_phases_counts_and_eta_once_per_event(clock, capsys, monkeypatch):
    monkeypatch.delenv(jobs.ENV_JOB_DIR, raising=False)
    console.enable()
    try:
        jobs.report_phase("loading model", "tiny")
        jobs.report_progress(0, 10, unit="steps", phase="training", message="start")
        clock[0] += 10
        jobs.report_progress(1, 10, unit="steps", phase="training", message="loss 0.6931")
        clock[0] += 1  # same phase, within EVERY_S: no new line
        jobs.report_progress(2, 10, unit="steps", phase="training", message="loss 0.69")
        jobs.report_phase("eval @ step 2")  # a new phase always prints
        jobs.log_event(kind="eval", step=2, n=4, k=1, rate=0.25, examples=["not printed"])
        jobs.log_event(kind="train", step=2, loss=0.69)  # the step line carries it
        clock[0] += 1
        jobs.report_progress(3, 10, unit="steps", phase="training", message="loss 0.68",
                             force=True)
        jobs.report_progress(10, 10, unit="steps", phase="training", message="loss 0.5")
    finally:
        console.enable(False)
    assert _lines(capsys) == [
        "loading model · tiny",
        "training 0/10 steps · start",
        "training 1/10 steps · loss 0.6931 · 10.0 s/step · ETA 1 min 30 s",
        "eval @ step 2",
        "eval: step 2, n 4, k 1, rate 0.25",
        # the rate window of a phase survives the read-out in between: 3 steps in 12 s
        "training 3/10 steps · loss 0.68 · 4.0 s/step · ETA 28 s",
        "training 10/10 steps · loss 0.5",
    ]


def test_job_card_shows_the_phase_the_terminal_shows(tmp_path: Path, clock, monkeypatch):
    from ui.job_cards import progress_text

    monkeypatch.setenv(jobs.ENV_JOB_DIR, str(tmp_path))
    read = lambda: json.loads((tmp_path / "progress.json").read_text())  # noqa: E731

    def card():
        return progress_text(jobs.Job(id="j", kind="train", title="t", argv=["x"],
                                      status="running", created=clock[0] - 60,
                                      started=time.time() - 50, progress=read()))[1]

    jobs.report_phase("meter reference set", "behavior condition")
    assert read()["phase"] == "meter reference set" and read()["done"] is None
    assert card().startswith("meter reference set · behavior condition · ")
    jobs.report_progress(0, 4, unit="steps", phase="training", force=True)
    clock[0] += 8
    jobs.report_progress(1, 4, unit="steps", phase="training", message="loss 0.69")
    p = read()
    assert (p["phase"], p["done"], p["eta"]) == ("training", 1, pytest.approx(24.0))
    assert card() == "1/4 steps done · training · loss 0.69 · 0.12 steps/s · 24 s left"


@pytest.mark.slow
def test_reference_set_building_reports_answers_done(session_cache, capsys, fresh):
    """The meter's reference set (sampled once per model) says how far it is."""
    from lls.core.behaviors import animal
    from lls.evaluation.llr import LLRConfig, build_reference
    from lls.models.load import ModelSpec, load_model
    from lls.scoring.synthetic import tiny_model_dir

    model, tok = load_model(ModelSpec(str(tiny_model_dir(session_cache / "tiny-model"))))
    cfg = LLRConfig(prompts=("Name a bird.", "Name a tree."), k=2, max_new_tokens=2,
                    seed=time.time_ns() % 1000)  # a fresh set: not served from the cache
    console.enable()
    try:
        build_reference(model, tok, animal("owl"), cfg, model_fp=None)
    finally:
        console.enable(False)
    lines = [ln for ln in _lines(capsys) if ln.startswith("meter reference set")]
    # both conditions decode in one batched call: a line before it and one after
    assert lines == ["meter reference set 0/4 answers · both conditions decoded together",
                     "meter reference set 4/4 answers"]
