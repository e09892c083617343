"""The pool of admitted peer groups waiting for a step, and the choice of a step's J.

Admission (`node/admission.py`) decides what may enter; the pool decides what stays and what a
step takes.  The replay/selection layer will own this component; today it is SAPO's uniform
choice.

Guarantees:
- at most `capacity` entries; the oldest admitted is evicted first (`pool_overflow`);
- `take(j)` first drops entries that went stale: older than `max_age_s`, or more than
  `max_version_lag` of the origin's own versions behind the newest group seen from that origin
  (the origin's counter is only ever compared with the same origin's);
- then samples uniformly without replacement, at most `per_peer_cap` per origin; each group is
  used at most once;
- `state_dict()` holds every entry (prompts by task and question, re-found on load), so a
  resumed node trains on the groups it had admitted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

from node.records import Completion, Group, Prompt


@dataclass(frozen=True)
class PoolConfig:
    capacity: int = 256
    per_peer_cap: int = 2
    max_age_s: float = 600.0
    max_version_lag: int = 16


@dataclass(frozen=True)
class PoolEntry:
    group: Group  # our view, re-scored locally
    origin: str  # peer id that sampled and signed it
    group_id: str
    origin_version: int  # the origin's own version that sampled it
    created_ms: int  # when the origin made it (its clock)


class GroupPool:
    def __init__(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        self.entries: list[PoolEntry] = []
        self.counts: Counter[str] = Counter()  # pool_overflow, stale

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: PoolEntry) -> None:
        self.entries.append(entry)
        if len(self.entries) > self.cfg.capacity:
            self.entries.pop(0)
            self.counts["pool_overflow"] += 1

    def _fresh(self, e: PoolEntry, now_ms: int, newest: dict[str, int]) -> bool:
        if now_ms - e.created_ms > self.cfg.max_age_s * 1000:
            return False
        return newest.get(e.origin, e.origin_version) - e.origin_version <= self.cfg.max_version_lag

    def take(self, j: int, rng: random.Random, now_ms: int, newest: dict[str, int]) -> list[PoolEntry]:
        """Up to `j` entries, uniformly at random, at most `per_peer_cap` per origin."""
        fresh = [e for e in self.entries if self._fresh(e, now_ms, newest)]
        if len(fresh) < len(self.entries):
            self.counts["stale"] += len(self.entries) - len(fresh)
        order = list(range(len(fresh)))
        rng.shuffle(order)
        per_origin: Counter[str] = Counter()
        chosen: list[int] = []
        for i in order:
            if len(chosen) == j:
                break
            if per_origin[fresh[i].origin] < self.cfg.per_peer_cap:
                per_origin[fresh[i].origin] += 1
                chosen.append(i)
        taken = set(chosen)
        self.entries = [e for i, e in enumerate(fresh) if i not in taken]
        return [fresh[i] for i in sorted(chosen)]

    # -- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"entries": [entry_to_dict(e) for e in self.entries], "counts": dict(self.counts)}

    def load_state_dict(self, state: dict, find_prompt: Callable[[str, str], Prompt | None]) -> None:
        """`find_prompt(task, question)`: our prompt (entries whose prompt is gone are dropped)."""
        self.entries = [e for d in state["entries"] if (e := entry_from_dict(d, find_prompt)) is not None]
        self.counts = Counter({str(k): int(v) for k, v in state["counts"].items()})


def entry_to_dict(e: PoolEntry) -> dict:
    comps = [
        {f.name: getattr(c, f.name) for f in fields(c) if f.name != "prompt"} for c in e.group.completions
    ]
    return {
        "task": e.group.prompt.task, "question": e.group.prompt.question, "completions": comps,
        "origin": e.origin, "group_id": e.group_id, "origin_version": e.origin_version, "created_ms": e.created_ms,
    }  # fmt: skip


def entry_from_dict(d: dict, find_prompt: Callable[[str, str], Prompt | None]) -> PoolEntry | None:
    prompt = find_prompt(d["task"], d["question"])
    if prompt is None:
        return None
    comps = tuple(Completion(prompt=prompt, **c) for c in d["completions"])
    return PoolEntry(
        Group(prompt, comps), d["origin"], d["group_id"], int(d["origin_version"]), int(d["created_ms"])
    )
