"""DAPO's sampling and shaping extras (Yu et al. 2025, "DAPO: An Open-Source LLM RL System at
Scale"), as pure functions the node calls around generation; the loss never sees them.

- dynamic sampling: `keep_groups` says which groups carry signal (non-zero reward variance);
  the node generates more prompts while `should_generate_more` holds, then trains on the kept
  groups (at most `target_groups` of them).
- overlong reward shaping: `overlong_penalty` is added to the task reward.
- overlong filtering: `truncation_mask` drops completions cut off at the length limit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from node.algos.advantages import group_index


def keep_groups(rewards: Tensor, group_ids: Tensor, atol: float = 1e-8) -> Tensor:
    """[N] bool: True for rows whose group's rewards are not all equal (``max - min > atol``).

    A zero-variance group (all right or all wrong; any group of one) gives every GRPO-family
    estimator a zero advantage, so it spends compute without gradient.
    """
    inverse, n_groups = group_index(group_ids)
    r = rewards.to(torch.float64)
    hi = torch.full((n_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, r, "amax")
    lo = torch.full((n_groups,), torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, r, "amin")
    return ((hi - lo) > atol)[inverse]


def should_generate_more(kept_groups: int, target_groups: int, rounds_done: int, max_rounds: int) -> bool:
    """Dynamic sampling's loop condition: fewer than ``target_groups`` informative groups and
    fewer than ``max_rounds`` generation rounds so far (DAPO: ``max_num_gen_batches = 10``).
    When the cap is hit the node trains on what it has."""
    return kept_groups < target_groups and rounds_done < max_rounds


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment: with ``L_exp = L_max - L_buf``,
    ``r_len = min(0, -(|y| - L_exp) / L_buf * penalty)``: 0 up to ``L_exp``, a linear ramp to
    ``-penalty`` at ``L_max`` (continuing past it, as verl).  Returns [N] float, to be added to the reward."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    expected = max_len - buffer
    over = (lengths.to(torch.float32) - expected) / buffer
    return (-over * penalty).clamp(max=0.0)


def overlong_buffer(max_len: int, frac: float) -> int:
    """Buffer tokens for `overlong_penalty` from ``cfg.overlong_buffer_frac`` (DAPO: 0.2)."""
    return max(1, round(max_len * frac))


def truncation_mask(truncated: Tensor | None = None, finish_reasons: list[str] | None = None) -> Tensor:
    """[N] bool: True for completions to keep, False for those cut off at the length limit.

    From a bool tensor ``truncated`` or from engine finish reasons (``"length"`` = truncated, as
    vLLM/OpenAI report it).  DAPO's overlong filtering: their loss is masked out entirely.
    """
    if truncated is not None:
        return ~truncated.to(torch.bool)
    if finish_reasons is not None:
        return torch.tensor([reason != "length" for reason in finish_reasons], dtype=torch.bool)
    raise ValueError("truncation_mask needs `truncated` or `finish_reasons`")
