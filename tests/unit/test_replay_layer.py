"""`ReplayLayer`: resume bit for bit, retirement, the DARS second stage, rollout replay through the
node, and discounted peer evidence.  The node tests run on the toy harness (a briefly warmed tiny
model on one-digit additions, so that some groups carry a signal); the others drive the layer
with hand-built groups."""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.toy.adapter import ToyAddition, toy_config, toy_parts  # noqa: E402
from benchmarks.toy.seqmodel import GPTConfig, warm_start  # noqa: E402
from node.node import Node  # noqa: E402
from node.records import Group, Prompt  # noqa: E402
from node.replay.config import ReplayConfig  # noqa: E402
from node.replay.layer import ReplayLayer  # noqa: E402
from node.sampler import PromptSampler  # noqa: E402
from tests.unit.hand_groups import scored_group  # noqa: E402

REPLAY = {"select": "mopps", "allocate": "knapsack", "replay_fraction": 0.5}
BASE = {
    "rollout": {"prompts_per_step": 4, "group_size": 4},
    "trainer": {"mini_batch_size": 8},
    "algorithm": {"is_level": "token", "is_cap": 2.0},
    "replay": REPLAY,
}


@pytest.fixture(scope="module")
def warm():
    tiny = GPTConfig(n_layer=1, d_model=32, n_head=2)
    return warm_start(seed=0, steps=30, batch=32, lr=1e-2, level_weights=(1.0, 0.0, 0.0, 0.0), config=tiny)


def toy_node(warm, run_dir: Path, overrides: dict | None = None) -> Node:
    torch.manual_seed(0)
    parts = toy_parts(copy.deepcopy(warm), ToyAddition(0, size=400, level_weights=(1, 0, 0, 0)), 5)
    return Node(toy_config(0, BASE | (overrides or {})), run_dir, parts)


def group(prompt: Prompt, correct: list[float], version: int = 0) -> Group:
    return scored_group(prompt, correct, version)


def bare_layer(size: int = 4, group_size: int = 4, **replay) -> tuple[ReplayLayer, ToyAddition]:
    task = ToyAddition(0, size=size, level_weights=(1, 0, 0, 0))
    cfg = ReplayConfig(**({"predictor": "none"} | replay))
    return ReplayLayer(cfg, PromptSampler([task], [1.0], 0), group_size, seed=0), task


# --- (1) resume -----------------------------------------------------------------------------------


def test_resume_restores_the_layer_bit_for_bit(warm, tmp_path):
    a = toy_node(warm, tmp_path)
    for _ in range(3):
        a.train_step()
    a.save()
    b = toy_node(warm, tmp_path)
    assert b.replay.state_dict() != a.replay.state_dict()  # a fresh node knows nothing yet
    assert b.resume() and b.step == a.step == 3
    state = a.replay.state_dict()
    assert (
        state["table"] and state["calibration"]["n"] > 0 and state["predictor"] and state["buffer"]["entries"]
    )
    assert b.replay.state_dict() == state
    assert b.replay.status() == a.replay.status()
    # the next step plans the same prompts with the same sizes
    plan_a, plan_b = a.replay.plan(a.step, 4), b.replay.plan(b.step, 4)
    assert [(p.prompt_id, g) for p, g in plan_a] == [(p.prompt_id, g) for p, g in plan_b]
    assert sum(g for _, g in plan_a) == 4 * 4  # knapsack spends the whole budget


# --- (2) retirement -------------------------------------------------------------------------------


def test_retired_prompts_are_skipped():
    # decay 1, prior (1, 1), no predictor: 24 of 24 -> Beta(25, 1), mean 0.96 >= 0.9, evidence 24;
    # 0 of 24 -> Beta(1, 25), mean 0.038 <= 0.05; 9 of 9 -> Beta(10, 1), mean 0.909 but evidence
    # 9 < 10, so it stays
    layer, task = bare_layer(select="mopps", decay=1.0, revisit=0.0, retire_evidence=10.0)
    solved, hopeless, young, fresh = (task.prompt(i) for i in range(4))
    layer.observe([group(solved, [1.0] * 24), group(hopeless, [0.0] * 24), group(young, [1.0] * 9)], 0)
    assert layer.retired(solved) and layer.retired(hopeless) and not layer.retired(young)
    assert not layer.retired(fresh)
    for step in range(1, 20):
        planned = {p.prompt_id for p, _ in layer.plan(step, 2)}
        assert planned.isdisjoint({solved.prompt_id, hopeless.prompt_id}), step
    assert layer.metrics([])["replay/retired_skips"] > 0
    # revisit = 1: retired prompts are offered anyway
    layer.cfg = layer.cfg.model_copy(update={"revisit": 1.0})
    seen = {p.prompt_id for step in range(1, 20) for p, _ in layer.plan(step, 2)}
    assert {solved.prompt_id, hopeless.prompt_id} & seen


