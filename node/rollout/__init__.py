"""Rollout engines.  `build_engine` picks the backend named in `rollout.backend`."""

from __future__ import annotations

from node.rollout.base import RolloutEngine
from node.rollout.render import Renderer


def build_engine(cfg, policy, renderer: Renderer) -> RolloutEngine:
    """`cfg`: the rollout section; `renderer`: the node's prompt renderer (its stop ids)."""
    if cfg.backend == "transformers":
        from node.rollout.hf import HFEngine

        return HFEngine(policy.model, policy.tokenizer, renderer.stop_ids, cfg.batch_size, policy.device)
    raise NotImplementedError(
        "rollout.backend=vllm is not built yet; use rollout.backend=transformers (the default)"
    )


__all__ = ["Renderer", "RolloutEngine", "build_engine"]
