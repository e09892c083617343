"""Per-origin reliability, drift and usefulness (node/replay/peer_stats.py), with hand-worked
numbers, and what a join node records of the peer groups it trains on (node/peers.py)."""

from __future__ import annotations

import math

import pytest

from node.replay.peer_stats import PeerStats, drift_factor, mean_token_nll
from node.replay.peer_value import peer_value
from tests.unit.test_adaptive_j import inbox, make_node  # noqa: F401  (the fixture)


def test_reliability_is_the_laplace_mean():
    s = PeerStats()
    s.admitted("a")
    s.admitted("a")
    s.lie("b")
    # a: (2 + 1) / (2 + 0 + 2) = 0.75; b: (0 + 1) / (0 + 1 + 2) = 1/3
    assert s.reliability() == {"a": pytest.approx(0.75), "b": pytest.approx(1 / 3)}
    for _ in range(6):
        s.lie("a")  # (2 + 1) / (2 + 6 + 2) = 0.3: a liar sinks with each lie found
    assert s.reliability()["a"] == pytest.approx(0.3)


def test_drift_is_a_moving_average_of_the_nll_excess():
    # rows of per-token log-probs: -(-1 - 1)/2 = 1 and -(-3)/1 = 3 -> mean NLL 2 nats/token
    assert mean_token_nll([[-1.0, -1.0], [-3.0], []]) == pytest.approx(2.0)
    assert mean_token_nll([[]]) is None
    s = PeerStats(alpha=0.5)
    s.drifted("a", 1.0)  # the first measure is taken as is
    s.drifted("a", 3.0)  # 0.5 x 1 + 0.5 x 3 = 2
    assert s.drift()["a"] == pytest.approx(2.0)
    # factor exp(-2 / 1) = 0.1353; a negative excess (text likelier than ours) is not a bonus
    assert drift_factor(2.0, 1.0) == pytest.approx(math.exp(-2))
    assert drift_factor(-0.5, 1.0) == 1.0 and drift_factor(None, 1.0) == 1.0 and drift_factor(5.0, 0.0) == 1.0
    # in the value: 0.8 (see test_peer_value) x e^-2
    assert peer_value(0.2, 0.5, True, 0, 8.0, 1.0, drift_factor(2.0, 1.0)) == pytest.approx(0.8 * math.exp(-2))


def test_usefulness_and_table_and_state():
    s = PeerStats()
    s.used("a", [0.5, -0.5, 1.0])
    s.used("a", [0.0])
    s.admitted("b")
    assert s.by_origin["a"].mean_abs_adv == pytest.approx(2.0 / 4)
    rows = s.table()
    assert [r["peer"] for r in rows] == ["a", "b"] and rows[0]["used"] == 2
    t = PeerStats()
    t.load_state_dict(s.state_dict())
    assert t.table() == rows


def test_a_join_node_records_drift_usefulness_and_shows_them(make_node):  # noqa: F811
    n = make_node("swarm.external_groups=2", "swarm.take=information", "swarm.take_epsilon=0")
    n.sharing.link.inbox = inbox(n, 2)
    m = n.train_step()
    assert m["swarm/external_groups"] == 2
    assert 0.0 < m["swarm/peer_signal_share"] <= 1.0  # two of the batch's groups pushed the update
    useful = n.status({}, 1)["swarm"]["peers_useful"]
    assert sum(r["used"] for r in useful) == 2
    assert all(r["drift"] is not None for r in useful if r["used"])  # measured on what was taken
    # the per-origin statistics survive a checkpoint
    state = n.components()["peer_stats"]
    assert sum(v["used"] for v in state.values()) == 2
