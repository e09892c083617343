"""Held-out accuracy: greedy decoding on prompts disjoint from training, scored by the task's
own checker (the `correctness` reward)."""

from __future__ import annotations

import statistics
from pathlib import Path

from node import checkpoint
from node.config import Config
from node.policy import load_policy
from node.records import SamplingParams
from node.rollout import Renderer, build_engine
from node.scoring import score_groups
from node.tasks import build_tasks


def accuracy(cfg: Config, policy, n: int) -> dict[str, float]:
    tasks = build_tasks(cfg.tasks)
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    engine = build_engine(cfg.rollout, policy, renderer)
    sampling = SamplingParams(cfg.rollout.max_new_tokens, greedy=True)
    weights = {"correctness": 1.0, "format": 0.0}
    out = {}
    for task in tasks:
        prompts = task.heldout(n)
        if not prompts:
            raise ValueError(f"task {task.name!r} has no held-out prompts: every generated question is in its training set")
        groups = engine.generate(renderer.requests(prompts), 1, sampling)
        groups = score_groups(groups, {task.name: task}, weights, cfg.rollout.max_new_tokens)
        comps = [g.completions[0] for g in groups]
        out[f"{task.name}/accuracy"] = statistics.fmean(c.reward_components["correctness"] for c in comps)
        out[f"{task.name}/format"] = statistics.fmean(c.reward_components["format"] for c in comps)
        out[f"{task.name}/n"] = len(comps)
    return out


def evaluate_target(cfg: Config, target: str | None, n: int) -> dict[str, dict[str, float]]:
    policy = load_policy(cfg.model, for_training=False)
    results = {"base model": accuracy(cfg, policy, n)}
    if target is not None:
        path = Path(target)
        ckpt = path if (path / "MANIFEST.json").is_file() else checkpoint.latest(path / "checkpoints")
        if ckpt is None:
            raise FileNotFoundError(f"{target}: no checkpoint found (expected {path / 'checkpoints'}/step_*)")
        restored = checkpoint.load(ckpt, policy.model, None, cfg.model.name)
        results[f"step {restored.step}"] = accuracy(cfg, policy, n)
    keys = [k for k in next(iter(results.values())) if not k.endswith("/n")]
    width = max(len(k) for k in keys) + 2
    print(f"held-out prompts per task: {n}  (greedy, model {cfg.model.name})")
    print("".ljust(width) + "".join(name.rjust(14) for name in results))
    for k in keys:
        print(k.ljust(width) + "".join(f"{r[k]:14.3f}" for r in results.values()))
    return results
