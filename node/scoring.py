"""Scoring groups locally with the tasks' own verifiers (a claimed reward is never used)."""

from __future__ import annotations

from node.records import Group
from node.tasks.base import Task
from node.tasks.rewards import Scored, score


def score_group(group: Group, task: Task, weights: dict[str, float], max_tokens: int) -> Group:
    """The group with `reward` and `reward_components` set on every completion (a new record)."""
    out = []
    for c in group.completions:
        s = Scored(group.prompt, c.text, len(c.completion_ids), c.truncated, max_tokens, task)
        out.append(c.scored(*score(s, weights)))
    return group.replace_completions(out)


def score_groups(groups: list[Group], tasks: dict[str, Task], weights: dict[str, float], max_tokens: int) -> list[Group]:
    return [score_group(g, tasks[g.prompt.task], weights, max_tokens) for g in groups]
