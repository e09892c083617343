"""Trainer and node on the tiny model: a step moves every parameter; GRPO end to end."""

from __future__ import annotations

import torch

from node.node import Node


def test_one_step_changes_every_trainable_parameter(tiny_config):
    node = Node(tiny_config("trainer.lr=1e-2"))
    before = {n: p.detach().clone() for n, p in node.policy.model.named_parameters() if p.requires_grad}
    # rewards must vary inside a group or GRPO advantages are all zero: try a few steps
    for _ in range(4):
        metrics = node.train_step()
        if metrics["zero_var_groups"] < 1.0:
            break
    assert metrics["zero_var_groups"] < 1.0, "no reward variance in 4 steps; the test cannot check learning"
    unchanged = [n for n, p in node.policy.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []
    assert node.trainer.version == node.step


def test_step_metrics_are_finite_and_complete(tiny_config):
    node = Node(tiny_config())
    m = node.train_step()
    for key in ["reward_mean", "reward/correctness", "reward/format", "adv_mean", "adv_std", "clip_frac",
                "entropy", "grad_norm", "gen_tokens_per_s", "train_tokens_per_s", "loss"]:
        assert key in m and torch.isfinite(torch.tensor(float(m[key]))), key
    assert m["clip_frac"] == 0.0  # one on-policy update: ratio == 1 everywhere


def test_kl_term_uses_a_frozen_reference(tiny_config):
    node = Node(tiny_config("algorithm.kl_coef=0.1", "trainer.lr=1e-2"))
    ref = node.trainer.ref_model
    assert ref is not None and not any(p.requires_grad for p in ref.parameters())
    ref_before = [p.clone() for p in ref.parameters()]
    m1 = node.train_step()
    assert abs(m1["kl"]) < 1e-6  # first step: policy == reference
    moved = m1["zero_var_groups"] < 1.0
    for _ in range(4):  # the policy moves only after a step with non-zero advantages
        if moved:
            break
        moved = node.train_step()["zero_var_groups"] < 1.0
    assert moved, "no reward variance in 5 steps; the test cannot check the KL"
    assert node.train_step()["kl"] > 1e-8
    assert all(torch.equal(a, b) for a, b in zip(ref_before, ref.parameters()))


def test_gradient_checkpointing_gives_the_same_update(tiny_config):
    """Recomputing activations in the backward pass changes memory, not the gradient."""
    plain = Node(tiny_config("trainer.lr=1e-2"))
    ckpt = Node(tiny_config("trainer.lr=1e-2", "model.gradient_checkpointing=true"))
    init = {k: v.clone() for k, v in plain.policy.model.state_dict().items()}
    for node in (plain, ckpt):
        torch.manual_seed(3)
        for _ in range(4):  # until a step has reward variance, i.e. really updates
            if node.train_step()["zero_var_groups"] < 1.0:
                break
    a, b = plain.policy.model.state_dict(), ckpt.policy.model.state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a), "no update happened; the test checks nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_entropy_bonus_reaches_the_weights(tiny_config):
    """With an entropy bonus the loss has a gradient even when every advantage is zero."""
    node = Node(tiny_config("trainer.lr=1e-2", "algorithm.entropy_coef=0.5", "algorithm.adv_scale=none",
                            "tasks.rewards={length: 0.0}"))  # constant reward: all advantages 0
    before = {n: p.detach().clone() for n, p in node.policy.model.named_parameters()}
    m = node.train_step()
    assert m["adv_abs_max"] == 0.0 and m["entropy"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in node.policy.model.named_parameters())


def test_the_old_log_prob_pass_runs_only_when_it_can_differ(tiny_config, monkeypatch):
    """One optimizer step: pi_old is the training forward's own log-probs, no second pass;
    several mini-batches (or the foreign gate, which reads it first): the no-grad pass runs."""
    for overrides, passes in ((), 0), (("trainer.mini_batch_size=4",), 1), (("algorithm.foreign_gate=weight",), 1):
        node = Node(tiny_config(*overrides))
        calls = []
        real = node.trainer.policy_logprobs
        monkeypatch.setattr(
            node.trainer, "policy_logprobs", lambda rows, r=real, c=calls: c.append(len(rows)) or r(rows)
        )
        m = node.train_step()
        assert len(calls) == passes, overrides
        assert m["clip_frac"] == 0.0 or passes  # on-policy single step: ratio exactly 1


def test_engine_metrics_reach_the_step_metrics(tiny_config, monkeypatch):
    node = Node(tiny_config())
    once = [{"rollout/compile_s": 1.5}, {}]
    monkeypatch.setattr(node.engine, "metrics", lambda: once.pop(0), raising=False)
    assert node.train_step()["rollout/compile_s"] == 1.5  # the first call's compile time, logged once
    assert "rollout/compile_s" not in node.train_step()
