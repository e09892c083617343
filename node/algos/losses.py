"""Policy losses: ``fn(LossInputs, AlgorithmConfig) -> LossOutputs``, plus shared pieces
(token aggregation, KL estimators, the high-entropy mask) that every loss composes.

Every loss has the same shape: take the off-policy `Corrections` (ratio anchor, weight, keep),
build its [B, T] token loss against ``corrections.prox_logprobs``, and hand it to `finish`,
which applies weight, keep and the entropy mask, aggregates, and adds KL and entropy terms.

Metrics are returned as sums already divided by the optimizer step's token count (its
mini-batch), so the trainer adds them over micro-batches to get the mini-batch's token mean, then
averages those over the optimizer steps of one training step.

Every ratio here is ``pi_theta / pi_prox``, and with ``prox_logprobs=recompute`` ``pi_prox`` is
recorded before the first optimizer step of a training step, so on the first (or only) optimizer
step the ratio is 1 on every token: no clip binds, and under the same aggregation GSPO's and
CISPO's gradients equal `ppo_clip`'s.  They differ from the second optimizer step on
(`trainer.mini_batch_size` smaller than the batch, or `trainer.ppo_epochs > 1`; node/trainer.py).
With ``loglinear`` the anchor of fresh rows is the sampler's ``mu``, so the first step's ratio is
1 only up to the difference between sampler and trainer numerics.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from node.algos.config import AggMode, AlgorithmConfig
from node.algos.metrics import token_mean_metric
from node.algos.offpolicy import LOG_CLAMP, Corrections, corrections
from node.algos.registry import LOSSES
from node.algos.types import LossInputs, LossOutputs


def aggregate(token_loss: Tensor, inputs: LossInputs, mode: AggMode) -> Tensor:
    """Reduce [B, T] token losses to a scalar with the step's global denominators.

    - ``token-mean``: sum over all valid tokens / valid tokens in the step (DAPO).
    - ``seq-mean-token-mean``: mean over sequences of each sequence's token mean (GRPO paper).
    - ``seq-mean-token-sum-norm``: sum over all valid tokens / (sequences * max_len) (Dr. GRPO:
      a constant normaliser, so long and short answers weigh per token alike).
    """
    masked = token_loss * inputs.mask
    if mode == "token-mean":
        return masked.sum() / max(inputs.global_tokens, 1.0)
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(-1) / inputs.mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(inputs.global_seqs, 1.0)
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (max(inputs.global_seqs, 1.0) * max(inputs.max_len, 1))
    raise ValueError(f"unknown aggregation {mode!r}")


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token estimators of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman 2020).

    With ``d = log pi_ref - log pi_theta``:  k1 = -d,  k2 = d^2 / 2,  k3 = exp(d) - d - 1
    (k3 is unbiased and non-negative; clamped to [-10, 10] as in verl).
    """
    d = ref_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        return (d.clamp(-20, 20).exp() - d - 1).clamp(-10, 10)
    raise ValueError(f"unknown KL estimator {estimator!r}")


def kl_reward_penalty(
    rewards: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, coef: float, estimator: str = "k1"
) -> Tensor:
    """KL to the reference as a reward penalty (Ziegler et al. 2019; Ouyang et al. 2022; ReMax).

    ``r_i' = r_i - beta * sum_t KL_t(i)`` over the completion's valid tokens, with ``KL_t`` from
    `kl_penalty` on the sampler's log-probs ([N, T]).  Returns [N] shaped rewards, detached.
    """
    kl = kl_penalty(logprobs.detach(), ref_logprobs.detach(), estimator)
    return rewards - coef * (kl * mask).sum(-1).to(rewards.dtype)


def high_entropy_mask(entropy: Tensor, mask: Tensor, rho: float) -> Tensor:
    """[B, T] {0, 1}: the top-``rho`` share of valid tokens by entropy (Wang et al. 2025,
    "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective RLVR").

    ``tau`` = the ``ceil(rho * n)``-th largest entropy among the n valid tokens of the micro-batch
    (the paper: of the batch); keep ``H_t >= tau`` (ties may keep a few more).  The loss
    denominator is unchanged, so masked tokens still count.
    """
    valid = mask > 0
    n = int(valid.sum())
    if n == 0:
        return torch.zeros_like(mask)
    k = max(1, math.ceil(rho * n))
    tau = torch.topk(entropy.detach()[valid], k).values.min()
    return ((entropy.detach() >= tau) & valid).to(mask.dtype)


def regularise(loss: Tensor, inputs: LossInputs, cfg: AlgorithmConfig, metrics: dict[str, float]) -> Tensor:
    """Add the KL-to-reference and entropy terms that every policy loss shares."""
    if cfg.kl_coef > 0 and inputs.ref_logprobs is not None:
        kl = kl_penalty(inputs.policy_logprobs, inputs.ref_logprobs, cfg.kl_estimator)
        loss = loss + cfg.kl_coef * aggregate(kl, inputs, cfg.agg)
        metrics["kl"] = token_mean_metric(kl, inputs)
    if inputs.entropy is not None:
        metrics["entropy"] = token_mean_metric(inputs.entropy, inputs)
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * aggregate(inputs.entropy, inputs, cfg.agg)
    return loss


