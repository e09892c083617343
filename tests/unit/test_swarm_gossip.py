"""Gossip over the in-memory transport with injected faults, on a simulated clock.

Every scenario runs on `VirtualClockLoop`: timeouts, retries and sync rounds cost no wall
time, so a 30 s bound is a bound on simulated time and the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

from protocol import Identity, encode, sign_group
from protocol.messages import Announce, AnnounceItem, Response
from swarm.gossip import GossipConfig
from swarm.peer import SwarmConfig, SwarmPeer
from swarm.scoring import ScoreParams
from swarm.testing import run_virtual as run
from swarm.testing import synthetic_group, wait_for
from swarm.transports.memory import MemoryHub, MemoryTransport

SWARM = "unit"


def config(**gossip: Any) -> SwarmConfig:
    base = GossipConfig(sync_interval=2.0, fetch_timeout=1.0)
    return SwarmConfig(backend="memory", swarm_id=SWARM, gossip=replace(base, **gossip))


async def start_peers(hub: MemoryHub, n: int, cfg: SwarmConfig | None = None) -> list[SwarmPeer]:
    return [await SwarmPeer.start(Identity.generate(), cfg or config(), hub=hub) for _ in range(n)]


def admitted(peer: SwarmPeer, log: dict[str, list[str]]) -> set[str]:
    log.setdefault(peer.peer_id, []).extend(it.group_id for it in peer.inbox.drain())
    return set(log[peer.peer_id])


async def stop_all(peers: list[SwarmPeer]) -> None:
    for p in peers:
        await p.stop()


def test_every_group_reaches_every_peer_over_a_sparse_lossy_graph() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.02, jitter=0.01, loss=0.1, degree=3, seed=7)
        peers = await start_peers(hub, 30)
        gids = {p.peer_id: [await p.publish(synthetic_group(SWARM, i * 10 + k)) for k in range(2)]
                for i, p in enumerate(peers[:5])}  # fmt: skip
        log: dict[str, list[str]] = {}
        everyone = {g for ids in gids.values() for g in ids}

        def done() -> bool:
            return all(everyone - set(gids.get(p.peer_id, [])) <= admitted(p, log) for p in peers)

        assert await wait_for(done, 30.0)
        for p in peers:  # exactly once, and nothing was rejected
            assert len(log[p.peer_id]) == len(set(log[p.peer_id]))
            assert p.metrics().get("rejected_total", 0) == 0
        await stop_all(peers)

    run(scenario)


def test_partition_blocks_then_heal_delivers() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        peers = await start_peers(hub, 6)
        left, right = peers[:3], peers[3:]
        hub.partition([p.peer_id for p in left], [p.peer_id for p in right])
        gid = await left[0].publish(synthetic_group(SWARM, 1))
        log: dict[str, list[str]] = {}
        assert await wait_for(lambda: all(gid in admitted(p, log) for p in left[1:]), 5.0)
        assert not await wait_for(lambda: any(gid in admitted(p, log) for p in right), 5.0)
        hub.heal()  # nobody re-announces: the periodic inventory sync repairs it
        assert await wait_for(lambda: all(gid in admitted(p, log) for p in right), 10.0)
        await stop_all(peers)

    run(scenario)


def test_holder_crash_mid_fetch_falls_back_to_other_holders() -> None:
    async def scenario() -> None:
        # 100 KB at 1 MB/s: a fetch takes ~0.1 s, so the crash lands during transfers
        hub = MemoryHub(latency=0.01, bandwidth=1_000_000, degree=3, seed=3)
        peers = await start_peers(hub, 12)
        origin = peers[0]
        gid = await origin.publish(synthetic_group(SWARM, 5, size=100_000))
        log: dict[str, list[str]] = {}
        assert await wait_for(lambda: any(gid in admitted(p, log) for p in peers[1:]), 5.0)
        hub.crash(origin.peer_id)
        assert await wait_for(lambda: all(gid in admitted(p, log) for p in peers[1:]), 30.0)
        await stop_all(peers)

    run(scenario)


def test_late_joiner_receives_groups_still_served() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01, degree=2, seed=1)
        peers = await start_peers(hub, 5)
        gids = [await p.publish(synthetic_group(SWARM, i)) for i, p in enumerate(peers)]
        log: dict[str, list[str]] = {}
        assert await wait_for(lambda: all(len(admitted(p, log)) == 4 for p in peers), 10.0)
        late = (await start_peers(hub, 1))[0]
        assert await wait_for(lambda: set(gids) <= admitted(late, log), 10.0)
        await stop_all([*peers, late])

    run(scenario)


def test_want_callback_decides_what_is_fetched() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        a, b = await start_peers(hub, 2)
        picky = await SwarmPeer.start(
            Identity.generate(),
            config(),
            hub=hub,
            want=lambda e: e.item.task == "basic_arithmetic" and e.size < 20_000,
        )
        small = await a.publish(synthetic_group(SWARM, 1, size=4_000))
        big = await b.publish(synthetic_group(SWARM, 2, size=60_000))
        log: dict[str, list[str]] = {}
        assert await wait_for(lambda: small in admitted(picky, log), 5.0)
        assert not await wait_for(lambda: big in admitted(picky, log), 5.0)
        assert picky.metrics()["unwanted"] >= 1
        await stop_all([a, b, picky])

    run(scenario)


def test_hostile_pushes_are_rejected_by_reason_and_banned() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.005)
        # threshold -100: the five single faults (-65 together) are all counted before the
        # flood's rate-limit penalties (-1 per dropped message) push the peer into a ban
        cfg = config(score=ScoreParams(msg_rate=10.0, msg_burst=20.0, ban_threshold=-100.0))
        honest = await start_peers(hub, 3, cfg)
        evil_id = Identity.generate()
        evil = MemoryTransport(hub, evil_id.peer_id)
        await evil.start()
        topic = honest[0].gossip.config.topic

        def announce(identity: Identity = evil_id) -> bytes:
            item = AnnounceItem(
                group_id=os.urandom(32), task="t", num_completions=1, size_bytes=10, policy_version=0
            )
            return encode(Announce(items=(item,)), identity, SWARM)

        forged = bytearray(announce())
        forged[-3] ^= 1
        victim_frame = announce(Identity.generate())  # someone else's valid frame, relayed by evil
        replay = announce()
        for frame in [os.urandom(100), bytes(forged), b"\x92" + bytes(70_000), replay, replay, victim_frame]:
            await evil.publish(topic, frame)
            await asyncio.sleep(0.05)
        for _ in range(100):  # 100 msg/s = 10x the limit
            await evil.publish(topic, announce())
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        for p in honest:
            m = p.metrics()
            structural = (
                "malformed",
                "schema",
                "too_many_elements",
                "length_limit",
                "too_deep",
                "unknown_type",
            )
            assert (
                sum(m.get(f"rejected.{r}", 0) for r in structural) == 1
            )  # random bytes: whichever check fires
            assert m["rejected.bad_signature"] == 1
            assert m["rejected.too_large"] == 1
            assert m["rejected.replayed"] == 1
            assert m["rejected.sender_mismatch"] == 1
            assert m["rejected.rate_limited"] >= 1
            assert m["banned_peers"] == 1 and m["rejected.banned"] > 0
            assert m["peer_scores"][evil_id.peer_id] < -90  # banned below -100, decaying since
        # honest traffic is unaffected
        gid = await honest[0].publish(synthetic_group(SWARM, 9))
        log: dict[str, list[str]] = {}
        assert await wait_for(lambda: all(gid in admitted(p, log) for p in honest[1:]), 5.0)
        await stop_all(honest)

    run(scenario)


def test_tampered_group_from_a_holder_is_rejected_and_fetched_elsewhere() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        origin_id = Identity.generate()
        origin = await SwarmPeer.start(origin_id, config(), hub=hub)
        receiver = (await start_peers(hub, 1))[0]
        liar_id = Identity.generate()
        liar = MemoryTransport(hub, liar_id.peer_id)
        await liar.start()
        good = sign_group(synthetic_group(SWARM, 3), origin_id)
        bad = replace(good, ground_truth="tampered")  # same id and origin signature, other content

        async def serve_bad(caller: str, data: bytes) -> bytes:
            return encode(Response(request_id=_request_id(data), groups=(bad,)), liar_id, SWARM)

        await liar.set_request_handler(receiver.gossip.config.fetch_protocol, serve_bad)
        item = AnnounceItem(
            group_id=good.group_id, task="t", num_completions=4, size_bytes=100, policy_version=0
        )
        await liar.publish(receiver.gossip.config.topic, encode(Announce(items=(item,)), liar_id, SWARM))
        assert await wait_for(lambda: receiver.metrics().get("rejected.bad_group_id", 0) == 1, 5.0)
        log: dict[str, list[str]] = {}
        assert not admitted(receiver, log)
        # the lie is blamed on the liar, not on the group: the genuine copy still gets in
        assert await origin.publish(good) == good.group_id.hex()
        assert await wait_for(lambda: good.group_id.hex() in admitted(receiver, log), 5.0)
        assert receiver.metrics()["peer_scores"][liar_id.peer_id] < 0
        await stop_all([origin, receiver])

    run(scenario)


def _request_id(frame: bytes) -> bytes:
    from protocol import decode

    _, message = decode(frame)
    return message.request_id  # type: ignore[union-attr]


def test_private_swarm_drops_unlisted_peers() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        ids = [Identity.generate() for _ in range(3)]
        cfg = config(allowlist=frozenset(i.peer_id for i in ids))
        members = [await SwarmPeer.start(i, cfg, hub=hub) for i in ids]
        outsider = (await start_peers(hub, 1))[0]
        theirs = await outsider.publish(synthetic_group(SWARM, 1))
        ours = await members[0].publish(synthetic_group(SWARM, 2))
        log: dict[str, list[str]] = {}
        assert await wait_for(lambda: all(ours in admitted(p, log) for p in members[1:]), 5.0)
        assert not await wait_for(
            lambda: theirs in admitted(members[1], log) or bool(admitted(outsider, log)), 5.0
        )
        assert outsider.transport.connected_peers() == []  # the hub refuses the links both ways
        await stop_all([*members, outsider])

    run(scenario)


def test_simulated_300_peer_swarm_reaches_everyone() -> None:
    async def scenario() -> float:
        hub = MemoryHub(latency=0.05, jitter=0.05, degree=6, seed=11)
        cfg = config(sync_interval=60.0, card_interval=600.0)
        peers = await start_peers(hub, 300, cfg)
        start = asyncio.get_running_loop().time()
        gid = await peers[0].publish(synthetic_group(SWARM, 1, size=2_000))
        assert await wait_for(lambda: all(gid in p.gossip.outbox for p in peers[1:]), 30.0, interval=0.05)
        elapsed = asyncio.get_running_loop().time() - start
        await stop_all(peers)
        return elapsed

    elapsed = run(scenario)
    assert elapsed < 5.0  # ~log_6(300) hops of ~0.25 s each (latency + fetch round trip)


def _count_fetch_tasks(peer: SwarmPeer, give_up_after: int = 200) -> list[int]:
    """Count the victim's fetch tasks; past `give_up_after` stop its gossip, so a busy loop ends
    (and fails the test) instead of spinning forever on the simulated clock."""
    gossip, count = peer.gossip, [0]
    fetch = gossip._fetch

    def counted(entry: Any) -> Any:
        count[0] += 1
        if count[0] >= give_up_after:
            gossip._running = False
        return fetch(entry)

    gossip._fetch = counted  # type: ignore[method-assign]
    return count


def _entry(n: int) -> Any:
    from swarm.protocol_wire import entry_for

    return entry_for(sign_group(synthetic_group(SWARM, n), Identity.generate()))


def test_fetch_with_only_banned_holders_gives_up_instead_of_spinning() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        (victim,) = await start_peers(hub, 1)
        count = _count_fetch_tasks(victim)
        entry = _entry(1)
        for holder in [f"banned-{i}" for i in range(3)]:
            for _ in range(5):
                victim.gossip.scores.penalize(holder, "bad_signature")  # -100 < -50: banned
            victim.gossip._consider([entry], holder)
        await asyncio.sleep(5.0)
        assert count[0] == 1  # one task, which found nobody to ask and stopped
        m = victim.metrics()
        assert m.get("fetch_attempts", 0) == 0 and m["pending_fetches"] == 0
        await stop_all([victim])

    run(scenario)


def test_each_failing_holder_is_asked_once_per_announce() -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        (victim,) = await start_peers(hub, 1, config(fetch_attempts=4))
        count = _count_fetch_tasks(victim)
        entry = _entry(2)
        for i in range(6):  # six holders that are not on the hub: every request fails
            victim.gossip._consider([entry], f"gone-{i}")
        await asyncio.sleep(30.0)
        m = victim.metrics()
        assert m["fetch_failures"] == 6 and count[0] == 2  # each once: 4, then 2 in a follow-up task
        assert m["fetch_attempts"] == 6 and m["pending_fetches"] == 0
        victim.gossip._consider([entry], "gone-0")  # a new announce tries again
        await asyncio.sleep(5.0)
        assert victim.metrics()["fetch_attempts"] == 7
        await stop_all([victim])

    run(scenario)


def test_reported_misconduct_is_counted_under_its_plain_name_and_bans_show_in_the_snapshot() -> None:
    from swarm.misconduct import Misconduct

    async def scenario() -> None:
        hub = MemoryHub(seed=3)
        a, b = await start_peers(hub, 2)
        for _ in range(12):  # 10 points each: the liar's score crosses the ban threshold
            a.report(b.peer_id, Misconduct.REWARD_MISMATCH)
        m = a.metrics()
        assert m["rejected.reward_mismatch"] == 12 and not any("Misconduct" in k for k in m)
        assert m["banned"] == [b.peer_id] and m["banned_peers"] == 1
        await stop_all([a, b])

    run(scenario)
