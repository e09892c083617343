"""The api the trainer/node calls: keep masks, modifiers in order, requirements, shaping, LR scale."""

from __future__ import annotations

import math

import pytest
import torch

from node.algos import api
from node.algos.config import AlgorithmConfig
from node.algos.types import AdvantageInputs


def test_mc_grpo_pivot_becomes_keep_false():
    # two groups of G + 1 = 3; one pivot each comes back keep=False with advantage 0
    x = AdvantageInputs(
        rewards=torch.tensor([0.2, 1.0, 0.5, 1, 0, 0]), group_ids=torch.tensor([0, 0, 0, 1, 1, 1])
    )
    out = api.advantages_with_keep(x, AlgorithmConfig(advantage="mc_grpo"))
    assert out.keep.tolist() == [True, True, False, True, True, False]
    assert torch.isfinite(out.advantages).all() and out.advantages[~out.keep].eq(0).all()
    assert torch.equal(api.compute_advantages(x, AlgorithmConfig(advantage="mc_grpo")), out.advantages)


def test_modifiers_apply_in_order_then_clip():
    # dr_grpo on [1, 0]: [0.5, -0.5]; tsallis P = 0.5 -> x 0.5^-0.75 = 1.681793 -> [0.840896, -0.840896]
    # then ace on the negative row (shift 0 -> softplus ln 2): -0.840896 (1 + 0.5 ln 2) = -1.132325
    # then adv_clip 1.0 -> [0.840896, -1.0]
    x = AdvantageInputs(
        rewards=torch.tensor([1.0, 0.0]),
        group_ids=torch.tensor([0, 0]),
        seq_logprobs=torch.zeros(2),
        ref_seq_logprobs=torch.zeros(2),
    )
    cfg = AlgorithmConfig(advantage="dr_grpo", adv_modifiers=["tsallis", "ace"])
    assert torch.allclose(api.compute_advantages(x, cfg), torch.tensor([0.840896, -1.132325]), atol=1e-5)
    cfg = AlgorithmConfig(advantage="dr_grpo", adv_modifiers=["tsallis", "ace"], adv_clip=1.0)
    assert torch.allclose(api.compute_advantages(x, cfg), torch.tensor([0.840896, -1.0]), atol=1e-5)
    assert api.advantages_with_keep(x, cfg).keep.all()


def test_requirements():
    r = api.requirements(AlgorithmConfig())
    assert not (r.ref_logprobs or r.entropy or r.baseline_rewards or r.behavior_versions) and r.old_logprobs
    assert r.extra_rollouts_per_group == 0
    r = api.requirements(
        AlgorithmConfig(
            advantage="mc_grpo", adv_modifiers=["ace"], prox_logprobs="loglinear", entropy_mask_rho=0.2
        )
    )
    assert r.extra_rollouts_per_group == 1 and r.ref_logprobs and r.seq_logprobs and r.entropy
    assert r.behavior_versions and not r.old_logprobs
    assert api.requirements(AlgorithmConfig(advantage="remax")).baseline_rewards
    assert api.requirements(AlgorithmConfig(advantage="gdpo")).components
    assert api.requirements(AlgorithmConfig(kl_reward_coef=0.1)).ref_logprobs
    kl = api.requirements(AlgorithmConfig(kl_coef=0.1))
    assert kl.ref_in_loss and kl.reference_model and not kl.ref_logprobs  # the loss's KL needs no extra pass
    assert api.requirements(AlgorithmConfig(entropy_coef=0.1)).entropy_grad
    assert not api.requirements(AlgorithmConfig(entropy_mask_rho=0.2)).entropy_grad


def test_requirements_come_from_what_an_algorithm_declared_at_registration(monkeypatch):
    """No name checks: an estimator registered with `Needs(...)` gets what it declared."""
    from node.algos.registry import ADVANTAGES, Needs

    assert ADVANTAGES.needs("remax") == Needs(baseline_rewards=True)
    assert not api.requirements(AlgorithmConfig(advantage="rloo")).baseline_rewards
    monkeypatch.setitem(ADVANTAGES._needs, "rloo", Needs(baseline_rewards=True, extra_rollouts_per_group=2))
    r = api.requirements(AlgorithmConfig(advantage="rloo"))
    assert r.baseline_rewards and r.extra_rollouts_per_group == 2
    with pytest.raises(KeyError, match="valid: "):
        ADVANTAGES.needs("nope")


def test_shape_rewards_hand_worked():
    # max_len 10, frac 0.2 -> buffer 2, L_exp 8: lengths [5, 9, 10] -> [0, -0.5, -1]
    # then KL in reward (k1, coef 0.1): row 0 has log pi - log ref = 1 on one token -> -0.1
    rewards, lengths = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([5, 9, 10])
    cfg = AlgorithmConfig(overlong_buffer_frac=0.2)
    assert torch.allclose(api.shape_rewards(rewards, lengths, 10, cfg), torch.tensor([1.0, 0.5, -1.0]))
    cfg = AlgorithmConfig(overlong_buffer_frac=0.2, kl_reward_coef=0.1)
    lp = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    ref = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    out = api.shape_rewards(
        rewards, lengths, 10, cfg, behavior_logprobs=lp, ref_logprobs=ref, mask=torch.ones(3, 2)
    )
    assert torch.allclose(out, torch.tensor([0.9, 0.5, -1.0]))
    with pytest.raises(ValueError, match="ref_logprobs"):
        api.shape_rewards(rewards, lengths, 10, cfg)
    assert torch.equal(api.shape_rewards(rewards, lengths, 10, AlgorithmConfig()), rewards)


def test_row_keep():
    assert api.row_keep(AlgorithmConfig(), truncated=torch.tensor([True])) is None
    assert api.row_keep(AlgorithmConfig(mask_truncated=True), finish_reasons=["length", "stop"]).tolist() == [
        False,
        True,
    ]


def test_lr_scale():
    # sequences with log weights log [1, 2, 3]: ESS/B = 0.857143 -> sqrt = 0.925820; off -> 1
    old = torch.log(torch.tensor([[1.0], [2.0], [3.0]]))
    lw = api.seq_log_weights(old, torch.zeros(3, 1), torch.ones(3, 1))
    assert api.lr_scale(lw, AlgorithmConfig(ess_lr=True)) == pytest.approx(math.sqrt(36 / 42))
    assert api.lr_scale(lw, AlgorithmConfig()) == 1.0
