"""What a training step logs about its data: rewards, advantages, lengths, generation."""

from __future__ import annotations

import statistics
from typing import Any

from torch import Tensor

from node.collect import Collected
from node.config import Config
from node.records import Completion, Group


def step_metrics(
    cfg: Config, groups: list[Group], local: list[Group], completions: list[Completion], advantages: Tensor,
    collected: Collected,
) -> dict[str, Any]:  # fmt: skip
    """`advantages`: [n] of the rows trained on (possibly none: every row was dropped)."""
    rewards = [c.reward for c in completions]
    out: dict[str, Any] = {
        "reward_mean": statistics.fmean(rewards),
        "reward_local": statistics.fmean(c.reward for g in local for c in g.completions),
        "reward_std": statistics.pstdev(rewards),
        "completion_len": statistics.fmean(len(c.completion_ids) for c in completions),
        "truncated_frac": sum(c.truncated for c in completions) / len(completions),
        "zero_var_groups": sum(len(set(g.rewards)) == 1 for g in groups) / len(groups),
        "rows_dropped": len(completions) - advantages.numel(),
        "gen_rounds": collected.rounds,
        "gen_dropped_groups": collected.dropped_groups,
        "gen_tokens_per_s": collected.gen_tokens / collected.gen_seconds,
        "gen_s": collected.gen_seconds,
    }
    if advantages.numel():
        out |= {
            "adv_mean": float(advantages.mean()),
            "adv_std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
            "adv_abs_max": float(advantages.abs().max()),
        }
    for n in cfg.tasks.rewards:
        out[f"reward/{n}"] = statistics.fmean(c.reward_components[n] for c in completions)
    return out
