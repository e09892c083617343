"""The toy harness of `benchmarks/toy/` works: T1's exact success rates are the ones its policy
samples with, a few T1 GRPO steps raise the expected reward, T2's warm start leaves a level
that is neither solved nor hopeless, and T2 trains through the node's own `Node` and `Trainer`
(`benchmarks/toy/adapter.py`).  Tiny sizes: a few seconds in all."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.toy.adapter import ToyAddition, toy_config, toy_parts  # noqa: E402
from benchmarks.toy.bandit import BanditPolicy, BanditSpec, sample_batch, train_step  # noqa: E402
from benchmarks.toy.seqmodel import (  # noqa: E402
    EOS,
    FMT,
    GPTConfig,
    TinyGPT,
    make_problems,
    sample,
    score,
    target_completions,
    warm_start,
)
from node.algos.config import AlgorithmConfig  # noqa: E402
from node.node import Node  # noqa: E402


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


def test_t2_node_step_through_the_adapter_changes_every_parameter(tmp_path):
    """A solo `Node` built from toy parts runs its own sampler, scoring, advantages and PPO update:
    4 mini-batches of 16 rows = 4 optimizer steps, clipping measured, every parameter moved."""
    torch.manual_seed(0)
    net = TinyGPT(GPTConfig(n_layer=1, d_model=32, n_head=2))
    before = [q.detach().clone() for q in net.parameters()]
    cfg = toy_config(
        0, {"algorithm": {"advantage": "dr_grpo", "entropy_coef": 0.01}}
    )  # every row has gradient
    node = Node(cfg, tmp_path, toy_parts(net, ToyAddition(seed=0, size=200), sample_seed=1))
    metrics = node.train_step()
    assert metrics["optimizer_steps"] == 4 and "clip_frac" in metrics and "entropy" in metrics
    assert node.trainer.version == 1 and node.engine.version == 1
    assert all(not torch.equal(b, q) for b, q in zip(before, net.parameters(), strict=True))


def test_t2_exp_trainer_is_the_nodes():
    """exp_t2's experiments train with the node's `Trainer` (no trainer of their own)."""
    from benchmarks.toy import exp_t2
    from node.trainer import Trainer

    net = TinyGPT(GPTConfig(n_layer=1, d_model=16, n_head=2))
    trainer = exp_t2.node_trainer(net, AlgorithmConfig(advantage="grpo"), rows=64, minibatches=4, seed=0)
    assert isinstance(trainer, Trainer) and trainer.cfg.mini_batch_size == 16 and trainer.cfg.lr == exp_t2.LR
