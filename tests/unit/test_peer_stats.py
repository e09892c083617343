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


def _summary(item, successes: int):
    from protocol.outcome import group_prompt_key, task_name
    from swarm.summaries import Summary

    g = item.group
    return Summary(item.origin, task_name(g.task), group_prompt_key(g).hex(), len(g.completions), successes,
                   g.policy_version, item.group_id)  # fmt: skip


def test_outcome_summaries_are_evidence_before_any_fetch(make_node):  # noqa: F811
    n = make_node("swarm.external_groups=1")
    item = inbox(n, 1)[0]
    prompt = n.sampler.tasks[0].prompt(0)
    assert prompt.prompt_id not in n.replay.table
    n.sharing.link.summaries = [_summary(item, 2)]  # 2 of 2 right, announced; the group never arrives
    n.peer_groups()
    est = n.replay.table.get(prompt.prompt_id)
    # the swarm's outcome moved our estimate of that prompt, as peer evidence (weight rho, 2 completions)
    assert est is not None and est.seen == 1 and est.evidence == pytest.approx(2 * n.cfg.replay.rho)
    assert n.status({}, 1)["swarm"]["summaries"] == 1
    # a summary for a prompt we do not train on is ignored
    other = _summary(item, 1)
    n.sharing.link.summaries = [type(other)(**{**other.__dict__, "prompt_key": "0" * 32, "group_id": "ab"})]
    n.peer_groups()
    assert n.status({}, 2)["swarm"]["summaries"] == 1


def test_a_false_summary_costs_its_sender(make_node):  # noqa: F811
    from swarm.misconduct import Misconduct

    n = make_node("swarm.external_groups=1")
    item = inbox(n, 1)[0]  # one right, one wrong: 1 success by our re-scoring
    n.sharing.link.summaries = [_summary(item, 2)]  # claims 2
    n.sharing.link.inbox = [item]
    n.peer_groups()
    assert (item.origin, Misconduct.SUMMARY_MISMATCH) in n.sharing.link.reports
    assert n.peers.stats.by_origin[item.origin].lies == 1
    # a true summary costs nothing, and the fetched group's evidence is not counted twice
    m = make_node("swarm.external_groups=1")
    item = inbox(m, 1)[0]
    m.sharing.link.summaries = [_summary(item, 1)]
    m.sharing.link.inbox = [item]
    m.peer_groups()
    assert m.sharing.link.reports == [] and m.peers.stats.by_origin[item.origin].lies == 0
    est = m.replay.table.get(item_prompt_id(m))
    assert est.seen == 1 and est.evidence == pytest.approx(2 * m.cfg.replay.rho)


def item_prompt_id(n) -> str:
    return n.sampler.tasks[0].prompt(0).prompt_id


def test_status_lab_and_prometheus_show_what_peers_taught(make_node):  # noqa: F811
    from node.lab import table
    from node.status import format_status, prometheus_text

    n = make_node("swarm.external_groups=2", "swarm.take=information", "swarm.take_epsilon=0")
    n.sharing.link.inbox = inbox(n, 2)
    m = n.train_step()
    s = n.status(m, 2)
    text = format_status(s)
    assert "from the swarm:" in text and f"peer {s['swarm']['peers_useful'][0]['peer'][:16]}" in text
    assert "swarmrl_swarm_signal_share" in prometheus_text(s) and "swarmrl_swarm_peer_used" in prometheus_text(s)
    row = {"node": "node0", "pid": 1, "running": True, "step": 1, "steps": 2, "reward": 0.5, "peers": 1,
           "sent": 4, "received": 2, "admitted": 2, "used": 2, "signal": s["swarm"]["peer_signal_share"], "score": 0.0}
    assert "signal" in table([row]).splitlines()[0] and "%" in table([row]).splitlines()[1]


def test_an_honest_summary_of_graded_claims_is_not_a_lie(make_node):  # noqa: F811
    """Regression (chaos run: an honest node banned): a completion claimed 0.5 that our verifier
    scores 0 passes admission's tolerance (|0.5 - 0| <= 0.5) and counts as a success in its
    origin's summary; the summary must be checked against the group's own claims, not our score."""
    from dataclasses import replace

    from protocol import Identity, sign_group
    from swarm.inbox import InboxItem

    n = make_node("swarm.external_groups=1")
    item = inbox(n, 1)[0]
    g = item.group
    comps = tuple(replace(c, claimed_rewards={"correctness": 1.0 if k == 0 else 0.5}) for k, c in enumerate(g.completions))
    origin = Identity.generate()
    signed = sign_group(replace(g, completions=comps, origin="", group_id=b"", origin_signature=b""), origin)
    honest = InboxItem(signed.group_id.hex(), origin.peer_id, signed, 0.0, 100)
    n.sharing.link.summaries = [_summary(honest, 2)]  # both completions claimed >= 0.5: 2, as its claims say
    n.sharing.link.inbox = [honest]
    n.peer_groups()
    assert n.sharing.link.reports == [] and n.peers.stats.by_origin[origin.peer_id].lies == 0
