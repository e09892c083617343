"""The toy SAPO harness runs the node's own code: the T2 model behind the node's protocols
(`benchmarks/toy/adapter.py`), two toy `Node`s in join mode over an in-memory link, and the
agent's liar wrapper and drift measure (`benchmarks/sapo/agent.py`).  No network; a tiny model
warm-started for a few seconds."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import node.swarm_link  # noqa: E402
from benchmarks.sapo.agent import drift, liar_groups  # noqa: E402
from benchmarks.toy.adapter import ToyAddition, ToyTokenizer, toy_config, toy_parts  # noqa: E402
from benchmarks.toy.seqmodel import DIGIT0, EOS, FMT, GPTConfig, TinyGPT, warm_start  # noqa: E402
from node.node import Node  # noqa: E402
from node.records import Completion, Group  # noqa: E402
from node.scoring import score_group  # noqa: E402
from tests.unit.fake_link import FakeLink  # noqa: E402

TINY = GPTConfig(n_layer=1, d_model=32, n_head=2)
LEVEL1 = (1.0, 0.0, 0.0, 0.0)  # one-digit sums: a tiny model gets some right after a short warm start


@pytest.fixture(scope="module")
def warm() -> dict:
    return warm_start(seed=0, steps=150, batch=64, lr=1e-2, level_weights=LEVEL1, config=TINY).state_dict()


def toy_node(warm: dict, tmp_path: Path, index: int, join: bool = True, **over) -> Node:
    net = TinyGPT(TINY)
    net.load_state_dict(warm)
    task = ToyAddition(seed=0, size=500, level_weights=LEVEL1)
    swarm = {"mode": "join", "external_groups": 2, "per_peer_cap": 2} if join else {}
    cfg = toy_config(index, {"rollout": {"prompts_per_step": 4}, "swarm": swarm, **over})
    return Node(cfg, tmp_path / f"node{index}", toy_parts(net, task, sample_seed=index))


def test_text_round_trips_and_scores_through_the_nodes_rewards() -> None:
    tok, task = ToyTokenizer(), ToyAddition(seed=0, size=50)
    ids = [FMT, DIGIT0 + 9, DIGIT0 + 7, DIGIT0 + 5]
    assert tok.decode(ids + [EOS]) == ">975"
    assert tok(">975")["input_ids"] == ids
    for bad in ("$", "^12", "x1", " 1"):  # special tokens and characters outside the vocabulary
        with pytest.raises(ValueError):
            tok(bad)
    # 123 + 456 = 579, written least significant digit first: "975" (the `>` is optional).
    prompt = task._make("toy_add:0:x", 3, 123, 456)
    assert prompt.question == "0123+0456" and prompt.answer == "975"

    def reward(text: str) -> float:
        c = Completion(prompt, [], tok(text)["input_ids"] + [EOS], [], text, "stop", 0)
        return score_group(Group(prompt, (c,)), task, {"correctness": 1.0}, 8).completions[0].reward

    assert [reward(t) for t in (">975", "975", ">976", ">97", "")] == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_heldout_questions_never_appear_in_training_and_lookup_finds_ours() -> None:
    task = ToyAddition(seed=3, size=2000)
    train = {task.prompt(i).question for i in range(len(task))}
    held = task.heldout()
    assert len(held) == 20 + 3 * 64  # level 1 has 100 questions: a fifth is held out
    assert not train & {p.question for p in held}
    assert task.lookup(task.prompt(7).question).answer == task.prompt(7).answer
    assert task.lookup(held[0].question) is None


def test_engine_logprobs_are_the_node_trainers(warm, tmp_path) -> None:
    """The engine's behaviour log-probs equal the trainer's recomputation on the same weights, so
    a local row's importance ratio starts at exactly 1."""
    n = toy_node(warm, tmp_path, 0, join=False)
    task = n.sampler.tasks[0]
    groups = n.engine.generate(n.renderer.requests([task.prompt(i) for i in range(3)]), 4, n.sampling)
    comps = [c for g in groups for c in g.completions]
    assert all(c.completion_ids[-1] == EOS or c.truncated for c in comps)
    for mine, theirs in zip(n.trainer.policy_logprobs(comps), comps):
        assert mine == pytest.approx(theirs.behavior_logprobs, abs=1e-5)


def test_join_step_trains_on_a_peers_toy_groups(warm, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    a, b = toy_node(warm, tmp_path, 1), toy_node(warm, tmp_path, 2)
    try:
        for _ in range(3):  # until a's groups include some with signal on correctness
            a.train_step()
        b.sharing.link.inbox = list(a.sharing.link.sent)
        before = [p.detach().clone() for p in b.policy.model.parameters()]
        m = b.train_step()
        admitted = b.admission.counts["admitted"]
        assert admitted >= 1 and admitted + b.admission.counts["zero_variance"] == 3 * 6
        assert m["swarm/external_groups"] == min(2, admitted) and m["swarm/external_peers"] == 1
        assert m["optimizer_steps"] == 3  # 4 local + 2 peer groups = 48 rows, mini-batches of 16
        assert all(not torch.equal(x, p) for x, p in zip(before, b.policy.model.parameters()))
    finally:
        a.close()
        b.close()


def test_a_liar_is_refused_by_the_nodes_admission_and_reported(warm, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    liar, honest = toy_node(warm, tmp_path, 3), toy_node(warm, tmp_path, 4)
    try:
        publish, rng = liar.sharing.publish, random.Random(0)
        liar.sharing.publish = lambda groups, sampling: publish(
            liar_groups(groups, rng, liar.sampler.tasks[0]), sampling
        )
        liar.train_step()
        sent = liar.sharing.link.sent
        for item in sent:  # every claim is the opposite of the truth
            wire, task = item.group, liar.sampler.tasks[0]
            prompt = task.lookup(wire.task.question)
            for wc in wire.completions:
                truth = 1.0 if wc.text.lstrip(">") == prompt.answer else 0.0
                assert wc.claimed_rewards["correctness"] == 1.0 - truth
        honest.sharing.link.inbox = list(sent)
        m = honest.train_step()
        assert honest.admission.counts["reward_mismatch"] == len(sent) and m["swarm/external_groups"] == 0
        assert {o for o, _ in honest.sharing.link.reports} == {liar.sharing.peer_id}
    finally:
        liar.close()
        honest.close()


def test_drift_hand_worked() -> None:
    # Two sequences: log-ratios (0.5, -0.1) and (0.0, -1.0): sums 0.4 and -1.0, mean -0.3; token
    # ratios e^0.5 = 1.65, e^-0.1 = 0.905, 1, e^-1 = 0.37 -> 2 of 4 off 1 by more than 0.2.
    out = drift([[0.5, -0.1], [0.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]])
    assert out["ext_seq_logratio"] == pytest.approx(-0.3)
    assert out["ext_far_tokens"] == pytest.approx(0.5)
