"""Off-policy corrections: pure functions of policy / proximal / behaviour log-probs and versions.

Three policies (catalog section D, notation of AReaL):

- ``mu``       behaviour: whoever sampled the tokens (another peer, an older snapshot, another
               engine); ``LossInputs.behavior_logprobs``.
- ``pi_prox``  proximal: the trust-region anchor, the local policy at the start of this training
               step, before its first optimizer step (node/trainer.py);
               ``LossInputs.old_logprobs`` (recomputed) or the log-linear approximation below.
- ``pi_theta`` the policy being optimised; ``LossInputs.policy_logprobs``.

`corrections` bundles what the config selects into one `Corrections` record that every loss
applies the same way: the PPO ratio is taken against ``prox_logprobs``, the token loss is
multiplied by ``weight`` (detached) and ``keep`` (0/1), and the denominators stay the original
valid-token counts: a token dropped by any mask here (IS cap, M2PO, staleness) still counts.
``LossInputs.row_weights`` (the foreign gate's weights, node/algos/foreign.py) multiply ``weight``.

Staleness (``max_staleness``) is counted on one of two clocks (``staleness_clock``): ``ours``,
our versions since the row's behaviour log-probs were made (``policy_version - behavior_versions``;
for a peer row that is when we took it in, or filled its log-probs); ``origin``, the versions its
sampler has moved since it sampled the row (``LossInputs.sampler_lags``, node/batching.py
`sampler_lags`): for a peer row the origin's newest version seen minus the row's
``origin_version``, in the origin's own counter, for our rows the same as ``ours``.
On-policy data (``mu == pi_prox``) get weight 1 and keep 1 from every function here, so the
corrections are no-ops there.

Where that matches the references and where it does not (inclusionAI/AReaL, read at 4aef98d):

- IS cap in ``mask`` mode: as AReaL.  ``ppo_actor_loss_fn`` (areal/utils/functional/functional.py)
  takes ``loss_mask_count`` before its rejection sampling, so capped tokens stay in the denominator.
- M2PO: as the objective in AReaL's docs/en/algorithms/m2po.md (``1 / sum_i |o_i|`` over all
  tokens; the paper's text is not in our store), *not* as AReaL's code.  ``grpo_loss_fn``
  (areal/trainer/ppo/actor.py) hands the M2PO-masked ``loss_mask`` to ``ppo_actor_loss_fn``, which
  counts it, so AReaL divides by the tokens M2PO keeps; ours divides by all valid tokens, a gradient
  smaller than AReaL's by the kept share (about 0.87 when 13% are masked).

Where the statistic is batch-level (M2PO) it is taken over the micro-batch the loss sees.  AReaL
does the same (its engine calls the loss once per micro-batch, areal/engine/fsdp_engine.py
``_compute_logprobs_and_loss``); its doc page writes a batch statistic.  With one micro-batch per
optimizer step (``trainer.micro_batch_size >= trainer.mini_batch_size``) it is the mini-batch's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from node.algos.config import AlgorithmConfig
from node.algos.metrics import token_mean_metric
from node.algos.types import LossInputs

LOG_CLAMP = 20.0  # log-ratios are clamped to [-20, 20] before exp (exp(20) ~ 5e8)


@dataclass
class Corrections:
    """Off-policy terms for one micro-batch, all detached."""

    prox_logprobs: Tensor  # [B, T] anchor of the PPO ratio pi_theta / pi_prox
    weight: Tensor  # [B, T] multiplies the token loss (behaviour IS weight, MinPRO)
    keep: Tensor  # [B, T] float {0, 1}: tokens the loss keeps (IS mask, M2PO, staleness)
    metrics: dict[str, float] = field(default_factory=dict)


def _versions(versions: Tensor, like: Tensor) -> Tensor:
    """Broadcast [B] or [B, T] versions to [B, T] float64."""
    v = versions.to(torch.float64)
    return v[:, None].expand_as(like) if v.dim() == 1 else v


def loglinear_proximal(
    behavior: Tensor, policy: Tensor, behavior_versions: Tensor, prox_version: int, theta_version: int
) -> Tensor:
    """AReaL's proximal log-prob approximation (inclusionAI/AReaL `prox_logp_method: loglinear`,
    ``compute_prox_logp_approximations`` in areal/trainer/ppo/actor.py).

    ``alpha = (v_prox - v_b) / (v_theta - v_b)`` clipped to [0, 1] (0 where ``v_theta <= v_b``);
    ``log pi_prox ~= log mu + alpha (log pi_theta - log mu)``, detached.  AReaL numbers the
    versions ``v_prox = current - 1``, ``v_theta = current``; we pass ``v_prox = policy_version``,
    ``v_theta = policy_version + 1``: the same alpha.  With this method `api.requirements` sets
    ``old_logprobs = False`` and `Trainer.update` skips its proximal forward pass (as AReaL's
    ``skips_forward_pass``); behaviour log-probs of re-tokenized peer text still cost one.
    """
    v_b = _versions(behavior_versions, behavior)
    denom = theta_version - v_b
    alpha = torch.where(denom > 0, (prox_version - v_b) / denom.clamp(min=1e-9), torch.zeros_like(v_b))
    alpha = alpha.clamp(0, 1).to(behavior.dtype)
    return (behavior + alpha * (policy.detach() - behavior)).detach()


def sequence_log_weights(prox: Tensor, behavior: Tensor, mask: Tensor) -> Tensor:
    """[B] log of the sequence importance weight ``prod_t pi_prox / mu`` over valid tokens."""
    return ((prox - behavior) * mask).sum(-1)


def truncate_weights(log_w: Tensor, cap: float | None, mode: str) -> tuple[Tensor, Tensor]:
    """Importance weights ``w = exp(log_w)`` and a keep mask, truncated at ``cap`` (TIS).

    ``truncate``: ``w' = min(w, C)``, all kept (Ionides 2008; FlashRL/verl rollout IS).
    ``mask``: tokens/sequences with ``w > C`` are dropped (weight 0, keep 0) (AReaL's cap).
    ``cap=None``: the raw weight (AReaL's decoupled objective without a cap).
    """
    w = log_w.clamp(-LOG_CLAMP, LOG_CLAMP).exp()
    keep = torch.ones_like(w)
    if cap is None:
        return w, keep
    if mode == "truncate":
        return w.clamp(max=cap), keep
    if mode == "mask":
        keep = (log_w <= math.log(cap)).to(w.dtype)
        return w * keep, keep
    raise ValueError(f"unknown IS mode {mode!r}")


def m2po_mask(prox: Tensor, behavior: Tensor, mask: Tensor, tau: float) -> Tensor:
    """M2PO second-moment trust region (Zheng et al. 2025, "Prosperity before Collapse").

    ``m_t = (log mu_t - log pi_prox,t)^2`` on valid tokens; drop the smallest set of largest
    ``m_t`` such that the mean of the remaining ``m_t`` is below ``tau`` (0.04).  Returns [B, T]
    keep in {0, 1} (1 outside the mask).

    The selection is AReaL's (`_apply_m2po_masking` / `_get_m2po_loss_mask`,
    areal/trainer/ppo/actor.py: sort descending, suffix means, first suffix below tau), with one
    departure: when no suffix mean is below ``tau`` (every ``m_t >= tau``) we mask every valid
    token, AReaL masks all but the smallest one.  How the kept tokens are normalised (ours: all
    valid tokens count; AReaL's code: only the kept ones) is in the module docstring.
    """
    keep = torch.ones_like(prox)
    valid = mask > 0
    m = (behavior - prox).to(torch.float64).square()[valid]
    n = m.numel()
    if n == 0:
        return keep
    sorted_m, order = torch.sort(m, descending=True)
    suffix = sorted_m.flip(0).cumsum(0).flip(0)  # suffix[k] = sum of sorted_m[k:]
    remaining = n - torch.arange(n, dtype=torch.float64)
    below = suffix / remaining < tau  # mean after dropping the k largest, k = 0..n-1
    k = int(torch.argmax(below.to(torch.int8))) if bool(below.any()) else n
    flat_keep = torch.ones(n, dtype=prox.dtype)
    flat_keep[order[:k]] = 0
    keep[valid] = flat_keep
    return keep


def minpro_weight(policy: Tensor, behavior: Tensor, mask: Tensor) -> Tensor:
    """MinPRO minimum prefix ratio (catalog D5, [R]).

    ``m_t = sg(min(1, min_{j<t} rho_j))`` with ``rho_j = pi_theta / mu`` over the valid tokens
    before t (strict prefix, so ``m_1 = 1``): one bad early token attenuates the rest of the
    sequence; ratios above 1 never amplify.  Stands in for the exploding prefix product.
    """
    log_rho = (policy.detach() - behavior).masked_fill(mask <= 0, float("inf"))
    prefix_min = torch.cummin(log_rho, dim=-1).values
    shifted = torch.cat([torch.zeros_like(prefix_min[:, :1]), prefix_min[:, :-1]], dim=-1)
    return shifted.clamp(-LOG_CLAMP, 0).exp()


def staleness_mask(behavior_versions: Tensor, policy_version: int, max_staleness: int) -> Tensor:
    """Bool mask, True where ``policy_version - behavior_version <= max_staleness``; same shape
    as ``behavior_versions`` ([B] or [B, T]).  The bound is AReaL's ``max_head_offpolicyness``, but
    AReaL enforces it before generation (areal/infra/workflow_executor.py refuses rollouts that
    would be too stale); a peer's group has already been sampled, so we drop it at the loss."""
    return (policy_version - behavior_versions) <= max_staleness


def ess_ratio(seq_log_weights: Tensor) -> float:
    """``ESS / B = (sum w)^2 / (B sum w^2)`` of sequence weights (Kong 1992), in (0, 1]; 1 if empty.

    Computed from log-weights with the max subtracted (ESS is scale invariant).
    """
    if seq_log_weights.numel() == 0:
        return 1.0
    lw = seq_log_weights.detach().to(torch.float64)
    w = (lw - lw.max()).exp()
    return float(w.sum().square() / (w.numel() * w.square().sum()))


def lr_scale(seq_log_weights: Tensor, base_ratio: float = 1.0) -> float:
    """VCPO learning-rate scale (mit-han-lab/vcpo): ``sqrt((ESS / B) / base_ratio)``."""
    return math.sqrt(ess_ratio(seq_log_weights) / base_ratio)


def proximal_logprobs(inputs: LossInputs, cfg: AlgorithmConfig) -> Tensor:
    """The ratio's anchor: recomputed ``old_logprobs`` or the log-linear approximation, in
    which the proximal version is ``policy_version`` and pi_theta counts as the version it is
    being trained into, ``policy_version + 1`` (fresh data: ``alpha = 0``, prox = mu exactly)."""
    if cfg.prox_logprobs == "recompute":
        return inputs.old_logprobs.detach()
    if inputs.behavior_versions is None:
        raise ValueError("prox_logprobs=loglinear needs LossInputs.behavior_versions")
    return loglinear_proximal(
        inputs.behavior_logprobs,
        inputs.policy_logprobs,
        inputs.behavior_versions,
        inputs.policy_version,
        inputs.policy_version + 1,
    )


def corrections(inputs: LossInputs, cfg: AlgorithmConfig) -> Corrections:
    """Everything off-policy the config selects, for one micro-batch (see module docstring)."""
    mask, behavior = inputs.mask, inputs.behavior_logprobs.detach()
    prox = proximal_logprobs(inputs, cfg)
    weight, keep = torch.ones_like(prox), torch.ones_like(prox)
    log_ratio = prox - behavior
    metrics = {
        "offpolicy/logratio_mean": token_mean_metric(log_ratio, inputs),
        "offpolicy/logratio_sq": token_mean_metric(log_ratio.square(), inputs),
    }
    if cfg.is_level != "off":
        if cfg.is_level == "token":
            log_w = log_ratio
        else:
            log_w = sequence_log_weights(prox, behavior, mask)[:, None].expand_as(prox)
        weight, keep = truncate_weights(log_w, cfg.is_cap, cfg.is_mode)
        metrics["offpolicy/is_weight"] = token_mean_metric(weight, inputs)
        metrics["offpolicy/is_masked"] = token_mean_metric(1 - keep, inputs)
    if cfg.m2po_tau is not None:
        m2 = m2po_mask(prox, behavior, mask, cfg.m2po_tau)
        metrics["offpolicy/m2po_masked"] = token_mean_metric(1 - m2, inputs)
        keep = keep * m2
    if cfg.minpro:
        mp = minpro_weight(inputs.policy_logprobs, behavior, mask)
        metrics["offpolicy/minpro_weight"] = token_mean_metric(mp, inputs)
        weight = weight * mp
    if inputs.row_weights is not None:  # the foreign gate's per-row weight (node/algos/foreign.py)
        weight = weight * inputs.row_weights[:, None].to(weight.dtype)
    if cfg.max_staleness is not None:
        if cfg.staleness_clock == "origin":
            if inputs.sampler_lags is None:
                raise ValueError("staleness_clock=origin needs LossInputs.sampler_lags")
            fresh = _versions(inputs.sampler_lags <= cfg.max_staleness, prox)
        elif inputs.behavior_versions is None:
            raise ValueError("max_staleness needs LossInputs.behavior_versions")
        else:
            fresh = _versions(
                staleness_mask(inputs.behavior_versions, inputs.policy_version, cfg.max_staleness), prox
            )
        fresh = fresh.to(prox.dtype)
        metrics["offpolicy/stale"] = token_mean_metric(1 - fresh, inputs)
        keep = keep * fresh
    return Corrections(prox_logprobs=prox, weight=weight.detach(), keep=keep.detach(), metrics=metrics)
