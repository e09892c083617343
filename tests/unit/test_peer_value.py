"""The value of a peer's group to us (node/replay/peer_value.py) and `ReplayBuffer.take_best`,
with hand-worked numbers and a scripted generator."""

from __future__ import annotations

import math
import random

import pytest

from node.records import Completion, Group, Prompt
from node.replay.buffer import BufferConfig, BufferEntry, ReplayBuffer
from node.replay.peer_value import entry_values, peer_value


def test_value_by_hand():
    # we fail 80%, the group is 2 of 4: (1 - 0.2) x 2 sqrt(0.5 x 0.5) = 0.8 x 1 = 0.8
    assert peer_value(0.2, 0.5, True, lag=0, tau=8.0) == pytest.approx(0.8)
    # the "aha": we never solve it, the peer solved 1 of 4: 1 x 2 sqrt(0.25 x 0.75) = sqrt(0.75)
    assert peer_value(0.0, 0.25, True, lag=0, tau=8.0) == pytest.approx(math.sqrt(0.75))  # 0.866
    # a prompt we solve 90% of the time teaches a tenth as much as one we always fail
    assert peer_value(0.9, 0.5, True, lag=0, tau=8.0) == pytest.approx(0.1)
    # eight of the origin's versions behind at tau 8: x e^-1; a half-reliable origin: x 0.5
    assert peer_value(0.2, 0.5, True, lag=8, tau=8.0) == pytest.approx(0.8 / math.e)  # 0.2943
    assert peer_value(0.2, 0.5, True, lag=8, tau=8.0, reliability=0.5) == pytest.approx(0.4 / math.e)
    # no gradient, whatever else: 0; an all-success fraction has none either
    assert peer_value(0.0, 0.5, False, lag=0, tau=8.0) == 0.0
    assert peer_value(0.0, 1.0, True, lag=0, tau=8.0) == 0.0
    # out-of-range inputs are clipped: p_hat 1.2 is 1 (nothing to learn), s -0.5 is 0
    assert peer_value(1.2, 0.5, True, lag=0, tau=8.0) == 0.0
    assert peer_value(0.0, -0.5, True, lag=0, tau=8.0) == 0.0


def _entry(i: int, origin: str, correct: list[float], version: int = 0) -> BufferEntry:
    p = Prompt(f"t:0:{i}", "t", f"q{i}", "1")
    comps = [
        Completion(p, [1], [2], [], "x", "stop", 0, origin, version, v, {"correctness": v}) for v in correct
    ]
    return BufferEntry(Group(p, comps), origin, f"g{i}", version, created_ms=0)


def test_entry_values_use_success_signal_and_the_origins_own_lag():
    a = _entry(0, "A", [1, 0, 0, 0], version=5)  # s = 1/4, origin A at 5 while its newest is 9: lag 4
    b = _entry(1, "B", [1, 1, 0, 0], version=3)  # s = 1/2, B's newest unknown: lag 0
    c = _entry(2, "B", [0, 0, 0, 0], version=3)  # no signal
    got = entry_values([a, b, c], [0.5, 0.75, 0.0], {"A": 9}, "correctness", tau=4.0, reliability={"B": 0.5})
    # a: 0.5 x sqrt(0.75) x e^-1;  b: 0.25 x 1 x 1 x 0.5;  c: 0
    assert got == pytest.approx([0.5 * math.sqrt(0.75) / math.e, 0.125, 0.0])
    # a hand loop over peer_value agrees
    assert got[0] == pytest.approx(peer_value(0.5, 0.25, True, 4, 4.0))


class Scripted:
    """A generator whose draws are written down: `random()` and `randrange()` pop their lists."""

    def __init__(self, uniforms: list[float], picks: list[int] | None = None) -> None:
        self.uniforms, self.picks = list(uniforms), list(picks or [])

    def random(self) -> float:
        return self.uniforms.pop(0)

    def randrange(self, n: int) -> int:
        k = self.picks.pop(0)
        assert 0 <= k < n
        return k


def _pool(origins: str, cap: int = 2) -> ReplayBuffer:
    buf = ReplayBuffer(BufferConfig(capacity=16, per_peer_cap=cap, max_age_s=None, max_version_lag=None))
    for i, o in enumerate(origins):
        buf.add(_entry(i, o, [1, 0]))
    return buf


def by_value(values: list[float]):
    calls = []

    def score(entries):
        calls.append([e.group_id for e in entries])
        return [values[int(e.group_id[1:])] for e in entries]

    return score, calls


def test_take_best_is_greedy_under_the_per_origin_cap():
    buf = _pool("AAAB")
    score, calls = by_value([0.9, 0.8, 0.7, 0.1])
    # 0.9 (A), 0.8 (A): A is capped at 2, so B's 0.1 beats A's 0.7
    got = buf.take_best(3, Scripted([1.0] * 3), 0, {}, score, epsilon=0.5)
    assert [e.group_id for e in got] == ["g0", "g1", "g3"]
    assert [e.group_id for e in buf.entries] == ["g2"]  # taken entries leave
    assert calls == [["g0", "g1", "g2", "g3"]]  # scored once


def test_take_best_ties_go_to_the_first_added_and_results_come_in_pool_order():
    buf = _pool("ABCD")
    score, _ = by_value([0.2, 0.5, 0.5, 0.9])
    got = buf.take_best(2, Scripted([0.9, 0.9]), 0, {}, score, epsilon=0.1)
    assert [e.group_id for e in got] == ["g1", "g3"]  # g3 first (0.9), then g1 over g2 (tie)


def test_take_best_explores_with_chance_epsilon():
    buf = _pool("ABCDE")
    score, _ = by_value([0.1, 0.9, 0.5, 0.7, 0.3])
    # slot 1: 0.9 >= 0.5, greedy: g1.  slot 2: 0.1 < 0.5, uniform among g0 g2 g3 g4, pick 0: g0.
    # slot 3: greedy among g2 g3 g4: g3 (0.7)
    got = buf.take_best(3, Scripted([0.9, 0.1, 0.9], [0]), 0, {}, score, epsilon=0.5)
    assert [e.group_id for e in got] == ["g0", "g1", "g3"]


def test_take_best_with_epsilon_one_is_uniform_and_zero_draws_no_pick():
    score, _ = by_value([0.0] * 6)
    seen = set()
    for seed in range(40):
        got = _pool("ABCDEF").take_best(1, random.Random(seed), 0, {}, score, epsilon=1.0)
        seen.add(got[0].group_id)
    assert seen == {f"g{i}" for i in range(6)}  # all-equal scores would give g0 every time if greedy
    got = _pool("ABC").take_best(5, Scripted([0.5] * 3, []), 0, {}, score, epsilon=0.0)
    assert len(got) == 3  # never more than the pool holds; randrange never called


def test_take_best_drops_stale_entries_before_scoring():
    buf = ReplayBuffer(BufferConfig(capacity=16, per_peer_cap=2, max_age_s=None, max_version_lag=2))
    buf.add(_entry(0, "A", [1, 0], version=1))  # A's newest is 9: 8 behind, stale
    buf.add(_entry(1, "A", [1, 0], version=9))
    score, calls = by_value([1.0, 0.1])
    got = buf.take_best(2, Scripted([0.9, 0.9]), 0, {"A": 9}, score, epsilon=0.0)
    assert [e.group_id for e in got] == ["g1"] and calls == [["g1"]] and buf.counts["stale"] == 1
