"""What this node serves when inbound requests outnumber what it will answer.

The per-peer request buckets (`rate_limit.py`, `ScoreParams.request_rate`) bound each key, not
a set of keys: the chaos suite's 11 Sybil keys, each just under 100 requests/s, sent about
1,100 fetch requests/s at one node and starved its event loop (docs/benchmarks.md, "Chaos").
Two more gates close that, both checked before a request is read (no decoding, no signature
check, no replay-cache entry for a request that will not be served):

* **A budget for all callers together**: one token bucket of `serve_rate` requests per second
  (capacity `serve_burst`).  A peer with a positive score (it has served us valid groups and is
  not in debt) may take any token; every other peer only the tokens above the reserve,
  `serve_reserve x serve_burst`.  So unknown keys together get at most `serve_rate` requests/s
  once the burst is spent, and whatever they leave; known-good peers are served first.
  Over budget the verdict is `BUSY`: the caller gets the protocol's existing empty answer (a
  `Response` listing every asked id as missing; an empty inventory) and nobody is charged,
  neither the caller (it broke no rule) nor, at the caller, us (a missing group is not a
  failed fetch).  Old peers read that answer the same way.
* **A lower per-peer limit on empty fetches**: a fetch whose answer holds no group costs one
  token of a per-peer bucket (`empty_fetch_rate`/s, capacity `empty_fetch_burst`).  A peer
  whose bucket is out is refused (`EMPTY_LIMITED`) and charged like any peer over its limit:
  asking for ids we never announced is what a Sybil does, and honest peers fetch what they
  were told we hold.

The budget is a rate, not a measure of load: it does not adapt to a busy machine.  It bounds
the work unknown peers can make us do; how much work that is per request is the serving path's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from swarm.rate_limit import KeyedBuckets, TokenBucket
from swarm.scoring import ScoreParams


class Admission(enum.Enum):
    SERVE = "serve"
    BUSY = "busy"  # over the node's budget: decline with an empty answer, charge nobody
    EMPTY_LIMITED = "empty_limited"  # the caller's empty-fetch bucket is out: refuse and charge it


class RequestBudget:
    """`admit(peer, fetch=...)` before reading a request; `served_empty(peer)` after a fetch
    whose answer held no group."""

    def __init__(
        self, params: ScoreParams, score: Callable[[str], float], clock: Callable[[], float]
    ) -> None:
        self._score = score
        self._clock = clock
        self._bucket = TokenBucket(params.serve_rate, params.serve_burst)
        self.reserve = params.serve_reserve * params.serve_burst
        self._empty = KeyedBuckets(params.empty_fetch_rate, params.empty_fetch_burst, clock)

    def admit(self, peer: str, *, fetch: bool) -> Admission:
        if fetch and not self._empty.can_take(peer):
            return Admission.EMPTY_LIMITED
        now = self._clock()
        floor = 0.0 if self._score(peer) > 0.0 else self.reserve
        if not self._bucket.can_take(floor + 1.0, now):
            return Admission.BUSY
        self._bucket.take(1.0, now)
        return Admission.SERVE

    def served_empty(self, peer: str) -> None:
        self._empty.take(peer)
