"""Rollout engines.  `build_engine` picks the backend named in `rollout.backend`."""

from __future__ import annotations

from node.rollout.base import Completion, Group, RolloutEngine, SamplingParams


def build_engine(cfg, policy, tasks_cfg) -> RolloutEngine:
    """`cfg`: the rollout section; `tasks_cfg`: the tasks section (system prompt, examples)."""
    if cfg.backend == "transformers":
        from node.rollout.hf import HFEngine

        examples = [(e.question, e.answer) for e in tasks_cfg.examples]
        return HFEngine(policy.model, policy.tokenizer, tasks_cfg.system_prompt, cfg.batch_size, policy.device, examples)
    raise NotImplementedError(
        "rollout.backend=vllm is not built yet; use rollout.backend=transformers (the default)"
    )


__all__ = ["Completion", "Group", "RolloutEngine", "SamplingParams", "build_engine"]