# --- (3) dars ---------------------------------------------------------------------------------------


def test_dars_second_stage_favours_hard_groups_within_the_budget():
    # G = 8, stage 1 = half the budget: n1 = max(2, int(3 * 8 * 0.5) // 3) = 4 per prompt
    layer, task = bare_layer(size=50, group_size=8, allocate="dars", dars_schedule="et")
    planned = layer.plan(0, 3)
    assert [g for _, g in planned] == [4, 4, 4]
    p = [prompt for prompt, _ in planned]
    # et, n1 = 4, target 0.5 n1 = 2:
    #   0/4 is read as a = 0.5/4 = 0.125: S = 2 * 0.125 * 0.875 = 0.21875, dN = ceil((2 - 0.875) / S) = 6
    #   1/4: S = 0.375, dN = ceil((2 - 1.5) / 0.375) = 2;  2/4: a >= 0.5, nothing
    # 8 asked, 3 * (8 - 4) = 12 left in the budget: all granted
    groups = [group(p[0], [0, 0, 0, 0]), group(p[1], [1, 0, 0, 0]), group(p[2], [1, 1, 0, 0])]
    assert layer.extra(groups) == [6, 2, 0]
    # hw, target (1 - a) n1: 0/4 -> ceil((3.5 - 0.875) / 0.21875) = 12; 1/4 -> ceil((3 - 1.5) / 0.375) = 4
    # 12 + 12 + 4 = 28 > 12: fit_to_budget gives floor(x * 12 / 28) = (5, 5, 1), the one left over to
    # the largest request first (index 0): (6, 5, 1), 12 in all
    layer, task = bare_layer(size=50, group_size=8, allocate="dars", dars_schedule="hw")
    p = [prompt for prompt, _ in layer.plan(0, 3)]
    more = layer.extra([group(p[0], [0] * 4), group(p[1], [0] * 4), group(p[2], [1, 0, 0, 0])])
    assert more == [6, 5, 1] and sum(more) == 3 * (8 - 4)
    # other allocators never ask for a second stage
    layer, _ = bare_layer(size=50, group_size=8, allocate="knapsack")
    assert layer.extra([group(p[0], [0] * 4)]) == [0]


# --- (4) rollout replay -----------------------------------------------------------------------------


def test_replayed_groups_are_older_policy_samples(warm, tmp_path):
    node = toy_node(warm, tmp_path)
    first = node.train_step()
    assert first["replay/replayed"] == 0 and len(node.replay.buffer) > 0  # kept: groups with a signal
    version = node.trainer.version
    assert version > 0
    handed, trained = [], []
    replay, update = node.replay.replay, node.trainer.update
    node.replay.replay = lambda *a: handed.extend(replay(*a)) or handed
    node.trainer.update = lambda rows, adv, *more: trained.extend(rows) or update(rows, adv, *more)
    second = node.train_step()
    # half of 4 prompts is 2; the buffer may hold fewer
    assert second["replay/replayed"] == len(handed) == min(2, int(first["replay/buffer"])) > 0
    assert second["replay/replay_share"] == len(handed) / 4
    assert all(c.policy_version < version for g in handed for c in g.completions)
    old = [c for c in trained if c.policy_version < version]
    assert old and all(c.behavior_logprobs for c in old)  # trained on, with their behaviour log-probs
    assert second["replay/generated"] == (4 - len(handed)) * 4  # the rest of the budget is fresh


# --- (5) peer evidence ------------------------------------------------------------------------------


