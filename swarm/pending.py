"""Group ids being fetched: who announced each one, and which of them were already tried.

Gossip's fetch scheduling keeps one entry per group id from the first announce until the id is
settled (admitted, or proven bad) or has no holder left worth asking.  The rules that keep it
from spinning:

* each holder of an id is tried at most once while the id is pending (`next_holder` marks it);
* a fetch task is started again for an id only while an untried, usable holder remains
  (`has_untried`); otherwise the id is dropped and only a later announce brings it back;
* at most `max_pending` ids and `max_holders` holders per id are remembered.

So the number of fetch tasks per id is bounded by its holders, and an id whose every holder is
banned costs nothing until someone usable announces it.  (Before this module a fetch whose
remaining holders were all banned returned at once and respawned itself, 10k-55k times a
second; and each respawn forgot whom it had tried, so failing holders were asked forever.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

Usable = Callable[[str], bool]  # holder peer id -> may we ask it now (e.g. not banned)


class Heard(Enum):
    """What `PendingFetches.heard` did with an announce."""

    NEW = "new"  # first holder of an id we were not fetching: start a fetch
    KNOWN = "known"  # the id is already being fetched; the holder was noted for it
    FULL = "full"  # `max_pending` ids already pending: not tracked


@dataclass
class _Pending:
    holders: list[str] = field(default_factory=list)  # in announce order, at most max_holders
    tried: set[str] = field(default_factory=set)


class PendingFetches:
    """Announced-but-unsettled group ids, each with its holders and the ones already tried."""

    def __init__(self, max_pending: int, max_holders: int = 16) -> None:
        self.max_pending = max_pending
        self.max_holders = max_holders
        self._ids: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, gid: str) -> bool:
        return gid in self._ids

    def heard(self, gid: str, holder: str) -> Heard:
        """Note that `holder` announced `gid`."""
        pending = self._ids.get(gid)
        status = Heard.KNOWN
        if pending is None:
            if len(self._ids) >= self.max_pending:
                return Heard.FULL
            pending = self._ids[gid] = _Pending()
            status = Heard.NEW
        if holder not in pending.holders and len(pending.holders) < self.max_holders:
            pending.holders.append(holder)
        return status

    def next_holder(self, gid: str, usable: Usable) -> str | None:
        """The first holder not yet tried and usable now, marked as tried; None if there is none."""
        pending = self._ids.get(gid)
        if pending is None:
            return None
        for holder in pending.holders:
            if holder not in pending.tried and usable(holder):
                pending.tried.add(holder)
                return holder
        return None

    def has_untried(self, gid: str, usable: Usable) -> bool:
        """Whether another fetch of `gid` would have a holder to ask."""
        pending = self._ids.get(gid)
        return pending is not None and any(h not in pending.tried and usable(h) for h in pending.holders)

    def drop(self, gid: str) -> None:
        self._ids.pop(gid, None)
