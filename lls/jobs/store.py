"""Background jobs: detached, process-based, stored on disk, shared by scoring/training/eval.

Layout: one folder per job, ``<root>/<job_id>/`` holding

* ``job.json``      spec + status + timestamps + pid + returncode + error tail (atomic writes)
* ``progress.json`` latest progress written by the worker via `report_progress` (atomic)
* ``log.txt``       stdout+stderr of the runner and the command
* ``events.jsonl``  optional metrics stream, one JSON object per line (`log_event`)
* ``cancel``        flag file; its presence means "cancel requested"

Each job is run by ``python -m lls.jobs.runner run <job_dir>`` (`lls.jobs.runner`), started in
its own session, so it outlives the dashboard process. The runner records its own final status; exclusive jobs
queue on an ``fcntl.flock`` per device (``<root>/device-<device>.lock``), so no scheduler
daemon is needed and the OS frees the lock when a process dies. Readers reconcile: an
active job whose runner is gone is reported (and persisted) as failed.

Worker side (files only inside a job; lines on stderr when `lls.jobs.console` is on):
`report_progress`, `report_phase`, `log_event`, `cancel_requested`, `progress` (tqdm bar +
progress.json).

POSIX only (fcntl, sessions, process groups).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from ..core.cache import default_cache_dir
from ..core.errors import LLSError
from .console import emit as console_emit
from .console import enabled as console_enabled
from .console import event as console_event

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # lls/jobs/store.py -> the project

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
ENV_JOB_DIR = "LLS_JOB_DIR"
DIED_MESSAGE = "process died (killed or crashed); resubmit to resume from its last checkpoint/chunk"

ERROR_TAIL_LINES = 30
POLL_S = 0.1            # runner: how often to re-check the device lock / cancel flag
KILL_GRACE_S = 10.0     # runner: SIGTERM -> SIGKILL delay for a command that ignores SIGTERM
PROGRESS_EVERY_S = 0.5  # worker: min interval between progress.json writes
NO_PID_GRACE_S = 30.0   # reader: a job with no pid this long after creation never started


class JobError(LLSError):
    """A job could not be submitted, found, or manipulated."""


@dataclass
class Job:
    """A snapshot of one job as stored in job.json (plus its latest progress)."""

    id: str
    kind: str
    title: str
    argv: list[str]
    device: str = "cpu"
    exclusive: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    status: str = "queued"
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    pid: int | None = None          # runner pid == process-group id of the job
    returncode: int | None = None
    error: str = ""                 # one-line reason for failed jobs
    error_tail: str = ""            # last lines of log.txt for failed jobs
    progress: dict[str, Any] | None = None  # not stored in job.json; read from progress.json

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def error_line(self) -> str:
        """The reason a job failed as its command said it: the last `error: ...` line of its
        log (what the CLI prints), else the runner's own one-line reason."""
        for line in reversed((self.error_tail or "").splitlines()):
            if line.startswith("error: "):
                return line[len("error: "):].strip()
        return self.error

    @property
    def elapsed(self) -> float | None:
        """Seconds spent running (so far, if still running); None if it never started."""
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        # Ignore unknown keys so older/newer job.json files still load.
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- file helpers

def _atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON so readers only ever see the old or the new complete file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on `path` for a short read-modify-write section."""
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _update_job(job_dir: Path, only_if_active: bool = False, **changes: Any) -> dict | None:
    """Read-modify-write job.json under the job's lock (runner and readers both write it).

    With only_if_active, nothing is written if the job already reached a final status
    (so a reader's reconciliation can never overwrite the runner's own verdict).
    """
    with _flocked(job_dir / ".job.lock"):
        data = _read_json(job_dir / "job.json")
        if data is None:
            return None
        if only_if_active and data.get("status") not in ACTIVE:
            return data
        data.update(changes)
        _atomic_write_json(job_dir / "job.json", data)
        return data


def _tail_text(path: Path, lines: int, max_bytes: int = 256_000) -> str:
    """Last `lines` lines of a text file, with tqdm-style \\r redraws collapsed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            raw = f.read()
    except OSError:
        return ""
    text = raw.decode("utf-8", errors="replace")
    out = [ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in text.split("\n")]
    if out and out[-1] == "":
        out.pop()
    return "\n".join(out[-lines:]) if lines > 0 else ""


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s) or "x"


