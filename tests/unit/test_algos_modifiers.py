"""Advantage modifiers: hand-worked cases, vectorised vs naive loops, edge cases."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from node.algos.config import AlgorithmConfig
from node.algos.modifiers import ace, tsallis, xrpo
from node.algos.registry import MODIFIERS
from node.algos.types import AdvantageInputs

CFG = AlgorithmConfig()


def close(a, b, tol=1e-4) -> None:
    assert torch.allclose(
        a.to(torch.float64), torch.tensor(b, dtype=torch.float64), atol=tol, equal_nan=True
    ), (a, b)


def test_tsallis_hand_worked():
    # group 0: correct [1, 0, 0, 0] -> P = 0.25 -> 0.25^-0.75 = 4^0.75 = 2.828427
    # group 1: correct [0, 0] -> P = 0 -> floor 0.05 -> 0.05^-0.75 = 9.457416
    x = AdvantageInputs(
        rewards=torch.tensor([1.0, 0, 0, 0, 0, 0]), group_ids=torch.tensor([0, 0, 0, 0, 1, 1])
    )
    out = tsallis(torch.ones(6), x, CFG)
    close(out, [2.828427] * 4 + [9.457416] * 2)
    # q = 0 is plain RLVR: no change
    close(tsallis(torch.ones(6), x, AlgorithmConfig(tsallis_q=0.0)), [1.0] * 6)


def test_xrpo_hand_worked():
    # correct rows l = [-1, -2, -3]: mean -2, unbiased std 1; novelty (mean - l) / std = [-1, 0, 1]
    # -> clipped at 0: [0, 0, 1]; bonus 0.2 * [0, 0, 1]; the wrong row (l = -10) is unchanged
    x = AdvantageInputs(
        rewards=torch.tensor([1.0, 1, 1, 0]),
        group_ids=torch.zeros(4, dtype=torch.long),
        seq_logprobs=torch.tensor([-1.0, -2, -3, -10]),
    )
    close(xrpo(torch.zeros(4), x, CFG), [0, 0, 0.2, 0])
    # kappa caps the standardised novelty: lambda 1, kappa 0.5 -> [0, 0, 0.5, 0]
    close(xrpo(torch.zeros(4), x, AlgorithmConfig(xrpo_lambda=1.0, xrpo_kappa=0.5)), [0, 0, 0.5, 0])


def test_ace_hand_worked():
    # shift c = l - l_ref = [1, -1, 2]; softplus = [1.313262, 0.313262, 2.126928]
    # A < 0: A (1 + 0.5 softplus(c)) = [-1.656631, -1.156631]; A >= 0 unchanged
    x = AdvantageInputs(
        rewards=torch.zeros(3),
        group_ids=torch.zeros(3, dtype=torch.long),
        seq_logprobs=torch.tensor([-1.0, -2, -1]),
        ref_seq_logprobs=torch.tensor([-2.0, -1, -3]),
    )
    close(ace(torch.tensor([-1.0, -1, 1]), x, CFG), [-1.656631, -1.156631, 1.0])


def random_inputs(seed: int) -> tuple[torch.Tensor, AdvantageInputs]:
    g = torch.Generator().manual_seed(seed)
    n = 20
    groups = torch.randint(0, 5, (n,), generator=g)
    x = AdvantageInputs(
        rewards=torch.randint(0, 2, (n,), generator=g).float(),
        group_ids=groups,
        seq_logprobs=-torch.rand(n, generator=g) * 3,
        ref_seq_logprobs=-torch.rand(n, generator=g) * 3,
    )
    return torch.randn(n, generator=g), x


@pytest.mark.parametrize("seed", range(5))
def test_modifiers_match_naive_loop(seed):
    adv, x = random_inputs(seed)
    r, lp, ref = x.rewards.tolist(), x.seq_logprobs.tolist(), x.ref_seq_logprobs.tolist()
    groups: dict[int, list[int]] = {}
    for i, gid in enumerate(x.group_ids.tolist()):
        groups.setdefault(gid, []).append(i)
    exp_ts, exp_x, exp_ace = [0.0] * len(r), [0.0] * len(r), [0.0] * len(r)
    for idx in groups.values():
        p = sum(r[i] >= 0.5 for i in idx) / len(idx)
        corr = [i for i in idx if r[i] >= 0.5]
        for i in idx:
            exp_ts[i] = float(adv[i]) * max(p, CFG.tsallis_floor) ** -CFG.tsallis_q
            bonus = 0.0
            if r[i] >= 0.5 and len(corr) > 1:
                ls = [lp[j] for j in corr]
                z = (statistics.mean(ls) - lp[i]) / (statistics.stdev(ls) + CFG.adv_eps)
                bonus = CFG.xrpo_lambda * min(CFG.xrpo_kappa, max(0.0, z))
            exp_x[i] = float(adv[i]) + bonus
            a = float(adv[i])
            exp_ace[i] = a * (1 + CFG.ace_alpha * math.log1p(math.exp(lp[i] - ref[i]))) if a < 0 else a
    close(tsallis(adv, x, CFG), exp_ts)
    close(xrpo(adv, x, CFG), exp_x)
    close(ace(adv, x, CFG), exp_ace)


@pytest.mark.parametrize("name", MODIFIERS.names())
def test_modifier_edge_cases(name):
    fn = MODIFIERS.get(name)
    # group of one and all-equal rewards: finite; a NaN (dropped) row stays NaN
    x = AdvantageInputs(
        rewards=torch.tensor([1.0, 1.0, 1.0, 0.0]),
        group_ids=torch.tensor([0, 0, 0, 1]),
        seq_logprobs=torch.tensor([-1.0, -1.0, -1.0, -2.0]),
        ref_seq_logprobs=torch.zeros(4),
    )
    out = fn(torch.tensor([0.5, -0.5, float("nan"), 0.0]), x, CFG)
    assert torch.isfinite(out[[0, 1, 3]]).all() and torch.isnan(out[2])
    empty = AdvantageInputs(
        rewards=torch.zeros(0),
        group_ids=torch.zeros(0, dtype=torch.long),
        seq_logprobs=torch.zeros(0),
        ref_seq_logprobs=torch.zeros(0),
    )
    assert fn(torch.zeros(0), empty, CFG).shape == (0,)


def test_modifiers_need_their_inputs():
    x = AdvantageInputs(rewards=torch.ones(2), group_ids=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="seq_logprobs"):
        xrpo(torch.ones(2), x, CFG)
    with pytest.raises(ValueError, match="ref_seq_logprobs"):
        ace(torch.ones(2), x, CFG)
