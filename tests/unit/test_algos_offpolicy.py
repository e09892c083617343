"""Off-policy corrections: each function hand-worked and against a naive loop; wired into losses."""

from __future__ import annotations

import math

import pytest
import torch

from node.algos.config import AlgorithmConfig
from node.algos.losses import ppo_clip
from node.algos.offpolicy import (
    corrections,
    ess_ratio,
    loglinear_proximal,
    lr_scale,
    m2po_mask,
    minpro_weight,
    sequence_log_weights,
    staleness_mask,
    truncate_weights,
)
from node.algos.registry import LOSSES
from node.algos.types import LossInputs

L = math.log


def close(a, b, tol=1e-5) -> None:
    assert torch.allclose(
        torch.as_tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), atol=tol
    ), (a, b)


def test_loglinear_proximal_hand_worked():
    # mu = -1, pi_theta = -0.5; v_b = 3, v_prox = 5, v_theta = 6: alpha = 2/3 -> -1 + 2/3 * 0.5 = -0.666667
    # v_b = 5 (fresh): alpha 0 -> mu; v_b = 6 (ahead of theta): alpha 0; v_b = 0: alpha 5/6 -> -0.583333
    beh = torch.full((4, 1), -1.0)
    pol = torch.full((4, 1), -0.5)
    out = loglinear_proximal(beh, pol, torch.tensor([3, 5, 6, 0]), prox_version=5, theta_version=6)
    close(out, [[-0.666667], [-1.0], [-1.0], [-0.583333]])
    # per-token versions [B, T] (a resumed partial rollout)
    out = loglinear_proximal(torch.full((1, 2), -1.0), torch.full((1, 2), -0.5), torch.tensor([[3, 5]]), 5, 6)
    close(out, [[-0.666667, -1.0]])


def test_truncate_weights_hand_worked():
    # w = [0.5, 3, 1], C = 2: truncate -> [0.5, 2, 1]; mask -> [0.5, 0, 1] with keep [1, 0, 1]
    log_w = torch.log(torch.tensor([0.5, 3.0, 1.0]))
    w, keep = truncate_weights(log_w, 2.0, "truncate")
    close(w, [0.5, 2.0, 1.0])
    close(keep, [1, 1, 1])
    w, keep = truncate_weights(log_w, 2.0, "mask")
    close(w, [0.5, 0.0, 1.0])
    close(keep, [1, 0, 1])
    close(truncate_weights(log_w, None, "mask")[0], [0.5, 3.0, 1.0])


def test_sequence_log_weights_hand_worked():
    # sum over valid tokens of log pi_prox - log mu: 0.1 + 0.2 (the 9 is masked)
    close(
        sequence_log_weights(torch.tensor([[0.1, 0.2, 9.0]]), torch.zeros(1, 3), torch.tensor([[1.0, 1, 0]])),
        [0.3],
    )


def test_m2po_hand_worked():
    # log-ratio [0.5, 0.1, 0, 0.2] -> m = [0.25, 0.01, 0, 0.04]; mean 0.075 >= 0.04
    # drop 0.25 -> mean 0.05 / 3 = 0.0167 < 0.04: only token 0 masked
    prox = torch.tensor([[0.5, 0.1, 0.0, 0.2]])
    close(m2po_mask(prox, torch.zeros(1, 4), torch.ones(1, 4), 0.04), [[0, 1, 1, 1]])
    # tau 0.01: 0.0167 >= 0.01, drop 0.04 too -> 0.01 / 2 = 0.005 < 0.01: tokens 0 and 3 masked
    close(m2po_mask(prox, torch.zeros(1, 4), torch.ones(1, 4), 0.01), [[0, 1, 1, 0]])
    # an invalid token is ignored and kept at 1
    close(m2po_mask(prox, torch.zeros(1, 4), torch.tensor([[0.0, 1, 1, 1]]), 0.04), [[1, 1, 1, 1]])


@pytest.mark.parametrize("seed", range(5))
def test_m2po_matches_naive_loop(seed):
    g = torch.Generator().manual_seed(seed)
    prox, beh = torch.randn(3, 7, generator=g) * 0.3, torch.zeros(3, 7)
    mask = (torch.rand(3, 7, generator=g) > 0.2).float()
    tau = 0.04
    items = [((float(prox[b, t]) ** 2), b, t) for b in range(3) for t in range(7) if mask[b, t] > 0]
    items.sort(key=lambda it: -it[0])
    dropped = []
    while items and sum(m for m, _, _ in items) / len(items) >= tau:
        dropped.append(items.pop(0))
    expect = torch.ones(3, 7)
    for _, b, t in dropped:
        expect[b, t] = 0
    close(m2po_mask(prox, beh, mask, tau), expect.tolist())


