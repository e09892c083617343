"""The fetch path of gossip: consider an announced entry, fetch the group by id, admit it.

`Fetching` is a mixin of `swarm.gossip.Gossip`, not a component of its own: every step reads and
writes state the whole engine shares (the seen-cache, the pending-fetch table, peer scores, the
metrics, the task set and the announce queue), so it works on the one `Gossip` object rather
than being handed a dozen references to it.  The attributes it expects the engine to provide
are declared at the top of the class.

What it guarantees (step 2 of the design in swarm/gossip.py):

* an entry is fetched only if its id is neither seen nor already being fetched, and `want` says
  yes; an unwanted id is remembered as seen, so it is not offered to `want` again;
* each holder of an id is asked at most once per announce, at most `fetch_attempts` holders per
  task; a follow-up task starts only while an untried usable holder remains, and an id whose
  remaining holders are all banned is dropped until a usable peer announces it
  (swarm/pending.py), so fetching never spins;
* the answer is opened through the `Wire` (codec limits, signatures, validators) and must hold
  the asked id; a frame that does not open is charged to the peer that served it and another
  holder is tried, while a group from an origin outside the allowlist is remembered as seen;
* an admitted group is served from our `Outbox`, handed to the node through the `Inbox`, and
  re-announced when this peer relays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from swarm.gossip_config import GossipConfig
from swarm.inbox import Inbox, InboxItem
from swarm.metrics import SwarmMetrics
from swarm.outbox import Outbox
from swarm.pending import Heard, PendingFetches
from swarm.scoring import PeerScores
from swarm.seen_cache import SeenCache
from swarm.transport import Transport, TransportError
from swarm.wire import FETCH_FAILED, NOT_ALLOWED, WRONG_GROUP, AnnounceEntry, Rejected, Wire

log = logging.getLogger("swarm.gossip")  # the engine's logger, as before this path moved here


class Fetching:
    """Consider, fetch and admit announced groups (mixed into `Gossip`)."""

    # Provided by the engine (swarm/gossip.py, `Gossip.__init__` and its methods).
    transport: Transport
    wire: Wire
    config: GossipConfig
    want: Callable[[AnnounceEntry], bool]
    metrics: SwarmMetrics
    scores: PeerScores
    seen_groups: SeenCache
    inbox: Inbox
    outbox: Outbox
    relay: bool
    _pending: PendingFetches
    _fetch_slots: asyncio.Semaphore
    _running: bool
    _now: Callable[[], float]
    _spawn: Callable[[Any], None]
    _announce: Callable[[list[AnnounceEntry]], None]
    _reject: Callable[[str, str], None]

    def _consider(self, entries: Iterable[AnnounceEntry], holder: str) -> None:
        for entry in entries:
            gid = entry.group_id
            if gid in self.seen_groups:
                self.metrics.inc("duplicate_announces")
                continue
            heard = self._pending.heard(gid, holder)
            if heard is Heard.FULL:
                self.metrics.inc("pending_overflow")
                continue
            if heard is Heard.KNOWN:
                continue  # a fetch is running; it asks this holder too if it needs to
            if not self.want(entry):
                self.seen_groups.add(gid)
                self._pending.drop(gid)
                self.metrics.inc("unwanted")
                continue
            self._spawn(self._fetch(entry))

    def _usable(self, holder: str) -> bool:
        return not self.scores.is_banned(holder)

    async def _fetch(self, entry: AnnounceEntry) -> None:
        """Ask up to `fetch_attempts` untried holders; start again only if an untried usable one
        is left (swarm/pending.py), so a task never respawns without someone to ask."""
        gid = entry.group_id
        try:
            async with self._fetch_slots:
                for _ in range(self.config.fetch_attempts):
                    holder = None if gid in self.seen_groups else self._pending.next_holder(gid, self._usable)
                    if holder is None:
                        return
                    self.metrics.inc("fetch_attempts")
                    if await self._fetch_from(holder, gid):
                        return
        finally:
            if self._running and gid not in self.seen_groups and self._pending.has_untried(gid, self._usable):
                self._spawn(self._fetch(entry))
            else:
                self._pending.drop(gid)  # settled, or nobody usable left: a later announce retries

    async def _fetch_from(self, holder: str, gid: str) -> bool:
        """One attempt; True when the group is settled (admitted, or proven bad)."""
        m = self.metrics
        rid, request = self.wire.seal_request([gid])
        m.inc("sent_requests")
        m.inc("sent_bytes", len(request))
        try:
            answer = await self.transport.request(
                holder, self.config.fetch_protocol, request, self.config.fetch_timeout
            )
        except TransportError as e:
            m.inc("fetch_failures")
            self.scores.penalize(holder, FETCH_FAILED)
            log.debug("fetch %s from %s failed: %s", gid[:12], holder[:12], e)
            return False
        m.inc("fetched_bytes", len(answer))
        try:
            opened = self.wire.open_response(answer, holder, rid)
        except Rejected as e:
            self._reject(holder, e.reason)
            return False  # the frame is bad, not (provably) the group: try another holder
        found = [(entry, group) for entry, group in opened if entry.group_id == gid]
        if not found:
            if opened:
                self._reject(holder, WRONG_GROUP)
            else:
                m.inc("fetch_missing")  # honest: it no longer holds the group
            return False
        entry, group = found[0]
        if self.config.allowlist is not None and entry.origin not in self.config.allowlist:
            self._reject(holder, NOT_ALLOWED)
            self.seen_groups.add(gid)
            return True
        self._admit(holder, entry, group)
        return True

    def _admit(self, holder: str, entry: AnnounceEntry, group: Any) -> None:
        self.seen_groups.add(entry.group_id)
        self.outbox.put(entry, group)
        self.inbox.put(InboxItem(entry.group_id, entry.origin, group, self._now(), entry.size))
        self.scores.reward(holder)
        self.metrics.inc("admitted_groups")
        self.metrics.inc("admitted_bytes", entry.size)
        if self.relay:
            self._announce([entry])
