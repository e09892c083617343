"""Policy losses and their shared pieces: hand-worked values and gradients, naive loops, edges."""

from __future__ import annotations

import math

import pytest
import torch

from node.algos.config import AlgorithmConfig
from node.algos.losses import (
    aggregate,
    cispo,
    gspo,
    high_entropy_mask,
    kl_penalty,
    kl_reward_penalty,
    ppo_clip,
)
from node.algos.registry import LOSSES
from node.algos.types import LossInputs


def make(policy, adv, old=None, mask=None, **kw) -> LossInputs:
    policy = torch.tensor(policy, dtype=torch.float64, requires_grad=True)
    old = torch.zeros_like(policy) if old is None else torch.tensor(old, dtype=torch.float64)
    mask = torch.ones_like(old) if mask is None else torch.tensor(mask, dtype=torch.float64)
    return LossInputs(
        policy_logprobs=policy,
        old_logprobs=old,
        behavior_logprobs=kw.pop("behavior", old.clone()),
        advantages=torch.tensor(adv, dtype=torch.float64).expand_as(old),
        mask=mask,
        global_tokens=float(mask.sum()),
        global_seqs=float(mask.shape[0]),
        max_len=mask.shape[1],
        **kw,
    )


def close(a, b, tol=1e-5) -> None:
    assert torch.allclose(
        torch.as_tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), atol=tol
    ), (a, b)


def test_aggregate_hand_worked():
    # losses [[1, 2, 3], [4, 0, 0]], mask [[1, 1, 1], [1, 0, 0]]
    # token-mean 10 / 4 = 2.5; seq-mean-token-mean (2 + 4) / 2 = 3; sum-norm 10 / (2 * 3) = 1.6667
    x = make([[0, 0, 0], [0, 0, 0]], [[0.0]], mask=[[1, 1, 1], [1, 0, 0]])
    tl = torch.tensor([[1.0, 2, 3], [4, 0, 0]], dtype=torch.float64)
    assert float(aggregate(tl, x, "token-mean")) == pytest.approx(2.5)
    assert float(aggregate(tl, x, "seq-mean-token-mean")) == pytest.approx(3.0)
    assert float(aggregate(tl, x, "seq-mean-token-sum-norm")) == pytest.approx(10 / 6)


def test_kl_estimators_hand_worked():
    # log pi = 0, log pi_ref = log 2: d = 0.693147; k1 = -d; k2 = d^2/2 = 0.240227; k3 = 2 - d - 1
    lp, ref = torch.zeros(1), torch.tensor([math.log(2)])
    close(kl_penalty(lp, ref, "k1"), [-0.693147])
    close(kl_penalty(lp, ref, "k2"), [0.240227])
    close(kl_penalty(lp, ref, "k3"), [0.306853])


