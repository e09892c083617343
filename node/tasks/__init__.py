"""Prompt sources and verifiers.  `build_tasks(cfg)` turns `tasks.sources` into `Task`s and
registers the user's reward functions (`tasks.reward_plugins`, entry points; node/plugins.py)."""

from __future__ import annotations

from node.config import TasksConfig
from node.plugins import PluginError, load, load_callable
from node.records import Prompt
from node.tasks.base import Task
from node.tasks.rewards import register_rewards

TASK_METHODS = ("__len__", "prompt", "lookup", "heldout", "score")


def build_plugin_task(source, key: str) -> Task:
    """The `plugin` factory called with `options` (only those the config sets: the default
    options belong to reasoning-gym), or the object itself when it already is a task."""
    obj = load(source.plugin, "task", f"{key}.plugin")
    options = source.options if "options" in source.model_fields_set else {}
    is_task = not isinstance(obj, type) and all(hasattr(obj, m) for m in TASK_METHODS)
    task = obj if is_task or not callable(obj) else obj(**options)
    lacking = [m for m in ("name", *TASK_METHODS) if not hasattr(task, m)]
    if lacking:
        raise PluginError(f"{key}.plugin: {source.plugin!r} gave a {type(task).__name__}, not a task: it has "
                          f"no {', '.join(lacking)} (see node/tasks/base.py)")  # fmt: skip
    return task


def build_task(source, key: str = "tasks.sources") -> Task:
    if source.type == "reasoning_gym":
        from node.tasks.reasoning_gym_task import ReasoningGymTask

        return ReasoningGymTask(source.name, source.size, source.seed, source.options)
    if source.type == "plugin":
        if source.plugin is None:
            raise ValueError(
                "a plugin source needs `plugin` (module:attr, path/to/file.py:attr or an entry point)"
            )
        return build_plugin_task(source, key)
    verifier = load_callable(source.verifier, "verifier", f"{key}.verifier") if source.verifier else None
    if source.type == "hf_dataset":
        from node.tasks.hf_dataset import build_hf_task

        return build_hf_task(source, verifier)
    if source.path is None:
        raise ValueError("a jsonl source needs a `path`")
    from node.tasks.jsonl_task import JsonlTask

    return JsonlTask.from_file(
        source.name, source.path, source.seed, source.fields, heldout_fraction=source.heldout_fraction,
        verifier=verifier,
    )  # fmt: skip


def build_tasks(cfg: TasksConfig) -> list[Task]:
    register_rewards(cfg.rewards, cfg.reward_plugins)
    tasks: list[Task] = []
    for i, source in enumerate(cfg.sources):
        key = f"tasks.sources.{i}"  # also its override key
        try:
            tasks.append(build_task(source, key))
        except PluginError:  # already names its key
            raise
        except ValueError as e:
            raise ValueError(f"{key} ({source.name!r}): {e}") from None
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks.sources: names must be unique, got {names}")
    return tasks


__all__ = ["Prompt", "Task", "build_tasks"]
