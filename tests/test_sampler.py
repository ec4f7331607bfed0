"""The training order (lls.training.sampler): seeded steps, each step's pairs sorted by length."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler

from lls.training.sampler import StepSortedSampler

LENGTHS = [106, 121, 134, 60, 153, 78, 173, 154, 90, 40, 200, 75, 66, 118]  # 14 pairs


def steps(order, size):
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_each_step_holds_the_shuffled_pairs_sorted_longest_first():
    s = StepSortedSampler(LENGTHS, step_size=8, seed=3)
    order = list(s)
    shuffle = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(3)).tolist()
    assert sorted(order) == list(range(len(LENGTHS)))  # every pair once
    for got, drawn in zip(steps(order, 8), steps(shuffle, 8)):
        assert set(got) == set(drawn)  # the same pairs per step as the plain shuffle
        assert [LENGTHS[i] for i in got] == sorted((LENGTHS[i] for i in got), reverse=True)
    assert [len(x) for x in steps(order, 8)] == [8, 6]


def test_the_order_is_fixed_by_seed_and_epoch():
    a, b = StepSortedSampler(LENGTHS, 4, seed=1), StepSortedSampler(LENGTHS, 4, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first  # a new shuffle each epoch
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(StepSortedSampler(LENGTHS, 4, seed=2)) != first


def test_micro_batches_carry_less_padding_and_never_more_than_planned():
    """Cut by a data loader's batch sampler (micro-batch 4, accumulation 2): no micro-batch is
    padded beyond 4 x the longest pair, and the padding falls against the unsorted shuffle."""
    sorted_order = StepSortedSampler(LENGTHS, step_size=8, seed=0)
    shuffle = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()

    def padded(batches):
        return sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)

    micro = list(BatchSampler(sorted_order, batch_size=4, drop_last=False))
    plain = [shuffle[i:i + 4] for i in range(0, len(shuffle), 4)]
    assert sorted(sum(micro, [])) == list(range(len(LENGTHS)))
    assert all(len(b) * max(LENGTHS[i] for i in b) <= 4 * max(LENGTHS) for b in micro)
    assert padded(micro) < padded(plain)


def test_a_step_size_below_one_is_refused():
    with pytest.raises(ValueError, match="step_size"):
        StepSortedSampler(LENGTHS, 0)
