"""Token buckets, per peer, on messages and on bytes.

A bucket holds at most `burst` tokens and refills at `rate` tokens per second.  A message of
`n` bytes from a peer costs one message token and `n` byte tokens; if either bucket is short
the message is refused and nothing is taken (so a refused flood does not also starve the
peer's next legitimate message of byte tokens).  Buckets of peers not heard from for a while
are forgotten (a full bucket carries no information), which bounds memory under a Sybil flood.

`KeyedBuckets` is one bucket per key with look-before-take, for limits that are checked when a
request arrives but charged only once its outcome is known (swarm/request_budget.py's limit on
fetches that return nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # capacity; a fresh bucket starts full
    tokens: float = -1.0  # current level; -1 means "full" (set on first use)
    stamp: float = 0.0  # clock time of the last refill

    def refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def can_take(self, n: float, now: float) -> bool:
        self.refill(now)
        return self.tokens >= n

    def take(self, n: float, now: float) -> bool:
        """Remove `n` tokens if available; True on success."""
        if not self.can_take(n, now):
            return False
        self.tokens -= n
        return True


class PeerRateLimiter:
    """Per-peer message and byte buckets.  `allow(peer, nbytes)` is the whole interface."""

    def __init__(
        self,
        msg_rate: float,
        msg_burst: float,
        byte_rate: float,
        byte_burst: float,
        clock: Callable[[], float],
        max_peers: int = 100_000,
    ) -> None:
        self.msg_rate, self.msg_burst = msg_rate, msg_burst
        self.byte_rate, self.byte_burst = byte_rate, byte_burst
        self._clock = clock
        self.max_peers = max_peers
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}

    def allow(self, peer_id: str, nbytes: int) -> bool:
        now = self._clock()
        pair = self._buckets.get(peer_id)
        if pair is None:
            if len(self._buckets) >= self.max_peers:
                self._forget_full(now)
            pair = (TokenBucket(self.msg_rate, self.msg_burst), TokenBucket(self.byte_rate, self.byte_burst))
            self._buckets[peer_id] = pair
        msgs, nbytes_bucket = pair
        if not (msgs.can_take(1, now) and nbytes_bucket.can_take(nbytes, now)):
            return False
        msgs.take(1, now)
        nbytes_bucket.take(nbytes, now)
        return True

    def _forget_full(self, now: float) -> None:
        for peer, (m, b) in list(self._buckets.items()):
            m.refill(now)
            b.refill(now)
            if m.tokens >= m.burst and b.tokens >= b.burst:
                del self._buckets[peer]
        if len(self._buckets) >= self.max_peers:  # everyone is active: drop the oldest half
            for peer in list(self._buckets)[: self.max_peers // 2]:
                del self._buckets[peer]


class KeyedBuckets:
    """One `TokenBucket` per key, created full on first use, at most `max_keys` remembered."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float], max_keys: int = 100_000
    ) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def can_take(self, key: str, n: float = 1.0) -> bool:
        """True if `key` has `n` tokens now; takes nothing (an unknown key has a full bucket)."""
        bucket = self._buckets.get(key)
        return n <= self.burst if bucket is None else bucket.can_take(n, self._clock())

    def take(self, key: str, n: float = 1.0) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take(n, now)

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # every key is drained: drop the oldest half
            for key in list(self._buckets)[: self.max_keys // 2]:
                del self._buckets[key]
