"""Tests for lls.jobs: real detached processes running short python one-liners."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lls.jobs import store as jobs
from lls.jobs.store import JobError, JobStore

TIMEOUT = 15.0


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def until(cond, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pid_gone(pid: int) -> bool:
    return not jobs._pid_alive(pid)


# A command that records its pid, then sleeps until killed/cancelled.
SLEEPER = (
    "import os, sys, time, pathlib\n"
    "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\n"
    "while True: time.sleep(0.05)\n"
)


def sleeper(pidfile: Path) -> list[str]:
    return [sys.executable, "-c", SLEEPER, str(pidfile)]


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs")


def test_job_runs_to_done_with_progress_log_and_events(store: JobStore) -> None:
    code = (
        "from lls import jobs\n"
        "print('hello from job', flush=True)\n"
        "for i in range(1, 11):\n"
        "    jobs.report_progress(i, 10, unit='pairs', message='scoring')\n"
        "    jobs.log_event(step=i, loss=1.0 / i)\n"
    )
    job = store.submit(py(code), kind="score", title="t", params={"gamma": 0.1})
    assert job.status in ("queued", "running") and job.pid
    job = store.wait(job.id, timeout=TIMEOUT)
    assert job.status == "done", store.read_log(job.id)
    assert job.returncode == 0 and job.started and job.ended and job.elapsed is not None
    assert job.params == {"gamma": 0.1}
    assert job.progress["done"] == job.progress["total"] == 10
    assert job.progress["unit"] == "pairs" and job.progress["fraction"] == 1.0
    assert "hello from job" in store.read_log(job.id)
    events = store.read_events(job.id)
    assert [e["step"] for e in events] == list(range(1, 11))
    assert events[-1]["loss"] == pytest.approx(0.1)
    # job.json is plain JSON on disk
    on_disk = json.loads((store.job_dir(job.id) / "job.json").read_text())
    assert on_disk["status"] == "done" and on_disk["kind"] == "score"


def test_failing_command_reports_error_tail(store: JobStore) -> None:
    job = store.submit(py("raise ValueError('boom 42')"), kind="train")
    job = store.wait(job.id, timeout=TIMEOUT)
    assert job.status == "failed"
    assert job.returncode == 1
    assert "ValueError: boom 42" in job.error_tail
    assert "exited with code 1" in job.error


def test_missing_executable_fails(store: JobStore) -> None:
    job = store.submit(["/nonexistent/binary"], kind="eval")
    job = store.wait(job.id, timeout=TIMEOUT)
    assert job.status == "failed" and "could not start command" in job.error


def test_cancel_running_job_kills_process(store: JobStore, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    job = store.submit(sleeper(pidfile), kind="score")
    until(lambda: pidfile.exists() and pidfile.read_text(), what="child start")
    assert store.get(job.id).status == "running"
    child = int(pidfile.read_text())
    store.cancel(job.id)
    job = store.wait(job.id, timeout=TIMEOUT)
    assert job.status == "cancelled"
    until(lambda: pid_gone(child) and pid_gone(job.pid), timeout=5, what="processes to exit")


def test_finished_job_leaves_no_stray_processes(store: JobStore, tmp_path: Path) -> None:
    # The command starts a worker of its own (a DataLoader worker, say) and exits without
    # stopping it; the runner must not leave it burning the device.
    pidfile = tmp_path / "worker.pid"
    code = ("import subprocess, sys, pathlib\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"pathlib.Path({str(pidfile)!r}).write_text(str(p.pid))\n")
    job = store.wait(store.submit(py(code), kind="eval").id, timeout=TIMEOUT)
    assert job.status == "done"
    worker = int(pidfile.read_text())
    until(lambda: pid_gone(worker), timeout=5, what="the stray worker to be killed")
    until(lambda: jobs._group_members(job.pid) == [], timeout=5, what="the job group to exit")


def test_exclusive_jobs_do_not_overlap_and_queue(store: JobStore, tmp_path: Path) -> None:
    code = (
        "import sys, time, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "t0 = time.time(); time.sleep(0.6); t1 = time.time()\n"
        "p.write_text(f'{t0} {t1}')\n"
    )
    a = store.submit([sys.executable, "-c", code, str(tmp_path / "a")], kind="train")
    b = store.submit([sys.executable, "-c", code, str(tmp_path / "b")], kind="train")
    until(lambda: store.get(a.id).status == "running", what="a running")
    time.sleep(0.2)
    assert store.get(b.id).status == "queued"
    assert [j.id for j in store.list_jobs()] == [b.id, a.id]  # newest first
    assert store.wait(a.id, timeout=TIMEOUT).status == "done"
    assert store.wait(b.id, timeout=TIMEOUT).status == "done"
    a0, a1 = map(float, (tmp_path / "a").read_text().split())
    b0, b1 = map(float, (tmp_path / "b").read_text().split())
    assert a1 <= b0 or b1 <= a0, "exclusive jobs overlapped"


def test_cancel_queued_job_never_runs(store: JobStore, tmp_path: Path) -> None:
    pidfile = tmp_path / "a.pid"
    a = store.submit(sleeper(pidfile), kind="score", device="cuda:0")
    until(lambda: pidfile.exists(), what="a start")
    marker = tmp_path / "b-ran"
    b = store.submit(py(f"open({str(marker)!r}, 'w').close()"), kind="score", device="cuda:0")
    time.sleep(0.3)
    assert store.get(b.id).status == "queued"
    store.cancel(b.id)
    b = store.wait(b.id, timeout=TIMEOUT)
    assert b.status == "cancelled" and b.started is None
    store.cancel(a.id)
    assert store.wait(a.id, timeout=TIMEOUT).status == "cancelled"
    time.sleep(0.2)
    assert not marker.exists()


def test_non_exclusive_jobs_run_concurrently(store: JobStore, tmp_path: Path) -> None:
    # Each job touches its own file, then waits for the other's: only possible if concurrent.
    code = (
        "import sys, time, pathlib\n"
        "me, other = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n"
        "me.touch()\n"
        "t = time.time()\n"
        "while not other.exists():\n"
        "    assert time.time() - t < 10, 'other job never started'\n"
        "    time.sleep(0.02)\n"
    )
    x, y = str(tmp_path / "x"), str(tmp_path / "y")
    j1 = store.submit([sys.executable, "-c", code, x, y], kind="eval", exclusive=False)
    j2 = store.submit([sys.executable, "-c", code, y, x], kind="eval", exclusive=False)
    assert store.wait(j1.id, timeout=TIMEOUT).status == "done"
    assert store.wait(j2.id, timeout=TIMEOUT).status == "done"


def test_sigkilled_job_is_reported_died(store: JobStore, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    job = store.submit(sleeper(pidfile), kind="score")
    until(lambda: pidfile.exists() and pidfile.read_text(), what="child start")
    os.killpg(job.pid, signal.SIGKILL)  # runner is the session/group leader
    job = store.wait(job.id, timeout=TIMEOUT)
    assert job.status == "failed"
    assert "process died" in job.error
    # persisted, not just reported
    assert json.loads((store.job_dir(job.id) / "job.json").read_text())["status"] == "failed"


def test_same_key_returns_active_job(store: JobStore, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    first = store.submit(sleeper(pidfile), kind="score", key="fp-123")
    again = store.submit(sleeper(pidfile), kind="score", key="fp-123")
    assert again.id == first.id
    other = store.submit(py("pass"), kind="score", key="fp-other", exclusive=False)
    assert other.id != first.id
    store.cancel(first.id)
    assert store.wait(first.id, timeout=TIMEOUT).status == "cancelled"
    # a finished job does not block a resubmit
    fresh = store.submit(py("pass"), kind="score", key="fp-123")
    assert fresh.id != first.id
    assert store.wait(fresh.id, timeout=TIMEOUT).status == "done"
    store.wait(other.id, timeout=TIMEOUT)


def test_new_store_on_same_root_sees_jobs(store: JobStore, tmp_path: Path) -> None:
    ok = store.submit(py("pass"), kind="score")
    bad = store.submit(py("import sys; sys.exit(3)"), kind="train")
    store.wait(ok.id, timeout=TIMEOUT)
    store.wait(bad.id, timeout=TIMEOUT)
    restarted = JobStore(store.root)  # simulates an app restart
    listed = restarted.list_jobs()
    assert [(j.id, j.status) for j in listed] == [(bad.id, "failed"), (ok.id, "done")]
    assert restarted.get(bad.id).returncode == 3
    assert [j.id for j in restarted.list_jobs(kind="score")] == [ok.id]
    # module-level API on the same root
    assert jobs.get(ok.id, root=store.root).status == "done"
    # delete: finished only
    restarted.delete(ok.id)
    assert [j.id for j in restarted.list_jobs()] == [bad.id]
    with pytest.raises(JobError):
        restarted.get(ok.id)


def test_delete_active_job_refused(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(sleeper(tmp_path / "p"), kind="score")
    with pytest.raises(JobError):
        store.delete(job.id)
    store.cancel(job.id)
    store.wait(job.id, timeout=TIMEOUT)
    store.delete(job.id)


def test_worker_helpers_outside_job_are_noops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jobs.ENV_JOB_DIR, raising=False)
    jobs.report_progress(1, 2)
    jobs.log_event(loss=1.0)
    assert jobs.cancel_requested() is False
    with jobs.progress(3, unit="pairs") as p:
        p.update(3)


def test_report_progress_rate_eta_and_throttle(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jobs.ENV_JOB_DIR, str(tmp_path))
    monkeypatch.setattr(jobs, "_progress_state", jobs._ProgressState())
    clock = [1000.0]
    monkeypatch.setattr(jobs.time, "time", lambda: clock[0])
    read = lambda: json.loads((tmp_path / "progress.json").read_text())  # noqa: E731
    jobs.report_progress(0, 100)
    clock[0] += 1.0
    jobs.report_progress(10, 100, message="m", chunk=1)
    p = read()
    assert p["done"] == 10 and p["rate"] == pytest.approx(10.0)
    assert p["eta"] == pytest.approx(9.0) and p["chunk"] == 1 and p["message"] == "m"
    clock[0] += 0.1
    jobs.report_progress(11, 100)  # throttled
    assert read()["done"] == 10
    jobs.report_progress(100, 100)  # final always written
    assert read()["done"] == 100 and read()["eta"] == 0.0
    (tmp_path / "cancel").touch()
    assert jobs.cancel_requested() is True


def test_jobs_run_from_the_project_root():
    """Jobs start in the project root (where ./cache and `python -m lls` resolve), wherever
    the store module sits in the package."""
    from lls.jobs.store import PROJECT_ROOT

    assert (PROJECT_ROOT / "app.py").is_file() and (PROJECT_ROOT / "lls" / "__init__.py").is_file()
