"""Admission: judging each peer group that arrives, once, as a chain of small judges.

Judging is separate from keeping and choosing groups (`node/replay/buffer.py`), so the replay layer can
own the pool while admission stays what it is: a filter with counted, typed verdicts.

The chain, in order (first refusal wins; every verdict counted under its `Reason`):

  before localizing (the wire group alone)
    OWN              the group is ours, come back through a relay
    STALE            sampled more than `max_age_s` ago
    UNKNOWN_TASK     it names a dataset we do not have (we cannot score it)
    UNKNOWN_PROMPT   the question is not one of our training prompts (held-out ones never are);
                     a group with a literal question (no dataset) is matched against every task
  after the node localized and re-scored it with our verifier (`judge`)
    REWARD_MISMATCH  a claimed correctness differs from ours by more than `mismatch_tolerance`;
                     the origin is reported (`Misconduct.REWARD_MISMATCH` lowers its swarm score)
    ZERO_VARIANCE    every completion has the same value of the filter signal (`correctness`
                     by default, `algorithm.filter_signal`): no gradient
  ADMITTED         everything passed; the node puts it in the pool

`ERROR` counts groups whose localization or scoring raised (a group that breaks our tokenizer
or scorer is refused, never fatal).  Nothing here calls back into the node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from node.records import Group, Prompt
from node.tasks.base import Task
from protocol import RolloutGroup
from swarm.misconduct import Misconduct

if TYPE_CHECKING:
    from swarm.inbox import InboxItem


class Reason(str, Enum):
    ADMITTED = "admitted"
    OWN = "own"
    STALE = "stale"
    UNKNOWN_TASK = "unknown_task"
    UNKNOWN_PROMPT = "unknown_prompt"
    REWARD_MISMATCH = "reward_mismatch"
    ZERO_VARIANCE = "zero_variance"
    ERROR = "error"

    @property
    def misconduct(self) -> Misconduct | None:
        """The swarm-score reason when this verdict proves the origin misbehaved."""
        return Misconduct.REWARD_MISMATCH if self is Reason.REWARD_MISMATCH else None


@dataclass(frozen=True)
class AdmissionConfig:
    max_age_s: float = 600.0
    mismatch_tolerance: float = 0.5  # |claimed - ours| above this on any completion is a lie
    signal: str | None = "correctness"  # reward component the zero-variance judge compares (None: total)


@dataclass(frozen=True)
class Context:
    cfg: AdmissionConfig
    self_id: str
    now_ms: int


WireJudge = Callable[["InboxItem", Context], "Reason | None"]
ScoredJudge = Callable[["InboxItem", Group, Context], "Reason | None"]


def not_own(item: InboxItem, ctx: Context) -> Reason | None:
    return Reason.OWN if item.origin == ctx.self_id else None


def fresh(item: InboxItem, ctx: Context) -> Reason | None:
    return Reason.STALE if ctx.now_ms - item.group.created_ms > ctx.cfg.max_age_s * 1000 else None


def claims_match(item: InboxItem, group: Group, ctx: Context) -> Reason | None:
    ours = [c.reward_components.get("correctness") for c in group.completions]
    theirs = [wc.claimed_rewards.get("correctness") for wc in item.group.completions]
    lied = any(
        o is not None and t is not None and abs(o - t) > ctx.cfg.mismatch_tolerance
        for o, t in zip(ours, theirs)
    )
    return Reason.REWARD_MISMATCH if lied else None


def has_signal(item: InboxItem, group: Group, ctx: Context) -> Reason | None:
    return None if group.has_signal(ctx.cfg.signal) else Reason.ZERO_VARIANCE


WIRE_JUDGES: tuple[WireJudge, ...] = (not_own, fresh)
SCORED_JUDGES: tuple[ScoredJudge, ...] = (claims_match, has_signal)


def our_prompt(wire: RolloutGroup, tasks: dict[str, Task]) -> Prompt | Reason:
    """Our training prompt for the group's question, or the refusal reason."""
    question = wire.task.question
    if wire.task.dataset is not None:  # a named dataset: only our task of that name scores it
        task = tasks.get(wire.task.dataset)
        if task is None:
            return Reason.UNKNOWN_TASK
        found = task.lookup(question) if question else None
    else:  # a literal question: any of our tasks that has it
        found = next((p for t in tasks.values() if question and (p := t.lookup(question))), None)
    return found if found is not None else Reason.UNKNOWN_PROMPT


class Admission:
    """Runs the judges and keeps the verdict counts, the newest version seen per origin, and
    the misconduct reports the node forwards to the swarm."""

    def __init__(self, cfg: AdmissionConfig, tasks: dict[str, Task], self_id: str = "") -> None:
        self.cfg = cfg
        self.tasks = tasks
        self.self_id = self_id
        self.counts: Counter[str] = Counter()  # cumulative verdicts by Reason value
        self.newest: dict[str, int] = {}  # origin -> newest policy version it sent
        self._reports: list[tuple[str, Misconduct]] = []

    def _count(self, item: InboxItem, reason: Reason) -> Reason:
        self.counts[reason.value] += 1
        if reason.misconduct is not None:
            self._reports.append((item.origin, reason.misconduct))
        return reason

    def screen(self, item: InboxItem, now_ms: int) -> Prompt | Reason:
        """The wire judges, then our prompt for the group; a refusal is counted and returned."""
        ctx = Context(self.cfg, self.self_id, now_ms)
        for judge in WIRE_JUDGES:
            if (reason := judge(item, ctx)) is not None:
                return self._count(item, reason)
        if item.origin != self.self_id:
            self.newest[item.origin] = max(self.newest.get(item.origin, 0), item.group.policy_version)
        found = our_prompt(item.group, self.tasks)
        return self._count(item, found) if isinstance(found, Reason) else found

    def judge(self, item: InboxItem, group: Group, now_ms: int) -> Reason:
        """The judges of a localized, locally re-scored group; ADMITTED when all pass."""
        ctx = Context(self.cfg, self.self_id, now_ms)
        for judge in SCORED_JUDGES:
            if (reason := judge(item, group, ctx)) is not None:
                return self._count(item, reason)
        return self._count(item, Reason.ADMITTED)

    def error(self, item: InboxItem) -> Reason:
        return self._count(item, Reason.ERROR)

    def pop_reports(self) -> list[tuple[str, Misconduct]]:
        """Misbehaviour found since the last call, for the swarm layer's peer scores."""
        out, self._reports = self._reports, []
        return out

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "newest": dict(self.newest)}

    def load_state_dict(self, state: dict) -> None:
        self.counts = Counter({str(k): int(v) for k, v in state["counts"].items()})
        self.newest = {str(k): int(v) for k, v in state["newest"].items()}
