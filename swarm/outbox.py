"""Bounded store of recent groups this peer can serve (its own and those it admitted).

Bounded by count, by bytes and by age (`ttl`): a late joiner can still fetch every group
announced in the last `ttl` seconds from anyone who holds it, and memory stays flat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swarm.wire import AnnounceEntry


@dataclass
class _Held:
    entry: AnnounceEntry
    group: Any  # the signed group object, re-encoded into each Response
    expires: float


class Outbox:
    def __init__(self, capacity: int, max_bytes: int, ttl: float, clock: Callable[[], float]) -> None:
        self.capacity, self.max_bytes, self.ttl = capacity, max_bytes, ttl
        self._clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self.bytes = 0

    def put(self, entry: AnnounceEntry, group: Any) -> None:
        if entry.group_id in self._held:
            return
        self._held[entry.group_id] = _Held(entry, group, self._clock() + self.ttl)
        self.bytes += entry.size
        while self._held and (len(self._held) > self.capacity or self.bytes > self.max_bytes):
            self._pop_oldest()

    def _pop_oldest(self) -> None:
        _, held = self._held.popitem(last=False)
        self.bytes -= held.entry.size

    def _expire(self) -> None:
        now = self._clock()
        while self._held and next(iter(self._held.values())).expires <= now:
            self._pop_oldest()

    def get(self, group_id: str) -> Any | None:
        self._expire()
        held = self._held.get(group_id)
        return None if held is None else held.group

    def __contains__(self, group_id: str) -> bool:
        return self.get(group_id) is not None

    def entries(self, limit: int) -> list[AnnounceEntry]:
        """The newest `limit` entries, for an inventory answer."""
        self._expire()
        items = list(self._held.values())[-limit:]
        return [h.entry for h in items]

    def __len__(self) -> int:
        self._expire()
        return len(self._held)
