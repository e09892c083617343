"""hivemind transport: DHT for discovery only, p2pd unary calls for everything else.

The only module that imports `hivemind`.  One p2pd daemon per peer (hivemind's `P2P`), and a
`DHTNode` running in *our* event loop on top of that same daemon (not `hivemind.DHT`, which
forks a process and talks to it through a pipe: that pipe is what crashes on values above
~16 KB, `/work/shared/reference/dependencies.md` section 3).  The DHT holds one tiny record
per peer (its multiaddrs) under `swarmrl/<namespace>/members`, refreshed with a TTL; that is
the whole discovery protocol.  Rollout groups never touch the DHT.

Bytes travel as p2pd *unary* calls: request and answer are single messages multiplexed over
the daemon's persistent control connection (no stream setup per call).  `publish` is a unary
call to every neighbour, so `propagates` is False and the gossip layer relays.  hivemind 1.1.12's
`P2P` has no pubsub (its p2pd client dropped it), so there is nothing to choose there.

The p2pd binding's unary API lives on `P2P._client` (hivemind's public `add_protobuf_handler`
would force a protobuf around our bytes), and the daemon process is `P2P._child`; those two
private attributes are the coupling to hivemind internals here, pinned by the conformance suite.

Stopping is bounded and ends the daemon whatever it does: SIGTERM (hivemind's `P2P.shutdown`),
then SIGKILL if p2pd has not exited within `DAEMON_EXIT_GRACE`.  The DHT's handlers are not
removed one by one first (hivemind's `DHTNode.shutdown`): they die with the daemon, and when
the daemon is already gone (Ctrl-C and `swarmrl lab down` signal the whole process group, so
p2pd dies first) each removal waits for an answer that never comes.

Identity: the node's Ed25519 key is written (mode 0600, in a private temp dir) as the
protobuf key file p2pd's `-id` flag reads, so the daemon's peer id is our protocol peer id.
`allow_peers` makes our handlers refuse unlisted callers and keeps them out of the neighbour
set; p2pd itself has no peer-id connection gater to configure from Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import tempfile
from collections.abc import Iterable
from typing import Any

from hivemind.dht.node import DHTNode
from hivemind.p2p import P2P, PeerID
from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError, P2PHandlerError
from hivemind.utils.timed_storage import get_dht_time
from multiaddr import Multiaddr

from swarm.transport import (
    Allowlist,
    MessageHandler,
    PeerUnreachable,
    RequestHandler,
    RequestTimeout,
    TransportError,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024  # p2pd persistent-connection message cap (default 4 MiB)
DAEMON_EXIT_GRACE = 3.0  # seconds p2pd gets to exit on SIGTERM before SIGKILL


class HivemindTransport:
    """Implements `swarm.transport.Transport` on hivemind's p2pd and DHT."""

    def __init__(
        self,
        libp2p_private_key: bytes,
        peer_id: str,
        namespace: str = "public",
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Iterable[str] = (),
        max_neighbours: int = 8,
        member_ttl: float = 30.0,
        discovery_interval: float = 2.0,
        start_timeout: float = 20.0,
    ) -> None:
        self._key = libp2p_private_key
        self._own = peer_id
        self.namespace = namespace
        self._listen = f"/ip4/{host}/tcp/{port}"
        self.bootstrap = list(bootstrap)
        self.max_neighbours, self.member_ttl = max_neighbours, member_ttl
        self.discovery_interval, self.start_timeout = discovery_interval, start_timeout
        self._p2p: Any = None
        self._dht: Any = None
        self._addresses: list[str] = []
        self._members: dict[str, list[str]] = {}  # peer id -> multiaddrs, from the DHT
        self._callers: dict[str, float] = {}  # peer id -> last time it called us (loop time)
        self._neighbours: list[str] = []
        self._allowed = Allowlist()
        self._tasks: list[asyncio.Task[Any]] = []
        self._keydir: tempfile.TemporaryDirectory[str] | None = None
        self._daemon: asyncio.subprocess.Process | None = None  # p2pd, for `abort`

    @property
    def peer_id(self) -> str:
        return self._own

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    @property
    def propagates(self) -> bool:
        return False

    def accepts(self, peer_id: str) -> bool:
        return self._allowed.accepts(peer_id)

    def allow_peers(self, peer_ids: Iterable[str] | None) -> None:
        self._allowed.set(peer_ids, self._own)

    @property
    def _key_name(self) -> str:
        return f"swarmrl/{self.namespace}/members"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._keydir = tempfile.TemporaryDirectory(prefix="swarmrl-p2pd-")
        key_path = os.path.join(self._keydir.name, "id.key")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self._key)
        try:
            self._p2p = await P2P.create(
                initial_peers=self.bootstrap or None,
                host_maddrs=[self._listen],
                identity_path=key_path,
                check_if_identity_free=False,
                startup_timeout=self.start_timeout,
                auto_nat=False,
                nat_port_map=False,
                use_relay=False,
                persistent_conn_max_msg_size=MAX_MESSAGE,
            )
        except (P2PDaemonError, OSError, asyncio.TimeoutError) as e:
            await self.stop()
            raise TransportError(f"hivemind p2pd failed to start on {self._listen}: {e}") from e
        self._daemon = self._p2p._child
        if str(self._p2p.peer_id) != self._own:
            await self.stop()
            raise TransportError(f"p2pd peer id {self._p2p.peer_id} != identity {self._own}")
        self._addresses = [str(a) for a in await self._p2p.get_visible_maddrs()]
        try:
            self._dht = await asyncio.wait_for(
                DHTNode.create(
                    p2p=self._p2p,
                    initial_peers=self.bootstrap or None,
                    ensure_bootstrap_success=bool(self.bootstrap),
                    wait_timeout=3,
                    num_workers=4,
                ),
                self.start_timeout,
            )
        except Exception as e:
            await self.stop()
            raise TransportError(f"hivemind DHT could not join via {self.bootstrap}: {e}") from e
        await self._discover()
        self._tasks.append(asyncio.ensure_future(self._discovery_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)  # a DHT call that ignores its cancel is left
        self._tasks = []
        if self._dht is not None:
            self._dht.is_alive = False  # ends its background jobs; its handlers go with the daemon
            self._dht = None
        if self._p2p is not None:
            p2p, self._p2p = self._p2p, None
            shutdown = asyncio.ensure_future(p2p.shutdown())  # closes the client, SIGTERMs p2pd, waits
            done, _ = await asyncio.wait({shutdown}, timeout=DAEMON_EXIT_GRACE)
            if not done:
                log.warning("p2pd did not exit %.0f s after SIGTERM; killing it", DAEMON_EXIT_GRACE)
                self.abort()
                await asyncio.wait({shutdown}, timeout=DAEMON_EXIT_GRACE)
            if shutdown.done() and not shutdown.cancelled() and shutdown.exception() is not None:
                log.debug("p2pd shutdown: %s", shutdown.exception())
            elif not shutdown.done():
                shutdown.cancel()
        self._daemon = None
        if self._keydir is not None:
            self._keydir.cleanup()
            self._keydir = None

    def abort(self) -> None:
        daemon = self._daemon
        if daemon is not None and daemon.returncode is None:  # not reaped yet: the PID is still ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon.pid, signal.SIGKILL)

    # -- discovery -----------------------------------------------------------------------------
    async def _discovery_loop(self) -> None:
        period = self.discovery_interval
        while True:
            await asyncio.sleep(period * random.uniform(0.8, 1.2))
            try:
                await self._discover()
            except Exception as e:  # the DHT is best effort; neighbours persist meanwhile
                log.debug("discovery failed: %s", e)
            period = min(period * 1.5, self.member_ttl / 3)

    async def _discover(self) -> None:
        """Refresh our record in the DHT and re-read everyone else's."""
        now = get_dht_time()
        await self._dht.store(self._key_name, self._addresses, now + self.member_ttl, subkey=self._own)
        found = await self._dht.get(self._key_name, latest=True)
        members: dict[str, list[str]] = {}
        if found is not None and isinstance(found.value, dict):
            for subkey, item in found.value.items():
                addrs = item.value
                if isinstance(subkey, str) and subkey != self._own and isinstance(addrs, list):
                    members[subkey] = [a for a in addrs if isinstance(a, str)][:16]
        self._members = members
        self._refresh_neighbours()

    def _refresh_neighbours(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        recent = {p for p, t in self._callers.items() if loop_now - t < self.member_ttl}
        candidates = [p for p in set(self._members) | recent if self.accepts(p)]
        keep = [p for p in self._neighbours if p in candidates]
        fresh = [p for p in candidates if p not in keep]
        random.shuffle(fresh)
        self._neighbours = (keep + fresh)[: self.max_neighbours]

    async def connect(self, address: str) -> str:
        maddr = Multiaddr(address)
        peer = PeerID.from_base58(maddr.value_for_protocol("p2p"))
        try:
            await asyncio.wait_for(self._p2p._client.connect(peer, [maddr]), 5)
        except Exception as e:
            raise PeerUnreachable(f"cannot connect to {address}: {e}") from e
        self._members.setdefault(peer.to_base58(), [address])
        self._refresh_neighbours()
        return str(peer.to_base58())

    def connected_peers(self) -> list[str]:
        return list(self._neighbours)

    def _note_caller(self, peer: str) -> None:
        known = peer in self._callers
        self._callers[peer] = asyncio.get_running_loop().time()
        if not known and peer not in self._neighbours and len(self._neighbours) < self.max_neighbours:
            self._neighbours.append(peer)

    # -- messaging -----------------------------------------------------------------------------
    async def subscribe(self, topic: str, handler: MessageHandler) -> None:
        async def on_message(data: bytes, remote: PeerID) -> bytes:
            sender = remote.to_base58()
            if not self.accepts(sender):
                raise PermissionError("not on the allowlist")
            self._note_caller(sender)
            asyncio.ensure_future(handler(sender, data))
            return b""

        await self._p2p._client.add_unary_handler(topic, on_message)

    async def publish(self, topic: str, data: bytes) -> None:
        async def one(peer: str) -> None:
            try:
                await self.request(peer, topic, data, timeout=5.0)
            except TransportError as e:
                log.debug("publish to %s failed: %s", peer, e)

        await asyncio.gather(*(one(p) for p in self._neighbours))

    async def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        async def on_request(data: bytes, remote: PeerID) -> bytes:
            caller = remote.to_base58()
            if not self.accepts(caller):
                raise PermissionError("not on the allowlist")
            self._note_caller(caller)
            return await handler(caller, data)

        await self._p2p._client.add_unary_handler(protocol, on_request)

    async def request(self, peer_id: str, protocol: str, data: bytes, timeout: float) -> bytes:
        if self._p2p is None:
            raise PeerUnreachable("transport stopped")
        if not self.accepts(peer_id):
            raise PeerUnreachable(f"{peer_id} is not on the allowlist")
        try:
            return await asyncio.wait_for(
                self._p2p._client.call_unary_handler(PeerID.from_base58(peer_id), protocol, data), timeout
            )
        except asyncio.TimeoutError:
            raise RequestTimeout(f"{peer_id}/{protocol}: no answer in {timeout:.1f}s") from None
        except (P2PHandlerError, P2PDaemonError, ConnectionError, OSError, ValueError) as e:
            raise PeerUnreachable(f"{peer_id}/{protocol}: {e}") from e
