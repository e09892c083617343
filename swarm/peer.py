"""`SwarmPeer`: what the node uses.  One call builds the transport, the wire and the gossip.

    identity = load_key_file("swarm.key")
    peer = await SwarmPeer.start(identity, SwarmConfig(backend="hivemind", bootstrap=[addr]))
    group_id = await peer.publish(signed_or_unsigned_group)     # announce one of ours
    items = peer.inbox.drain(16)                                # admitted peers' groups
    stats = peer.metrics()                                      # flat dict + "peer_scores"
    await peer.stop()                                           # bounded; False if it had to abort

Backends are imported lazily by name, so a node that runs on libp2p never imports hivemind
(the two cannot share a process: their bundled protobuf descriptors collide).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from protocol import Identity, IdentityError, peer_id_from_public_key, public_key_from_peer_id
from swarm.gossip import Gossip, GossipConfig, WantFn
from swarm.inbox import Inbox
from swarm.misconduct import Misconduct
from swarm.protocol_wire import ProtocolWire
from swarm.transport import Transport, TransportError

log = logging.getLogger(__name__)

Backend = Literal["hivemind", "libp2p", "memory"]
BACKENDS: tuple[str, ...] = ("hivemind", "libp2p", "memory")
DEFAULT_BACKEND: Backend = "hivemind"  # chosen from benchmarks/swarm.py: see docs/benchmarks.md


@dataclass(frozen=True)
class SwarmConfig:
    """How to join a swarm.  `gossip.swarm_id` and `gossip.allowlist` are filled from here."""

    backend: Backend = DEFAULT_BACKEND
    swarm_id: str = "public"  # scopes topics, protocol names and DHT keys
    host: str = "127.0.0.1"  # listen address ("0.0.0.0" to accept remote peers)
    port: int = 0  # 0: any free port
    bootstrap: tuple[str, ...] = ()  # multiaddrs of bootstrap peers (from `swarmrl bootstrap`)
    allowlist_file: str | None = None  # private swarm: file of allowed public keys / peer ids
    start_timeout: float = 20.0  # per attempt; start never waits longer than attempts x this
    start_attempts: int = 3  # tries before giving up (port in use, daemon down, bootstrap away)
    start_backoff: float = 1.0  # seconds before the 2nd try, doubled each time
    gossip: GossipConfig = field(default_factory=GossipConfig)


def load_allowlist(path: str | Path) -> frozenset[str]:
    """Peer ids from a file with one entry per line: a peer id ("12D3KooW..."), or a raw
    Ed25519 public key as 64 hex chars.  Blank lines and `#` comments are ignored."""
    allowed: set[str] = set()
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            if len(line) == 64:
                allowed.add(peer_id_from_public_key(bytes.fromhex(line)))
            else:
                public_key_from_peer_id(line)  # validates
                allowed.add(line)
        except (ValueError, IdentityError) as e:
            raise ValueError(f"{path}:{n}: not a peer id or hex Ed25519 public key: {line!r} ({e})") from e
    return frozenset(allowed)


def make_transport(
    backend: str,
    identity: Identity,
    *,
    swarm_id: str = "public",
    host: str = "127.0.0.1",
    port: int = 0,
    bootstrap: Iterable[str] = (),
    start_timeout: float = 20.0,
    hub: Any = None,
) -> Transport:
    """Build (not start) a transport for `backend` with this identity."""
    if backend == "hivemind":
        from swarm.transports.hivemind_transport import HivemindTransport

        return HivemindTransport(
            identity.to_libp2p_private_key(),
            identity.peer_id,
            namespace=swarm_id,
            host=host,
            port=port,
            bootstrap=bootstrap,
            start_timeout=start_timeout,
        )
    if backend == "libp2p":
        from swarm.transports.libp2p_transport import Libp2pTransport

        return Libp2pTransport(
            identity.private_seed(), host=host, port=port, bootstrap=bootstrap, start_timeout=start_timeout
        )
    if backend == "memory":
        from swarm.transports.memory import MemoryHub, MemoryTransport

        return MemoryTransport(hub if hub is not None else MemoryHub(), identity.peer_id)
    raise ValueError(f"unknown swarm backend {backend!r}; choose one of {', '.join(BACKENDS)}")


async def finish_within(aw: Any, timeout: float) -> bool:
    """Run `aw` for at most `timeout` s; True if it ended (an error it raised is logged, not
    raised).  Unlike `asyncio.wait_for`, a timeout cancels it without waiting for the cancel to
    be acknowledged, so a library call that swallows its cancellation cannot hang the caller."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(timeout, 0.0))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s: %s", getattr(aw, "__qualname__", aw), task.exception())
    return True


