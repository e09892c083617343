"""Outcome summaries heard in announces, queued for the node without fetching a group.

A peer announcing one of its own groups may say which prompt it answered (`prompt_key`) and
how many of its G completions it scored correct (`successes`; protocol/outcome.py defines both).
The gossip engine hands every such claim to a `SummaryQueue`; the node drains it between steps
to learn what the swarm finds hard.  What the queue guarantees:

* bounded: at most `capacity` summaries wait; when full the oldest is dropped (fresh outcomes
  say more about a drifting swarm than old ones);
* one summary per group id (`dedup_capacity` ids remembered for `dedup_ttl` seconds): relays'
  inventory answers repeat announces, and a repeat never re-enters the queue;
* per announcer, at most `per_origin` summaries per `window` seconds (a token bucket of that
  burst refilled over the window), so a flood from one peer cannot fill the queue; a summary
  over the cap is dropped and not remembered, so a later repeat of it may still get in;
* summaries from a peer banned by the time the node drains are dropped there.

Every drop is counted by why (`counts`: duplicate, origin_capped, evicted, banned).

`Summary.origin` is the peer that signed the announce, the one a false summary is charged to: the
group's origin, or a relay that re-announced a group it fetched (swarm/protocol_wire.py: the
count is derived from the signed group, so an honest relay's always agrees with it).  Summaries of
our own groups, relayed back to us, are dropped (`own`): they are not evidence from the swarm.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from swarm.rate_limit import KeyedBuckets
from swarm.seen_cache import SeenCache


@dataclass(frozen=True)
class Summary:
    """One announced group's outcome, as its announcer claims it."""

    origin: str  # peer id that signed the announce carrying the claim (charged if it lies)
    task: str  # the item's task name: a dataset, or "question" for a literal question
    prompt_key: str  # 32 hex chars: protocol.outcome.prompt_key(task, question)
    n: int  # completions in the group (G), 1..max_completions
    successes: int  # completions the origin scored correct, 0..n
    policy_version: int  # the origin's policy version that sampled the group
    group_id: str  # hex content id of the group (as InboxItem.group_id)


@dataclass(frozen=True)
class SummaryConfig:
    """Bounds of the summary queue.  Times in seconds (loop time)."""

    capacity: int = 1024  # summaries waiting for the node
    per_origin: int = 64  # summaries one announcer may add per window (a burst of groups per step)
    window: float = 10.0
    dedup_capacity: int = 16_384  # group ids remembered
    dedup_ttl: float = 1800.0

    def __post_init__(self) -> None:
        if (
            min(self.capacity, self.per_origin, self.dedup_capacity) <= 0
            or min(self.window, self.dedup_ttl) <= 0
        ):
            raise ValueError("SummaryConfig bounds must be positive")


class SummaryQueue:
    def __init__(self, config: SummaryConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._queue: deque[Summary] = deque()
        self._seen = SeenCache(config.dedup_capacity, config.dedup_ttl, clock)
        self._budget = KeyedBuckets(
            config.per_origin / config.window, config.per_origin, clock, max_keys=4096
        )
        self.counts: Counter[str] = Counter()  # received, accepted, duplicate, origin_capped, evicted, banned

    def __len__(self) -> int:
        return len(self._queue)

    def own(self, group_id: str) -> None:
        """A group we published: a summary of it that comes back through a relay is dropped."""
        self._seen.add(group_id)

    def offer(self, summary: Summary) -> bool:
        """Queue `summary` unless it repeats a group or its announcer is over its cap."""
        self.counts["received"] += 1
        if summary.group_id in self._seen:
            self.counts["duplicate"] += 1
            return False
        if not self._budget.take(summary.origin):
            self.counts["origin_capped"] += 1
            return False
        self._seen.add(summary.group_id)
        if len(self._queue) >= self.config.capacity:
            self._queue.popleft()
            self.counts["evicted"] += 1
        self._queue.append(summary)
        self.counts["accepted"] += 1
        return True

    def drain(self, max_n: int, banned: Callable[[str], bool] = lambda peer: False) -> list[Summary]:
        """Up to `max_n` summaries, oldest first, skipping (and dropping) those of banned peers."""
        out: list[Summary] = []
        while self._queue and len(out) < max_n:
            s = self._queue.popleft()
            if banned(s.origin):
                self.counts["banned"] += 1
                continue
            out.append(s)
        return out
