"""Outcome summaries in the swarm layer: the bounded queue (flood cap, dedup, eviction, bans)
and gossip over the in-memory transport on a simulated clock (heard without fetching, carried
on by relays, lies and floods charged)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocol import Completion, Identity, RolloutGroup, SamplingParams, TaskRef, encode, prompt_key
from protocol.messages import Announce, AnnounceItem
from swarm.gossip import GossipConfig
from swarm.misconduct import Misconduct
from swarm.peer import SwarmConfig, SwarmPeer
from swarm.scoring import ScoreParams
from swarm.summaries import Summary, SummaryConfig, SummaryQueue
from swarm.testing import run_virtual as run
from swarm.testing import wait_for
from swarm.transports.memory import MemoryHub

SWARM = "unit"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def summary(gid: int, origin: str = "A", successes: int = 1) -> Summary:
    return Summary(origin=origin, task="chain_sum", prompt_key="00" * 16, n=4, successes=successes,
                   policy_version=0, group_id=f"{gid:064x}")  # fmt: skip


# ---------------------------------------------------------------- the queue


def test_a_flood_from_one_origin_is_capped_per_window_and_others_still_get_in() -> None:
    clock = Clock()
    q = SummaryQueue(SummaryConfig(capacity=100, per_origin=4, window=10.0), clock)
    assert [q.offer(summary(i, "A")) for i in range(10)] == [True] * 4 + [False] * 6
    assert q.offer(summary(100, "B"))  # another origin has its own budget
    assert q.counts["origin_capped"] == 6 and q.counts["accepted"] == 5
    clock.t += 5.0  # half a window refills half the burst: 2 more
    assert [q.offer(summary(i, "A")) for i in range(10, 14)] == [True, True, False, False]
    # capped summaries were not remembered: the same group announced again later gets in
    clock.t += 10.0
    assert q.offer(summary(5, "A"))
    assert [s.group_id for s in q.drain(100)][:4] == [f"{i:064x}" for i in range(4)]


def test_one_summary_per_group_id_whoever_repeats_it() -> None:
    q = SummaryQueue(SummaryConfig(), Clock())
    assert q.offer(summary(1, "A"))
    assert not q.offer(summary(1, "A"))  # inventory answers repeat announces
    assert not q.offer(summary(1, "B", successes=4))  # first claim wins; B's differing claim is dropped
    assert q.counts["duplicate"] == 2 and len(q) == 1
    q.drain(10)
    assert not q.offer(summary(1, "A"))  # drained ids stay remembered


def test_capacity_evicts_the_oldest_and_drain_is_oldest_first_and_bounded() -> None:
    q = SummaryQueue(SummaryConfig(capacity=3, per_origin=100), Clock())
    for i in range(5):
        q.offer(summary(i, f"P{i}"))
    assert len(q) == 3 and q.counts["evicted"] == 2
    assert [s.group_id for s in q.drain(2)] == [f"{i:064x}" for i in (2, 3)]
    assert [s.group_id for s in q.drain(10)] == [f"{4:064x}"] and q.drain(10) == []


def test_summaries_of_a_peer_banned_before_the_drain_are_dropped() -> None:
    q = SummaryQueue(SummaryConfig(), Clock())
    for i, origin in enumerate(["A", "M", "A", "M"]):
        q.offer(summary(i, origin))
    out = q.drain(10, banned=lambda peer: peer == "M")
    assert [s.origin for s in out] == ["A", "A"] and q.counts["banned"] == 2 and len(q) == 0


# ---------------------------------------------------------------- gossip


def question_group(i: int, claims: list[float]) -> RolloutGroup:
    """A group on a procedural prompt with its rendered question, claiming these correctness values."""
    return RolloutGroup(
        swarm_id=SWARM, task=TaskRef(dataset="chain_sum", seed=0, index=i, question=f"What is {i} + {i}?"),
        ground_truth=None,
        completions=tuple(Completion(text=f"{k}", claimed_rewards={"correctness": c}) for k, c in enumerate(claims)),
        model_id="m", tokenizer_hash="", policy_version=7,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8),
    )  # fmt: skip


def config(**gossip: Any) -> SwarmConfig:
    base = GossipConfig(sync_interval=2.0, fetch_timeout=1.0)
    return SwarmConfig(backend="memory", swarm_id=SWARM, gossip=replace(base, **gossip))


def test_summaries_travel_through_relays_and_never_come_back_to_their_origin() -> None:
    """A - B - C in a line: B fetches and relays, C never fetches.  B hears A's summaries; C hears
    them from B's relay (signed by B, the counts of A's signed claims); A drops its own returning."""

    async def scenario() -> None:
        hub = MemoryHub(latency=0.01, degree=1, seed=0)
        a = await SwarmPeer.start(Identity.generate(), config(), hub=hub)  # origin
        b = await SwarmPeer.start(Identity.generate(), config(), hub=hub)  # fetches and relays
        c = await SwarmPeer.start(Identity.generate(), config(), hub=hub, want=lambda e: False)
        hub.neighbours[a.peer_id].discard(c.peer_id)  # a line: A - B - C
        hub.neighbours[c.peer_id].discard(a.peer_id)
        hub.link(a.peer_id, b.peer_id)
        hub.link(b.peer_id, c.peer_id)
        claims = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0]]
        gids = [await a.publish(question_group(i, cl)) for i, cl in enumerate(claims)]
        counts = dict(zip(gids, [(1, 4), (3, 4), (0, 4)]))
        heard: list[Summary] = []
        assert await wait_for(lambda: len(heard.extend(b.gossip.drain_summaries(10)) or heard) == 3, 10.0)
        assert {s.group_id: (s.successes, s.n) for s in heard} == counts
        for s, i in zip(sorted(heard, key=lambda s: gids.index(s.group_id)), range(3)):
            assert (s.origin, s.task, s.policy_version) == (a.peer_id, "chain_sum", 7)
            assert s.prompt_key == prompt_key("chain_sum", f"What is {i} + {i}?")
        assert await wait_for(lambda: b.metrics().get("admitted_groups", 0) == 3, 10.0)  # B fetched them
        # C hears of the groups only through B's relay, summaries included, without fetching
        relayed: list[Summary] = []
        assert await wait_for(lambda: len(relayed.extend(c.gossip.drain_summaries(10)) or relayed) == 3, 10.0)
        assert {s.group_id: (s.successes, s.n) for s in relayed} == counts
        assert {s.origin for s in relayed} == {b.peer_id}  # B signed the announce: B answers for it
        assert c.metrics().get("fetch_attempts", 0) == 0
        # B's relay reaches A too: A's own groups are not evidence, and are dropped as repeats
        assert await wait_for(lambda: a.metrics().get("summaries_received", 0) == 3, 10.0)
        assert a.gossip.drain_summaries(10) == [] and a.metrics().get("summaries_duplicate", 0) == 3
        for p in (a, b, c):
            await p.stop()

    run(scenario)


def test_a_summary_heard_by_a_peer_that_never_fetches() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        a = await SwarmPeer.start(Identity.generate(), config(), hub=hub)
        b = await SwarmPeer.start(Identity.generate(), config(), hub=hub, want=lambda e: False)
        gid = await a.publish(question_group(3, [1.0, 0.0]))
        heard: list[Summary] = []
        assert await wait_for(lambda: bool(heard.extend(b.gossip.drain_summaries(10)) or heard), 10.0)
        assert heard == [
            Summary(a.peer_id, "chain_sum", prompt_key("chain_sum", "What is 3 + 3?"), 2, 1, 7, gid)
        ]
        m = b.metrics()
        assert m.get("fetch_attempts", 0) == 0 and m.get("admitted_groups", 0) == 0 and len(b.inbox) == 0
        assert m["summaries_accepted"] == 1
        for p in (a, b):
            await p.stop()

    run(scenario)


def test_an_impossible_summary_is_refused_and_charged_and_a_ban_drops_the_queue() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        a = await SwarmPeer.start(Identity.generate(), config(), hub=hub)
        mallory_id = Identity.generate()
        m = await SwarmPeer.start(mallory_id, config(), hub=hub)
        await m.publish(question_group(1, [1.0, 1.0]))  # a well-formed summary, queued at A
        assert await wait_for(lambda: a.metrics().get("summaries_accepted", 0) == 1, 10.0)
        lie = AnnounceItem(group_id=bytes(32), task="chain_sum", num_completions=2, size_bytes=10,
                           policy_version=0, prompt_key=bytes(16), successes=3)  # 3 of 2  # fmt: skip
        await m.transport.publish(a.gossip.config.topic, encode(Announce(items=(lie,)), mallory_id, SWARM))
        assert await wait_for(lambda: a.metrics().get("rejected.out_of_bounds", 0) == 1, 10.0)
        assert a.gossip.scores.score(m.peer_id) < 0  # charged to the sender
        for _ in range(6):  # the node proves summary lies: 10 points each, past the ban threshold
            a.report(m.peer_id, Misconduct.SUMMARY_MISMATCH)
        assert a.metrics()["rejected.summary_mismatch"] == 6 and a.metrics()["banned"] == [m.peer_id]
        # the banned peer's queued summary goes with it
        assert a.gossip.drain_summaries(10) == [] and a.metrics()["summaries_banned"] == 1
        for p in (a, m):
            await p.stop()

    run(scenario)


def test_summary_mismatch_costs_as_much_as_a_reward_lie() -> None:
    p = ScoreParams()
    assert p.penalty(Misconduct.SUMMARY_MISMATCH.value) == p.penalty(Misconduct.REWARD_MISMATCH.value) == 10.0
