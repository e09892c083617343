"""The py-libp2p transport in one process: the trio<->asyncio bridge, and no silent drops.

py-libp2p's defaults drop GossipSub messages beyond 10 msg/s per peer and topic, and when its
32-slot subscription queue or 32-RPC outbound queue is full.  The burst test publishes far
past all three limits, unpaced, and requires every message at every subscriber.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from protocol import Identity
from swarm.testing import wait_for
from swarm.transport import PeerUnreachable, RequestTimeout

libp2p_transport = pytest.importorskip("swarm.transports.libp2p_transport")
pytestmark = pytest.mark.swarm


async def three_hosts() -> list[libp2p_transport.Libp2pTransport]:
    hub = libp2p_transport.Libp2pTransport(Identity.generate().private_seed())
    await hub.start()
    leaves = [libp2p_transport.Libp2pTransport(Identity.generate().private_seed(), bootstrap=hub.addresses)
              for _ in range(2)]  # fmt: skip
    for leaf in leaves:
        await leaf.start()
    return [hub, *leaves]


def test_peer_id_is_the_protocol_peer_id() -> None:
    async def scenario() -> None:
        ident = Identity.generate()
        t = libp2p_transport.Libp2pTransport(ident.private_seed())
        await t.start()
        try:
            assert t.peer_id == ident.peer_id
            assert t.addresses and t.addresses[0].endswith(f"/p2p/{ident.peer_id}")
        finally:
            await t.stop()

    asyncio.run(scenario())


def test_unpaced_burst_is_delivered_completely_two_hops() -> None:
    async def scenario() -> None:
        hosts = await three_hosts()
        try:
            got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
            for i, h in enumerate(hosts):

                async def handler(sender: str, data: bytes, i: int = i) -> None:
                    got[i].append(data)

                await h.subscribe("burst", handler)
            # leaves only know the hub: a leaf's message reaches the other leaf in two hops
            meshes = [2, 1, 1]  # hub meshes with both leaves, each leaf with the hub
            assert await wait_for(lambda: [h.mesh_size("burst") for h in hosts] == meshes, 120)
            n = 400  # 40x the default per-peer rate limit, 12x the default queues
            await asyncio.gather(
                *(hosts[1].publish("burst", i.to_bytes(4, "big") + bytes(2000)) for i in range(n))
            )
            assert await wait_for(lambda: len(got[0]) == n and len(got[2]) == n, 180), (
                len(got[0]),
                len(got[2]),
            )
            assert sorted(int.from_bytes(d[:4], "big") for d in got[2]) == list(range(n))
            assert not got[1]  # our own messages are not handed back
        finally:
            for h in hosts:
                await h.stop()

    asyncio.run(scenario())


def test_bridge_carries_results_errors_and_timeouts() -> None:
    async def scenario() -> None:
        hosts = await three_hosts()
        try:
            server, client = hosts[0], hosts[1]
            thread_names: list[str] = []

            async def echo(caller: str, data: bytes) -> bytes:
                thread_names.append(threading.current_thread().name)  # handlers run on asyncio
                assert caller == client.peer_id
                return data[::-1]

            async def fails(caller: str, data: bytes) -> bytes:
                raise PermissionError("nope")

            async def slow(caller: str, data: bytes) -> bytes:
                await asyncio.sleep(30)
                return b""

            await server.set_request_handler("/t/echo", echo)
            await server.set_request_handler("/t/fails", fails)
            await server.set_request_handler("/t/slow", slow)
            assert await client.request(server.peer_id, "/t/echo", b"abc" * 50_000, 5) == b"cba" * 50_000
            assert thread_names == [threading.main_thread().name]
            with pytest.raises(PeerUnreachable, match="nope"):
                await client.request(server.peer_id, "/t/fails", b"x", 5)
            with pytest.raises(PeerUnreachable):
                await client.request(server.peer_id, "/t/unknown", b"x", 5)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(RequestTimeout):
                await client.request(server.peer_id, "/t/slow", b"x", 0.5)
            assert loop.time() - t0 < 15  # the 0.5 s timeout fired, with slack for a busy machine
            # the bridge is still healthy after a cancelled call
            assert await client.request(server.peer_id, "/t/echo", b"ok", 5) == b"ko"
        finally:
            for h in hosts:
                await h.stop()

    asyncio.run(scenario())


def test_allowlist_closes_connections_from_unlisted_peers() -> None:
    async def scenario() -> None:
        a_id, b_id = Identity.generate(), Identity.generate()
        a = libp2p_transport.Libp2pTransport(a_id.private_seed())
        a.allow_peers([Identity.generate().peer_id])  # b is not on it
        await a.start()
        b = libp2p_transport.Libp2pTransport(b_id.private_seed())
        await b.start()
        try:
            try:
                await b.connect(a.addresses[0])
            except PeerUnreachable:
                pass
            assert await wait_for(lambda: a.refused >= 1, 60)
            assert await wait_for(lambda: b_id.peer_id not in a.connected_peers(), 60)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())
