"""Admission: which of the peers' groups a step trains on (SAPO's J external groups).

A stage of its own, between the swarm's inbox and the trainer, so the replay/selection layer
can replace it.  `offer` judges every arriving group once; `take` picks a step's share.

`offer`, in order, each refusal counted under its reason:
  own              the group is ours, come back through a relay
  unknown_task     it names a dataset we do not have (we cannot score it)
  unknown_prompt   the question is not one of our training prompts (held-out ones never are);
                   a group with a literal question (no dataset) is matched against every task
  stale            sampled more than `max_age_s` ago
  reward_mismatch  a claimed correctness differs from ours by more than `mismatch_tolerance`;
                   the origin is reported (its swarm score drops) and the group is not used
  zero_variance    after our re-scoring every completion has the same reward (no signal)
Survivors wait in a bounded pool (oldest evicted first: `pool_overflow`).

`take(j)` first drops pool entries that went stale (age, or more than `max_version_lag`
versions behind the newest group seen from the same origin), then samples uniformly without
replacement, at most `per_peer_cap` per origin.  Each group is used at most once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from node.rollout.base import Group
from node.scoring import score_groups
from node.tasks.base import Prompt, Task
from protocol import RolloutGroup

# (wire group, our prompt, origin) -> our unscored view of the group (see node.exchange.to_local)
Localize = Callable[[RolloutGroup, Prompt, str], Group]


@dataclass(frozen=True)
class AdmissionConfig:
    per_peer_cap: int = 2
    max_age_s: float = 600.0
    max_version_lag: int = 16
    pool_size: int = 256
    mismatch_tolerance: float = 0.5  # |claimed - ours| above this on any completion is a lie


@dataclass
class Candidate:
    group: Group  # our view, re-scored locally
    origin: str  # peer id that sampled and signed it
    group_id: str
    policy_version: int  # the origin's version that sampled it
    created_ms: int


class Admission:
    def __init__(
        self,
        cfg: AdmissionConfig,
        tasks: dict[str, Task],
        weights: dict[str, float],
        max_new_tokens: int,
        localize: Localize,
        self_id: str = "",
    ) -> None:
        self.cfg = cfg
        self.tasks = tasks
        self.weights = weights
        self.max_new_tokens = max_new_tokens
        self.localize = localize
        self.self_id = self_id
        self.pool: list[Candidate] = []
        self.counts: Counter[str] = Counter()  # cumulative verdicts, by reason ("admitted" for the pool)
        self.newest: dict[str, int] = {}  # origin -> newest policy version seen
        self._reports: list[tuple[str, str]] = []  # (origin, reason) for the swarm's peer scores

    # -- arriving groups -----------------------------------------------------------------
    def offer(self, group_id: str, origin: str, wire: RolloutGroup, now_ms: int) -> str:
        """Judge one arriving group; returns the verdict ("admitted" or the refusal reason)."""
        verdict = self._judge(group_id, origin, wire, now_ms)
        self.counts[verdict] += 1
        return verdict

    def _judge(self, group_id: str, origin: str, wire: RolloutGroup, now_ms: int) -> str:
        if origin == self.self_id:
            return "own"
        self.newest[origin] = max(self.newest.get(origin, 0), wire.policy_version)
        prompt = self._our_prompt(wire)
        if isinstance(prompt, str):
            return prompt
        if now_ms - wire.created_ms > self.cfg.max_age_s * 1000:
            return "stale"
        group = self.localize(wire, prompt, origin)
        score_groups([group], self.tasks, self.weights, self.max_new_tokens)
        ours = [c.reward_components.get("correctness") for c in group.completions]
        theirs = [wc.claimed_rewards.get("correctness") for wc in wire.completions]
        if any(o is not None and t is not None and abs(o - t) > self.cfg.mismatch_tolerance
               for o, t in zip(ours, theirs)):  # fmt: skip
            self._reports.append((origin, "reward_mismatch"))
            return "reward_mismatch"
        if len(set(group.rewards)) <= 1:
            return "zero_variance"
        self.pool.append(Candidate(group, origin, group_id, wire.policy_version, wire.created_ms))
        if len(self.pool) > self.cfg.pool_size:
            self.pool.pop(0)
            self.counts["pool_overflow"] += 1
        return "admitted"

    def _our_prompt(self, wire: RolloutGroup) -> Prompt | str:
        """Our training prompt for the group's question, or the refusal reason."""
        question = wire.task.question
        if wire.task.dataset is not None:  # a named dataset: only our task of that name scores it
            task = self.tasks.get(wire.task.dataset)
            if task is None:
                return "unknown_task"
            found = task.lookup(question) if question else None
        else:  # a literal question: any of our tasks that has it
            found = next((p for t in self.tasks.values() if question and (p := t.lookup(question))), None)
        return found if found is not None else "unknown_prompt"

    # -- a step's share ------------------------------------------------------------------
    def _fresh(self, c: Candidate, now_ms: int) -> bool:
        if now_ms - c.created_ms > self.cfg.max_age_s * 1000:
            return False
        return self.newest.get(c.origin, 0) - c.policy_version <= self.cfg.max_version_lag

    def take(self, j: int, rng: random.Random, now_ms: int) -> list[Candidate]:
        """Up to `j` pooled groups, uniformly at random, at most `per_peer_cap` per origin."""
        fresh = [c for c in self.pool if self._fresh(c, now_ms)]
        if len(fresh) < len(self.pool):
            self.counts["stale"] += len(self.pool) - len(fresh)
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
        self.pool = [c for i, c in enumerate(fresh) if i not in taken]
        return [fresh[i] for i in sorted(chosen)]

    def pop_reports(self) -> list[tuple[str, str]]:
        """Misbehaviour found since the last call, for the swarm layer's peer scores."""
        out, self._reports = self._reports, []
        return out
