"""Rollout gossip over any `Transport`: announce small, fetch by id, validate, admit.

Design (pull-based, like Bitcoin's inv/getdata and GossipSub's IHAVE/IWANT, with the data
itself never pushed):

1. A peer that has a group (its own, or one it admitted) announces `(group_id, origin, size,
   meta)` in a small signed `Announce` on the swarm's topic.
2. A peer that hears of a group it has not seen asks `want(entry)`; if wanted, it fetches the
   group by id with a `Request` to a peer that announced it (falling back to other announcers,
   each tried once), opens it through the `Wire` (codec limits, signatures, validators), checks
   the content id, and puts it in the bounded `Inbox` (swarm/fetching.py).
3. On transports that only reach neighbours (`propagates` False: memory, hivemind) the new
   holder announces the group in turn, which is the relay: a group spreads in O(log N) hops
   and each peer sends each group's announce once to its neighbours and fetches it once.
   On GossipSub the first announce already reaches everyone, so nobody re-announces.
4. Every `sync_interval` a peer asks a random neighbour for its inventory (the newest entries
   of its `Outbox`) and treats the answer like an announce: this repairs lost announces and is
   how a late joiner catches up with groups that are still served (`Outbox.ttl`).
5. Outcome summaries in announces (an origin's prompt key and success count per group) go to a
   bounded `SummaryQueue` whether or not the group is fetched (swarm/summaries.py); the node
   takes them with `drain_summaries`.

Defences, in the order a pushed message meets them: drop if the transport sender is banned;
token buckets on messages and bytes per sender; exact-duplicate bytes from the same sender;
`Wire.open_push` (size, decode, swarm id, time window, signature, replay nonce, validators,
signer == sender); allowlist of the private swarm.  Every refusal is counted by reason and
charged to the sender's score (`scoring.ScoreParams`); fetched content is charged to the peer
that served it.  A group whose bytes verified but failed validation is remembered as seen, so
it is never fetched again from anyone.

Requests we serve (fetches, inventory pulls; swarm/serving.py) meet: drop if banned; the
caller's request bucket; then `request_budget.py`, before anything is read: a lower per-caller
limit on fetches that return nothing, and one budget for all callers together that serves peers
with a positive score first and declines the rest as busy (the protocol's empty answer, charged
to nobody).

Guarantee: with at least one honest holder reachable until `Outbox.ttl`, every wanted group is
admitted exactly once (the seen-cache and the in-flight set suppress duplicates).  Fetching
never spins: each holder of an id is asked at most once per announce, and an id whose
remaining holders are all banned is dropped until a usable peer announces it (`pending.py`).

Layout: `Gossip` is one engine over one set of state (seen-caches, pending fetches, scores,
rate limiters, inbox/outbox, tasks).  This module holds its config, state, lifecycle, the node's
API, outgoing announces and cards, incoming pushes and the anti-entropy `sync`; two mixins in
their own modules hold the paths that are long enough to read on their own: `Fetching`
(swarm/fetching.py: consider an entry, fetch by id, admit) and `Serving` (swarm/serving.py:
request admission, answering fetches and inventory pulls).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from typing import Any

from swarm.fetching import Fetching
from swarm.gossip_config import GossipConfig
from swarm.inbox import Inbox
from swarm.membership import Membership
from swarm.metrics import SwarmMetrics
from swarm.outbox import Outbox
from swarm.pending import PendingFetches
from swarm.rate_limit import PeerRateLimiter
from swarm.request_budget import RequestBudget
from swarm.scoring import PeerScores
from swarm.seen_cache import SeenCache
from swarm.serving import Serving
from swarm.summaries import Summary, SummaryQueue
from swarm.transport import Transport, TransportError
from swarm.wire import BANNED, RATE_LIMITED, REPLAYED, TOO_LARGE, AnnounceEntry, Rejected, Wire

log = logging.getLogger(__name__)

WantFn = Callable[[AnnounceEntry], bool]


class Gossip(Fetching, Serving):
    """One peer's gossip engine.  Build, `await start()`, then `publish_group` / `inbox`.

    The fetch path (`_consider`, `_fetch`, `_admit`) comes from `Fetching`, the serving path
    (`_admit_request`, `_serve`, `_serve_inventory`) from `Serving`; all state lives here."""

    def __init__(
        self, transport: Transport, wire: Wire, config: GossipConfig, want: WantFn | None = None
    ) -> None:
        self.transport, self.wire, self.config = transport, wire, config
        self.want: WantFn = want or (lambda entry: True)
        loop_time = self._now
        self.metrics = SwarmMetrics()
        self.scores = PeerScores(config.score, loop_time)
        sp = config.score
        self.limiter = PeerRateLimiter(sp.msg_rate, sp.msg_burst, sp.byte_rate, sp.byte_burst, loop_time)
        self.request_limiter = PeerRateLimiter(
            sp.request_rate, sp.request_burst, sp.response_byte_rate, sp.response_byte_rate, loop_time
        )
        self.request_budget = RequestBudget(sp, self.scores.peek, loop_time)
        self.seen_groups = SeenCache(config.seen_capacity, config.seen_ttl, loop_time)
        self.seen_msgs = SeenCache(config.seen_capacity, config.seen_ttl, loop_time)
        self.inbox = Inbox(config.inbox_capacity, sp.max_inbox_share)
        self.outbox = Outbox(config.outbox_capacity, config.outbox_max_bytes, config.serve_ttl, loop_time)
        self.members = Membership(config.card_ttl, loop_time)
        self.summaries = SummaryQueue(config.summaries, loop_time)
        self._pending = PendingFetches(config.max_pending)  # ids being fetched, their holders
        self._fetch_slots = asyncio.Semaphore(config.max_concurrent_fetches)
        self._to_announce: list[AnnounceEntry] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[Any]] = []
        self._rng = random.Random()
        self._running = False
        self.relay = (not transport.propagates) if config.relay is None else config.relay

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.config.allowlist is not None:
            self.transport.allow_peers(self.config.allowlist)
        await self.transport.subscribe(self.config.topic, self._on_push)
        await self.transport.set_request_handler(self.config.fetch_protocol, self._serve)
        await self.transport.set_request_handler(self.config.inventory_protocol, self._serve_inventory)
        self._running = True
        self._background = [
            asyncio.ensure_future(self._every(self.config.card_interval, self._publish_card, first=0.0)),
            asyncio.ensure_future(self._every(self.config.sync_interval, self.sync, first=0.2)),
        ]

    async def stop(self) -> None:
        self._running = False
        for t in [*self._background, *self._tasks]:
            t.cancel()
        await asyncio.gather(*self._background, *self._tasks, return_exceptions=True)
        self._background, self._tasks = [], set()

    async def _every(self, period: float, fn: Callable[[], Any], first: float) -> None:
        await asyncio.sleep(first)
        while True:
            try:
                await fn()
            except Exception:  # a failed round must not stop the loop
                log.exception("periodic %s failed", getattr(fn, "__name__", fn))
            await asyncio.sleep(period * self._rng.uniform(0.8, 1.2))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the node's API --------------------------------------------------------------------------
    async def publish_group(self, group: Any) -> str:
        """Sign one of our groups, hold it for serving and announce it; returns its group id."""
        entry, signed = self.wire.seal_group(group)
        self.seen_groups.add(entry.group_id)
        self.summaries.own(entry.group_id)
        self.outbox.put(entry, signed)
        self.metrics.inc("published_groups")
        self._announce([entry])
        return entry.group_id

    def drain_summaries(self, max_n: int) -> list[Summary]:
        """Outcome summaries heard since the last call, oldest first; banned peers' dropped."""
        return self.summaries.drain(max_n, self.scores.is_banned)

    def snapshot(self) -> dict[str, Any]:
        """Counters, gauges and per-peer scores as one JSON-able dict."""
        m = self.metrics
        m.set("connected_peers", len(self.transport.connected_peers()))
        mesh_size = getattr(self.transport, "mesh_size", None)
        if mesh_size is not None:
            m.set("mesh_peers", mesh_size(self.config.topic))
        m.set("members", len(self.members))
        m.set("inbox_size", len(self.inbox))
        m.set("outbox_size", len(self.outbox))
        m.set("pending_fetches", len(self._pending))
        m.set("summaries_waiting", len(self.summaries))
        for why, n in self.summaries.counts.items():
            m.set(f"summaries_{why}", n)
        scores = self.scores.snapshot()
        banned = sorted(p for p in scores if self.scores.is_banned(p))
        m.set("banned_peers", len(banned))
        return {**m.snapshot(), "peer_scores": scores, "banned": banned}

    # -- outgoing ----------------------------------------------------------------------------
    def _announce(self, entries: list[AnnounceEntry]) -> None:
        start_flush = not self._to_announce
        self._to_announce.extend(entries)
        if start_flush:
            self._spawn(self._flush_announces())

    async def _flush_announces(self) -> None:
        await asyncio.sleep(self.config.announce_delay)
        batch, self._to_announce = self._to_announce, []
        n = self.config.max_announce_entries
        for i in range(0, len(batch), n):
            await self._push(self.wire.seal_announce(batch[i : i + n]))

    async def _publish_card(self) -> None:
        self.members.expire()
        await self._push(self.wire.seal_card(self.transport.addresses))

    async def _push(self, data: bytes) -> None:
        self.metrics.inc("sent_messages")
        # Bytes this node hands to the network: one copy per neighbour (per GossipSub mesh peer
        # on a propagating transport; the library's own forwarding of others' messages and its
        # control traffic are not counted).
        mesh_size = getattr(self.transport, "mesh_size", None)
        fanout = (
            mesh_size(self.config.topic) if mesh_size is not None else len(self.transport.connected_peers())
        )
        self.metrics.inc("sent_bytes", len(data) * max(1, fanout))
        try:
            await self.transport.publish(self.config.topic, data)
        except TransportError as e:
            self.metrics.inc("publish_errors")
            log.debug("publish failed: %s", e)

    # -- incoming pushes -----------------------------------------------------------------------
    def report(self, peer: str, reason: str) -> None:
        """Charge `peer` for misbehaviour the application found (e.g. a reward claim that the
        node's own verifier contradicts): counted and scored like a protocol rejection."""
        self._reject(peer, reason)

    def _reject(self, peer: str, reason: str) -> None:
        self.metrics.reject(reason)
        if self.scores.penalize(peer, reason):
            self.metrics.inc("bans")
            log.info("banned peer %s (last reason: %s)", peer, reason)

    async def _on_push(self, sender: str, data: bytes) -> None:
        m = self.metrics
        m.inc("recv_messages")
        m.inc("recv_bytes", len(data))
        if self.scores.is_banned(sender):
            m.reject(BANNED)
            return
        if not self.limiter.allow(sender, len(data)):
            self._reject(sender, RATE_LIMITED)
            return
        if len(data) > self.config.max_push_bytes:
            self._reject(sender, TOO_LARGE)
            return
        if not self.seen_msgs.add((sender, hashlib.blake2b(data, digest_size=16).digest())):
            self._reject(sender, REPLAYED)
            return
        try:
            push = self.wire.open_push(data, sender)
        except Rejected as e:
            self._reject(sender, e.reason)
            return
        if push.addresses is not None:
            if self.members.update(push.signer, push.addresses):
                await self._on_new_member(push.signer, push.addresses)
            return
        self.members.update(push.signer, [])
        self._hear_summaries(push.summaries)
        self._consider(push.entries, push.signer)

    def _hear_summaries(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            self.summaries.offer(summary)

    async def _on_new_member(self, peer_id: str, addresses: list[str]) -> None:
        """Dial members we are not connected to, so fetches can reach them (GossipSub meshes)."""
        if not self.transport.propagates or peer_id in self.transport.connected_peers():
            return
        for addr in addresses:
            try:
                await self.transport.connect(addr)
                return
            except TransportError:
                continue

    # -- anti-entropy --------------------------------------------------------------------------
    async def sync(self) -> None:
        """Pull one random neighbour's inventory and fetch what we miss (anti-entropy)."""
        peers = [p for p in self.transport.connected_peers() if not self.scores.is_banned(p)]
        if not peers:
            return
        peer = self._rng.choice(peers)
        try:
            answer = await self.transport.request(
                peer,
                self.config.inventory_protocol,
                self.wire.seal_card(self.transport.addresses),
                self.config.fetch_timeout,
            )
        except TransportError:
            self.metrics.inc("sync_failures")
            return
        self.metrics.inc("syncs")
        if not answer:
            return
        try:
            push = self.wire.open_push(answer, peer)
        except Rejected as e:
            self._reject(peer, e.reason)
            return
        self._hear_summaries(push.summaries)
        self._consider(push.entries, peer)
