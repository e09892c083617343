"""`swarm.adaptive_j` and `swarm.take: information` in a join node over the in-memory FakeLink.

Local groups' correctness is rewritten after generation, so each test decides which of our groups
carry no gradient; the tiny model's own answers would decide it by chance."""

from __future__ import annotations

from dataclasses import replace

import pytest

import node.node as node_module
import node.swarm_link
from node.node import Node
from protocol import Identity
from tests.unit.fake_link import FakeLink
from tests.unit.test_sharing import peer_group

G = 4  # configs/tiny.yaml's group size
MIXED, NONE, ALL = [1.0, 0.0, 0.0, 0.0], [0.0] * G, [1.0] * G


@pytest.fixture
def make_node(tiny_config, monkeypatch):
    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    made = []

    def make(*overrides: str, patterns: list[list[float]] | None = None) -> Node:
        n = Node(tiny_config("swarm.mode=join", "swarm.per_peer_cap=2", *overrides))
        n.asked = []  # n_prompts each collect call was asked for
        real = node_module.collect

        def collect(*args, **kw):
            n.asked.append(args[-1])
            out = real(*args, **kw)
            if patterns is None:
                return out
            groups = [
                g.replace_completions(
                    [c.scored(v, {**c.reward_components, "correctness": v}) for c, v in zip(g.completions, p)]
                )
                for g, p in zip(out.groups, patterns)
            ]
            return replace(out, groups=groups)

        monkeypatch.setattr(node_module, "collect", collect)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def inbox(n: Node, k: int) -> list:
    """k signed peer groups (one right, one wrong answer), two per identity."""
    ids = [Identity.generate() for _ in range((k + 1) // 2)]
    return [peer_group(n, i, ids[i // 2]) for i in range(k)]


def trained(n: Node) -> tuple[list, list]:
    local = [g for g in n.last_groups if g.origin == "local"]
    return local, [g for g in n.last_groups if g.origin != "local"]


def test_peer_groups_replace_zero_variance_local_groups_up_to_j(make_node):
    # I = 3, J = 2; two of our groups carry no gradient, three peer groups wait: min(2, 2, 3) = 2
    n = make_node("rollout.prompts_per_step=3", "swarm.external_groups=2", "swarm.adaptive_j=true",
                  patterns=[NONE, MIXED, ALL])  # fmt: skip
    n.sharing.link.inbox = inbox(n, 3)
    m = n.train_step()
    assert n.asked == [3]  # the I local groups only: J is never generated locally
    local, peer = trained(n)
    assert m["swarm/external_groups"] == len(peer) == 2 and m["swarm/replaced_zero_var"] == 2
    assert len(local) == 1 and local[0].has_signal("correctness")  # the zero-variance two are gone
    assert m["swarm/filled_locally"] == 0 and m["swarm/pool"] == 1
    assert m["local_groups"] == 3 and len(n.sharing.link.published) == 3  # all we generated is shared


def test_fewer_peer_groups_than_empty_slots_leave_the_rest_in_place(make_node):
    # three empty slots, J = 2, one peer group: min(2, 3, 1) = 1
    n = make_node("rollout.prompts_per_step=3", "swarm.external_groups=2", "swarm.adaptive_j=true",
                  patterns=[NONE, ALL, NONE])  # fmt: skip
    n.sharing.link.inbox = inbox(n, 1)
    m = n.train_step()
    local, peer = trained(n)
    assert len(peer) == 1 and m["swarm/replaced_zero_var"] == 1 and len(local) == 2
    assert m["swarm/filled_locally"] == 0


def test_no_empty_slot_takes_no_peer_group_and_keeps_the_pool(make_node):
    n = make_node("swarm.external_groups=2", "swarm.adaptive_j=true", patterns=[MIXED, MIXED])
    n.sharing.link.inbox = inbox(n, 3)
    m = n.train_step()
    local, peer = trained(n)
    assert peer == [] and len(local) == 2 and m["swarm/replaced_zero_var"] == 0
    assert m["swarm/pool"] == 3  # admitted and waiting: this step did not need them


def test_adaptive_j_off_is_todays_fixed_j(make_node):
    n = make_node("rollout.prompts_per_step=3", "swarm.external_groups=2", patterns=[NONE, NONE, NONE, NONE])
    n.sharing.link.inbox = inbox(n, 1)
    m = n.train_step()
    local, peer = trained(n)
    assert n.asked == [3 + 2 - 1]  # I + J - peer groups taken, before generating
    assert len(peer) == 1 and len(local) == 4  # zero-variance local groups stay in the batch
    assert m["swarm/filled_locally"] == 1 and "swarm/replaced_zero_var" not in m


def test_information_take_prefers_the_prompt_we_fail(make_node, monkeypatch):
    n = make_node("swarm.external_groups=1", "swarm.take=information", "swarm.take_epsilon=0")
    n.sharing.link.inbox = inbox(n, 2)  # prompts 0 and 1, same origin, both 1 of 2 right
    hard = n.sampler.tasks[0].prompt(1).question  # by question: the task may hold it twice
    monkeypatch.setattr(
        n.replay, "means", lambda prompts: [0.1 if p.question == hard else 0.9 for p in prompts]
    )
    groups, info = n.peer_groups()
    assert [g.prompt.question for g in groups] == [hard]
    # (1 - 0.1) x 2 sqrt(1/2 x 1/2) x e^0 x reliability (2 + 1) / (2 + 0 + 2) (two admitted, no
    # lie) x drift factor 1 (nothing measured yet): the value of the group taken
    assert info["swarm/take_value"] == pytest.approx(0.9 * 0.75)
    # uniform (the default) takes by the seeded shuffle and logs no value
    m = make_node("swarm.external_groups=1")
    m.sharing.link.inbox = inbox(m, 2)
    assert "swarm/take_value" not in m.peer_groups()[1]
