"""Run lifecycle: who owns a running run, and whether that process is still alive.

A run's manifest records its owner (pid, host, the process's start time and the boot id) when
it starts. A run still marked "running" whose owner is gone is *interrupted* (killed, machine
rebooted): decided from the process table, never from a timeout. On another host the owner
cannot be checked, so such a run stays "running".
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

STATES = ("running", "complete", "partial", "failed", "interrupted", "cancelled")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), or None where unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    try:
        return stat.rsplit(")", 1)[1].split()[19]
    except IndexError:
        return None


def owner_record() -> dict:
    """This process as a run owner: pid, host, start time and boot id (None where unknown)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _start_time(pid),
            "boot": _read("/proc/sys/kernel/random/boot_id")}


def owner_alive(owner: dict | None) -> bool | None:
    """True/False when the owner's liveness can be checked from here, None when it cannot
    (another host, or no owner recorded)."""
    if not owner or owner.get("host") != socket.gethostname():
        return None
    boot = _read("/proc/sys/kernel/random/boot_id")
    if owner.get("boot") and boot and owner["boot"] != boot:
        return False  # the machine rebooted since
    pid = owner.get("pid")
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        pass
    stat = _read(f"/proc/{pid}/stat")
    if stat is not None:
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False  # a zombie: dead, not yet reaped
        if owner.get("start") and _start_time(int(pid)) != owner["start"]:
            return False  # the pid was reused by another process
    return True


def run_state(manifest: dict) -> tuple[str, str | None]:
    """(state, error line or None) of a run from its manifest; "running" with a dead owner
    reads as "interrupted"."""
    status = manifest.get("status", "running")
    error = manifest.get("error")
    if status == "running" and owner_alive(manifest.get("owner")) is False:
        owner = manifest.get("owner") or {}
        return "interrupted", error or (f"the scoring process (pid {owner.get('pid')}) ended "
                                        "without finishing; the same command resumes it")
    return status, error