def _pid_alive(pid: int | None, job_id: str | None = None) -> bool:
    """True if `pid` is a live (non-zombie) process, and, when /proc shows it, our runner."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists but belongs to someone else; /proc below decides if it is ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        if job_id is not None:
            # Guard against pid reuse after a reboot/restart: the runner's argv holds the job dir.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if cmdline and job_id not in cmdline:
                return False
    except (OSError, IndexError):
        pass  # no /proc (macOS) or process vanished just now; os.kill said alive
    return True


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`; empty where there is no /proc."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            fields_ = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields_[2]) == pgid and fields_[0] not in ("Z", "X"):
            out.append(int(name))
    return out


# Runners started by this process: kept so they get reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, p in list(_children.items()):
        if p.poll() is not None:
            _children.pop(pid, None)


# --------------------------------------------------------------------------- store

class JobStore:
    """All jobs under one root directory. Cheap to create; holds no state but the path."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    # ---- submit

    def submit(self, argv: list[str], *, kind: str, title: str = "", device: str = "cpu",
               exclusive: bool = True, params: dict | None = None,
               key: str | None = None) -> Job:
        """Start `argv` as a detached job; if `key` matches an active job, return that one."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise JobError(f"job argv must be a non-empty list of strings, got {argv!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        # One submit at a time per root, so two identical submits can't both start.
        with _flocked(self.root / ".submit.lock"):
            if key is not None:
                for job in self.list_jobs():
                    if job.key == key and job.is_active:
                        return job
            job_dir, job_id = self._new_dir(kind)
            job = Job(id=job_id, kind=kind, title=title or kind, argv=list(argv),
                      device=device, exclusive=exclusive, params=dict(params or {}),
                      key=key, status="queued", created=time.time())
            _atomic_write_json(job_dir / "job.json", job.to_dict())
            env = dict(os.environ, **{ENV_JOB_DIR: str(job_dir), "PYTHONUNBUFFERED": "1"})
            try:
                with open(job_dir / "log.txt", "ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "lls.jobs.runner", "run", str(job_dir)],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        cwd=PROJECT_ROOT, env=env, start_new_session=True)
            except OSError as e:
                _update_job(job_dir, status="failed", ended=time.time(),
                            error=f"could not start job runner: {e}")
                raise JobError(f"could not start job {job_id}: {e}") from e
            _children[proc.pid] = proc
            _update_job(job_dir, pid=proc.pid)
        return self.get(job_id)

    def _new_dir(self, kind: str) -> tuple[Path, str]:
        while True:
            now = time.time()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
            job_id = f"{stamp}-{int(now * 1000) % 1000:03d}-{_safe_name(kind)}-{secrets.token_hex(2)}"
            d = self.root / job_id
            try:
                d.mkdir()  # atomic: fails if a (very unlikely) twin id exists
                return d, job_id
            except FileExistsError:
                continue

    # ---- read

    def get(self, job_id: str) -> Job:
        job = self._load(self.job_dir(job_id))
        if job is None:
            raise JobError(f"no job {job_id!r} under {self.root}")
        return job

    def list_jobs(self, kind: str | None = None) -> list[Job]:
        """All jobs (optionally of one kind), newest first."""
        if not self.root.is_dir():
            return []
        jobs = []
        for d in sorted(self.root.iterdir(), reverse=True):  # ids sort by creation time
            if not d.is_dir():
                continue
            job = self._load(d)
            if job is not None and (kind is None or job.kind == kind):
                jobs.append(job)
        return jobs

    def _load(self, job_dir: Path) -> Job | None:
        data = _read_json(job_dir / "job.json")
        if data is None:
            return None  # missing (being created / deleted) or not a job folder
        job = Job.from_dict(data)
        if job.is_active:
            job = self._reconcile(job_dir, job)
        job.progress = _read_json(job_dir / "progress.json")
        return job

    def _reconcile(self, job_dir: Path, job: Job) -> Job:
        """Mark an active job whose runner is gone as failed (or cancelled if asked to)."""
        _reap()
        if job.pid is None:
            if time.time() - job.created < NO_PID_GRACE_S:
                return job  # submit() is between writing job.json and recording the pid
        elif _pid_alive(job.pid, job.id):
            return job
        cancelled = (job_dir / "cancel").exists()
        changes: dict[str, Any] = {"status": "cancelled" if cancelled else "failed",
                                   "ended": time.time()}
        if not cancelled:
            changes.update(error=DIED_MESSAGE,
                           error_tail=_tail_text(job_dir / "log.txt", ERROR_TAIL_LINES))
        data = _update_job(job_dir, only_if_active=True, **changes)
        if job.pid:
            # The runner is gone; don't leave its command running unsupervised. The group id
            # can't be reused while members exist, so this only hits that job's orphans.
            with contextlib.suppress(OSError):
                os.killpg(job.pid, signal.SIGKILL)
        return Job.from_dict(data) if data else job

    # ---- control

    def cancel(self, job_id: str) -> Job:
        """Request cancellation; a queued job ends without ever running its command."""
        job = self.get(job_id)
        if not job.is_active:
            return job
        job_dir = self.job_dir(job_id)
        (job_dir / "cancel").touch()
        # Signal only a running job: a queued runner polls the flag, and a runner that is
        # still starting up might not have its SIGTERM handler yet (it would just die).
        if job.status == "running" and job.pid and _pid_alive(job.pid, job.id):
            with contextlib.suppress(OSError):
                os.killpg(job.pid, signal.SIGTERM)
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.05) -> Job:
        """Block until the job is finished; raise JobError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if not job.is_active:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(poll)

    def read_log(self, job_id: str, tail_lines: int = 200) -> str:
        return _tail_text(self.job_dir(self.get(job_id).id) / "log.txt", tail_lines)

    def read_events(self, job_id: str) -> list[dict]:
        path = self.job_dir(self.get(job_id).id) / "events.jsonl"
        events = []
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(ValueError):  # e.g. a half-written last line
                        events.append(json.loads(line))
        except OSError:
            pass
        return events

    def delete(self, job_id: str) -> None:
        """Remove a finished job's folder."""
        job = self.get(job_id)
        if job.is_active:
            raise JobError(f"job {job_id} is {job.status}; cancel it before deleting")
        shutil.rmtree(self.job_dir(job_id))


