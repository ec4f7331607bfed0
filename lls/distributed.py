"""Multi-process runs under `accelerate launch` (multi-GPU, multi-node, or --cpu processes).

`accelerate launch --num_processes N -m lls score ...` starts N copies of the command; each
scores the chunks k with k % N == rank into the same cache directory, then rank 0 finalises
the run. Nothing here runs in a single-process run, which stays the default path.
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


def process_info() -> ProcessInfo:
    """Rank, world size and device of this process (from accelerate when launched)."""
    if not launched():
        return ProcessInfo(0, 1, None)
    from accelerate import PartialState

    state = PartialState()
    return ProcessInfo(state.process_index, state.num_processes, str(state.device))


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if launched():
        from accelerate import PartialState

        PartialState().wait_for_everyone()
