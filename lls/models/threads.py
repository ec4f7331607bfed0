"""How many threads a forward pass runs on: the thread policy of every sampling path.

Tiny matmuls split over threads collapse as soon as another process wants a core (measured
on this 2-core machine: 4 prompts x 8 rows x 24 tokens took 11.1 s alone and 34.6 s beside one
busy process with torch's 2 threads, 10.3 s either way with 1 thread), but on an idle machine
a full decode step is ~1.5x faster on both cores. So forward passes below `SINGLE_THREAD_WORK`
(tokens x model width: every decode step of the bundled model) start on one thread, larger ones
(the prefill of many prompt tokens) on the caller's threads as far as cores are idle right
now (`idle_cpus`); decode steps then follow what they measure (`StepThreads`: now and then a
step tries the other count and the faster is kept). `use_threads` restores the previous count
after each pass.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import torch

# Forward passes smaller than this (tokens in the pass x hidden width) start on one thread.
# Decode steps of the bundled 135M model (width 576) at up to 128 rows are ~74k: one thread
# to start with (StepThreads then measures); a prefill of 16 prompts of ~45 tokens is ~415k:
# all threads. See benchmarks/decode_throughput.py.
SINGLE_THREAD_WORK = 128 * 1024


def threads_for(tokens: int, width: int, available: int) -> int:
    """Threads for a forward pass over `tokens` tokens of a model `width` wide: one below
    `SINGLE_THREAD_WORK`; above, the caller's `available` threads as far as the machine has
    idle cores for them (beside busy processes a split matmul waits for the thread the OS
    gave away: on this machine under load, 2 threads were slower than 1 even for a
    4096 x 576 x 1536 matmul)."""
    if tokens * width < SINGLE_THREAD_WORK or available <= 1:
        return 1
    return max(1, min(available, idle_cpus() + 1))


IDLE_WINDOW_S = 0.05  # how long idle_cpus watches the machine (5 clock ticks per CPU)
_idle_seen: tuple[float, int] | None = None  # (when, idle CPUs) of the last look


def idle_cpus() -> int:
    """CPUs idle right now besides the one this process runs on: the idle share of all CPUs
    over a short window while this process sleeps (`/proc/stat`; the last look is reused for
    a second). Without /proc/stat, the last minute's load average (which lags: a process
    started 3 s ago hardly shows in it, and a prefill split over a core it holds took ~20x
    as long)."""
    global _idle_seen
    cpus = cpu_count()
    if _idle_seen is not None and time.monotonic() - _idle_seen[0] < 1.0:
        return _idle_seen[1]
    share = IdleShare(min_ticks=1)
    if share.last is not None:
        time.sleep(IDLE_WINDOW_S)
        value = share()
        if value is not None:
            idle = max(0, round(cpus * value) - 1)
            _idle_seen = (time.monotonic(), idle)
            return idle
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform: assume the cores are free
        return cpus
    return max(0, int(cpus - load + 0.5))


# torch's thread count is per OS thread once set, but a NEW thread starts from the last count
# any thread set: a dashboard serves each session's run on a new thread, so two sessions whose
# blocks overlap (A enters, B starts inside A's count, A leaves, B leaves restoring A's count)
# would leave every later session on that count. The count before the first open block is
# kept here and put back when the last open block, in any thread, leaves.
_lock = threading.Lock()
_open = 0
_base: int | None = None


@contextlib.contextmanager
def use_threads(n: int):
    """Run torch on `n` threads inside the block. On exit the calling thread gets its own
    previous count back, and when no block is open in any thread the process gets the count
    it had before the first one opened (safe with concurrent callers)."""
    global _open, _base
    with _lock:
        if _open == 0:
            _base = torch.get_num_threads()
        _open += 1
    prev = torch.get_num_threads()
    if n != prev:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            target = _base if _open == 0 else prev
            if torch.get_num_threads() != target or _open == 0:
                torch.set_num_threads(target)


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cpu_times() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all CPUs since boot (Linux `/proc/stat`; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return values[3] + (values[4] if len(values) > 4 else 0), sum(values[:8])


class IdleShare:
    """The share of the machine's CPU time that was idle lately: since the previous reading
    that spanned at least `min_ticks` clock ticks (a 0.2 s step on 2 CPUs is ~40 ticks).
    None until one such span has passed, and always where `/proc/stat` does not exist."""

    def __init__(self, min_ticks: int = 8):
        self.min_ticks, self.last, self.share = min_ticks, cpu_times(), None

    def __call__(self) -> float | None:
        now = cpu_times()
        if now is None or self.last is None:
            return None
        idle, total = now[0] - self.last[0], now[1] - self.last[1]
        if total >= self.min_ticks:
            self.last, self.share = now, max(0.0, min(1.0, idle / total))
        return self.share


class StepThreads:
    """The thread count of decode steps, chosen by measuring them.

    Whether a decode step runs faster on one thread or on all depends on what else the
    machine runs, and that changes while a study works: on this 2-core machine a full decode
    step of the bundled model is ~1.5x faster on 2 threads when the machine is idle and ~20x slower
    beside one busy process. So steps run on the count `threads_for` suggests, and now and
    then one step tries the other count (`pick`); seconds per row of each count are averaged
    (`record`) and the faster one is kept. More threads are tried only while the other cores
    were idle during the last steps (`idle`, from /proc/stat: a try beside a busy process
    would cost a step 20x as long); fewer threads may be tried at any time. A losing try
    waits twice as long before the next one, a winning one switches at once; a step much
    slower than its count's average (another process started) tries the other count at once.
    """

    FIRST_TRY, MAX_WAIT, ALPHA, MARGIN, JUMP = 4, 128, 0.3, 0.9, 1.5

    def __init__(self, prior: int, available: int, idle=None):
        self.counts = sorted({1, max(1, available)})
        self.current = prior if prior in self.counts else self.counts[-1]
        self.cost: dict[int, float] = {}  # threads -> average seconds per row of a step
        self.wait = self.backoff = self.FIRST_TRY
        self.trying: int | None = None
        self.idle = idle if idle is not None else IdleShare()
        self.blind = cpu_times() is None  # no /proc/stat: idleness is never known, try anyway
        self.cpus = cpu_count()

    def pick(self) -> int:
        """Threads for the next step."""
        if len(self.counts) == 1:
            return self.current
        idle = self.idle()  # read every step, so the share covers the latest steps
        self.wait -= 1
        if self.wait <= 0 and self.current in self.cost:
            other = next(c for c in self.counts if c != self.current)
            # more threads only if the extra ones would find idle cores (half of them, at least)
            if other < self.current or idle is None and self.blind or \
                    idle is not None and idle >= 0.5 * (other - self.current) / self.cpus:
                self.trying = other
                return other
            self.wait = 1  # look again at the next step
        return self.current

    def record(self, threads: int, seconds: float, rows: int) -> None:
        """How long a step of `rows` rows took on `threads` threads."""
        cost = seconds / max(1, rows)
        if threads == self.trying:
            self.trying = None
            if cost < self.cost[self.current] * self.MARGIN:
                self.current, self.backoff = threads, self.FIRST_TRY
                self.cost[threads] = cost
            else:
                self.backoff = min(2 * self.backoff, self.MAX_WAIT)
            self.wait = self.backoff
            return
        prev = self.cost.get(threads)
        if prev is not None and cost > self.JUMP * prev:  # the load changed: try the other now
            self.wait, self.backoff = 1, self.FIRST_TRY
        self.cost[threads] = cost if prev is None else prev + self.ALPHA * (cost - prev)
