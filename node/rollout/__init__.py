"""Rollout engines.  `build_engine` picks the backend named in `rollout.backend`."""

from __future__ import annotations

from node.rollout.base import RolloutEngine
from node.rollout.render import Renderer


def build_engine(cfg, policy, renderer: Renderer, seed: int | None = None) -> RolloutEngine:
    """`cfg`: the rollout section; `renderer`: the node's prompt renderer (its stop ids); `seed`:
    the node's seed, from which the vLLM engine derives each request's seed (None = torch's
    initial seed, which `Node` sets to `cfg.seed` before it builds its parts)."""
    if cfg.backend == "transformers":
        from node.rollout.hf import HFEngine

        return HFEngine(
            policy.model, policy.tokenizer, renderer.stop_ids, cfg.batch_size, policy.device, cfg.compile,
            cfg.decode_loop,
        )  # fmt: skip
    from node.rollout.vllm import VLLMEngine, policy_source

    if seed is None:
        import torch

        seed = torch.initial_seed()
    return VLLMEngine(
        policy.model, policy.tokenizer, renderer.stop_ids, policy_source(policy.model), cfg, seed
    )


__all__ = ["Renderer", "RolloutEngine", "build_engine"]
