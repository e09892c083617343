"""The buffer of scored groups: eviction, duplicates, staleness (by age and by version lag, with
the right counter for `take` and `replay`), replay uses, reproducibility and the checkpoint state."""

from __future__ import annotations

import random

from node.records import Group, Prompt
from node.replay.buffer import BufferConfig, BufferEntry, ReplayBuffer, entry_to_dict, local_entry
from tests.unit.hand_groups import scored_group

NOW = 1_000_000  # ms


def prompt(i: int) -> Prompt:
    return Prompt(f"toy:0:{i}", "toy", f"q{i}", str(i))


def group(i: int, version: int = 0, rewards=(1.0, 0.0)) -> Group:
    return scored_group(prompt(i), rewards, version)


def entry(i: int, origin: str = "a", origin_version: int = 0, created_ms: int = NOW,
          policy_version: int = 0) -> BufferEntry:  # fmt: skip
    return BufferEntry(group(i, policy_version), origin, f"g{i}", origin_version, created_ms, policy_version)


def ids(entries) -> list[str]:
    return [e.group_id for e in entries]


def no_staleness(**kw) -> BufferConfig:
    return BufferConfig(**({"max_age_s": None, "max_version_lag": None} | kw))


def test_capacity_evicts_oldest_first():
    buf = ReplayBuffer(no_staleness(capacity=3))
    for i in range(5):
        assert buf.add(entry(i))
    # g0 and g1 went out, in the order they came in
    assert ids(buf.entries) == ["g2", "g3", "g4"] and buf.counts["overflow"] == 2


def test_per_origin_cap_evicts_that_origins_oldest():
    buf = ReplayBuffer(no_staleness(capacity=10, per_origin_cap=2))
    for i, origin in enumerate("abaa"):
        buf.add(entry(i, origin))
    # a's third entry (g3) pushes out a's oldest (g0); b's g1 stays
    assert ids(buf.entries) == ["g1", "g2", "g3"]
    assert buf.counts["origin_cap"] == 1 and buf.counts["overflow"] == 0


def test_duplicate_group_id_refused():
    buf = ReplayBuffer(no_staleness())
    assert buf.add(entry(0))
    assert not buf.add(entry(0, origin="b"))
    assert len(buf) == 1 and buf.counts["duplicate"] == 1


def test_stale_by_age():
    buf = ReplayBuffer(BufferConfig(max_age_s=10.0, max_version_lag=None, per_peer_cap=5))
    buf.add(entry(0, created_ms=NOW - 11_000))  # 11 s old > 10 s
    buf.add(entry(1, created_ms=NOW - 9_000))
    assert ids(buf.take(5, random.Random(0), NOW, {})) == ["g1"]
    assert buf.counts["stale"] == 1 and len(buf) == 0
    buf.add(entry(2, created_ms=NOW - 11_000))
    assert buf.replay(5, random.Random(0), NOW, version=0) == [] and buf.counts["stale"] == 2


def test_take_compares_the_origins_own_counter():
    buf = ReplayBuffer(BufferConfig(max_age_s=None, max_version_lag=2, per_peer_cap=5))
    buf.add(entry(0, "a", origin_version=1))  # a's newest is 5: lag 4 > 2, stale
    buf.add(entry(1, "a", origin_version=3))  # lag 2, fresh
    buf.add(entry(2, "b", origin_version=1))  # b is compared with b only (no newest: lag 0)
    buf.add(entry(3, "c", origin_version=100, policy_version=0))  # our counter plays no part
    taken = buf.take(5, random.Random(0), NOW, newest={"a": 5})
    assert ids(taken) == ["g1", "g2", "g3"] and buf.counts["stale"] == 1


def test_take_at_most_per_peer_cap_per_origin():
    buf = ReplayBuffer(BufferConfig(max_age_s=None, per_peer_cap=1))
    for i, origin in enumerate("aab"):
        buf.add(entry(i, origin))
    taken = buf.take(3, random.Random(0), NOW, {})
    assert sorted(e.origin for e in taken) == ["a", "b"]
    assert len(buf) == 1 and buf.entries[0].origin == "a"  # what was not taken stays


def test_replay_compares_our_counter():
    buf = ReplayBuffer(BufferConfig(max_age_s=None, max_version_lag=2, max_uses=5))
    buf.add(entry(0, "local", origin_version=7, policy_version=7))  # 10 - 7 = 3 > 2: stale
    buf.add(entry(1, "local", origin_version=0, policy_version=8))  # 10 - 8 = 2: fresh
    out = buf.replay(5, random.Random(0), NOW, version=10)
    assert ids(out) == ["g1"] and buf.counts["stale"] == 1


def test_replay_counts_uses_and_removes_spent_entries():
    buf = ReplayBuffer(no_staleness(max_uses=2))
    buf.add(entry(0))
    buf.add(entry(1))
    first = buf.replay(2, random.Random(0), NOW, 0)
    assert ids(first) == ["g0", "g1"] and [e.uses for e in first] == [1, 1]
    assert [e.uses for e in buf.entries] == [1, 1]  # used once of twice: still held
    second = buf.replay(5, random.Random(0), NOW, 0)  # k beyond what is held: all of it
    assert [e.uses for e in second] == [2, 2] and len(buf) == 0
    assert buf.replay(1, random.Random(0), NOW, 0) == []


def test_replay_with_a_fixed_rng_is_reproducible():
    def run(seed: int) -> list[list[str]]:
        buf = ReplayBuffer(no_staleness(max_uses=3))
        for i in range(10):
            buf.add(entry(i))
        rng = random.Random(seed)
        return [ids(buf.replay(3, rng, NOW, 0)) for _ in range(4)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert all(len(set(draw)) == 3 for draw in run(1))  # without replacement within a call


def test_state_round_trip_refinds_prompts_and_drops_the_gone():
    buf = ReplayBuffer(no_staleness(max_uses=3))
    buf.add(BufferEntry(group(0, 4), "peerA", "g0", 17, NOW - 5, 4, "tiny", "tok123", uses=2))
    buf.add(local_entry(group(1, 5, rewards=(0.0, 1.0, 0.5)), 5, NOW, "tiny", "tok123", step=9))
    buf.add(entry(2))
    buf.add(entry(2))  # a duplicate, counted
    state = buf.state_dict()
    known = {p.question: p for p in (prompt(0), prompt(1))}  # prompt 2 is gone
    other = ReplayBuffer(no_staleness(max_uses=3))
    other.load_state_dict(state, lambda task, q: known.get(q) if task == "toy" else None)
    assert [entry_to_dict(e) for e in other.entries] == [entry_to_dict(e) for e in buf.entries[:2]]
    a, b = other.entries
    assert (a.origin, a.group_id, a.origin_version, a.created_ms, a.policy_version, a.model_id,
            a.tokenizer_hash, a.uses) == ("peerA", "g0", 17, NOW - 5, 4, "tiny", "tok123", 2)  # fmt: skip
    assert b.group_id == "local:9:0:toy:0:1" and b.origin == "local" and b.policy_version == 5
    assert b.group.prompt is known["q1"] and all(c.prompt is known["q1"] for c in b.group.completions)
    assert [c.reward_components for c in b.group.completions] == [{"correctness": r} for r in (0.0, 1.0, 0.5)]
    assert b.group.completions[0].behavior_logprobs == [-0.5, -0.25]
    assert other.counts == buf.counts and other.counts["duplicate"] == 1
