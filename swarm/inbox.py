"""Bounded inbox of admitted groups, with a cap on any one origin peer's share.

The node drains it between training steps.  Two bounds keep one peer from owning our batch:

* `capacity` items in total; when full, the oldest item of the origin holding the most
  items is evicted (fresh rollouts are worth more than old ones for on-policy-ish training);
* `max_per_origin = ceil(capacity * max_share)`; a new item from an origin at its cap evicts
  that origin's own oldest item instead of anyone else's.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InboxItem:
    group_id: str  # content id of the group (hex)
    origin: str  # peer id that signed the group
    group: Any  # the decoded protocol message (a RolloutGroup)
    received_at: float  # loop time of admission
    size: int  # wire bytes of the signed envelope


class Inbox:
    def __init__(self, capacity: int, max_share: float) -> None:
        if capacity <= 0 or not 0 < max_share <= 1:
            raise ValueError("capacity must be positive and max_share in (0, 1]")
        self.capacity = capacity
        self.max_per_origin = max(1, math.ceil(capacity * max_share))
        self._items: OrderedDict[str, InboxItem] = OrderedDict()
        self._per_origin: dict[str, int] = defaultdict(int)
        self._nonempty = asyncio.Event()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, group_id: str) -> bool:
        return group_id in self._items

    def put(self, item: InboxItem) -> None:
        if item.group_id in self._items:
            return
        if self._per_origin[item.origin] >= self.max_per_origin:
            self._evict_oldest_of(item.origin)
        elif len(self._items) >= self.capacity:
            biggest = max(self._per_origin, key=lambda o: self._per_origin[o])
            self._evict_oldest_of(biggest)
        self._items[item.group_id] = item
        self._per_origin[item.origin] += 1
        self._nonempty.set()

    def _evict_oldest_of(self, origin: str) -> None:
        for gid, it in self._items.items():
            if it.origin == origin:
                self._remove(gid)
                self.evicted += 1
                return

    def _remove(self, group_id: str) -> InboxItem:
        it = self._items.pop(group_id)
        self._per_origin[it.origin] -= 1
        if not self._per_origin[it.origin]:
            del self._per_origin[it.origin]
        if not self._items:
            self._nonempty.clear()
        return it

    def drain(self, max_items: int | None = None) -> list[InboxItem]:
        """Take up to `max_items` (all if None), oldest first."""
        n = len(self._items) if max_items is None else min(max_items, len(self._items))
        return [self._remove(next(iter(self._items))) for _ in range(n)]

    async def get(self) -> InboxItem:
        """Wait for and take the oldest item."""
        while not self._items:
            await self._nonempty.wait()
        return self._remove(next(iter(self._items)))
