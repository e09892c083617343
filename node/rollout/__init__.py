"""Rollout engines.  `build_engine` picks the backend named in `rollout.backend`."""

from __future__ import annotations

from node.rollout.base import Completion, Group, RolloutEngine, SamplingParams


def build_engine(cfg, policy, system_prompt: str) -> RolloutEngine:
    if cfg.backend == "transformers":
        from node.rollout.hf import HFEngine

        return HFEngine(policy.model, policy.tokenizer, system_prompt, cfg.batch_size, policy.device)
    raise NotImplementedError(
        "rollout.backend=vllm is not built yet; use rollout.backend=transformers (the default)"
    )


__all__ = ["Completion", "Group", "RolloutEngine", "SamplingParams", "build_engine"]
