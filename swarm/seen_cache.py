"""Seen-cache: remembers message or group ids for a while so duplicates are dropped.

Shape of py-libp2p's `pubsub/mcache.py`'s seen set, simplified: an insertion-ordered dict
from id to expiry time, bounded both by age (`ttl`) and by count (`capacity`, oldest evicted
first).  The count bound is what keeps a flood of distinct ids from growing memory; the TTL is
what lets a long-lived peer forget.  An id evicted early can be seen again: the gossip layer
tolerates that (a second fetch of a group is wasted bandwidth, never a second delivery,
because the inbox keeps its own per-group guard while the group is held).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


class SeenCache:
    """Bounded set of recently seen ids with expiry."""

    def __init__(self, capacity: int, ttl: float, clock: Callable[[], float]) -> None:
        if capacity <= 0 or ttl <= 0:
            raise ValueError("capacity and ttl must be positive")
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """Record `key`; True if it was new (not seen within the TTL), False if a duplicate."""
        now = self._clock()
        self._expire(now)
        if key in self._expiry:
            return False
        self._expiry[key] = now + self.ttl
        while len(self._expiry) > self.capacity:
            self._expiry.popitem(last=False)
        return True

    def __contains__(self, key: Hashable) -> bool:
        expiry = self._expiry.get(key)
        return expiry is not None and expiry > self._clock()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._expiry)

    def _expire(self, now: float) -> None:
        # Entries are inserted in time order with one TTL, so expiries are sorted too.
        while self._expiry:
            key, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            del self._expiry[key]
