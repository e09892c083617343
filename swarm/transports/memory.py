"""In-process transport: a hub that moves bytes between `MemoryTransport`s with injected faults.

Used by unit tests and by the large-swarm simulation, so it is kept cheap: a message is one
`loop.call_later` and one task, nothing is copied.  Faults:

* `latency` (seconds, one way) plus uniform `jitter`, and optional `bandwidth` (bytes/s per
  link) so that a 100 KB group takes longer than a 200-byte announce;
* `loss`: each published message and each request is dropped with this probability (a lost
  request surfaces as `RequestTimeout` after the caller's timeout, like a dead TCP peer);
* `partition(a, b, ...)`: peers in different groups cannot reach each other until `heal()`;
* `crash(peer_id)`: the peer silently stops sending and answering (its handlers are never
  called again); requests to it fail with `PeerUnreachable`.

A request handler that raises (a ban, a rate limit, a refused frame) makes the caller's
`request` raise `PeerUnreachable`, as the real transports do: the exception never crosses
peers, so tests see the same errors production does.

Topology: with `degree=None` every peer neighbours every other (small tests); with
`degree=D` a joining peer links to D random earlier peers (both directions), giving the sparse
random graph a real swarm has, so `propagates` is False and gossip relays.

`VirtualClockLoop` is an asyncio loop whose clock jumps straight to the next timer instead of
sleeping, so a 10,000-peer simulation of a 30 s round takes CPU time only.  Everything above
the transport reads time from the running loop, so it runs unchanged on it.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from swarm.transport import Allowlist, MessageHandler, PeerUnreachable, RequestHandler, RequestTimeout


@dataclass
class LinkStats:
    """Traffic counted by the hub, per sending peer."""

    messages: int = 0  # published messages and requests/responses sent
    bytes: int = 0  # payload bytes of the above


class MemoryHub:
    """The shared medium.  One hub per simulated swarm."""

    def __init__(
        self,
        latency: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        bandwidth: float | None = None,
        degree: int | None = None,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.bandwidth = bandwidth
        self.degree = degree
        self.rng = random.Random(seed)
        self.peers: dict[str, MemoryTransport] = {}
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        self.crashed: set[str] = set()
        self.stats: dict[str, LinkStats] = defaultdict(LinkStats)
        self._partition_of: dict[str, int] = {}

    # -- faults ------------------------------------------------------------------------------
    def partition(self, *groups: Iterable[str]) -> None:
        """Split the peers into groups that cannot reach each other (unlisted peers: group 0)."""
        self._partition_of = {pid: i + 1 for i, group in enumerate(groups) for pid in group}

    def heal(self) -> None:
        self._partition_of = {}

    def crash(self, peer_id: str) -> None:
        self.crashed.add(peer_id)

    # -- mechanics ---------------------------------------------------------------------------
    def reachable(self, src: str, dst: str) -> bool:
        if src in self.crashed or dst in self.crashed or dst not in self.peers:
            return False
        if not self.peers[dst].accepts(src) or not self.peers[src].accepts(dst):
            return False
        return self._partition_of.get(src, 0) == self._partition_of.get(dst, 0)

    def delay(self, size: int) -> float:
        d = self.latency + (self.rng.uniform(0.0, self.jitter) if self.jitter else 0.0)
        if self.bandwidth:
            d += size / self.bandwidth
        return d

    def lost(self) -> bool:
        return self.loss > 0.0 and self.rng.random() < self.loss

    def join(self, transport: MemoryTransport) -> None:
        pid = transport.peer_id
        existing = [p for p in self.peers if p not in self.crashed]
        self.peers[pid] = transport
        if self.degree is None:
            links = existing
        else:
            links = self.rng.sample(existing, min(self.degree, len(existing)))
        for other in links:
            self.link(pid, other)

    def link(self, a: str, b: str) -> None:
        if a != b:
            self.neighbours[a].add(b)
            self.neighbours[b].add(a)

    def leave(self, peer_id: str) -> None:
        self.peers.pop(peer_id, None)
        for other in self.neighbours.pop(peer_id, set()):
            self.neighbours[other].discard(peer_id)

    def count(self, peer_id: str, size: int) -> None:
        s = self.stats[peer_id]
        s.messages += 1
        s.bytes += size


@dataclass
class MemoryTransport:
    """One peer on a `MemoryHub`.  Implements `swarm.transport.Transport`."""

    hub: MemoryHub
    own_id: str
    _subs: dict[str, list[MessageHandler]] = field(default_factory=lambda: defaultdict(list))
    _handlers: dict[str, RequestHandler] = field(default_factory=dict)
    _allowed: Allowlist = field(default_factory=Allowlist)
    _running: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def peer_id(self) -> str:
        return self.own_id

    @property
    def addresses(self) -> list[str]:
        return [f"memory://{self.own_id}"] if self._running else []

    @property
    def propagates(self) -> bool:
        return False

    def accepts(self, peer_id: str) -> bool:
        return self._allowed.accepts(peer_id)

    def allow_peers(self, peer_ids: Iterable[str] | None) -> None:
        self._allowed.set(peer_ids, self.own_id)

    async def start(self) -> None:
        if not self._running:
            self._running = True
            self.hub.join(self)

    async def stop(self) -> None:
        self._running = False
        self.hub.leave(self.own_id)
        for t in list(self._tasks):
            t.cancel()

    def abort(self) -> None:
        pass  # nothing here outlives the process

    async def connect(self, address: str) -> str:
        pid = address.removeprefix("memory://")
        if not self.hub.reachable(self.own_id, pid):
            raise PeerUnreachable(f"memory peer {pid} unreachable")
        self.hub.link(self.own_id, pid)
        return pid

    def connected_peers(self) -> list[str]:
        hub = self.hub
        return [p for p in hub.neighbours.get(self.own_id, ()) if hub.reachable(self.own_id, p)]

    async def subscribe(self, topic: str, handler: MessageHandler) -> None:
        self._subs[topic].append(handler)

    async def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        self._handlers[protocol] = handler

    async def publish(self, topic: str, data: bytes) -> None:
        hub = self.hub
        if self.own_id in hub.crashed:
            return
        loop = asyncio.get_running_loop()
        for dst in self.connected_peers():
            hub.count(self.own_id, len(data))
            if hub.lost():
                continue
            loop.call_later(hub.delay(len(data)), self._deliver, dst, topic, data)

    def _deliver(self, dst: str, topic: str, data: bytes) -> None:
        target = self.hub.peers.get(dst)
        if target is None or dst in self.hub.crashed or not target._running:
            return
        for handler in target._subs.get(topic, ()):
            task = asyncio.ensure_future(handler(self.own_id, data))
            target._tasks.add(task)
            task.add_done_callback(target._tasks.discard)

    async def request(self, peer_id: str, protocol: str, data: bytes, timeout: float) -> bytes:
        hub = self.hub
        if not hub.reachable(self.own_id, peer_id):
            await asyncio.sleep(hub.latency)
            raise PeerUnreachable(f"memory peer {peer_id} unreachable")
        target = hub.peers[peer_id]
        handler = target._handlers.get(protocol)
        if handler is None:
            raise PeerUnreachable(f"{peer_id} does not serve {protocol}")
        hub.count(self.own_id, len(data))
        lost = hub.lost()

        async def call() -> bytes:
            await asyncio.sleep(hub.delay(len(data)))
            if lost or peer_id in hub.crashed:
                await asyncio.Event().wait()  # never answered: the caller's timeout fires
            try:
                answer = await handler(self.own_id, data)
            except Exception as e:  # a refusal travels back as an error, as on libp2p and hivemind
                await asyncio.sleep(hub.delay(0))
                raise PeerUnreachable(f"{peer_id} refused {protocol}: {e!r}") from e
            hub.count(peer_id, len(answer))
            await asyncio.sleep(hub.delay(len(answer)))
            return answer

        try:
            return await asyncio.wait_for(call(), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"{peer_id}/{protocol}: no answer in {timeout:.1f}s") from None


class _VirtualSelector(selectors.SelectSelector):
    """A selector that never blocks: waiting `timeout` seconds just advances the loop's clock."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)  # the loop's own self-pipe (call_soon_threadsafe)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("virtual clock: nothing scheduled and nothing ready (deadlock)")
        self._loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """asyncio loop on simulated time: `loop.time()` advances only when every task is waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self.now
