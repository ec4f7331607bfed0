"""The training order: shuffled steps, each step's pairs sorted by length.

Each optimizer step takes the next `step_size` pairs of a seeded shuffle (as a random sampler
would), then orders them longest first, so the data loader cuts them into micro-batches of
similar lengths. A micro-batch is padded to its longest sequence: sorting the step shrinks
that padding (4% faster steps at batch 8 as 2 micro-batches of 4 on hh-rlhf pairs, same run,
`benchmarks/train_throughput.py`). It never grows a micro-batch's padded size beyond what the
memory plan sized for (micro-batch x longest sequence). The pairs of each step, and so the
update, are the same as without sorting: only how they share micro-batches changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class StepSortedSampler(Sampler[int]):
    """Indices of a seeded shuffle (new each epoch, the same in every process), sorted by
    `lengths` (longest first, stable) within each block of `step_size`: the pairs of one
    optimizer step over all processes (micro-batch x accumulation x processes)."""

    def __init__(self, lengths: Sequence[int], step_size: int, seed: int = 0):
        if step_size < 1:
            raise ValueError(f"step_size must be at least 1, got {step_size}")
        self.lengths = [int(n) for n in lengths]
        self.step_size, self.seed, self.epoch = int(step_size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at each epoch: a new shuffle per epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        for start in range(0, len(order), self.step_size):
            step = order[start:start + self.step_size]
            yield from sorted(step, key=lambda i: -self.lengths[i])


def pair_lengths(dataset, max_length: int | None = None) -> list[int]:
    """Tokens of each tokenized DPO row as the collator pads it: the prompt plus the longer
    of its two responses (capped at `max_length`)."""
    cols = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    out = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))
           for r in cols]
    return [min(n, max_length) for n in out] if max_length else out
