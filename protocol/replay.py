"""Replay memory: which (sender, nonce) pairs were accepted, in bounded memory, per sender.

The guarantee (docs/protocol.md, "Replay defence"):

* **Nobody moves what another sender can send.**  Each sender has its own floor, raised only
  when one of *its own* entries is evicted, to that entry's timestamp.  A floor is never above
  the newest timestamp its sender signed, so an honest sender with a monotonic clock is never
  refused for a new frame because of anything others do: a Sybil set flooding frames dated
  `now + max_future` raises only the Sybils' floors.  (The earlier design had one floor for
  everyone: a flood of future-dated frames overflowed the cache and lifted it above "now".)
* **Every accepted pair is refused again while it is inside the window**, as long as its
  sender's floor is remembered: the pair is still in `_seen` (`SEEN`), or it was evicted and
  its timestamp is at or below the floor (`UNPROVEN`).
* **Memory is bounded**: at most `capacity` pairs and `max_senders` floors (about 250 bytes
  each: ~16 MB and ~4 MB at the defaults).  Pairs and floors older than the window are dropped
  first, since those frames are refused as `expired` anyway.

What pressure can still do: when more than `max_senders` senders had pairs evicted within one
window, the least recently raised floors are forgotten (`forgotten_floors` counts them) and
those senders' evicted pairs could be replayed once: fail open, never closed, so honest peers
keep working.  A frame at or below its own sender's floor is `UNPROVEN`, not `SEEN`: it may be
a replay or a frame overtaken in transit by later ones from the same sender (by more than
`capacity` accepted frames, i.e. seconds of flood at signature-verification speed), so nobody is
blamed for it.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum


class Replay(Enum):
    """What the cache knows about one (sender, nonce, timestamp)."""

    NEW = "new"  # never seen, and above its sender's floor: now recorded
    SEEN = "seen"  # this exact pair was accepted before, and is remembered: provably a replay
    UNPROVEN = "unproven"  # at or below the sender's own floor: cannot prove it new


class NonceCache:
    """Bounded memory of recent (sender, nonce) pairs, with one floor per sender."""

    def __init__(self, capacity: int = 65_536, window_ms: int = 300_000, max_senders: int = 16_384) -> None:
        self.capacity = capacity  # pairs remembered exactly
        self.window_ms = window_ms  # a pair or floor older than now - window_ms is of no use
        self.max_senders = max_senders  # floors remembered
        self.forgotten_floors = 0  # floors dropped while still inside the window (see docstring)
        # len(nonce) || nonce || sender (UTF-8) -> timestamp_ms, in insertion order.
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        # sender -> highest timestamp of its evicted pairs, least recently raised first.
        self._floors: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def floor_ms(self, sender: str) -> int:
        """`sender`'s floor (-1 if none): its frames at or below it are `UNPROVEN`."""
        return self._floors.get(sender, -1)

    @property
    def senders_with_floor(self) -> int:
        return len(self._floors)

    def admit(self, sender: str, nonce: bytes, timestamp_ms: int, now_ms: int) -> Replay:
        """Classify one authenticated frame; a `NEW` one is remembered."""
        self._expire(now_ms - self.window_ms)
        key = bytes((len(nonce),)) + nonce + sender.encode()
        if key in self._seen:
            return Replay.SEEN
        if timestamp_ms <= self._floors.get(sender, -1):
            return Replay.UNPROVEN
        self._seen[key] = timestamp_ms
        if len(self._seen) > self.capacity:
            self._evict_oldest_pair(now_ms - self.window_ms)
        return Replay.NEW

    def _expire(self, cutoff_ms: int) -> None:
        # Lazy: stops at the first young entry, so an old one behind it waits for its turn.
        while self._seen and next(iter(self._seen.values())) < cutoff_ms:
            self._seen.popitem(last=False)
        while self._floors and next(iter(self._floors.values())) < cutoff_ms:
            self._floors.popitem(last=False)

    def _evict_oldest_pair(self, cutoff_ms: int) -> None:
        key, timestamp_ms = self._seen.popitem(last=False)
        sender = key[1 + key[0] :].decode()
        floor = max(self._floors.pop(sender, -1), timestamp_ms)  # only the owner's floor moves
        self._floors[sender] = floor
        if len(self._floors) > self.max_senders:
            _, dropped = self._floors.popitem(last=False)
            if dropped >= cutoff_ms:
                self.forgotten_floors += 1
