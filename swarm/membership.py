"""Who is in the swarm: signed PeerCards kept for a TTL, dropped when not refreshed.

Each peer re-publishes its card every `ttl / 3` seconds (the gossip layer does that), so one
or two lost cards do not evict a live peer, while a dead one is gone within `ttl`.  Cards
carry listen addresses so a transport that needs to dial (libp2p) can reach a peer it learned
about second-hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Member:
    peer_id: str
    addresses: list[str]
    expires: float  # loop time after which the peer counts as gone
    first_seen: float


class Membership:
    def __init__(self, ttl: float, clock: Callable[[], float], max_members: int = 100_000) -> None:
        self.ttl = ttl
        self._clock = clock
        self.max_members = max_members
        self._members: dict[str, Member] = {}

    def update(self, peer_id: str, addresses: list[str]) -> bool:
        """Refresh (or add) a peer; True if it is new."""
        now = self._clock()
        m = self._members.get(peer_id)
        if m is not None:
            m.expires = now + self.ttl
            m.addresses = list(addresses) or m.addresses
            return False
        if len(self._members) >= self.max_members:
            self.expire()
            if len(self._members) >= self.max_members:
                return False
        self._members[peer_id] = Member(peer_id, list(addresses), now + self.ttl, now)
        return True

    def expire(self) -> list[str]:
        """Drop members whose card expired; returns their ids."""
        now = self._clock()
        gone = [pid for pid, m in self._members.items() if m.expires <= now]
        for pid in gone:
            del self._members[pid]
        return gone

    def remove(self, peer_id: str) -> None:
        self._members.pop(peer_id, None)

    def alive(self) -> list[Member]:
        now = self._clock()
        return [m for m in self._members.values() if m.expires > now]

    def __contains__(self, peer_id: str) -> bool:
        m = self._members.get(peer_id)
        return m is not None and m.expires > self._clock()

    def __len__(self) -> int:
        return len(self.alive())
