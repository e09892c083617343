"""A buffer of scored groups, local or from peers, and the two ways a step takes from it.

The node keeps two: the pool of admitted peer groups (join mode; `take`, SAPO's uniform choice of
a step's J) and the replay buffer of our own recent groups (`replay`, DOTS rollout replay).  Both
hold `BufferEntry`s stamped with where the group came from and when.

Guarantees:
- at most `capacity` entries, the oldest added evicted first (`overflow`); at most
  `per_origin_cap` held from one origin (that origin's oldest evicted, `origin_cap`);
- a group id is held once (`duplicate`);
- entries go stale and are dropped when taken from: older than `max_age_s` (the origin's clock),
  more than `max_version_lag` of the origin's own versions behind the newest group seen from that
  origin (`take`: the origin's counter is only compared with the same origin's), or more than
  `max_version_lag` of our versions behind (`replay`: local groups carry our counter);
- `take` samples uniformly without replacement, at most `per_peer_cap` per origin, and removes
  what it took; `take_best` does the same by a caller's score (`swarm.take: information`, the
  score in node/replay/peer_value.py) with a share `epsilon` of uniform picks; `replay` samples uniformly among groups used fewer than `max_uses` times;
- `state_dict()` holds every entry (prompts by task and question, re-found on load), so a resumed
  node holds exactly the groups it had.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from node.records import LOCAL, Completion, Group, Prompt


@dataclass(frozen=True)
class BufferConfig:
    capacity: int = 256
    per_peer_cap: int = 2  # `take`: at most this many from one origin per call
    max_age_s: float | None = 600.0
    max_version_lag: int | None = 16
    per_origin_cap: int | None = None  # entries held from one origin (None: only `capacity`)
    max_uses: int = 1  # `replay`: times one entry may be handed out


@dataclass(frozen=True)
class BufferEntry:
    group: Group  # our view, scored by our verifier
    origin: str  # peer id that sampled and signed it, or "local"
    group_id: str
    origin_version: int  # the origin's own version that sampled it (ours for local groups)
    created_ms: int  # when the origin made it (its clock)
    policy_version: int = 0  # our version when it was sampled (local) or admitted (peer)
    model_id: str = ""  # model that sampled it
    tokenizer_hash: str = ""  # of the sampler's tokenizer ("" unknown)
    uses: int = 0  # times handed to a step


class ReplayBuffer:
    def __init__(self, cfg: BufferConfig) -> None:
        self.cfg = cfg
        self.entries: list[BufferEntry] = []
        self.counts: Counter[str] = Counter()  # overflow, origin_cap, duplicate, stale

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: BufferEntry) -> bool:
        """False (counted `duplicate`) if the group id is already held."""
        if any(e.group_id == entry.group_id for e in self.entries):
            self.counts["duplicate"] += 1
            return False
        self.entries.append(entry)
        cap = self.cfg.per_origin_cap
        if cap is not None and sum(e.origin == entry.origin for e in self.entries) > cap:
            self.entries.remove(next(e for e in self.entries if e.origin == entry.origin))
            self.counts["origin_cap"] += 1
        if len(self.entries) > self.cfg.capacity:
            self.entries.pop(0)
            self.counts["overflow"] += 1
        return True

    def _fresh(self, e: BufferEntry, now_ms: int, newest: dict[str, int], version: int | None) -> bool:
        if self.cfg.max_age_s is not None and now_ms - e.created_ms > self.cfg.max_age_s * 1000:
            return False
        lag = self.cfg.max_version_lag
        if lag is None:
            return True
        if version is not None:  # our counter
            return version - e.policy_version <= lag
        return newest.get(e.origin, e.origin_version) - e.origin_version <= lag

    def _drop_stale(self, now_ms: int, newest: dict[str, int], version: int | None) -> list[BufferEntry]:
        fresh = [e for e in self.entries if self._fresh(e, now_ms, newest, version)]
        if len(fresh) < len(self.entries):
            self.counts["stale"] += len(self.entries) - len(fresh)
        self.entries = fresh
        return fresh

    def take(self, j: int, rng: random.Random, now_ms: int, newest: dict[str, int]) -> list[BufferEntry]:
        """Up to `j` entries, uniformly at random, at most `per_peer_cap` per origin; removed."""
        fresh = self._drop_stale(now_ms, newest, None)
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

    def take_best(
        self,
        j: int,
        rng: random.Random,
        now_ms: int,
        newest: dict[str, int],
        score: Callable[[list[BufferEntry]], list[float]],
        epsilon: float = 0.0,
    ) -> list[BufferEntry]:
        """Up to `j` entries by `score` (called once, on the fresh entries), at most `per_peer_cap`
        per origin; removed.  Each slot draws `rng.random()`: below `epsilon` it takes a uniform pick
        (`rng.randrange`) among the entries its origin cap still allows, else the best of them (ties:
        the one added first).  Returned in pool order, as `take` returns them."""
        fresh = self._drop_stale(now_ms, newest, None)
        values = score(fresh)
        per_origin: Counter[str] = Counter()
        taken: set[int] = set()
        while len(taken) < j:
            cap = self.cfg.per_peer_cap
            open_ = [i for i, e in enumerate(fresh) if i not in taken and per_origin[e.origin] < cap]
            if not open_:
                break
            if rng.random() < epsilon:
                i = open_[rng.randrange(len(open_))]
            else:
                i = max(open_, key=lambda k: (values[k], -k))
            per_origin[fresh[i].origin] += 1
            taken.add(i)
        self.entries = [e for i, e in enumerate(fresh) if i not in taken]
        return [fresh[i] for i in sorted(taken)]

    def replay(self, k: int, rng: random.Random, now_ms: int, version: int) -> list[BufferEntry]:
        """Up to `k` entries at most `max_version_lag` of our versions old, uniformly; each use is
        counted and an entry used `max_uses` times leaves."""
        fresh = self._drop_stale(now_ms, {}, version)
        chosen = sorted(rng.sample(range(len(fresh)), min(k, len(fresh))))
        out = []
        for i in chosen:
            fresh[i] = replace(fresh[i], uses=fresh[i].uses + 1)
            out.append(fresh[i])
        self.entries = [e for e in fresh if e.uses < self.cfg.max_uses]
        return out

    # -- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"entries": [entry_to_dict(e) for e in self.entries], "counts": dict(self.counts)}

    def load_state_dict(self, state: dict, find_prompt: Callable[[str, str], Prompt | None]) -> None:
        """`find_prompt(task, question)`: our prompt (entries whose prompt is gone are dropped)."""
        self.entries = [e for d in state["entries"] if (e := entry_from_dict(d, find_prompt)) is not None]
        self.counts = Counter({str(k): int(v) for k, v in state["counts"].items()})


_STAMPS = (
    "origin",
    "group_id",
    "origin_version",
    "created_ms",
    "policy_version",
    "model_id",
    "tokenizer_hash",
    "uses",
)


def entry_to_dict(e: BufferEntry) -> dict:
    comps = [
        {f.name: getattr(c, f.name) for f in fields(c) if f.name != "prompt"} for c in e.group.completions
    ]
    stamps = {k: getattr(e, k) for k in _STAMPS}
    return {"task": e.group.prompt.task, "question": e.group.prompt.question, "completions": comps} | stamps


def entry_from_dict(d: dict, find_prompt: Callable[[str, str], Prompt | None]) -> BufferEntry | None:
    prompt = find_prompt(d["task"], d["question"])
    if prompt is None:
        return None
    comps = tuple(Completion(prompt=prompt, **c) for c in d["completions"])
    return BufferEntry(Group(prompt, comps), **{k: d[k] for k in _STAMPS if k in d})


def local_entry(
    group: Group, version: int, now_ms: int, model_id: str, tokenizer_hash: str, step: int, index: int = 0
) -> BufferEntry:
    """Our own group, sampled by our version `version` at `step`, the `index`-th of that step's
    groups (its id: local:step:index:prompt, so a prompt drawn twice in a step is held twice)."""
    gid = f"{LOCAL}:{step}:{index}:{group.prompt.prompt_id}"
    return BufferEntry(group, LOCAL, gid, version, now_ms, version, model_id, tokenizer_hash)
