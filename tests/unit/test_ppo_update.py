"""The PPO update on the tiny model: old log-probs recorded once, several optimizer steps over
shuffled mini-batches, so ratios leave 1 and clipping, GSPO and clip-higher act; resume draws
the same mini-batches; a step with every row dropped does not move the weights."""

from __future__ import annotations

import copy

import pytest
import torch

import node.trainer as trainer_mod
from node.node import Node
from node.trainer import minibatch_orders


@pytest.fixture(scope="module")
def batch(model_cache, tmp_path_factory):
    """Eight completions of the tiny model (two prompts, G = 4) and fixed +-1 advantages."""
    from node.config import load_config
    from tests.conftest import ROOT

    cfg = load_config([ROOT / "configs" / "tiny.yaml"], [f"model.cache_dir={model_cache}",
                      f"logging.run_dir={tmp_path_factory.mktemp('ppo')}"])  # fmt: skip
    n = Node(cfg)
    torch.manual_seed(0)
    groups = n.engine.generate(n.renderer.requests(n.sampler.sample(0, 2)), 4, n.sampling)
    comps = [c for g in groups for c in g.completions]
    return cfg, n.policy.model.state_dict(), comps, torch.tensor([1.0, -1.0] * 4)


def trainer_for(batch, tiny_config, *overrides: str) -> Node:
    cfg, state, _, _ = batch
    n = Node(tiny_config(*overrides))
    n.policy.model.load_state_dict(copy.deepcopy(state))
    return n


def recorded_losses(monkeypatch) -> list[dict]:
    """Record every policy-loss call's metrics and the row fields it saw."""
    calls: list[dict] = []
    real = trainer_mod.policy_loss

    def spy(inputs, cfg):
        out = real(inputs, cfg)
        calls.append(
            out.metrics
            | {
                "sources": inputs.sources.tolist(),
                "versions": inputs.behavior_versions.tolist(),
                "weights": inputs.row_weights.tolist() if inputs.row_weights is not None else None,
            }
        )
        return out

    monkeypatch.setattr(trainer_mod, "policy_loss", spy)
    return calls


def updated(batch, tiny_config, *overrides: str) -> dict[str, torch.Tensor]:
    _, _, comps, adv = batch
    n = trainer_for(batch, tiny_config, "trainer.lr=0.05", "trainer.micro_batch_size=8", *overrides)
    n.trainer.update(comps, adv)
    return {k: v.clone() for k, v in n.policy.model.state_dict().items()}


def differ(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[k], b[k], atol=1e-7, rtol=0) for k in a)


def test_minibatch_orders_cover_every_row_once_per_epoch():
    gen = torch.Generator().manual_seed(0)
    orders = minibatch_orders(5, 2, 2, gen)
    assert [len(o) for o in orders] == [2, 2, 1, 2, 2, 1]
    assert sorted(orders[0] + orders[1] + orders[2]) == list(range(5))
    assert sorted(orders[3] + orders[4] + orders[5]) == list(range(5))
    assert minibatch_orders(5, None, 1, gen) == [[0, 1, 2, 3, 4]]  # the default keeps the order
    again = minibatch_orders(5, 2, 2, torch.Generator().manual_seed(0))
    assert again == orders  # a generator seeded alike draws alike (resume)


def test_second_minibatch_sees_ratios_off_one_and_clips(batch, tiny_config, monkeypatch):
    _, _, comps, adv = batch
    calls = recorded_losses(monkeypatch)
    n = trainer_for(
        batch, tiny_config, "trainer.lr=0.05", "trainer.micro_batch_size=8", "trainer.mini_batch_size=4"
    )
    m = n.trainer.update(comps, adv)
    first, second = calls
    assert (
        first["ratio_mean"] == pytest.approx(1.0, abs=1e-4) and first["clip_frac"] == 0.0
    )  # pi_theta == pi_old
    assert abs(second["ratio_mean"] - 1.0) > 1e-3 and second["clip_frac"] > 0  # the weights moved
    assert m["optimizer_steps"] == 2 and n.trainer.version == 1  # one policy version per training step
    assert m["clip_frac"] == pytest.approx((first["clip_frac"] + second["clip_frac"]) / 2)


def test_gspo_and_grpo_agree_on_policy_and_differ_off_policy(batch, tiny_config):
    grpo = ("algorithm.loss=ppo_clip", "algorithm.agg=seq-mean-token-mean")
    gspo = ("algorithm.loss=gspo", "algorithm.agg=seq-mean-token-mean")
    # one on-policy step: the sequence ratio and the token ratios are all 1, same gradient
    assert not differ(updated(batch, tiny_config, *grpo), updated(batch, tiny_config, *gspo))
    two = ("trainer.mini_batch_size=4",)
    assert differ(updated(batch, tiny_config, *grpo, *two), updated(batch, tiny_config, *gspo, *two))


def test_clip_higher_changes_the_update_only_off_policy(batch, tiny_config):
    low, high = "algorithm.clip_high=0.2", "algorithm.clip_high=0.28"
    assert not differ(updated(batch, tiny_config, low), updated(batch, tiny_config, high))
    two = ("trainer.ppo_epochs=2",)
    assert differ(updated(batch, tiny_config, low, *two), updated(batch, tiny_config, high, *two))


def test_old_logprobs_are_recorded_once_before_any_weight_moves(batch, tiny_config, monkeypatch):
    _, _, comps, adv = batch
    n = trainer_for(batch, tiny_config, "trainer.ppo_epochs=3", "trainer.mini_batch_size=4")
    passes = []
    real = n.trainer.policy_logprobs
    monkeypatch.setattr(n.trainer, "policy_logprobs", lambda rows: passes.append(len(rows)) or real(rows))
    assert n.trainer.update(comps, adv)["optimizer_steps"] == 6
    assert passes == [8]
    loglinear = trainer_for(batch, tiny_config, "algorithm.prox_logprobs=loglinear")
    monkeypatch.setattr(
        loglinear.trainer, "policy_logprobs", lambda rows: pytest.fail("no proximal pass with loglinear")
    )
    loglinear.trainer.update(comps, adv)


def test_a_resume_mid_run_draws_the_same_minibatches(tiny_config, tmp_path):
    over = ("trainer.mini_batch_size=3", "trainer.ppo_epochs=2", "checkpoint.every=2", "checkpoint.keep=5")
    straight = Node(tiny_config(*over, f"logging.run_dir={tmp_path / 'a'}"))
    straight.run(4)
    resumed = Node(tiny_config(*over, f"logging.run_dir={tmp_path / 'b'}"))
    assert resumed.resume(straight.ckpt_dir / "step_00000002") and resumed.step == 2
    resumed.run(4)
    a, b = straight.policy.model.state_dict(), resumed.policy.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_all_rows_truncated_under_mask_truncated_moves_nothing(tiny_config):
    """Review defect: when every row was dropped the node trained on all of them anyway."""
    n = Node(tiny_config("rollout.max_new_tokens=1", "algorithm.mask_truncated=true", "trainer.lr=0.05"))
    before = {k: v.clone() for k, v in n.policy.model.state_dict().items()}
    m = n.train_step()
    assert m["truncated_frac"] == 1.0 and m["rows_dropped"] == 8
    assert m["skipped_empty_batch"] == 1.0 and n.trainer.version == 0
    assert not differ(before, n.policy.model.state_dict())
