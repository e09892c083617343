"""The seam between gossip and a P2P library: a `Transport` moves opaque bytes between peers.

Everything above this interface (gossip, scoring, membership) is written once and runs over
any backend; everything below it (hivemind's p2pd, py-libp2p on trio, the in-memory hub) only
moves bytes and never parses them.  The node-facing API is asyncio: every coroutine here runs
on the caller's event loop, and a backend built on another framework (py-libp2p runs on trio)
bridges internally.

Two delivery primitives:

* `publish(topic, data)` hands a small message to the transport's broadcast.  A transport whose
  `propagates` is True (GossipSub) delivers it to every subscriber of the topic, multi-hop; one
  whose `propagates` is False delivers it to the peers in `connected_peers()` only, and the
  gossip layer relays.
* `request(peer_id, protocol, data, timeout)` is a unary call to one peer, answered by the
  handler that peer registered with `await set_request_handler(protocol, handler)`.  Bulk bytes
  (rollout groups) travel this way.

Handlers receive the transport-level sender (the neighbour that handed us the bytes, or for
GossipSub the origin it claims).  It is a hint for rate limiting only: authorship is decided by
the signed envelope inside the bytes, which the transport never inspects.

A transport with an allowlist refuses connections and requests from peers outside it where its
library allows (`allow_peers`); the gossip layer enforces the same list on signatures anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

MessageHandler = Callable[[str, bytes], Awaitable[None]]
"""`(sender_peer_id, data)`: called once per message received on a subscribed topic."""

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
"""`(caller_peer_id, request_bytes) -> response_bytes` for one registered protocol."""


class TransportError(Exception):
    """A transport operation failed (start-up, send, request); the message says which and why."""


class PeerUnreachable(TransportError):
    """The peer is not connected, refused the stream, or died mid-transfer."""


class RequestTimeout(TransportError):
    """The peer did not answer within the timeout."""


@runtime_checkable
class Transport(Protocol):
    """Opaque-bytes messaging between peers.  Implementations: memory, hivemind, libp2p."""

    @property
    def peer_id(self) -> str:
        """This peer's id in libp2p format (base58 multihash of the public key)."""
        ...

    @property
    def addresses(self) -> list[str]:
        """Multiaddrs (with `/p2p/<peer_id>`) other peers can dial; empty before `start`."""
        ...

    @property
    def propagates(self) -> bool:
        """True if `publish` reaches every subscriber (multi-hop); False if only neighbours."""
        ...

    async def start(self) -> None:
        """Listen, connect to bootstrap peers.  Raises `TransportError` (never hangs)."""
        ...

    async def stop(self) -> None:
        """Close connections and release every resource (threads, daemons).  Idempotent."""
        ...

    def abort(self) -> None:
        """For a `stop` that did not finish: at once, without waiting, end what would outlive
        this process (a daemon child).  Safe from any thread; idempotent."""
        ...

    async def publish(self, topic: str, data: bytes) -> None:
        """Broadcast a small message; best effort (the gossip layer repairs losses)."""
        ...

    async def subscribe(self, topic: str, handler: MessageHandler) -> None:
        """Call `handler` for every message received on `topic` (not for our own)."""
        ...

    async def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        """Serve requests for `protocol`; a handler exception is sent back as a failure."""
        ...

    async def request(self, peer_id: str, protocol: str, data: bytes, timeout: float) -> bytes:
        """Send `data` to `peer_id`'s `protocol` handler and return its answer.

        Raises `PeerUnreachable` or `RequestTimeout`."""
        ...

    async def connect(self, address: str) -> str:
        """Dial a multiaddr (or memory address); returns the remote peer id."""
        ...

    def connected_peers(self) -> list[str]:
        """Peer ids we currently hold a live connection to."""
        ...

    def allow_peers(self, peer_ids: Iterable[str] | None) -> None:
        """Restrict connections to these peer ids (None: anyone).  Best effort per library."""
        ...


class Allowlist:
    """Which peers a transport talks to: anyone (`None`), or a set that always includes itself.
    Shared by every backend so a private swarm means the same thing on each."""

    def __init__(self) -> None:
        self.allowed: set[str] | None = None

    def set(self, peer_ids: Iterable[str] | None, own_id: str) -> None:
        self.allowed = None if peer_ids is None else set(peer_ids) | {own_id}

    def accepts(self, peer_id: str) -> bool:
        return self.allowed is None or peer_id in self.allowed
