"""DAPO extras: dynamic-sampling filter, overlong shaping, truncation mask."""

from __future__ import annotations

import pytest
import torch

from node.algos.dapo import (
    keep_groups,
    overlong_buffer,
    overlong_penalty,
    should_generate_more,
    truncation_mask,
)


def test_keep_groups_hand_worked():
    # groups: [1, 1] all right, [0, 0] all wrong, [1, 0] informative, [0.5] a group of one
    rewards = torch.tensor([1.0, 1, 0, 0, 1, 0, 0.5])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    assert keep_groups(rewards, groups).tolist() == [False, False, False, False, True, True, False]


@pytest.mark.parametrize("seed", range(5))
def test_keep_groups_matches_naive_loop(seed):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 8, (30,), generator=g)
    rewards = torch.randint(0, 2, (30,), generator=g).float()
    expect = [len({float(rewards[j]) for j in range(30) if groups[j] == groups[i]}) > 1 for i in range(30)]
    assert keep_groups(rewards, groups).tolist() == expect


def test_keep_groups_empty():
    assert keep_groups(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_should_generate_more():
    assert should_generate_more(kept_groups=3, target_groups=4, rounds_done=1, max_rounds=10)
    assert not should_generate_more(kept_groups=4, target_groups=4, rounds_done=1, max_rounds=10)
    assert not should_generate_more(kept_groups=0, target_groups=4, rounds_done=10, max_rounds=10)


def test_overlong_penalty_hand_worked():
    # L_max 20, buffer 5 -> L_exp 15: lengths [10, 15, 17, 20] -> [0, 0, -(2/5), -1]; penalty 0.5 halves
    lengths = torch.tensor([10, 15, 17, 20, 0])
    assert torch.allclose(overlong_penalty(lengths, 20, 5, 1.0), torch.tensor([0, 0, -0.4, -1.0, 0]))
    assert torch.allclose(overlong_penalty(lengths, 20, 5, 0.5), torch.tensor([0, 0, -0.2, -0.5, 0]))
    assert (overlong_penalty(lengths, 20, 0, 1.0) == 0).all()
    # DAPO's 20480 / 4096 = 0.2 of the cap; a tiny cap still gets a buffer of at least one token
    assert overlong_buffer(20480, 0.2) == 4096 and overlong_buffer(3, 0.2) == 1


@pytest.mark.parametrize("seed", range(3))
def test_overlong_penalty_matches_naive_loop(seed):
    lengths = torch.randint(0, 65, (20,), generator=torch.Generator().manual_seed(seed))
    expect = [min(0.0, -(n - (64 - 16)) / 16 * 1.0) for n in lengths.tolist()]
    assert torch.allclose(overlong_penalty(lengths, 64, 16, 1.0), torch.tensor(expect))


def test_truncation_mask():
    assert truncation_mask(torch.tensor([False, True])).tolist() == [True, False]
    assert truncation_mask(finish_reasons=["stop", "length", "eos"]).tolist() == [True, False, True]
    assert truncation_mask(finish_reasons=[]).shape == (0,)
    with pytest.raises(ValueError):
        truncation_mask()
