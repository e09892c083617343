"""py-libp2p (0.8.x) transport: GossipSub for broadcast, a length-prefixed stream for requests.

The only module that imports `libp2p`.  py-libp2p runs on trio; the node is asyncio: the host
lives in a `trio_bridge.TrioThread`, which carries calls both ways without blocking either loop
(see that module), and request/response bytes travel as `stream_frames` frames.

GossipSub is configured so that nothing is dropped at our rates (measured defaults drop: see
`/work/shared/reference/dependencies.md` section 4): the per-peer/topic spam limit of 10 msg/s is
disabled; the 32-slot subscription queue is raised to `SUBSCRIPTION_QUEUE` and the 32-RPC
per-peer outbound queue to `OUTBOUND_QUEUE` (both module globals py-libp2p reads at use time;
there is no constructor argument, so this is process-wide), and a dedicated task drains the
subscription straight into the asyncio loop.  Message signing is strict, so the
`from_id` handed to our handlers is authenticated by libp2p itself.

The host key is the node's Ed25519 key, so the libp2p peer id equals our protocol peer id.
`allow_peers` closes connections from unlisted peer ids as soon as they are established
(py-libp2p's gate only filters by IP) and refuses their streams and messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, RpcQueue
from libp2p.tools.anyio_service import background_trio_service

from swarm.transport import (
    Allowlist,
    MessageHandler,
    PeerUnreachable,
    RequestHandler,
    RequestTimeout,
    TransportError,
)
from swarm.transports.stream_frames import ERR, MAX_FRAME, OK, frame, read_frame
from swarm.transports.trio_bridge import TrioThread, leaf_message, to_asyncio

__all__ = ["MAX_FRAME", "OUTBOUND_QUEUE", "SUBSCRIPTION_QUEUE", "Libp2pTransport"]

log = logging.getLogger(__name__)

SUBSCRIPTION_QUEUE = 4096  # py-libp2p default 32 silently drops bursts
OUTBOUND_QUEUE = 4096  # per-peer outbound RPC queue; default 32 silently drops bursts too


class _DeepRpcQueue(RpcQueue):
    """py-libp2p's per-peer outbound queue with room for bursts (its default holds 32 RPCs)."""

    def __init__(self, max_size: int = OUTBOUND_QUEUE, max_message_size: int = DefaultMaxMessageSize) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)


def _configure_pubsub_queues() -> None:
    """Raise both silent-drop queues.  Module globals: py-libp2p has no constructor argument."""
    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_QUEUE
    pubsub_module.RpcQueue = _DeepRpcQueue  # type: ignore[misc]