class SwarmStartError(TransportError):
    """The swarm layer could not start after every retry; the message lists each attempt."""


async def start_transport(transport_factory: Any, config: SwarmConfig) -> Transport:
    """Build and start a transport, retrying with exponential backoff; never hangs.

    `transport_factory()` must return a fresh, unstarted transport (a failed one is discarded)."""
    errors: list[str] = []
    delay = config.start_backoff
    for attempt in range(1, config.start_attempts + 1):
        transport = transport_factory()
        try:
            await asyncio.wait_for(transport.start(), config.start_timeout * 1.5)
            return transport
        except (TransportError, OSError, asyncio.TimeoutError) as e:
            reason = str(e) or type(e).__name__
            errors.append(f"attempt {attempt}: {reason}")
            log.warning("swarm %s transport failed to start (attempt %d/%d): %s",
                        config.backend, attempt, config.start_attempts, reason)  # fmt: skip
            try:
                await asyncio.wait_for(transport.stop(), 10)
            except Exception as stop_error:  # already broken; keep the original reason
                log.debug("stop after failed start: %s", stop_error)
        if attempt < config.start_attempts:
            await asyncio.sleep(delay)
            delay *= 2
    hint = f"listen {config.host}:{config.port}" + (
        f", bootstrap {', '.join(config.bootstrap)}" if config.bootstrap else ", no bootstrap peers"
    )
    raise SwarmStartError(
        f"could not start the {config.backend} swarm transport ({hint}) after {config.start_attempts} attempts: "
        + "; ".join(errors)
        + ".  Check that the port is free, that a bootstrap address is reachable (`swarmrl bootstrap` prints one), "
        "or try --swarm.backend libp2p/hivemind."
    )


class SwarmPeer:
    """A started transport + gossip engine for one identity."""

    def __init__(self, transport: Transport, gossip: Gossip) -> None:
        self.transport = transport
        self.gossip = gossip

    @classmethod
    async def start(
        cls,
        identity: Identity,
        config: SwarmConfig,
        want: WantFn | None = None,
        hub: Any = None,
        card_fields: dict[str, Any] | None = None,
    ) -> SwarmPeer:
        """Start the transport (retrying; raises `SwarmStartError` with the reasons, never hangs)
        and the gossip engine."""
        allowlist = (
            load_allowlist(config.allowlist_file) if config.allowlist_file else config.gossip.allowlist
        )
        if allowlist is not None:
            allowlist = allowlist | {identity.peer_id}
        gossip_config = replace(config.gossip, swarm_id=config.swarm_id, allowlist=allowlist)

        def factory() -> Transport:
            transport = make_transport(
                config.backend,
                identity,
                swarm_id=config.swarm_id,
                host=config.host,
                port=config.port,
                bootstrap=config.bootstrap,
                start_timeout=config.start_timeout,
                hub=hub,
            )
            if allowlist is not None:
                transport.allow_peers(allowlist)
            return transport

        transport = await start_transport(factory, config)
        wire = ProtocolWire(identity, config.swarm_id, allowlist=allowlist, card_fields=card_fields)
        gossip = Gossip(transport, wire, gossip_config, want=want)
        try:
            await gossip.start()
        except Exception:
            await transport.stop()
            raise
        return cls(transport, gossip)

    @property
    def peer_id(self) -> str:
        return self.transport.peer_id

    @property
    def addresses(self) -> list[str]:
        return self.transport.addresses

    @property
    def inbox(self) -> Inbox:
        return self.gossip.inbox

    async def publish(self, group: Any) -> str:
        """Sign (if needed) and announce one of our RolloutGroups; returns its hex group id."""
        return await self.gossip.publish_group(group)

    def report(self, peer_id: str, reason: Misconduct) -> None:
        """Lower a peer's score for misbehaviour found above the swarm layer (enough bans it)."""
        self.gossip.report(peer_id, Misconduct(reason).value)  # the plain string: metric labels, penalties

    def metrics(self) -> dict[str, Any]:
        return self.gossip.snapshot()

    async def stop(self, timeout: float = 10.0) -> bool:
        """Stop gossip, then the transport (and its daemon), within `timeout` s in all.  True if
        that finished; else the rest is `abort`ed (daemon killed) and False returned."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await finish_within(self.gossip.stop(), timeout / 2):
            log.warning("gossip did not stop in %.1f s; going on", timeout / 2)
        if await finish_within(self.transport.stop(), deadline - loop.time()):
            return True
        log.warning("transport did not stop in %.1f s; aborting it", timeout)
        self.abort()
        return False

    def abort(self) -> None:
        """Kill what would outlive this process (the transport's daemon) now; from any thread."""
        self.transport.abort()