def test_peer_evidence_counts_rho_n_and_skips_calibration():
    # prior (1, 1), decay 0.5, rho 0.3, no predictor (an unseen prompt starts at the prior):
    #   2 of 4 from a peer -> alpha = 0.5 + 0.5 + 0.3 * 2 = 1.6, beta = 1.6, evidence 0.3 * 4 = 1.2
    layer, task = bare_layer(decay=0.5, rho=0.3, select="mopps")
    p, q = task.prompt(0), task.prompt(1)
    layer.observe([group(p, [1, 1, 0, 0])], step=3, local=False)
    est = layer.table.get(p.prompt_id)
    assert (est.alpha, est.beta, est.evidence) == (pytest.approx(1.6), pytest.approx(1.6), pytest.approx(1.2))
    assert layer.calibration.sums["n"] == 0 and layer.calibration.step == []
    m = layer.metrics([])
    assert "replay/brier" not in m and m["replay/generated"] == 0
    # our own group of the same size moves it by n: 0.5 * 1.6 + 0.5 + 4 = 5.3, 0.5 * 1.6 + 0.5 = 1.3;
    # and is scored against the estimate before it (0.5): (0.5 - 1)^2 = 0.25
    layer.observe([group(p, [1, 1, 1, 1]), group(q, [0, 0, 0, 0])], step=4)
    est = layer.table.get(p.prompt_id)
    assert (est.alpha, est.beta) == (pytest.approx(5.3), pytest.approx(1.3))
    m = layer.metrics([])
    assert m["replay/brier"] == pytest.approx((0.25 + 0.25) / 2) and m["replay/generated"] == 8
    assert m["replay/known_prompts"] == 2


def test_layer_state_dict_round_trip_without_a_node():
    layer, task = bare_layer(select="gdro", predictor="ngram", replay_fraction=0.5)
    rng = random.Random(0)
    groups = [group(task.prompt(i), [float(rng.random() < 0.5) for _ in range(4)], 0) for i in range(4)]
    layer.observe(groups, 0)
    layer.keep(groups, 0, now_ms=1000)
    layer.metrics(groups)
    other, _ = bare_layer(select="gdro", predictor="ngram", replay_fraction=0.5)
    other.load_state_dict(layer.state_dict(), lambda t, qn: task.lookup(qn))
    assert other.state_dict() == layer.state_dict()
    assert other.plan(1, 2) == layer.plan(1, 2)


def test_keep_holds_two_groups_of_one_prompt_drawn_twice_in_a_step():
    # the sampler draws with replacement, so one step may hold the same prompt twice: both are ours
    layer, task = bare_layer(replay_fraction=0.5)
    p = task.prompt(0)
    layer.keep([group(p, [1, 0, 0, 0]), group(p, [1, 1, 0, 0]), group(p, [0, 0, 0, 0])], step=2, now_ms=1)
    assert [e.group_id for e in layer.buffer.entries] == [
        f"local:2:0:{p.prompt_id}",
        f"local:2:1:{p.prompt_id}",
    ]
    assert layer.buffer.counts["duplicate"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm": {"advantage": "mc_grpo", "is_level": "token", "is_cap": 2.0}},  # G+1 on uneven G
        {"algorithm": {"dynamic_sampling": True, "max_gen_rounds": 3, "is_level": "token", "is_cap": 2.0}},
        {"replay": {"select": "dots", "allocate": "dars"}},
    ],
    ids=["mc-grpo+knapsack", "dynamic-sampling+mopps", "dots+dars"],
)
def test_algorithm_switches_keep_working_through_the_layer(warm, tmp_path, overrides):
    """MC-GRPO's extra completion is added to every planned G (knapsack makes them uneven), and
    dynamic sampling's extra rounds are planned by the layer too; each generation call asks for
    what the plan said."""
    node = toy_node(warm, tmp_path, overrides)
    asked: list[list[int]] = []
    generate, plan = node.engine.generate, node.replay.plan
    planned: list[list[int]] = []

    def recording_plan(step, n, rnd=0):
        out = plan(step, n, rnd)
        planned.append([g for _, g in out])
        return out

    def recording(requests, group_size, sampling):
        asked.append([group_size] * len(requests))
        return generate(requests, group_size, sampling)

    node.engine.generate, node.replay.plan = recording, recording_plan
    if node.cfg.replay.allocate == "knapsack":  # estimates far apart, so the allocation is uneven
        node.replay.means = lambda prompts: [0.1 if i % 2 else 0.6 for i in range(len(prompts))]
    for _ in range(2):
        m = node.train_step()
    extra = node.req.extra_rollouts_per_group
    if node.cfg.replay.allocate != "dars":  # dars adds a second stage the plan does not list
        assert sorted(g + extra for p in planned for g in p) == sorted(g for a in asked for g in a)
    if extra:
        assert extra == 1 and len({g for p in planned for g in p}) > 1  # uneven G, each with its +1
    assert m["loss"] == m["loss"]  # finite, the step trained
    if node.cfg.algorithm.dynamic_sampling:
        assert len(planned) >= 2 and m["gen_rounds"] >= 1
