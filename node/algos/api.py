"""The only entry points the trainer and node call.  They dispatch by config name through the
registries, so neither the trainer nor the node knows which algorithm runs.

Per step, the node/trainer calls, in order:

1. `requirements(cfg)`: what to compute (ref log-probs, entropy, greedy baselines, G+1 ...).
2. around generation: `keep_groups` / `should_generate_more` (dynamic sampling), then
   `shape_rewards` (overlong shaping, KL-in-reward) and `row_keep` (truncated completions).
3. `advantages_with_keep` (or `compute_advantages`): drop rows with ``keep = False``.
4. `plan_rows` once per training step (foreign gate, ESS check, per-source advantages).
5. `lr_scale(seq_log_weights(...), cfg)`: multiply the step's learning rate by it.
6. `policy_loss` per micro-batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from node.algos import advantages as _advantages  # noqa: F401  (registers estimators)
from node.algos import losses as _losses  # noqa: F401  (registers losses)
from node.algos import modifiers as _modifiers  # noqa: F401  (registers modifiers)
from node.algos import offpolicy
from node.algos.config import AlgorithmConfig
from node.algos.dapo import (
    keep_groups,
    overlong_buffer,
    overlong_penalty,
    should_generate_more,
    truncation_mask,
)
from node.algos.foreign import needs_prox, plan_rows, row_means
from node.algos.losses import kl_reward_penalty
from node.algos.registry import ADVANTAGES, LOSSES, MODIFIERS
from node.algos.types import AdvantageInputs, AdvantageOutputs, LossInputs, LossOutputs, Requirements

__all__ = [
    "advantages_with_keep",
    "compute_advantages",
    "keep_groups",
    "lr_scale",
    "plan_rows",
    "policy_loss",
    "requirements",
    "row_keep",
    "row_means",
    "seq_log_weights",
    "shape_rewards",
    "should_generate_more",
]


def advantages_with_keep(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> AdvantageOutputs:
    """Estimator, then modifiers in order, then ``adv_clip``.  Rows the estimator marked NaN
    (MC-GRPO's pivot) come back with ``keep = False`` and advantage 0."""
    adv = ADVANTAGES.get(cfg.advantage)(inputs, cfg)
    for name in cfg.adv_modifiers:
        adv = MODIFIERS.get(name)(adv, inputs, cfg)
    if cfg.adv_clip is not None:
        adv = adv.clamp(-cfg.adv_clip, cfg.adv_clip)
    keep = ~torch.isnan(adv)
    return AdvantageOutputs(advantages=torch.where(keep, adv, torch.zeros_like(adv)), keep=keep)


def compute_advantages(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """[N] advantages from the configured estimator (then its modifiers, if any); dropped rows
    get 0.  Use `advantages_with_keep` to also learn which rows to drop (MC-GRPO)."""
    return advantages_with_keep(inputs, cfg).advantages


def policy_loss(inputs: LossInputs, cfg: AlgorithmConfig) -> LossOutputs:
    """The configured policy loss on one micro-batch, off-policy corrections and regularisers included."""
    return LOSSES.get(cfg.loss)(inputs, cfg)


def seq_log_weights(old_logprobs: Tensor, behavior_logprobs: Tensor, mask: Tensor) -> Tensor:
    """[B] log sequence IS weights ``sum_t (log pi_old - log mu)``; concatenate over micro-batches
    and pass to `lr_scale`."""
    return offpolicy.sequence_log_weights(old_logprobs.detach(), behavior_logprobs.detach(), mask)


def lr_scale(seq_log_weights: Tensor, cfg: AlgorithmConfig) -> float:
    """Factor for the step's learning rate: VCPO's ``sqrt(ESS / B / base)`` if ``ess_lr``, else 1."""
    return offpolicy.lr_scale(seq_log_weights, cfg.ess_base_ratio) if cfg.ess_lr else 1.0


def shape_rewards(
    rewards: Tensor,
    lengths: Tensor,
    max_len: int,
    cfg: AlgorithmConfig,
    behavior_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """[N] rewards after DAPO overlong shaping (if ``overlong_buffer_frac``) and the KL penalty
    (if ``kl_reward_coef > 0``; needs the sampler's and the reference's [N, T] log-probs)."""
    out = rewards.to(torch.float32)
    if cfg.overlong_buffer_frac is not None:
        buf = overlong_buffer(max_len, cfg.overlong_buffer_frac)
        out = out + overlong_penalty(lengths, max_len, buf, cfg.overlong_penalty)
    if cfg.kl_reward_coef > 0:
        if behavior_logprobs is None or ref_logprobs is None or mask is None:
            raise ValueError("kl_reward_coef > 0 needs behavior_logprobs, ref_logprobs and mask")
        out = kl_reward_penalty(
            out, behavior_logprobs, ref_logprobs, mask, cfg.kl_reward_coef, cfg.kl_reward_estimator
        )
    return out


def row_keep(
    cfg: AlgorithmConfig, truncated: Tensor | None = None, finish_reasons: list[str] | None = None
) -> Tensor | None:
    """[N] bool rows to train on after overlong filtering, or None when ``mask_truncated`` is off."""
    if not cfg.mask_truncated:
        return None
    return truncation_mask(truncated, finish_reasons)


def requirements(cfg: AlgorithmConfig) -> Requirements:
    """What the trainer/node must compute for this config: what the estimator, modifiers and
    loss declared at registration (`registry.Needs`), plus what coefficients switch on."""
    declared = [ADVANTAGES.needs(cfg.advantage), LOSSES.needs(cfg.loss)] + [MODIFIERS.needs(m) for m in cfg.adv_modifiers]
    return Requirements(
        ref_logprobs=cfg.kl_reward_coef > 0 or any(n.ref_logprobs for n in declared),
        ref_in_loss=cfg.kl_coef > 0,
        entropy=cfg.entropy_coef > 0 or cfg.entropy_mask_rho is not None,
        entropy_grad=cfg.entropy_coef > 0,
        old_logprobs=cfg.prox_logprobs == "recompute" or needs_prox(cfg),
        behavior_versions=cfg.prox_logprobs == "loglinear" or cfg.max_staleness is not None,
        baseline_rewards=any(n.baseline_rewards for n in declared),
        seq_logprobs=any(n.seq_logprobs for n in declared),
        components=any(n.components for n in declared),
        extra_rollouts_per_group=max(n.extra_rollouts_per_group for n in declared),
    )
