"""The serving path of gossip: admit an inbound request, then answer a fetch or an inventory pull.

`Serving` is a mixin of `swarm.gossip.Gossip` (like `swarm.fetching.Fetching`, and for the same
reason: it reads the engine's scores, rate limiters, outbox, membership and metrics); the
attributes it expects the engine to provide are declared at the top of the class.
`Gossip.start` registers `_serve` on `GossipConfig.fetch_protocol` and `_serve_inventory` on
`GossipConfig.inventory_protocol`.

Every request meets, before anything in it is read (`_admit_request`): drop if the caller is
banned; the caller's request bucket; then `request_budget.py`: a lower per-caller limit on
fetches that return nothing, and one budget for all callers together that serves peers with a
positive score first and declines the rest as busy.  Busy is the protocol's empty answer (a
`Response` listing every asked id as missing; an empty inventory), charged to nobody.  Every
other refusal (banned, over the caller's own limits, a request or card that does not open
through the `Wire`) raises `PermissionError` and gets no answer; each is charged to the
caller's score except "banned", which is only counted.
"""

from __future__ import annotations

from collections.abc import Callable

from swarm.gossip_config import GossipConfig
from swarm.membership import Membership
from swarm.metrics import SwarmMetrics
from swarm.outbox import Outbox
from swarm.rate_limit import PeerRateLimiter
from swarm.request_budget import Admission, RequestBudget
from swarm.scoring import PeerScores
from swarm.wire import BANNED, EMPTY_LIMITED, RATE_LIMITED, Rejected, Wire


class Serving:
    """Answer fetches and inventory pulls from our `Outbox` (mixed into `Gossip`)."""

    # Provided by the engine (swarm/gossip.py, `Gossip.__init__` and its methods).
    wire: Wire
    config: GossipConfig
    metrics: SwarmMetrics
    scores: PeerScores
    request_limiter: PeerRateLimiter
    request_budget: RequestBudget
    outbox: Outbox
    members: Membership
    _reject: Callable[[str, str], None]

    def _admit_request(self, caller: str, data: bytes, *, fetch: bool) -> bool:
        """True: serve it.  False: over the node's budget, answer busy (charged to nobody).
        Raises PermissionError, unread, for a banned caller or one over its own limits."""
        if self.scores.is_banned(caller):
            self.metrics.reject(BANNED)
            raise PermissionError("banned")
        if not self.request_limiter.allow(caller, len(data)):
            self._reject(caller, RATE_LIMITED)
            raise PermissionError("rate limited")
        verdict = self.request_budget.admit(caller, fetch=fetch)
        if verdict is Admission.EMPTY_LIMITED:
            self._reject(caller, EMPTY_LIMITED)
            raise PermissionError("too many empty fetches")
        if verdict is Admission.BUSY:
            self.metrics.inc("busy_requests")
            return False
        return True

    async def _serve(self, caller: str, data: bytes) -> bytes:
        if not self._admit_request(caller, data, fetch=True):
            try:
                return self.wire.decline_request(data)
            except Rejected:  # not even a request: no answer to shape, still nobody charged
                raise PermissionError("busy") from None
        try:
            rid, ids = self.wire.open_request(data, caller)
        except Rejected as e:
            self._reject(caller, e.reason)
            raise PermissionError(e.reason) from None
        held = [(i, self.outbox.get(i)) for i in ids]
        groups = [g for _, g in held if g is not None]
        if not groups:
            self.request_budget.served_empty(caller)
        self.metrics.inc("served_groups", len(groups))
        answer = self.wire.seal_response(rid, groups, [i for i, g in held if g is None])
        self.metrics.inc("sent_bytes", len(answer))
        return answer

    async def _serve_inventory(self, caller: str, data: bytes) -> bytes:
        if not self._admit_request(caller, data, fetch=False):
            return b""  # the answer of a holder with nothing to offer
        try:
            card = self.wire.open_push(data, caller)
        except Rejected as e:
            self._reject(caller, e.reason)
            raise PermissionError(e.reason) from None
        if card.addresses is not None:
            self.members.update(caller, card.addresses)
        entries = self.outbox.entries(self.config.inventory_size)
        self.metrics.inc("served_inventories")
        answer = self.wire.seal_announce(entries) if entries else b""
        self.metrics.inc("sent_bytes", len(answer))
        return answer
