"""Packing completions into training tensors.

Each row is the contiguous sequence `prompt_ids + completion_ids`, right-padded.  Position
`j` of the [B, T-1] outputs scores token `j + 1`, so the completion mask is true for
`len(prompt_ids) - 1 <= j < len(prompt_ids) + len(completion_ids) - 1`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
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
    row_weights: Tensor  # [B] float: per-row loss weight (the foreign gate; 1 = untouched)
    sampler_lags: Tensor  # [B] long: versions the sampler moved since the row (`sampler_lags`)


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


def sampler_lags(
    completions: list[Completion], version: int, newest: Mapping[str, int] | None = None
) -> list[int]:
    """Per row, how many versions its sampler has moved since it sampled it (never negative).

    Our rows: ``version - policy_version`` (our counter).  A peer's row with an ``origin_version``:
    the origin's newest version seen minus the row's, in the origin's own counter, where "newest"
    is the larger of ``newest[origin]`` (what admission saw, `Admission.newest`) and the newest
    row of that origin in this batch; a peer row without one falls back to our counter.
    """
    latest = dict(newest or {})
    for c in completions:
        if not c.local and c.origin_version is not None:
            latest[c.origin] = max(latest.get(c.origin, c.origin_version), c.origin_version)
    return [
        max(latest[c.origin] - c.origin_version, 0)
        if not c.local and c.origin_version is not None
        else max(version - c.policy_version, 0)
        for c in completions
    ]


def pack(
    completions: list[Completion],
    advantages: Tensor,
    pad_id: int,
    old_logprobs: list[list[float]] | None = None,
    sources: list[int] | None = None,
    row_weights: list[float] | None = None,
    lags: list[int] | None = None,
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
    weights = torch.tensor(row_weights if row_weights is not None else [1.0] * rows, dtype=torch.float32)
    lag = torch.tensor(lags if lags is not None else [0] * rows, dtype=torch.long)
    return PackedBatch(input_ids, attention, mask, behavior, adv, versions, old, src, weights, lag)


# Causal LMs whose logits are exactly `get_output_embeddings()(last hidden state)`: no softcap,
# logit scale or final bias after the head (Gemma, Cohere, Granite add one), so the chunked path
# may apply the head itself.  Anything else takes the full-logits path.
PLAIN_HEAD_MODELS = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "smollm3", "olmo2"}
)


def _unwrap_base_view(model):
    """A LoRA reference (`node.lora.BaseView`, not an nn.Module) as (the peft model, the context
    that switches its adapters off); any other model as (itself, None)."""
    inner = getattr(model, "model", None)
    if not isinstance(model, torch.nn.Module) and hasattr(inner, "disable_adapter"):
        return inner, inner.disable_adapter
    return model, None


def head_parts(model):
    """(decoder, head) when `model` is a plain-head causal LM (see `PLAIN_HEAD_MODELS`), else None:
    `decoder(...)` returns the final (normed) hidden states and `head` maps them to logits."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or getattr(head, "bias", None) is not None:
        return None
    return decoder, head


def _chunk_stats(head, hidden: Tensor, targets: Tensor, temperature: float, with_entropy: bool,
                 entropy_grad: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """[B, c] target log-prob and entropy of one chunk of positions; float32 logits live only here."""
    logp_all = torch.log_softmax(head(hidden).float() / temperature, dim=-1)  # [B, c, V]
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp, logp.new_zeros(())
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _chunked(parts, input_ids: Tensor, attention_mask: Tensor, temperature: float, with_entropy: bool,
             first: int, entropy_grad: bool, chunk: int) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    decoder, head = parts
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    hidden = hidden[:, first:-1]  # [B, T-1-first, H]: the positions that predict a token
    targets = input_ids[:, first + 1 :]
    rows = max(chunk // max(input_ids.shape[0], 1), 1)  # positions per chunk: `chunk` tokens over B rows
    grad = torch.is_grad_enabled()
    logps, entropies = [], []
    for s in range(0, hidden.shape[1], rows):
        args = (
            head,
            hidden[:, s : s + rows],
            targets[:, s : s + rows],
            temperature,
            with_entropy,
            entropy_grad,
        )
        if grad:  # keep only the chunk's hidden states for backward; the head re-runs there
            lp, ent = torch.utils.checkpoint.checkpoint(_chunk_stats, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_stats(*args)
        logps.append(lp)
        entropies.append(ent)
    logp = torch.cat(logps, dim=1)
    entropy = torch.cat(entropies, dim=1) if with_entropy else None
    return logp, entropy


def token_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    temperature: float,
    with_entropy: bool,
    first: int = 0,
    entropy_grad: bool = False,
    chunk: int | None = None,
):
    """log pi(token_{j+1} | tokens_{<=j}) as [B, T-1], and optionally the entropy at j.

    Only positions `j >= first` are computed (the rest are 0): with `first` = the shortest
    prompt's length - 1, the LM head and softmax run on the completions alone, not the prompts.

    `chunk` (tokens, `trainer.logprob_chunk`): when set and the model has a plain LM head
    (`head_parts`), the decoder runs once and the head, the float32 log-softmax, the gather and
    the entropy run over slices of about `chunk` tokens (B rows x chunk // B positions), so the
    full float32 [B, T, V] logits never exist.  With a graph each slice is wrapped in
    `torch.utils.checkpoint`: plain autograd over slices would save every slice's [B, c, V]
    log-softmax for backward, i.e. the full logits again; the checkpoint saves only the slice's
    [B, c, H] hidden states and re-runs the head matmul and softmax in backward (about one extra
    head forward: 2*H*V flops a token).  Other models (the toy's `ToyLM`, Gemma's softcap) and
    `chunk` 0/None take the full-logits path.
    """
    model, adapters_off = _unwrap_base_view(model)
    if adapters_off is not None:
        with adapters_off():
            return token_logprobs(model, input_ids, attention_mask, temperature, with_entropy, first,
                                  entropy_grad, chunk)  # fmt: skip
    parts = head_parts(model) if chunk else None
    if parts is not None and input_ids.shape[1] - first > 1:
        logp, entropy = _chunked(parts, input_ids, attention_mask, temperature, with_entropy, first,
                                 entropy_grad, chunk)  # fmt: skip
    else:
        logp, entropy = _full(
            model, input_ids, attention_mask, temperature, with_entropy, first, entropy_grad
        )
    pad = (first, 0)
    logp = torch.nn.functional.pad(logp, pad)
    entropy = torch.nn.functional.pad(entropy, pad) if entropy is not None else None
    return logp, entropy


def _full(model, input_ids: Tensor, attention_mask: Tensor, temperature: float, with_entropy: bool, first: int,
          entropy_grad: bool) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Today's path: the model's own [B, T-first, V] logits, one float32 log-softmax over all."""
    width = input_ids.shape[1]
    keep = width - first
    try:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep
        ).logits
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
    return logp, entropy


def first_completion_position(completions: list[Completion]) -> int:
    """Smallest index j whose prediction is a completion token, over these rows."""
    return max(min(len(c.prompt_ids) for c in completions) - 1, 0)