# Module-level shortcuts over JobStore(root) (root=None -> $LLS_CACHE/jobs, default ./cache/jobs).

def submit(argv: list[str], *, kind: str, title: str = "", device: str = "cpu",
           exclusive: bool = True, params: dict | None = None, key: str | None = None,
           root: Path | str | None = None) -> Job:
    return JobStore(root).submit(argv, kind=kind, title=title, device=device,
                                 exclusive=exclusive, params=params, key=key)


def get(job_id: str, root: Path | str | None = None) -> Job:
    return JobStore(root).get(job_id)


def list_jobs(kind: str | None = None, root: Path | str | None = None) -> list[Job]:
    return JobStore(root).list_jobs(kind)


def cancel(job_id: str, root: Path | str | None = None) -> Job:
    return JobStore(root).cancel(job_id)


def wait(job_id: str, timeout: float | None = None, root: Path | str | None = None) -> Job:
    return JobStore(root).wait(job_id, timeout)


def read_log(job_id: str, tail_lines: int = 200, root: Path | str | None = None) -> str:
    return JobStore(root).read_log(job_id, tail_lines)


def read_events(job_id: str, root: Path | str | None = None) -> list[dict]:
    return JobStore(root).read_events(job_id)


def delete(job_id: str, root: Path | str | None = None) -> None:
    JobStore(root).delete(job_id)


# --------------------------------------------------------------------------- worker helpers

