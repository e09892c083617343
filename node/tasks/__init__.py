"""Prompt sources and verifiers.  `build_tasks(cfg)` turns `tasks.sources` into `Task`s."""

from __future__ import annotations

from node.config import TasksConfig
from node.records import Prompt
from node.tasks.base import Task
from node.tasks.rewards import check_reward_names


def build_task(source) -> Task:
    if source.type == "reasoning_gym":
        from node.tasks.reasoning_gym_task import ReasoningGymTask

        return ReasoningGymTask(source.name, source.size, source.seed, source.options)
    if source.path is None:
        raise ValueError("a jsonl source needs a `path`")
    from node.tasks.jsonl_task import JsonlTask

    return JsonlTask.from_file(source.name, source.path, source.seed)


def build_tasks(cfg: TasksConfig) -> list[Task]:
    check_reward_names(cfg.rewards)
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks.sources: names must be unique, got {names}")
    tasks = []
    for i, source in enumerate(cfg.sources):
        try:
            tasks.append(build_task(source))
        except ValueError as e:  # name the config entry: `tasks.sources.0` is also its override key
            raise ValueError(f"tasks.sources.{i} ({source.name!r}): {e}") from None
    return tasks


__all__ = ["Prompt", "Task", "build_tasks"]
