"""Advantage estimators: hand-worked cases, vectorised vs naive loops, edge cases."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from node.algos.advantages import (
    dr_grpo,
    gdpo,
    group_median,
    grpo,
    mc_grpo,
    nsr,
    psr,
    remax,
    rloo,
    w_reinforce,
)
from node.algos.config import AlgorithmConfig
from node.algos.registry import ADVANTAGES
from node.algos.types import AdvantageInputs

CFG = AlgorithmConfig()


def inp(rewards, groups, **kw) -> AdvantageInputs:
    return AdvantageInputs(
        rewards=torch.tensor(rewards, dtype=torch.float32), group_ids=torch.tensor(groups), **kw
    )


def close(a, b, tol=1e-4) -> None:
    assert torch.allclose(
        torch.as_tensor(a, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64),
        atol=tol,
        equal_nan=True,
    ), (a, b)


def random_batch(seed: int, binary: bool = False) -> AdvantageInputs:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 7, (6,), generator=g).tolist()
    groups = torch.cat([torch.full((s,), 100 - i) for i, s in enumerate(sizes)])  # unsorted ids
    perm = torch.randperm(len(groups), generator=g)
    groups = groups[perm]
    if binary:
        rewards = torch.randint(0, 2, (len(groups),), generator=g).float()
    else:
        rewards = torch.rand(len(groups), generator=g)
    return AdvantageInputs(
        rewards=rewards,
        group_ids=groups,
        components=torch.rand(len(groups), 3, generator=g),
        lengths=torch.randint(0, 9, (len(groups),), generator=g).float(),
    )


def naive_groups(inputs: AdvantageInputs) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, gid in enumerate(inputs.group_ids.tolist()):
        out.setdefault(gid, []).append(i)
    return out


# ----------------------------------------------------------------------------- hand-worked


def test_grpo_hand_worked():
    # r = [1, 0, 0]: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) = 0.57735
    # A = [(2/3)/0.57735, -(1/3)/0.57735, ...] = [1.1547, -0.57735, -0.57735]
    close(grpo(inp([1, 0, 0], [0, 0, 0]), CFG), [1.1547, -0.57735, -0.57735])


def test_grpo_batch_and_none_scale():
    # two groups [1, 0] and [1, 1]: centred [0.5, -0.5, 0, 0]; batch std (unbiased) = sqrt(0.5/3) = 0.408248
    x = inp([1, 0, 1, 1], [0, 0, 1, 1])
    close(grpo(x, AlgorithmConfig(adv_scale="none")), [0.5, -0.5, 0, 0])
    close(grpo(x, AlgorithmConfig(adv_scale="batch")), [1.224745, -1.224745, 0, 0])


def test_dr_grpo_hand_worked():
    # r - mean_g: [1 - 1/3, -1/3, -1/3]
    close(dr_grpo(inp([1, 0, 0], [0, 0, 0]), CFG), [2 / 3, -1 / 3, -1 / 3])


def test_rloo_hand_worked():
    # leave-one-out: 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5 (twice)
    close(rloo(inp([1, 0, 0], [0, 0, 0]), CFG), [1.0, -0.5, -0.5])


def test_remax_hand_worked():
    # r - r_greedy: [1 - 1, 0 - 1, 1 - 0]
    x = inp([1, 0, 1], [0, 0, 1], baseline_rewards=torch.tensor([1.0, 1.0, 0.0]))
    close(remax(x, CFG), [0, -1, 1])
    with pytest.raises(ValueError, match="baseline_rewards"):
        remax(inp([1.0], [0]), CFG)


def test_mc_grpo_hand_worked_continuous():
    # r = [0.2, 1.0, 0.5]: median 0.5 (row 2 is the pivot), |r - m| = [0.3, 0.5, 0] -> MAD 0.3
    # A = (r - 0.5) / (0.3 + 1e-3) = [-0.99668, 1.66113, pivot]; mc_clip 1 clips 1.66 to 1
    x = inp([0.2, 1.0, 0.5], [0, 0, 0])
    close(mc_grpo(x, AlgorithmConfig(mc_clip=10.0)), [-0.99668, 1.66113, float("nan")])
    close(mc_grpo(x, CFG), [-0.99668, 1.0, float("nan")])


def test_mc_grpo_hand_worked_binary():
    # r = [1, 0, 0]: sorted (ties by index) rows [1, 2, 0]; the middle one, row 2, is the pivot
    # median 0, MAD = median(1, 0, 0) = 0 -> 1e-3; A[0] = 1 / 1e-3 = 1000 -> clipped to 1; A[1] = 0
    close(mc_grpo(inp([1, 0, 0], [0, 0, 0]), CFG), [1.0, 0.0, float("nan")])


def test_gdpo_hand_worked():
    # c1 = [1, 0, 0] -> [1.1547, -0.57735, -0.57735]; c2 = [1, 1, 0] -> [0.57735, 0.57735, -1.1547]
    # sum = [1.73205, 0, -1.73205]; batch mean 0, unbiased std sqrt(6 / 2) = 1.73205 -> [1, 0, -1]
    x = inp([2, 1, 0], [0, 0, 0], components=torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    close(gdpo(x, CFG), [1.0, 0.0, -1.0])
    # weights [2, 0]: 2 * c1 normalised = [2.3094, -1.1547, -1.1547], whitened: std sqrt(8/2)=2
    x.component_weights = torch.tensor([2.0, 0.0])
    close(gdpo(x, CFG), [1.1547, -0.57735, -0.57735])


def test_gdpo_keeps_combinations_distinct():
    # GDPO's claim: (1,0) and (0,1) in a group of four distinct combos keep distinct advantages
    # only when the components have different spreads; summing first would tie rows 1 and 2.
    comps = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    x = inp(comps.sum(1).tolist(), [0, 0, 0, 0], components=comps)
    assert len(set(grpo(x, CFG).round(decimals=4).tolist())) == 2
    assert len(set(gdpo(x, CFG).round(decimals=4).tolist())) == 3


def test_psr_nsr_w_reinforce_hand_worked():
    x = inp([1, 0, 1], [0, 0, 0], correct=torch.tensor([True, False, True]))
    close(psr(x, CFG), [1, 0, 1])
    close(nsr(x, CFG), [0, -1, 0])
    close(w_reinforce(x, CFG), [0.1, -1, 0.1])
    # without the verifier flag, reward >= 0.5 is correct: [1, 0.2, 0.6] -> [T, F, T]
    close(w_reinforce(inp([1, 0.2, 0.6], [0, 0, 0]), AlgorithmConfig(w_lambda=0.3)), [0.3, -1, 0.3])


# ----------------------------------------------------------------------------- vs naive loops


@pytest.mark.parametrize("seed", range(5))
def test_group_estimators_match_naive_loop(seed):
    x = random_batch(seed)
    r = x.rewards.tolist()
    expect_grpo, expect_dr, expect_rloo = [0.0] * len(r), [0.0] * len(r), [0.0] * len(r)
    for idx in naive_groups(x).values():
        vals = [r[i] for i in idx]
        mean = sum(vals) / len(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 1.0
        for i in idx:
            expect_grpo[i] = (r[i] - mean) / (std + CFG.adv_eps)
            expect_dr[i] = r[i] - mean
            others = [r[j] for j in idx if j != i]
            expect_rloo[i] = r[i] - sum(others) / len(others) if others else 0.0
    close(grpo(x, CFG), expect_grpo)
    close(dr_grpo(x, CFG), expect_dr)
    close(rloo(x, CFG), expect_rloo)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("binary", [False, True])
def test_mc_grpo_matches_naive_loop(seed, binary):
    x = random_batch(seed, binary)
    r = x.rewards.tolist()
    expect = [0.0] * len(r)
    for idx in naive_groups(x).values():
        ordered = sorted(idx, key=lambda i: (r[i], i))  # stable by value, ties by index
        pivot = ordered[(len(ordered) - 1) // 2]
        med = r[pivot]
        devs = sorted(abs(r[i] - med) for i in idx)
        mad = devs[(len(devs) - 1) // 2] + CFG.mc_mad_eps
        for i in idx:
            expect[i] = float("nan") if i == pivot else max(-1.0, min(1.0, (r[i] - med) / mad))
    close(mc_grpo(x, CFG), expect)
    # exactly one pivot per group
    assert int(torch.isnan(mc_grpo(x, CFG)).sum()) == len(naive_groups(x))


def test_group_median_is_torch_median():
    x = random_batch(3)
    med, _ = group_median(x.rewards, x.group_ids)
    for idx in naive_groups(x).values():
        assert float(med[idx[0]]) == pytest.approx(float(torch.median(x.rewards[idx])))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("use_lengths", [False, True])
def test_gdpo_matches_naive_loop(seed, use_lengths):
    x = random_batch(seed)
    if not use_lengths:
        x.lengths = None
    n, k = x.components.shape
    total = [0.0] * n
    for idx in naive_groups(x).values():
        for c in range(k):
            vals = [float(x.components[i, c]) for i in idx]
            mean = sum(vals) / len(vals)
            std = statistics.stdev(vals) if len(vals) > 1 else 1.0
            for i in idx:
                total[i] += (float(x.components[i, c]) - mean) / (std + CFG.adv_eps)
    # whitening over tokens = over rows repeated `length` times
    reps = [int(v) for v in x.lengths.tolist()] if use_lengths else [1] * n
    flat = [t for t, m in zip(total, reps, strict=True) for _ in range(m)]
    mean = sum(flat) / len(flat)
    std = statistics.stdev(flat)
    close(gdpo(x, CFG), [(t - mean) / (std + CFG.adv_eps) for t in total])


# ----------------------------------------------------------------------------- edge cases

NAMES = ADVANTAGES.names()


def edge_inputs(rewards, groups) -> AdvantageInputs:
    n = len(rewards)
    return inp(
        rewards, groups, baseline_rewards=torch.zeros(n), components=torch.ones(n, 2), lengths=torch.zeros(n)
    )


@pytest.mark.parametrize("name", NAMES)
def test_group_of_one_is_finite(name):
    adv = ADVANTAGES.get(name)(edge_inputs([1.0, 0.0], [0, 1]), CFG)
    if name == "mc_grpo":  # a group of one is its own median: dropped
        assert torch.isnan(adv).all()
    else:
        assert torch.isfinite(adv).all()
    if name in {"grpo", "dr_grpo", "rloo", "gdpo"}:
        assert (adv == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_all_equal_rewards(name):
    adv = ADVANTAGES.get(name)(edge_inputs([1.0, 1.0, 1.0], [0, 0, 0]), CFG)
    finite = adv[~torch.isnan(adv)]
    assert torch.isfinite(finite).all() and finite.numel() >= 2
    if name in {"grpo", "dr_grpo", "rloo", "gdpo", "mc_grpo"}:
        assert (finite == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    adv = ADVANTAGES.get(name)(edge_inputs([], []), CFG)
    assert adv.shape == (0,)


def test_zero_length_gdpo_whitening_is_finite():
    # all completions zero tokens long: no token weight, whitening is skipped, still finite
    x = inp([1, 0], [0, 0], lengths=torch.zeros(2))
    assert torch.isfinite(gdpo(x, CFG)).all()
    assert not math.isnan(float(gdpo(inp([1, 0, 1], [0, 0, 1]), CFG).sum()))