def test_kl_reward_penalty_hand_worked():
    # row 0: one token with k3 = 0.306853 -> 1 - 0.1 * 0.306853 = 0.969315; the masked token adds 0
    lp = torch.zeros(2, 2)
    ref = torch.tensor([[math.log(2), 5.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    close(kl_reward_penalty(torch.tensor([1.0, 0.0]), lp, ref, mask, 0.1, "k3"), [0.969315, 0.0])


def test_high_entropy_mask_hand_worked():
    # n = 5 valid tokens; rho 0.2 -> k = 1 (keep 0.9); rho 0.4 -> k = 2 (0.9, 0.7)
    h = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    close(high_entropy_mask(h, torch.ones(1, 5), 0.2), [[0, 1, 0, 0, 0]])
    close(high_entropy_mask(h, torch.ones(1, 5), 0.4), [[0, 1, 0, 0, 1]])
    # masking out the 0.9 token: 4 valid, k = ceil(0.8) = 1 -> 0.7
    close(high_entropy_mask(h, torch.tensor([[1.0, 0, 1, 1, 1]]), 0.2), [[0, 0, 0, 0, 1]])
    assert high_entropy_mask(h, torch.zeros(1, 5), 0.2).sum() == 0  # empty mask


@pytest.mark.parametrize("seed", range(3))
def test_high_entropy_mask_matches_sort(seed):
    g = torch.Generator().manual_seed(seed)
    h, mask = torch.rand(4, 9, generator=g), (torch.rand(4, 9, generator=g) > 0.3).float()
    out = high_entropy_mask(h, mask, 0.2)
    vals = sorted((float(v) for v, m in zip(h.flatten(), mask.flatten(), strict=True) if m > 0), reverse=True)
    k = math.ceil(0.2 * len(vals))
    assert int(out.sum()) == k and set(h[out > 0].tolist()) == set(vals[:k])


def test_ppo_clip_hand_worked_value_and_grad():
    # rho = [1.5, 0.5, 1.0], A = [1, -1, 2], eps 0.2 / 0.28
    # t1: max(-1.5, -1.28) = -1.28 (clipped, no grad); t2: max(0.5, 0.8) = 0.8 (clipped, no grad)
    # t3: -2 (grad d/dlp = -A rho = -2); token-mean over 3: (-1.28 + 0.8 - 2) / 3 = -0.826667
    x = make([[math.log(1.5), math.log(0.5), 0.0]], [[1.0, -1.0, 2.0]])
    out = ppo_clip(x, AlgorithmConfig(clip_high=0.28))
    assert out.loss.item() == pytest.approx(-0.826667, abs=1e-5)
    out.loss.backward()
    close(x.policy_logprobs.grad, [[0.0, 0.0, -2 / 3]])
    assert out.metrics["clip_frac"] == pytest.approx(2 / 3)


def test_ppo_dual_clip_hand_worked():
    # rho = 4, A = -1: max(4, 0.8 * 1) = 4; dual clip c = 3 -> min(4, 3) = 3
    x = make([[math.log(4.0)]], [[-1.0]])
    assert ppo_clip(x, AlgorithmConfig()).loss.item() == pytest.approx(4.0)
    assert ppo_clip(x, AlgorithmConfig(dual_clip=3.0)).loss.item() == pytest.approx(3.0)


def test_gspo_hand_worked_value_and_grad():
    # one sequence, log rho = [log 1.2, log 0.8] -> log s = (0.182322 - 0.223144) / 2 = -0.020411
    # s = 0.979796; A = 1 within the clip -> each token -s, seq-mean-token-mean -0.979796
    # gradient of the sequence form -exp(mean(lp)) A: d/dlp_t = -s A / 2 = -0.489898
    x = make([[math.log(1.2), math.log(0.8)]], [[1.0]])
    out = gspo(x, AlgorithmConfig(agg="seq-mean-token-mean"))
    assert out.loss.item() == pytest.approx(-0.979796, abs=1e-5)
    out.loss.backward()
    close(x.policy_logprobs.grad, [[-0.489898, -0.489898]])
    # with GSPO's tiny clip and A = -1: clipped 1 - 3e-4 wins -> loss 0.9997, zero gradient
    y = make([[math.log(1.2), math.log(0.8)]], [[-1.0]])
    out = gspo(y, AlgorithmConfig(clip_low=3e-4, clip_high=4e-4, agg="seq-mean-token-mean"))
    assert out.loss.item() == pytest.approx(0.9997, abs=1e-6)
    out.loss.backward()
    close(y.policy_logprobs.grad, [[0.0, 0.0]])


def test_cispo_hand_worked_value_and_grad():
    # rho = [1.5, 0.5], A = [1, -1], no lower bound, upper 1.2 -> w = [1.2, 0.5]
    # L = -w A log pi = [-1.2 * 0.405465, -0.5 * -1 * -0.693147] = [-0.486558, -0.346574]
    # token-mean: -0.416566; gradient -w A / 2 = [-0.6, 0.25]
    x = make([[math.log(1.5), math.log(0.5)]], [[1.0, -1.0]])
    out = cispo(x, AlgorithmConfig(clip_low=1.0, clip_high=0.2))
    assert out.loss.item() == pytest.approx(-0.416566, abs=1e-5)
    out.loss.backward()
    close(x.policy_logprobs.grad, [[-0.6, 0.25]])


def naive_token_loss(
    name: str, lp: list[float], old: list[float], adv: float, cfg: AlgorithmConfig
) -> list[float]:
    if name == "gspo":
        s = math.exp(sum(a - b for a, b in zip(lp, old, strict=True)) / max(len(lp), 1))
        c = min(max(s, 1 - cfg.clip_low), 1 + cfg.clip_high)
        return [max(-s * adv, -c * adv)] * len(lp)
    out = []
    for a, b in zip(lp, old, strict=True):
        rho = math.exp(a - b)
        c = min(max(rho, 1 - cfg.clip_low), 1 + cfg.clip_high)
        out.append(-c * adv * a if name == "cispo" else max(-rho * adv, -c * adv))
    return out


@pytest.mark.parametrize("name", ["ppo_clip", "gspo", "cispo"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_losses_match_naive_loop(name, agg):
    g = torch.Generator().manual_seed(7)
    b, t = 5, 6
    lengths = [6, 3, 1, 0, 4]
    mask = torch.tensor([[1.0] * n + [0.0] * (t - n) for n in lengths], dtype=torch.float64)
    old = (-torch.rand(b, t, generator=g) * 2).double()
    pol = (old + 0.3 * torch.randn(b, t, generator=g).double()).tolist()
    adv = torch.randn(b, generator=g).double()
    cfg = AlgorithmConfig(loss=name, agg=agg, clip_high=0.28)
    x = make(pol, adv[:, None].tolist(), old=old.tolist(), mask=mask.tolist())
    x.global_tokens, x.global_seqs, x.max_len = 30.0, 8.0, 10  # a bigger step: denominators are global
    total = 0.0
    for i, n in enumerate(lengths):
        tl = naive_token_loss(name, pol[i][:n], old[i, :n].tolist(), float(adv[i]), cfg)
        if agg == "token-mean":
            total += sum(tl) / 30.0
        elif agg == "seq-mean-token-mean":
            total += (sum(tl) / max(n, 1)) / 8.0
        else:
            total += sum(tl) / (8.0 * 10)
    assert LOSSES.get(name)(x, cfg).loss.item() == pytest.approx(total, abs=1e-9)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_edge_cases_finite(name):
    cfg = AlgorithmConfig(loss=name, kl_coef=0.1, entropy_coef=0.01, entropy_mask_rho=0.2)
    # empty mask (all zero-length completions), zero advantages, extreme ratios
    for mask in ([[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]]):
        x = make(
            [[-50.0, 0.0], [0.0, 30.0]],
            [[0.0], [1.0]],
            mask=mask,
            ref_logprobs=torch.zeros(2, 2, dtype=torch.float64),
            entropy=torch.ones(2, 2, dtype=torch.float64),
        )
        x.global_tokens = float(torch.tensor(mask).sum())
        out = LOSSES.get(name)(x, cfg)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(x.policy_logprobs.grad).all()
        assert all(math.isfinite(v) for v in out.metrics.values())


def test_entropy_mask_restricts_gradient():
    # two tokens, entropies [0.1, 2.0], rho 0.5 -> only token 2 carries policy gradient
    x = make([[0.0, 0.0]], [[1.0]], entropy=torch.tensor([[0.1, 2.0]], dtype=torch.float64))
    ppo_clip(x, AlgorithmConfig(entropy_mask_rho=0.5)).loss.backward()
    close(x.policy_logprobs.grad, [[0.0, -0.5]])
    with pytest.raises(ValueError, match="entropy"):
        ppo_clip(make([[0.0]], [[1.0]]), AlgorithmConfig(entropy_mask_rho=0.5))


def test_kl_and_entropy_terms_are_added():
    # rho = 1, A = 0: surrogate 0; k3 KL with ref = log 2 -> 0.306853 * 0.1; entropy 1.5 * 0.01
    x = make(
        [[0.0]],
        [[0.0]],
        ref_logprobs=torch.tensor([[math.log(2)]], dtype=torch.float64),
        entropy=torch.tensor([[1.5]], dtype=torch.float64),
    )
    out = ppo_clip(x, AlgorithmConfig(kl_coef=0.1, entropy_coef=0.01))
    assert out.loss.item() == pytest.approx(0.0306853 - 0.015, abs=1e-6)
    assert out.metrics["kl"] == pytest.approx(0.306853, abs=1e-5)
