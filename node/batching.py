"""Packing completions into training tensors.

Each row is the contiguous sequence `prompt_ids + completion_ids`, right-padded.  Position
`j` of the [B, T-1] outputs scores token `j + 1`, so the completion mask is true for
`len(prompt_ids) - 1 <= j < len(prompt_ids) + len(completion_ids) - 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from node.records import Completion


@dataclass
class PackedBatch:
    input_ids: Tensor  # [B, T] long, right-padded
    attention_mask: Tensor  # [B, T] long
    mask: Tensor  # [B, T-1] float: 1 where the predicted token is a completion token
    behavior_logprobs: Tensor  # [B, T-1] float: sampler's logprob at completion positions, 0 elsewhere
    advantages: Tensor  # [B, T-1] float: each row's advantage broadcast over its completion
    versions: Tensor  # [B] long: OUR policy version that produced each row's behaviour log-probs
    old_logprobs: Tensor | None  # [B, T-1] float: log pi_old recorded before the update, 0 elsewhere
    sources: Tensor  # [B] long: 0 = our own sample, k > 0 = the k-th peer of the step's batch


def pack_tokens(completions: list[Completion], pad_id: int) -> tuple[Tensor, Tensor]:
    """[B, T] right-padded `prompt + completion` ids and their attention mask."""
    width = max(len(c.prompt_ids) + len(c.completion_ids) for c in completions)
    input_ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(completions), width), dtype=torch.long)
    for r, c in enumerate(completions):
        n = len(c.prompt_ids) + len(c.completion_ids)
        input_ids[r, :n] = torch.tensor(c.prompt_ids + c.completion_ids)
        attention[r, :n] = 1
    return input_ids, attention


def source_ids(completions: list[Completion]) -> list[int]:
    """0 for our own rows, 1.. for each distinct origin in order of first appearance."""
    index: dict[str, int] = {}
    return [0 if c.local else index.setdefault(c.origin, len(index) + 1) for c in completions]


def pack(
    completions: list[Completion],
    advantages: Tensor,
    pad_id: int,
    old_logprobs: list[list[float]] | None = None,
    sources: list[int] | None = None,
) -> PackedBatch:
    input_ids, attention = pack_tokens(completions, pad_id)
    rows, width = input_ids.shape
    mask = torch.zeros((rows, width - 1))
    behavior = torch.zeros((rows, width - 1))
    adv = torch.zeros((rows, width - 1))
    old = torch.zeros((rows, width - 1)) if old_logprobs is not None else None
    for r, c in enumerate(completions):
        p, n = len(c.prompt_ids), len(c.completion_ids)
        if n:
            mask[r, p - 1 : p + n - 1] = 1
            behavior[r, p - 1 : p + n - 1] = torch.tensor(c.behavior_logprobs)
            adv[r, p - 1 : p + n - 1] = float(advantages[r])
            if old is not None:
                old[r, p - 1 : p + n - 1] = torch.tensor(old_logprobs[r])
    versions = torch.tensor([c.policy_version for c in completions], dtype=torch.long)
    src = torch.tensor(sources if sources is not None else source_ids(completions), dtype=torch.long)
    return PackedBatch(input_ids, attention, mask, behavior, adv, versions, old, src)


def token_logprobs(model, input_ids: Tensor, attention_mask: Tensor, temperature: float, with_entropy: bool,
                   first: int = 0, entropy_grad: bool = False):
    """log pi(token_{j+1} | tokens_{<=j}) as [B, T-1], and optionally the entropy at j.

    Only positions `j >= first` are computed (the rest are 0): with `first` = the shortest
    prompt's length - 1, the LM head and softmax run on the completions alone, not the prompts.
    """
    width = input_ids.shape[1]
    keep = width - first
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    except TypeError:  # a model without `logits_to_keep`: compute all positions
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, first:]
    logits = logits[:, :-1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = input_ids[:, first + 1 :]
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:  # without a graph unless an entropy bonus needs its gradient ([B, T, V] saved)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    pad = (first, 0)
    logp = torch.nn.functional.pad(logp, pad)
    entropy = torch.nn.functional.pad(entropy, pad) if entropy is not None else None
    return logp, entropy


def first_completion_position(completions: list[Completion]) -> int:
    """Smallest index j whose prediction is a completion token, over these rows."""
    return max(min(len(c.prompt_ids) for c in completions) - 1, 0)