def test_minpro_hand_worked():
    # rho = [0.5, 2, 0.8, 1]: m = [1, min(1, .5), min(1, .5, 2), min(1, .5, 2, .8)] = [1, .5, .5, .5]
    # rho = [2, 0.8, 0.5, 3]: m = [1, min(1, 2) = 1, 0.8, 0.5]
    pol = torch.log(torch.tensor([[0.5, 2, 0.8, 1], [2, 0.8, 0.5, 3]]))
    close(minpro_weight(pol, torch.zeros(2, 4), torch.ones(2, 4)), [[1, 0.5, 0.5, 0.5], [1, 1, 0.8, 0.5]])
    # a masked token does not count: masking the 0.5 in row 0 -> [1, 1, 1, 0.8]
    close(minpro_weight(pol[:1], torch.zeros(1, 4), torch.tensor([[0.0, 1, 1, 1]])), [[1, 1, 1, 0.8]])


@pytest.mark.parametrize("seed", range(3))
def test_minpro_matches_naive_loop(seed):
    g = torch.Generator().manual_seed(seed)
    pol, beh = torch.randn(4, 6, generator=g) * 0.5, torch.randn(4, 6, generator=g) * 0.5
    mask = (torch.rand(4, 6, generator=g) > 0.3).float()
    expect = torch.ones(4, 6)
    for b in range(4):
        running = 1.0
        for t in range(6):
            expect[b, t] = running
            if mask[b, t] > 0:
                running = min(running, math.exp(float(pol[b, t] - beh[b, t])))
    close(minpro_weight(pol, beh, mask), expect.tolist())


def test_staleness_mask_hand_worked():
    # lags [0, 3, 6] against max 3 -> [T, T, F]
    assert staleness_mask(torch.tensor([10, 7, 4]), 10, 3).tolist() == [True, True, False]


def test_ess_and_lr_scale_hand_worked():
    # w = [1, 1] -> ESS/B = 1; w = [1, ~0] -> 0.5; w = [1, 2, 3] -> 36 / (3 * 14) = 0.857143
    assert ess_ratio(torch.zeros(2)) == pytest.approx(1.0)
    assert ess_ratio(torch.tensor([0.0, -60.0])) == pytest.approx(0.5)
    assert ess_ratio(torch.log(torch.tensor([1.0, 2, 3]))) == pytest.approx(0.857143, abs=1e-6)
    assert lr_scale(torch.log(torch.tensor([1.0, 2, 3]))) == pytest.approx(math.sqrt(0.857143), abs=1e-6)
    assert lr_scale(torch.log(torch.tensor([1.0, 2, 3])), base_ratio=0.5) == pytest.approx(
        math.sqrt(1.714286)
    )
    assert ess_ratio(torch.tensor([500.0, 499.0])) == pytest.approx(
        (1 + math.exp(-1)) ** 2 / (2 * (1 + math.exp(-2)))
    )  # no overflow
    assert ess_ratio(torch.zeros(0)) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_ess_matches_naive_loop(seed):
    lw = torch.randn(9, generator=torch.Generator().manual_seed(seed))
    w = [math.exp(v) for v in lw.tolist()]
    assert ess_ratio(lw) == pytest.approx(sum(w) ** 2 / (len(w) * sum(v * v for v in w)))


# ----------------------------------------------------------------------------- wired into losses


def batch(seed: int, lag: float = 0.3, versions=None) -> LossInputs:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(4, 5, generator=g).double()
    beh = old + lag * torch.randn(4, 5, generator=g).double()
    pol = (old + 0.1 * torch.randn(4, 5, generator=g).double()).requires_grad_()
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in [5, 3, 1, 0]], dtype=torch.float64)
    return LossInputs(
        policy_logprobs=pol,
        old_logprobs=old,
        behavior_logprobs=beh,
        advantages=torch.randn(4, 1, generator=g).double().expand(4, 5),
        mask=mask,
        global_tokens=float(mask.sum()),
        global_seqs=4.0,
        max_len=5,
        behavior_versions=versions,
        policy_version=10,
    )


OFFPOLICY_CFGS = [
    dict(is_level="token"),
    dict(is_level="token", is_cap=1.1, is_mode="mask"),
    dict(is_level="sequence", is_cap=1.2),
    dict(m2po_tau=0.04),
    dict(minpro=True),
    dict(max_staleness=2),
    dict(prox_logprobs="loglinear"),
]


@pytest.mark.parametrize("kw", OFFPOLICY_CFGS)
@pytest.mark.parametrize("loss", ["ppo_clip", "gspo", "cispo"])
def test_corrections_are_noops_on_policy(kw, loss):
    x = batch(0, lag=0.0, versions=torch.tensor([10, 10, 10, 10]))
    x.policy_logprobs = x.old_logprobs.clone().requires_grad_()  # first micro-batch: pi_theta = pi_old = mu
    plain = LOSSES.get(loss)(x, AlgorithmConfig(loss=loss)).loss
    corrected = LOSSES.get(loss)(x, AlgorithmConfig(loss=loss, **kw)).loss
    assert corrected.item() == pytest.approx(plain.item(), abs=1e-9)


