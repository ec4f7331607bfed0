"""Multi-process runs under `accelerate launch` (multi-GPU, multi-node, or CPU processes).

`accelerate launch --num_processes N -m lls score ...` starts N copies of the command; each
scores the chunks k with k % N == rank into the same cache directory, then rank 0 finalises
the run; `... -m lls eval ...` likewise samples the (model, prompt) units u with
u % N == rank and rank 0 merges them (lls.evaluation). Nothing here runs in a single-process
run, which stays the default path. `launch_argv` turns a `python -m lls ...` job command into
its `accelerate launch` form; `device_count` is how many processes this machine can use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    device: str | None  # None: let lls.models choose

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when started by `accelerate launch`/torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state():
    """accelerate's process state. CPU processes (no CUDA device, or `ACCELERATE_USE_CPU`)
    need `PartialState(cpu=True)`: without it accelerate sees a single process on a machine
    without GPUs even when torchrun started several, and every rank would think it is rank 0
    of 1 (a gloo process group is set up instead)."""
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if not cpu:
        import torch

        cpu = not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def process_info() -> ProcessInfo:
    """Rank, world size and device of this process (from accelerate when launched)."""
    if not launched():
        return ProcessInfo(0, 1, None)
    state = _state()
    device = str(state.device)
    # "cpu:<n>" from a CPU process group is just the CPU
    return ProcessInfo(state.process_index, state.num_processes,
                       "cpu" if device.startswith("cpu") else device)


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if launched():
        _state().wait_for_everyone()


def device_count() -> int:
    """How many processes a data-parallel launch can use here: CUDA devices, else 1."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of lls
        return 1
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def launch_argv(argv: list[str], num_processes: int, *, cpu: bool) -> list[str]:
    """`[python, -m, lls, ...]` as an `accelerate launch` of `num_processes` copies.

    `[python, -m, accelerate.commands.launch, --num_processes, N, --num_machines, 1, -m, lls,
    ...]`; N == 1 returns `argv` unchanged. Everything else (mixed precision, DeepSpeed/FSDP,
    ...) is left to accelerate and its config file; with N > 1 and several GPUs accelerate
    picks its multi-GPU (torchrun) launcher itself.

    `cpu=True` adds `--multi_gpu`, not `--cpu`: accelerate 1.x runs `--cpu` with any
    `--num_processes` as ONE process unless given an MPI hostfile (`--mpirun_hostfile`);
    its torchrun launcher (`--multi_gpu`) is the one that starts N local processes, and on a
    machine without CUDA the ranks then join a gloo (CPU) process group (`_state`).
    """
    argv = list(argv)
    n = int(num_processes)
    if n < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes!r}")
    if n == 1:
        return argv
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError(f"launch_argv expects [python, -m, module, ...], got {argv[:3]!r}")
    return [argv[0], "-m", "accelerate.commands.launch", "--num_processes", str(n),
            *(["--multi_gpu"] if cpu else []), "--num_machines", "1", "-m", *argv[2:]]
