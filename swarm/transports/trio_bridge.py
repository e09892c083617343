"""A trio event loop in a daemon thread, bridged to asyncio without blocking either loop.

py-libp2p runs on trio; the node is asyncio.  `TrioThread` owns one daemon thread running
`trio.run`, and the bridge crosses in both directions:

* asyncio -> trio: `TrioThread.call` uses `TrioToken.run_sync_soon` (thread-safe,
  non-blocking) to start the coroutine in the trio nursery; its result or exception comes back
  through `loop.call_soon_threadsafe` onto an asyncio future.  Cancelling that future (e.g. by
  `asyncio.wait_for`) cancels the trio task's cancel scope.
* trio -> asyncio: `to_asyncio` uses `asyncio.run_coroutine_threadsafe`, awaited on the trio
  side through a `trio.Event` set by `run_sync_soon` from the future's done-callback.

Nothing here knows libp2p: `libp2p_transport` stays the one module that imports it, and is
the only user of this one (so `trio` is loaded only with the libp2p backend).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from swarm.transport import TransportError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TrioThread:
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


async def to_asyncio(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
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


def leaf_message(e: BaseException) -> str:
    """The innermost message of a (trio) exception group, which is what a user needs to see."""
    while getattr(e, "exceptions", None):  # BaseExceptionGroup (or the 3.10 backport)
        e = e.exceptions[0]  # type: ignore[attr-defined]
    return str(e) or type(e).__name__
