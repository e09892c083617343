"""Counters for the swarm layer, read by the node as a flat dict snapshot.

Plain integers in dicts: cheap enough to bump on every message, and `snapshot()` gives the
node a JSON-able view (`{"sent_messages": 12, "rejected.bad_signature": 3, ...}`) that it
can forward to TensorBoard or its own metrics without knowing our internals.
"""

from __future__ import annotations

from collections import Counter


class SwarmMetrics:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # by reason
        self.gauges: dict[str, float] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.counters)
        out.update({f"rejected.{r}": n for r, n in self.rejected.items()})
        out["rejected_total"] = sum(self.rejected.values())
        out.update(self.gauges)
        return out