class _Gatekeeper(INotifee):
    """Closes connections from peers outside the allowlist the moment they are up."""

    def __init__(self, transport: Libp2pTransport) -> None:
        self.transport = transport

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        if not self.transport.accepts(peer.to_base58()):
            self.transport.refused += 1
            await network.close_peer(peer)

    async def disconnected(self, network: Any, conn: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


class Libp2pTransport:
    """Implements `swarm.transport.Transport` on py-libp2p."""

    def __init__(
        self,
        private_seed: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Iterable[str] = (),
        mesh_degree: int = 6,
        heartbeat: float = 0.5,
        start_timeout: float = 15.0,
    ) -> None:
        self._key_pair = create_new_key_pair(private_seed)
        self._own = ID.from_pubkey(self._key_pair.public_key)
        self._listen = multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")
        self.bootstrap = list(bootstrap)
        self.mesh_degree, self.heartbeat, self.start_timeout = mesh_degree, heartbeat, start_timeout
        self._thread = TrioThread()
        self._host: Any = None
        self._pubsub: Any = None
        self._subs: dict[str, list[MessageHandler]] = {}
        self._handlers: dict[str, RequestHandler] = {}
        self._allowed = Allowlist()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Future[None] | None = None
        self.refused = 0  # connections closed by the allowlist

    # -- identity ------------------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return str(self._own.to_base58())

    @property
    def addresses(self) -> list[str]:
        if self._host is None:
            return []
        return [str(a) for a in self._host.get_addrs()]

    @property
    def propagates(self) -> bool:
        return True

    def accepts(self, peer_id: str) -> bool:
        return self._allowed.accepts(peer_id)

    def allow_peers(self, peer_ids: Iterable[str] | None) -> None:
        self._allowed.set(peer_ids, self.peer_id)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._thread.start(self._main)
        try:
            await asyncio.wait_for(asyncio.shield(self._started), self.start_timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise TransportError(f"libp2p host did not start within {self.start_timeout:.0f}s") from None
        except Exception as e:
            await self.stop()
            raise TransportError(f"libp2p host failed to start on {self._listen}: {leaf_message(e)}") from e
        for addr in self.bootstrap:
            await self.connect(addr)

    async def _main(self, nursery: trio.Nursery) -> None:
        loop, started = self._loop, self._started
        assert loop is not None and started is not None
        try:
            _configure_pubsub_queues()
            host = new_host(key_pair=self._key_pair, listen_addrs=[self._listen])
            router = GossipSub(
                protocols=[PROTOCOL_ID],
                degree=self.mesh_degree,
                degree_low=max(1, self.mesh_degree - 2),
                degree_high=self.mesh_degree * 2,
                heartbeat_interval=self.heartbeat,  # type: ignore[arg-type]
                heartbeat_initial_delay=0.1,
                spam_protection_enabled=False,
                max_messages_per_topic_per_second=1e9,
                eclipse_protection_enabled=False,  # loopback tests: every peer shares one IP
                max_pending_messages_per_peer=10_000,
            )
            pubsub = Pubsub(host, router, strict_signing=True, seen_ttl=600)
            async with host.run(listen_addrs=[self._listen]):
                host.get_network().register_notifee(_Gatekeeper(self))
                async with background_trio_service(pubsub), background_trio_service(router):
                    await pubsub.wait_until_ready()
                    if not host.get_addrs():  # py-libp2p logs a failed bind and carries on
                        raise TransportError(f"could not listen on {self._listen} (port in use?)")
                    self._host, self._pubsub = host, pubsub
                    loop.call_soon_threadsafe(lambda: started.done() or started.set_result(None))
                    await trio.sleep_forever()
        except BaseException as e:  # noqa: B036 -- start() must learn why, then trio unwinds
            if not isinstance(e, trio.Cancelled):
                error = e
                loop.call_soon_threadsafe(lambda: started.done() or started.set_exception(error))
            raise

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._thread.stop)
        self._host = self._pubsub = None

    def abort(self) -> None:
        pass  # no child process: the trio thread is a daemon thread and ends with the process

    async def connect(self, address: str) -> str:
        info = info_from_p2p_addr(multiaddr.Multiaddr(address))

        async def dial() -> None:
            with trio.fail_after(5):
                await self._host.connect(info)

        try:
            await self._thread.call(dial)
        except Exception as e:
            raise PeerUnreachable(f"cannot connect to {address}: {e}") from e
        return str(info.peer_id.to_base58())

    def connected_peers(self) -> list[str]:
        if self._host is None:
            return []
        return [str(p.to_base58()) for p in self._host.get_connected_peers() if self.accepts(p.to_base58())]

    def mesh_size(self, topic: str) -> int:
        """GossipSub mesh peers for `topic` (a read of router state; safe under the GIL)."""
        router = None if self._pubsub is None else self._pubsub.router
        return 0 if router is None else len(router.mesh.get(topic, ()))

    # -- pubsub --------------------------------------------------------------------------------
    async def subscribe(self, topic: str, handler: MessageHandler) -> None:
        first = topic not in self._subs
        self._subs.setdefault(topic, []).append(handler)
        if first:
            sub = await self._thread.call(self._pubsub.subscribe, topic)
            assert self._thread.nursery is not None and self._thread.token is not None
            self._thread.token.run_sync_soon(self._thread.nursery.start_soon, self._drain, topic, sub)

    async def _drain(self, topic: str, sub: Any) -> None:
        """Move every message off the subscription queue at once, into the asyncio loop."""
        loop = self._loop
        assert loop is not None
        own = self._own.to_bytes()
        while True:
            msg = await sub.get()
            if msg.from_id == own:
                continue
            sender = ID(msg.from_id).to_base58()
            if not self.accepts(sender):
                continue
            loop.call_soon_threadsafe(self._dispatch, topic, sender, msg.data)

    def _dispatch(self, topic: str, sender: str, data: bytes) -> None:
        for handler in self._subs.get(topic, ()):
            asyncio.ensure_future(handler(sender, data))

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self._thread.call(self._pubsub.publish, topic, data)
        except Exception as e:
            raise TransportError(f"gossipsub publish failed: {e}") from e

    # -- request / response --------------------------------------------------------------------
    async def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        first = protocol not in self._handlers
        self._handlers[protocol] = handler
        if first:

            async def register() -> None:
                self._host.set_stream_handler(TProtocol(protocol), self._on_stream)

            await self._thread.call(register)

    async def _on_stream(self, stream: Any) -> None:
        loop = self._loop
        assert loop is not None
        caller = stream.muxed_conn.peer_id.to_base58()
        protocol = str(stream.get_protocol())
        try:
            with trio.fail_after(30):
                data = await read_frame(stream)
                handler = self._handlers.get(protocol)
                if handler is None or not self.accepts(caller):
                    answer = ERR + b"refused"
                else:
                    try:
                        answer = OK + await to_asyncio(loop, handler(caller, data))
                    except Exception as e:  # the handler's refusal travels back as an error frame
                        answer = ERR + str(e).encode()[:200]
                await stream.write(frame(answer))
        except Exception as e:
            log.debug("stream from %s failed: %s", caller, e)
        finally:
            try:
                await stream.close()
            except Exception:
                pass

    async def request(self, peer_id: str, protocol: str, data: bytes, timeout: float) -> bytes:
        if not self.accepts(peer_id):
            raise PeerUnreachable(f"{peer_id} is not on the allowlist")

        async def call() -> bytes:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
                try:
                    await stream.write(frame(data))
                    return await read_frame(stream)
                finally:
                    await stream.close()

        try:
            answer = await asyncio.wait_for(self._thread.call(call), timeout + 1.0)
        except (asyncio.TimeoutError, trio.TooSlowError):
            raise RequestTimeout(f"{peer_id}/{protocol}: no answer in {timeout:.1f}s") from None
        except TransportError:
            raise
        except Exception as e:
            raise PeerUnreachable(f"{peer_id}/{protocol}: {e}") from e
        if answer[:1] != OK:
            raise PeerUnreachable(f"{peer_id} refused {protocol}: {answer[1:].decode(errors='replace')}")
        return answer[1:]
