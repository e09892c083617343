"""Scoring groups locally with the tasks' own verifiers (a claimed reward is never used)."""

from __future__ import annotations

from node.rollout.base import Group
from node.tasks.base import Task
from node.tasks.rewards import Scored, score


def score_groups(groups: list[Group], tasks: dict[str, Task], weights: dict[str, float], max_tokens: int) -> None:
    """Set `reward` and `reward_components` on every completion, in place."""
    for group in groups:
        task = tasks[group.prompt.task]
        for c in group.completions:
            s = Scored(group.prompt, c.text, len(c.completion_ids), c.truncated, max_tokens, task)
            c.reward, c.reward_components = score(s, weights)
