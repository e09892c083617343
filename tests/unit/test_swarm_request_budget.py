"""The inbound request budget (swarm/request_budget.py): a Sybil set, each key under the
per-peer request limit, cannot make a node serve more than its budget; known-good peers are
served first; "busy" charges nobody; fetches of groups we do not hold hit a lower limit.

Hand-worked bucket numbers first, then the same properties through a real `Gossip` on the
in-memory transport and the simulated clock (as in test_swarm_gossip.py).
"""

from __future__ import annotations

import asyncio
import os

from protocol import Identity, Response, decode, encode
from protocol.messages import Request
from swarm.gossip import GossipConfig
from swarm.peer import SwarmConfig, SwarmPeer
from swarm.rate_limit import KeyedBuckets
from swarm.request_budget import Admission, RequestBudget
from swarm.scoring import ScoreParams
from swarm.testing import run_virtual as run
from swarm.testing import synthetic_group, wait_for
from swarm.transport import PeerUnreachable
from swarm.transports.memory import MemoryHub, MemoryTransport

SWARM = "unit"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- the buckets, by hand ----------------------------------------------------------------------
def test_unknown_peers_share_the_budget_above_the_reserve_and_good_peers_get_the_rest() -> None:
    # rate 10/s, burst 20, reserve 0.5 -> 10 tokens only positive-score peers may take.
    clock = Clock()
    scores = {"good": 3.0, "indebted": -2.0}
    params = ScoreParams(serve_rate=10.0, serve_burst=20.0, serve_reserve=0.5)
    budget = RequestBudget(params, lambda p: scores.get(p, 0.0), clock)
    # 30 unknown keys, one request each: 20 -> 10 tokens, then the reserve stops them
    verdicts = [budget.admit(f"sybil{i}", fetch=True) for i in range(30)]
    assert verdicts.count(Admission.SERVE) == 10 and verdicts[10:] == [Admission.BUSY] * 20
    assert budget.admit("indebted", fetch=True) is Admission.BUSY  # a negative score is no better
    # the good peer draws the reserve down to 0, then it too waits for the refill
    assert [budget.admit("good", fetch=True) for _ in range(11)] == [Admission.SERVE] * 10 + [Admission.BUSY]
    clock.t = 0.5  # +5 tokens: 5, still under the reserve, so only the good peer may take them
    assert budget.admit("sybil0", fetch=True) is Admission.BUSY
    assert budget.admit("good", fetch=True) is Admission.SERVE
    # 100 s of a Sybil set at 1,000 requests/s: served at most burst-above-reserve + rate x 100
    served = 0
    for i in range(100_000):
        clock.t = 1.0 + i / 1000
        served += budget.admit(f"sybil{i % 11}", fetch=True) is Admission.SERVE
    assert served <= 10 + 10 * 100 + 1  # 1,011 of 100,000


def test_empty_fetch_limit_is_per_peer_and_charged_only_for_empty_answers() -> None:
    # empty rate 1/s, burst 3: three empty answers, then refused until a token refills.
    clock = Clock()
    params = ScoreParams(empty_fetch_rate=1.0, empty_fetch_burst=3.0)
    budget = RequestBudget(params, lambda p: 0.0, clock)
    for _ in range(3):
        assert budget.admit("p", fetch=True) is Admission.SERVE
        budget.served_empty("p")
    assert budget.admit("p", fetch=True) is Admission.EMPTY_LIMITED
    assert budget.admit("p", fetch=False) is Admission.SERVE  # inventory pulls are not fetches
    assert budget.admit("q", fetch=True) is Admission.SERVE  # another peer has its own bucket
    clock.t = 1.0
    assert budget.admit("p", fetch=True) is Admission.SERVE


def test_keyed_buckets_look_before_take_and_forget_full_buckets() -> None:
    clock = Clock()
    buckets = KeyedBuckets(rate=1.0, burst=2.0, clock=clock, max_keys=2)
    assert buckets.can_take("a") and buckets.can_take("a")  # looking takes nothing
    assert buckets.take("a") and buckets.take("a") and not buckets.take("a")
    assert not buckets.can_take("a")
    buckets.take("b")
    clock.t = 5.0  # both full again: a third key makes room by forgetting them
    buckets.take("c")
    assert len(buckets._buckets) == 1


# -- through the gossip engine ------------------------------------------------------------------


def config(score: ScoreParams) -> SwarmConfig:
    gossip = GossipConfig(sync_interval=2.0, fetch_timeout=1.0, score=score)
    return SwarmConfig(backend="memory", swarm_id=SWARM, gossip=gossip)


# Per peer: 100 requests/s (the default).  All callers: 20/s, burst 20, 10 of it reserved.
BUDGET = ScoreParams(serve_rate=20.0, serve_burst=20.0, serve_reserve=0.5)


def drained(peer: SwarmPeer, seen: set[str]) -> set[str]:
    """Every group id `peer` has admitted so far (its inbox drained into `seen`)."""
    seen.update(item.group_id for item in peer.inbox.drain())
    return seen


async def sybil_set(hub: MemoryHub, n: int) -> list[tuple[Identity, MemoryTransport]]:
    out = []
    for _ in range(n):
        ident = Identity.generate()
        t = MemoryTransport(hub, ident.peer_id)
        await t.start()
        out.append((ident, t))
    return out