def _job_dir() -> Path | None:
    d = os.environ.get(ENV_JOB_DIR)
    return Path(d) if d else None


class _ProgressState:
    def __init__(self) -> None:
        self.last_write = 0.0
        self.windows: dict[tuple, collections.deque] = {}  # (phase, unit) -> (time, done)


_progress_state = _ProgressState()


def report_progress(done: int | None, total: int | None, *, unit: str = "pairs",
                    message: str = "", phase: str | None = None, force: bool = False,
                    **extra: Any) -> None:
    """Report progress: progress.json for the dashboard's job card (throttled; inside a job
    only) and a line on stderr when the console is on (`lls.jobs.console`: commands turn it
    on, in a terminal and in a job's log alike).

    `phase` names what is running ("loading model", "training"); `done`/`total` count its
    units (None: a phase without a count). rate (units/s) is measured over the last ~20
    reports of the same phase, so it tracks the current speed rather than the average since
    start (which includes model loading); a phase resumed later keeps its window.
    """
    job_dir = _job_dir()
    if job_dir is None and not console_enabled():
        return
    st = _progress_state
    now = time.time()
    final = total is not None and done is not None and done >= total
    throttled = not (force or final) and now - st.last_write < PROGRESS_EVERY_S
    rate = eta = None
    if done is not None:
        window = st.windows.setdefault((phase, unit), collections.deque(maxlen=20))
        if window and done < window[-1][1]:
            window.clear()  # counter went back: the phase started over
        if not throttled:
            window.append((now, done))
        if len(window) >= 2:
            (t0, d0), (t1, d1) = window[0], window[-1]
            if t1 > t0:
                rate = (d1 - d0) / (t1 - t0)
        if total is not None and rate and rate > 0:
            eta = max(0.0, (total - done) / rate)
    data = {"done": done, "total": total, "unit": unit, "message": message, "phase": phase,
            "fraction": (done / total) if total and done is not None else None, "rate": rate,
            "eta": eta, "updated": now, **extra}
    console_emit(data, force=force, in_job=job_dir is not None)
    if job_dir is None or throttled:
        return
    _atomic_write_json(job_dir / "progress.json", data)
    st.last_write = now


def report_phase(phase: str, message: str = "", **extra: Any) -> None:
    """Say that a phase without a count starts (e.g. "loading model"): the job card and the
    terminal show it until the next report."""
    report_progress(None, None, unit="", message=message, phase=phase, force=True, **extra)


def log_event(**metrics: Any) -> None:
    """Append one JSON line to events.jsonl (e.g. step/loss; inside a job only) and print
    it when the console is on (`lls.jobs.console.event`)."""
    console_event(metrics)
    job_dir = _job_dir()
    if job_dir is None:
        return
    metrics.setdefault("time", time.time())
    line = json.dumps(metrics, ensure_ascii=False, default=str) + "\n"
    # One write() on an O_APPEND fd: lines from one writer never interleave or tear.
    fd = os.open(job_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def cancel_requested() -> bool:
    """True if the dashboard asked this job to stop (check between chunks)."""
    job_dir = _job_dir()
    return job_dir is not None and (job_dir / "cancel").exists()


class ProgressReporter:
    """tqdm bar on stderr + report_progress, as a context manager (`progress(...)`)."""

    def __init__(self, total: int | None, unit: str = "pairs", desc: str = "") -> None:
        self.total, self.unit, self.n = total, unit, 0
        self._bar = None
        try:
            from tqdm import tqdm
            # Inside a job stderr is log.txt: redraw rarely so the log stays small.
            self._bar = tqdm(total=total, unit=unit, desc=desc or None, file=sys.stderr,
                             mininterval=5.0 if _job_dir() else 0.1)
        except ImportError:
            pass

    def update(self, n: int = 1, message: str = "", **extra: Any) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        report_progress(self.n, self.total, unit=self.unit, message=message, **extra)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        report_progress(self.n, self.total, unit=self.unit, force=True)

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: int | None, unit: str = "pairs", desc: str = "") -> ProgressReporter:
    return ProgressReporter(total, unit, desc)

