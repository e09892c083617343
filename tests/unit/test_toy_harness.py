"""The toy harness of `benchmarks/toy/` works: T1's exact success rates are the ones its policy
samples with, a few T1 GRPO steps raise the expected reward, and T2's warm start leaves a level
that is neither solved nor hopeless.  Tiny sizes: a few seconds in all."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.toy.bandit import BanditPolicy, BanditSpec, sample_batch, train_step  # noqa: E402
from benchmarks.toy.seqmodel import (  # noqa: E402
    EOS,
    FMT,
    GPTConfig,
    Trainer,
    make_problems,
    sample,
    score,
    target_completions,
    warm_start,
)
from node.algos import api  # noqa: E402
from node.algos.config import AlgorithmConfig  # noqa: E402
from node.algos.types import AdvantageInputs  # noqa: E402


def test_t1_initial_success_rates_hit_their_targets_and_span_0_1():
    policy = BanditPolicy(BanditSpec(n_prompts=512), seed=0)
    p = policy.success_prob()
    assert torch.allclose(p, policy.p0, atol=1e-4)
    assert p.min() < 0.1 and p.max() > 0.9


def test_t1_true_p_matches_empirical_success_rate():
    policy = BanditPolicy(BanditSpec(n_prompts=512), seed=1)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.arange(8)
    n = 4000
    batch = sample_batch(policy, prompts, n, gen)
    empirical = batch.correct.float().view(8, n).mean(1)
    # binomial s.e. <= 0.5 / sqrt(4000) = 0.008; 5 s.e. = 0.04
    assert torch.allclose(empirical, policy.success_prob(prompts), atol=0.04)


def test_t1_grpo_steps_raise_expected_reward():
    policy = BanditPolicy(BanditSpec(n_prompts=512), seed=2)
    opt = torch.optim.Adam(policy.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(3)
    before = float(policy.success_prob().mean())
    cfg = AlgorithmConfig(advantage="grpo")
    for _ in range(30):
        train_step(
            policy, opt, sample_batch(policy, torch.randint(0, 512, (32,), generator=gen), 8, gen), cfg
        )
    assert float(policy.success_prob().mean()) > before + 0.03


def test_t2_scoring_reads_reversed_digits_and_format():
    gen = torch.Generator().manual_seed(0)
    p = make_problems(torch.tensor([2, 2]), gen)
    good = target_completions(p, torch.tensor([True, False]))
    correct, fmt = score(p, good)
    assert correct.tolist() == [True, True] and fmt.tolist() == [True, False]
    bad = good.clone()
    bad[:, :] = FMT  # no EOS: truncated, neither correct nor formatted
    assert score(p, bad)[0].sum() == 0
    assert EOS in good[0].tolist()


def test_t2_warm_start_gives_pass_rate_strictly_between_0_and_1():
    tiny = GPTConfig(n_layer=1, d_model=32, n_head=2)
    model = warm_start(seed=0, steps=120, batch=64, lr=1e-2, level_weights=(1.0, 0.0, 0.0, 0.0), config=tiny)
    gen = torch.Generator().manual_seed(1)
    rates = {}
    for level in (1, 2):
        roll = sample(model, make_problems(torch.full((32,), level), gen), 4, gen)
        rates[level] = float(roll.correct.float().mean())
    assert any(0.0 < r < 1.0 for r in rates.values()), rates


def test_t2_trainer_step_goes_through_api_and_changes_every_parameter():
    tiny = GPTConfig(n_layer=1, d_model=32, n_head=2)
    model = warm_start(seed=1, steps=5, batch=16, config=tiny)
    before = [q.detach().clone() for q in model.parameters()]
    cfg = AlgorithmConfig(advantage="dr_grpo", entropy_coef=0.01)  # entropy bonus: every row has gradient
    gen = torch.Generator().manual_seed(2)
    roll = sample(model, make_problems(torch.tensor([1, 2, 3, 4]), gen), 4, gen)
    rewards = torch.rand(len(roll.correct), generator=gen)
    out = api.advantages_with_keep(AdvantageInputs(rewards=rewards, group_ids=roll.group_ids), cfg)
    metrics = Trainer(model, cfg, lr=1e-2).train_on(roll, out.advantages, out.keep, minibatches=2)
    assert "entropy" in metrics and "clip_frac" in metrics
    assert all(not torch.equal(b, q) for b, q in zip(before, model.parameters(), strict=True))


def test_t2_dynamic_sampling_batch_keeps_whole_groups_up_to_the_target():
    from benchmarks.toy.exp_t2 import select_rollouts

    model = warm_start(seed=2, steps=1, batch=8, config=GPTConfig(n_layer=1, d_model=16, n_head=2))
    gen = torch.Generator().manual_seed(4)
    parts = []
    for kept_groups in ([0, 2, 3], [1], [0, 1, 2, 3]):  # 3 + 1 + 4 kept groups of 4 rows each
        roll = sample(model, make_problems(torch.tensor([1, 2, 3, 4]), gen), 4, gen)
        parts.append((roll, torch.isin(roll.group_ids, torch.tensor(kept_groups))))
    batch = select_rollouts(parts, max_groups=6)
    assert batch.group_ids.tolist() == [g for g in range(6) for _ in range(4)]
    assert torch.equal(batch.tokens[:4], parts[0][0].tokens[:4])  # first kept group of round 1
    assert torch.equal(batch.tokens[12:16], parts[1][0].tokens[4:8])  # the one kept group of round 2