async def hammer(victim: SwarmPeer, sybils: list[tuple[Identity, MemoryTransport]], ids: list[bytes],
                 rate: float, seconds: float) -> list[int]:  # fmt: skip
    """Each key sends `rate` fetch requests/s for `ids` for `seconds`; returns, per request, the
    number of groups its answer carried (-1 for a refusal)."""
    proto = victim.gossip.config.fetch_protocol
    results: list[int] = []

    async def one(ident: Identity, t: MemoryTransport) -> None:
        frame = encode(Request(request_id=os.urandom(16), group_ids=tuple(ids)), ident, SWARM)
        try:
            answer = await t.request(victim.peer_id, proto, frame, 5.0)
        except PeerUnreachable:
            results.append(-1)
            return
        _, message = decode(answer)
        assert isinstance(message, Response)
        results.append(len(message.groups))

    tasks = []
    for _ in range(int(rate * seconds)):
        tasks += [asyncio.ensure_future(one(i, t)) for i, t in sybils]
        await asyncio.sleep(1.0 / rate)
    await asyncio.gather(*tasks)
    return results


def test_a_sybil_set_under_the_per_peer_limit_cannot_exceed_the_global_budget() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.001)
        victim = await SwarmPeer.start(Identity.generate(), config(BUDGET), hub=hub)
        held = bytes.fromhex(await victim.publish(synthetic_group(SWARM, 1)))
        sybils = await sybil_set(hub, 11)
        # 11 keys x 50 requests/s for 4 s, each key at half its own limit: 2,200 requests for a
        # group the victim holds.  Budget: 10 (burst above the reserve) + 20/s x 4 s = 90.
        results = await hammer(victim, sybils, [held], rate=50.0, seconds=4.0)
        served = sum(1 for r in results if r == 1)
        assert len(results) == 2200 and -1 not in results  # nobody refused: every key kept its limit
        assert 80 <= served <= 10 + 20 * 4 + 2, served
        m = victim.metrics()
        assert m["busy_requests"] == 2200 - served
        assert m.get("rejected.rate_limited", 0) == 0
        assert all(m["peer_scores"].get(i.peer_id, 0.0) == 0.0 for i, _ in sybils)  # busy charges nobody
        await victim.stop()

    run(scenario)


def test_a_good_peer_is_served_while_sybils_are_over_budget_and_busy_costs_no_score() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.001)
        victim = await SwarmPeer.start(Identity.generate(), config(BUDGET), hub=hub)
        good = await SwarmPeer.start(Identity.generate(), config(ScoreParams()), hub=hub)
        # `good` earns a positive score at the victim by serving it a valid group
        earned = await good.publish(synthetic_group(SWARM, 1))
        assert await wait_for(lambda: earned in drained(victim, set()), 5.0)
        assert victim.gossip.scores.peek(good.peer_id) > 0
        unknown = await SwarmPeer.start(Identity.generate(), config(ScoreParams()), hub=hub)
        sybils = await sybil_set(hub, 11)
        held = bytes.fromhex(await victim.publish(synthetic_group(SWARM, 2)))
        attack = asyncio.ensure_future(hammer(victim, sybils, [held], rate=50.0, seconds=6.0))
        await asyncio.sleep(1.0)  # simulated: the Sybils have spent the budget above the reserve
        assert victim.metrics().get("busy_requests", 0) > 0
        # the victim's next group, during the attack: the good peer gets it from the victim
        gid = await victim.publish(synthetic_group(SWARM, 3))
        got: set[str] = set()
        assert await wait_for(lambda: gid in drained(good, got), 3.0)
        # the unknown peer (score 0, like the Sybils) is declined as busy: no score lost on
        # either side (the victim does not charge it, it does not charge the victim)
        busy_before = victim.metrics()["busy_requests"]
        answer = await unknown.transport.request(
            victim.peer_id,
            victim.gossip.config.fetch_protocol,
            unknown.gossip.wire.seal_request([gid])[1],
            5.0,
        )
        _, message = decode(answer)
        assert (
            isinstance(message, Response)
            and message.groups == ()
            and message.missing == (bytes.fromhex(gid),)
        )
        assert victim.metrics()["busy_requests"] > busy_before
        assert victim.gossip.scores.peek(unknown.peer_id) == 0.0
        await attack
        assert unknown.gossip.scores.peek(victim.peer_id) >= 0.0
        assert all(victim.gossip.scores.peek(i.peer_id) == 0.0 for i, _ in sybils)
        await asyncio.gather(victim.stop(), good.stop(), unknown.stop())

    run(scenario)


def test_fetches_of_groups_we_do_not_hold_hit_the_lower_limit() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.001)
        score = ScoreParams(empty_fetch_rate=5.0, empty_fetch_burst=50.0)
        victim = await SwarmPeer.start(Identity.generate(), config(score), hub=hub)
        held = bytes.fromhex(await victim.publish(synthetic_group(SWARM, 1)))
        (sybil,) = await sybil_set(hub, 1)
        (fetcher,) = await sybil_set(hub, 1)
        # both at 50 requests/s, half the per-peer limit, for 2 s; the Sybil asks for made-up ids
        empty, full = await asyncio.gather(
            hammer(victim, [sybil], [os.urandom(32)], rate=50.0, seconds=2.0),
            hammer(victim, [fetcher], [held], rate=50.0, seconds=2.0),
        )
        assert full == [1] * 100  # a fetch that finds its group is never limited
        answered = sum(1 for r in empty if r == 0)
        assert 50 <= answered <= 50 + 5 * 2 + 1, answered  # the burst, then 5/s
        m = victim.metrics()
        assert m["rejected.empty_limited"] == 100 - answered
        assert victim.gossip.scores.peek(sybil[0].peer_id) < -30  # charged 1 per refusal
        assert victim.gossip.scores.peek(fetcher[0].peer_id) == 0.0
        await victim.stop()

    run(scenario)
