"""py-libp2p (0.8.x) transport: GossipSub for broadcast, a length-prefixed stream for requests.

The only module that imports `libp2p` (and `trio`).  py-libp2p runs on trio; the node is
asyncio.  The bridge (`_TrioThread`) owns one daemon thread running `trio.run`, and crosses in
both directions without ever blocking either loop:

* asyncio -> trio: `TrioToken.run_sync_soon` (thread-safe, non-blocking) starts the coroutine
  in the trio nursery; its result or exception comes back through
  `loop.call_soon_threadsafe` onto an asyncio future.  Cancelling that future (e.g. by
  `asyncio.wait_for`) cancels the trio task's cancel scope.
* trio -> asyncio: `asyncio.run_coroutine_threadsafe`, awaited on the trio side through a
  `trio.Event` set by `run_sync_soon` from the future's done-callback.

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
import concurrent.futures
import logging
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

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

log = logging.getLogger(__name__)
T = TypeVar("T")

SUBSCRIPTION_QUEUE = 4096  # py-libp2p default 32 silently drops bursts
OUTBOUND_QUEUE = 4096  # per-peer outbound RPC queue; default 32 silently drops bursts too
MAX_FRAME = 8 * 1024 * 1024  # request/response frames above this are refused
_LEN = struct.Struct(">I")
_OK, _ERR = b"\x00", b"\x01"


class _DeepRpcQueue(RpcQueue):
    """py-libp2p's per-peer outbound queue with room for bursts (its default holds 32 RPCs)."""

    def __init__(self, max_size: int = OUTBOUND_QUEUE, max_message_size: int = DefaultMaxMessageSize) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)


def _configure_pubsub_queues() -> None:
    """Raise both silent-drop queues.  Module globals: py-libp2p has no constructor argument."""
    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_QUEUE
    pubsub_module.RpcQueue = _DeepRpcQueue  # type: ignore[misc]


class _TrioThread:
    """A trio event loop in a daemon thread, with a non-blocking bridge from asyncio."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="libp2p-trio", daemon=True)
        self.main: Callable[[trio.Nursery], Awaitable[None]] | None = None
        self.error: BaseException | None = None

    def start(self, main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        self.main = main
        self._thread.start()

    def _run(self) -> None:
        try:
            trio.run(self._root)
        except BaseException as e:  # surfaced to whoever awaits start()
            self.error = e
            log.debug("trio thread ended with %r", e)
        finally:
            self._ready.set()

    async def _root(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            assert self.main is not None
            nursery.start_soon(self.main, nursery)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` in trio; returns an asyncio future for its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        scope = trio.CancelScope()

        def post(setter: Callable[[Any], None], value: Any) -> None:
            if not fut.done():
                setter(value)

        async def runner() -> None:
            with scope:
                try:
                    result = await fn(*args)
                except BaseException as e:  # noqa: B036 -- every outcome must reach asyncio
                    if isinstance(e, trio.Cancelled):
                        loop.call_soon_threadsafe(post, fut.set_exception, asyncio.CancelledError())
                        raise
                    loop.call_soon_threadsafe(post, fut.set_exception, e)
                    return
                loop.call_soon_threadsafe(post, fut.set_result, result)

        if self.token is None or self.nursery is None:
            fut.set_exception(TransportError("libp2p thread is not running"))
            return fut
        nursery, token = self.nursery, self.token
        try:
            token.run_sync_soon(nursery.start_soon, runner)
        except trio.RunFinishedError:
            fut.set_exception(TransportError("libp2p thread has stopped"))
            return fut
        fut.add_done_callback(lambda f: f.cancelled() and self._cancel(scope))
        return fut

    def _cancel(self, scope: trio.CancelScope) -> None:
        if self.token is not None:
            try:
                self.token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        if self.token is not None and self._stop is not None:
            try:
                self.token.run_sync_soon(self._stop.set)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout)


async def _to_asyncio(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    """From trio: run `coro` on the asyncio loop and wait for it without blocking trio."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    cfut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]

    def wake(_: Any) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    cfut.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        cfut.cancel()
        raise
    return cfut.result()


def _leaf_message(e: BaseException) -> str:
    """The innermost message of a (trio) exception group, which is what a user needs to see."""
    while getattr(e, "exceptions", None):  # BaseExceptionGroup (or the 3.10 backport)
        e = e.exceptions[0]  # type: ignore[attr-defined]
    return str(e) or type(e).__name__


async def _read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise PeerUnreachable("stream closed mid-frame")
        buf += chunk
    return bytes(buf)


async def _read_frame(stream: Any) -> bytes:
    (n,) = _LEN.unpack(await _read_exact(stream, 4))
    if n > MAX_FRAME:
        raise PeerUnreachable(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return await _read_exact(stream, n)


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
        self._thread = _TrioThread()
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
            raise TransportError(f"libp2p host failed to start on {self._listen}: {_leaf_message(e)}") from e
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
                data = await _read_frame(stream)
                handler = self._handlers.get(protocol)
                if handler is None or not self.accepts(caller):
                    answer = _ERR + b"refused"
                else:
                    try:
                        answer = _OK + await _to_asyncio(loop, handler(caller, data))
                    except Exception as e:  # the handler's refusal travels back as an error frame
                        answer = _ERR + str(e).encode()[:200]
                await stream.write(_LEN.pack(len(answer)) + answer)
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
                    await stream.write(_LEN.pack(len(data)) + data)
                    return await _read_frame(stream)
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
        if answer[:1] != _OK:
            raise PeerUnreachable(f"{peer_id} refused {protocol}: {answer[1:].decode(errors='replace')}")
        return answer[1:]
