"""`SwarmLink`: the node's connection to its swarm, on an event loop in a background thread.

The training loop calls three non-blocking methods between steps:

    link.publish(groups)        # queue our groups for announcing; returns at once
    items = link.drain(64)      # admitted peer groups (InboxItems); [] if not connected
    news = link.drain_summaries(256)  # outcome summaries heard in announces, nothing fetched
    link.report(origin, why)    # lower a peer's swarm score (e.g. it lied about a reward)

Generation and training never wait on the network: until the transport is up (it retries with
backoff for as long as the node runs, so a node started before its bootstrap, or cut off and
reconnected, joins when it can) `drain` returns nothing and `publish` drops, counting both;
every cross-thread call has a short timeout.  `stop()` closes the transport (and its p2pd)
within a bounded time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from protocol import Identity, RolloutGroup
from swarm.inbox import InboxItem
from swarm.misconduct import Misconduct
from swarm.peer import SwarmConfig, SwarmPeer
from swarm.summaries import Summary

log = logging.getLogger(__name__)

CALL_TIMEOUT = 2.0  # seconds a step may spend on one cross-thread call before going on without it


class SwarmLink:
    def __init__(
        self,
        identity: Identity,
        config: SwarmConfig,
        want: Callable[[Any], bool] | None = None,
        card_fields: dict[str, Any] | None = None,
        retry_max: float = 30.0,
    ) -> None:
        self.identity = identity
        self.config = config
        self.want = want
        self.card_fields = card_fields
        self.retry_max = retry_max
        self.peer: SwarmPeer | None = None
        self.state = "starting"  # starting | connected | retrying | stopped
        self.last_error = ""
        self.counts: Counter[str] = Counter()  # published, publish_dropped, drained, call_timeouts, ...
        self.last_metrics: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()  # the loop exists (not: the swarm is up)
        self._thread = threading.Thread(target=self._run, name="swarm-link", daemon=True)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def addresses(self) -> list[str]:
        return list(self.peer.addresses) if self.peer is not None else []

    @property
    def connected(self) -> bool:
        return self.peer is not None and self.state == "connected"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SwarmLink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Leave the swarm; returns within `timeout` s.  The link's own stop is bounded
        (`SwarmPeer.stop`); should its thread still be busy at the deadline (a start attempt in
        flight), the daemon is killed from here rather than left running after the node exits."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("swarm link did not stop in %.0f s; killing its daemon", timeout)
            if self.peer is not None:
                self.peer.abort()
        self.state = "stopped"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            leftover = asyncio.all_tasks(loop)  # library tasks no stop cancels (hivemind's DHT jobs)
            for task in leftover:
                task.cancel()
            if leftover:  # like asyncio.run's cleanup, but bounded: a task may ignore its cancel
                loop.run_until_complete(asyncio.wait(leftover, timeout=2))
            loop.close()

    async def _main(self) -> None:
        assert self._stop is not None
        delay = 1.0
        while not self._stop.is_set() and self.peer is None:
            try:
                self.peer = await SwarmPeer.start(self.identity, self.config, want=self.want,
                                                  card_fields=self.card_fields)  # fmt: skip
                self.state = "connected"
                log.info("joined swarm %r as %s on %s", self.config.swarm_id, self.peer_id, self.peer.addresses)
            except Exception as e:  # every start failure is retried: the node trains meanwhile
                self.state, self.last_error = "retrying", str(e)
                self.counts["start_failures"] += 1
                log.warning("swarm not reachable yet (retrying in %.0f s): %s", delay, e)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(2 * delay, self.retry_max)
        await self._stop.wait()
        if self.peer is not None:
            await self.peer.stop(15)  # bounded; kills p2pd itself if the graceful stop hangs

    # -- calls from the training thread ----------------------------------------------------
    def _call(self, coro_fn: Callable[[], Any], default: Any) -> Any:
        if self._loop is None or not self.connected:
            return default
        future = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)
        try:
            return future.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.counts["call_timeouts"] += 1
            return default
        except Exception as e:
            self.counts["call_errors"] += 1
            log.warning("swarm call failed: %s", e)
            return default

    def publish(self, groups: list[RolloutGroup]) -> None:
        """Queue groups for announcing (fire and forget)."""
        if self._loop is None or not self.connected:
            self.counts["publish_dropped"] += len(groups)
            return
        asyncio.run_coroutine_threadsafe(self._publish(groups), self._loop)

    async def _publish(self, groups: list[RolloutGroup]) -> None:
        assert self.peer is not None
        for group in groups:
            try:
                await self.peer.publish(group)
                self.counts["published"] += 1
            except Exception as e:
                self.counts["publish_errors"] += 1
                log.warning("publish failed: %s", e)

    def drain(self, max_items: int) -> list[InboxItem]:
        """Admitted peer groups waiting in the inbox (at most `max_items`); never blocks long."""

        async def drain() -> list[InboxItem]:
            assert self.peer is not None
            self.last_metrics = self.peer.metrics()
            return self.peer.inbox.drain(max_items)

        items = self._call(drain, [])
        self.counts["drained"] += len(items)
        return items

    def drain_summaries(self, max_n: int) -> list[Summary]:
        """Outcome summaries peers announced (at most `max_n`, oldest first, banned peers' dropped,
        one per group id, capped per announcer: swarm/summaries.py); never blocks long."""

        async def drain() -> list[Summary]:
            assert self.peer is not None
            return self.peer.gossip.drain_summaries(max_n)

        summaries = self._call(drain, [])
        self.counts["summaries_drained"] += len(summaries)
        return summaries

    def report(self, origin: str, reason: Misconduct) -> None:
        if self._loop is not None and self.connected:
            assert self.peer is not None
            self._loop.call_soon_threadsafe(self.peer.report, origin, reason)