def test_decoupled_matches_naive_loop():
    # AReaL: L = sum_t sg(pi_prox / mu) max(-rho A, -clip(rho) A) / N, rho = pi_theta / pi_prox,
    # tokens with pi_prox / mu > C masked (C = 1.2), denominator the original token count
    x = batch(1)
    cfg = AlgorithmConfig(is_level="token", is_cap=1.2, is_mode="mask", clip_high=0.28)
    total = 0.0
    for b in range(4):
        for t in range(5):
            if x.mask[b, t] == 0:
                continue
            w = math.exp(float(x.old_logprobs[b, t] - x.behavior_logprobs[b, t]))
            if w > 1.2:
                continue
            rho = math.exp(float(x.policy_logprobs.detach()[b, t] - x.old_logprobs[b, t]))
            a = float(x.advantages[b, t])
            total += w * max(-rho * a, -min(max(rho, 0.8), 1.28) * a)
    assert ppo_clip(x, cfg).loss.item() == pytest.approx(total / x.global_tokens, abs=1e-9)


def test_sequence_tis_matches_naive_loop():
    x = batch(2)
    cfg = AlgorithmConfig(is_level="sequence", is_cap=1.5)
    total = 0.0
    for b in range(4):
        n = int(x.mask[b].sum())
        w = min(math.exp(sum(float(x.old_logprobs[b, t] - x.behavior_logprobs[b, t]) for t in range(n))), 1.5)
        for t in range(n):
            rho = math.exp(float(x.policy_logprobs.detach()[b, t] - x.old_logprobs[b, t]))
            a = float(x.advantages[b, t])
            total += w * max(-rho * a, -min(max(rho, 0.8), 1.2) * a)
    assert ppo_clip(x, cfg).loss.item() == pytest.approx(total / x.global_tokens, abs=1e-9)


def test_staleness_drops_rows_and_needs_versions():
    # versions [10, 9, 5, 10] with max 2: row 2 (lag 5) contributes nothing
    x = batch(3, versions=torch.tensor([10, 9, 5, 10]))
    corr = corrections(x, AlgorithmConfig(max_staleness=2))
    close(corr.keep.sum(-1), [5, 5, 0, 5])
    assert corr.metrics["offpolicy/stale"] == pytest.approx(1 / 9)  # 1 valid token of 9 is stale
    x.behavior_versions = None
    with pytest.raises(ValueError, match="behavior_versions"):
        corrections(x, AlgorithmConfig(max_staleness=2))
    with pytest.raises(ValueError, match="behavior_versions"):
        corrections(x, AlgorithmConfig(prox_logprobs="loglinear"))


def test_corrections_edge_cases_finite():
    # empty mask, huge log-ratios: every weight finite, every metric finite
    x = batch(4, lag=50.0, versions=torch.tensor([0, 0, 0, 0]))
    for kw in OFFPOLICY_CFGS:
        corr = corrections(x, AlgorithmConfig(**kw))
        assert torch.isfinite(corr.weight).all() and torch.isfinite(corr.prox_logprobs).all()
        assert all(math.isfinite(v) for v in corr.metrics.values())
    x.mask = torch.zeros_like(x.mask)
    x.global_tokens = 0.0
    for kw in OFFPOLICY_CFGS:
        out = ppo_clip(x, AlgorithmConfig(**kw))
        assert out.loss.item() == 0.0


def test_decoupled_hand_worked_value_and_gradient():
    # mu = [.5, .2, .1], pi_prox = [.4, .6, .9], pi_theta = [.5, .6, .7], cap 5 (mask), eps 0.2:
    # w = pi_prox / mu = [0.8, 3, 9 -> masked]; rho = pi_theta / pi_prox = [1.25, 1, 0.7778].
    # A = +1: token losses -min(rho, clip(rho)) = [-1.2, -1, -0.7778] * w = [-0.96, -3, 0];
    #   loss = -3.96 / 3 = -1.32; d/dlog pi_theta: token 0 clipped -> 0, token 1 -w rho / 3 = -1,
    #   token 2 masked -> 0.
    # A = -1: token losses max(rho, clip(rho)) = [1.25, 1, 0.8] * w = [1, 3, 0]; loss = 4 / 3;
    #   gradient w rho / 3 = [0.3333, 1, 0] (token 0's unclipped side is active for A < 0).
    cfg = AlgorithmConfig(is_level="token", is_cap=5.0, is_mode="mask")
    for adv, loss, grad in [(1.0, -1.32, [[0.0, -1.0, 0.0]]), (-1.0, 4 / 3, [[1 / 3, 1.0, 0.0]])]:
        pol = torch.tensor([[L(0.5), L(0.6), L(0.7)]], dtype=torch.float64, requires_grad=True)
        x = LossInputs(
            policy_logprobs=pol,
            old_logprobs=torch.tensor([[L(0.4), L(0.6), L(0.9)]], dtype=torch.float64),
            behavior_logprobs=torch.tensor([[L(0.5), L(0.2), L(0.1)]], dtype=torch.float64),
            advantages=torch.full((1, 3), adv, dtype=torch.float64),
            mask=torch.ones(1, 3, dtype=torch.float64),
            global_tokens=3.0,
            global_seqs=1.0,
            max_len=3,
        )
        out = ppo_clip(x, cfg)
        out.loss.backward()
        assert out.loss.item() == pytest.approx(loss, abs=1e-9)
        close(pol.grad, grad)
        assert out.metrics["offpolicy/is_masked"] == pytest.approx(1 / 3)