def finish(
    token_loss: Tensor, corr: Corrections, inputs: LossInputs, cfg: AlgorithmConfig, metrics: dict[str, float]
) -> LossOutputs:
    """Apply off-policy weight/keep and the entropy mask, aggregate, add KL and entropy terms."""
    token_loss = token_loss * corr.weight * corr.keep
    metrics.update(corr.metrics)
    if cfg.entropy_mask_rho is not None:
        if inputs.entropy is None:
            raise ValueError("entropy_mask_rho needs LossInputs.entropy")
        high = high_entropy_mask(inputs.entropy, inputs.mask, cfg.entropy_mask_rho)
        metrics["entropy_mask_frac"] = token_mean_metric(high, inputs)
        token_loss = token_loss * high
    loss = regularise(aggregate(token_loss, inputs, cfg.agg), inputs, cfg, metrics)
    return LossOutputs(loss=loss, metrics=metrics)


def clipped_surrogate(ratio: Tensor, adv: Tensor, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """``max(-rho A, -clip(rho, 1 - eps_low, 1 + eps_high) A)``, dual-clipped at ``-c A`` for
    ``A < 0``; returns the token loss and the clipped indicator."""
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * adv
    token_loss = torch.maximum(unclipped, clipped)
    if cfg.dual_clip is not None:
        token_loss = torch.where(adv < 0, torch.minimum(token_loss, -cfg.dual_clip * adv), token_loss)
    return token_loss, (clipped > unclipped).float()


@LOSSES.register("ppo_clip")
def ppo_clip(inputs: LossInputs, cfg: AlgorithmConfig) -> LossOutputs:
    """PPO clipped surrogate (Schulman 2017) with clip-higher (DAPO, Yu et al. 2025) and dual clip.

    ``rho = pi_theta / pi_prox``;  ``L = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)``;
    with dual clip ``c`` and ``A < 0``: ``L = min(L, -c A)`` (Ye et al. 2020).  With a behaviour
    weight (``is_level``) this is AReaL's decoupled objective ``sg(pi_prox / mu) * L``.
    """
    corr = corrections(inputs, cfg)
    ratio = (inputs.policy_logprobs - corr.prox_logprobs).clamp(-LOG_CLAMP, LOG_CLAMP).exp()
    token_loss, clipped = clipped_surrogate(ratio, inputs.advantages, cfg)
    metrics = {
        "clip_frac": token_mean_metric(clipped, inputs),
        "ratio_mean": token_mean_metric(ratio, inputs),
    }
    return finish(token_loss, corr, inputs, cfg, metrics)


@LOSSES.register("gspo")
def gspo(inputs: LossInputs, cfg: AlgorithmConfig) -> LossOutputs:
    """GSPO (Zheng et al. 2025, Qwen), GSPO-token form.

    ``log s_i = (1/|y_i|) sum_t (log pi_theta - log pi_prox)``; per token
    ``s_i,t = exp(sg(log s_i) + log pi_theta,t - sg(log pi_theta,t))`` (value ``s_i``; gradient
    that of the sequence form for sequence-level advantages), ``log s`` clamped at 10 (verl);
    ``L = max(-s A, -clip(s, 1 - eps_low, 1 + eps_high) A)``.  Paper defaults: eps 3e-4 / 4e-4,
    ``seq-mean-token-mean``, each rollout batch split into mini-batches (the preset takes 4), so
    the clip acts from the second optimizer step on.
    """
    corr = corrections(inputs, cfg)
    delta = (inputs.policy_logprobs - corr.prox_logprobs) * inputs.mask
    log_s = (delta.sum(-1) / inputs.mask.sum(-1).clamp(min=1.0)).detach()
    log_s_tok = (log_s[:, None] + inputs.policy_logprobs - inputs.policy_logprobs.detach()).clamp(max=10.0)
    ratio = log_s_tok.exp()
    token_loss, clipped = clipped_surrogate(ratio, inputs.advantages, cfg)
    metrics = {
        "clip_frac": token_mean_metric(clipped, inputs),
        "ratio_mean": token_mean_metric(ratio, inputs),
    }
    return finish(token_loss, corr, inputs, cfg, metrics)


@LOSSES.register("cispo")
def cispo(inputs: LossInputs, cfg: AlgorithmConfig) -> LossOutputs:
    """CISPO (MiniMax-M1, 2025; used by ScaleRL, Khatri et al. 2025).

    ``L_t = -sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) * A * log pi_theta(y_t)``: REINFORCE with
    a truncated, stop-gradient IS weight, so no token's gradient is dropped.  The paper sets no
    lower bound (``clip_low = 1``) and tunes only the upper one.
    """
    corr = corrections(inputs, cfg)
    ratio = (inputs.policy_logprobs - corr.prox_logprobs).detach().clamp(-LOG_CLAMP, LOG_CLAMP).exp()
    is_w = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    token_loss = -is_w * inputs.advantages * inputs.policy_logprobs
    metrics = {
        "clip_frac": token_mean_metric((is_w != ratio).float(), inputs),
        "ratio_mean": token_mean_metric(ratio, inputs),
    }
    return finish(token_loss, corr, inputs, cfg, metrics)
