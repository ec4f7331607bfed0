"""The job runner: the detached process that queues, runs and records one `lls.jobs` job.

`lls.jobs.JobStore.submit` starts ``python -m lls.jobs.runner run <job_dir>`` in its own
session. The runner waits (FIFO) for the device lock of an exclusive job, runs the command,
forwards cancellation as SIGTERM (then SIGKILL), kills what the command left in its process
group and writes the final status into ``job.json``, even when the command crashes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .store import (ERROR_TAIL_LINES, KILL_GRACE_S, POLL_S, Job, _group_members, _pid_alive,
                   _read_json, _safe_name, _tail_text, _update_job)


class _Runner:
    """The detached process that queues, runs and records one job (``run <job_dir>``)."""

    def __init__(self, job_dir: Path) -> None:
        self.dir = job_dir
        self.root = job_dir.parent
        self.job = Job.from_dict(_read_json(job_dir / "job.json"))
        self.term = False

    def cancelled(self) -> bool:
        return self.term or (self.dir / "cancel").exists()

    def say(self, msg: str) -> None:
        print(f"[lls.jobs {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        _update_job(self.dir, status="queued", pid=os.getpid())
        lock_fd = None
        try:
            if self.job.exclusive:
                lock_fd = self._acquire_device()
                if lock_fd is None:
                    return self._finish("cancelled")
            if self.cancelled():
                return self._finish("cancelled")
            _update_job(self.dir, status="running", started=time.time())
            self.say(f"running: {' '.join(self.job.argv)}")
            try:
                # Child inherits the device lock fd so the device stays locked until the
                # heavy process is really gone, even if this runner is killed first.
                proc = subprocess.Popen(self.job.argv, stdin=subprocess.DEVNULL,
                                        pass_fds=(lock_fd,) if lock_fd is not None else ())
            except OSError as e:
                self.say(f"could not start command: {e}")
                return self._finish("failed", error=f"could not start command: {e}")
            rc = self._supervise(proc)
            self._kill_strays()
            if self.cancelled():
                return self._finish("cancelled", returncode=rc)
            if rc == 0:
                return self._finish("done", returncode=0)
            reason = (f"killed by signal {signal.Signals(-rc).name}" if rc < 0
                      else f"exited with code {rc}")
            return self._finish("failed", returncode=rc, error=f"command {reason}")
        except Exception as e:  # a bug here must still leave a final status behind
            traceback.print_exc()
            return self._finish("failed", error=f"job runner error: {e!r}")
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.term = True

    def _acquire_device(self) -> int | None:
        """Wait (FIFO among queued jobs) for the device lock; None if cancelled meanwhile."""
        path = self.root / f"device-{_safe_name(self.job.device)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        announced = False
        while True:
            if self.cancelled():
                os.close(fd)
                return None
            if not self._older_waiting():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    pass
            if not announced:
                self.say(f"queued: waiting for device {self.job.device}")
                announced = True
            time.sleep(POLL_S)

    def _older_waiting(self) -> bool:
        """True if an older live queued exclusive job wants the same device (keeps FIFO)."""
        for d in self.root.iterdir():
            if not d.is_dir() or d.name >= self.job.id:
                continue
            data = _read_json(d / "job.json")
            if (data and data.get("status") == "queued" and data.get("exclusive")
                    and data.get("device") == self.job.device
                    and not (d / "cancel").exists()
                    and _pid_alive(data.get("pid"), data.get("id"))):
                return True
        return False

    def _supervise(self, proc: subprocess.Popen) -> int:
        """Wait for the command, forwarding cancellation as SIGTERM (then SIGKILL)."""
        term_sent_at: float | None = None
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if self.cancelled():
                if term_sent_at is None:
                    self.say("cancel requested: sending SIGTERM")
                    with contextlib.suppress(OSError):
                        proc.terminate()
                    term_sent_at = time.monotonic()
                elif time.monotonic() - term_sent_at > KILL_GRACE_S:
                    self.say("command ignored SIGTERM: sending SIGKILL")
                    with contextlib.suppress(OSError):
                        proc.kill()

    def _kill_strays(self) -> None:
        """SIGKILL what the command left behind in our process group (e.g. worker
        processes), so a finished job never leaves heavy processes running."""
        me = os.getpid()
        for pid in _group_members(os.getpgid(0)):
            if pid != me:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def _finish(self, status: str, returncode: int | None = None, error: str = "") -> int:
        changes: dict[str, Any] = {"status": status, "ended": time.time(),
                                   "returncode": returncode}
        if status == "failed":
            sys.stdout.flush()
            changes.update(error=error,
                           error_tail=_tail_text(self.dir / "log.txt", ERROR_TAIL_LINES))
        self.say(f"{status}" + (f": {error}" if error else ""))
        _update_job(self.dir, **changes)
        return 0 if status in ("done", "cancelled") else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m lls.jobs.runner run <job_dir>", file=sys.stderr)
        return 2
    return _Runner(Path(args[1]).resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
