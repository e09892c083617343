"""Advantage modifiers: ``fn(advantages[N], AdvantageInputs, AlgorithmConfig) -> Tensor[N]``.

They run after any estimator, in the order of ``cfg.adv_modifiers``.  A NaN advantage (a row
the estimator dropped) stays NaN.  Tsallis/GARL and XRPO's exact forms are reconstructions
from the abstracts (catalog tag [R]); ACE's modulation is [S]+[R].  See `docs/algorithms.md`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from node.algos.advantages import is_correct, masked_group_stats
from node.algos.config import AlgorithmConfig
from node.algos.registry import MODIFIERS, Needs
from node.algos.types import AdvantageInputs


@MODIFIERS.register("tsallis")
def tsallis(adv: Tensor, inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """Tsallis / GARL per-prompt amplification (the Tsallis q-log objective, catalog A13).

    ``grad J_q = P^-q grad P``; estimated with the group's success rate
    ``P_hat = mean_g(correct)``: ``A_i' = A_i * max(P_hat, floor)^-q`` (q = 0.75).  q = 0 is plain
    RLVR, q = 1 the log-likelihood of a correct answer; hard prompts are amplified up to floor^-q.
    """
    correct = is_correct(inputs, cfg).to(torch.float64)
    p_hat, _, _ = masked_group_stats(correct, inputs.group_ids, torch.ones_like(correct, dtype=torch.bool))
    weight = p_hat.clamp(min=cfg.tsallis_floor).pow(-cfg.tsallis_q)
    return (adv.to(torch.float64) * weight).to(adv.dtype)


@MODIFIERS.register("xrpo", Needs(seq_logprobs=True))
def xrpo(adv: Tensor, inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """XRPO novelty sharpening (XRPO, 2025, exploitation half; catalog A14, [R]).

    With ``l_i`` the length-normalised log-likelihood (``inputs.seq_logprobs``) and the mean /
    unbiased std over the *correct* rows of the group, for correct rows:
    ``A_i' = A_i + lambda * min(kappa, max(0, (mean_c(l) - l_i) / std_c(l)))``; wrong rows and
    groups with fewer than two correct rows are unchanged.
    """
    if inputs.seq_logprobs is None:
        raise ValueError("xrpo needs AdvantageInputs.seq_logprobs (mean token log-prob per completion)")
    correct = is_correct(inputs, cfg)
    mean, std, count = masked_group_stats(inputs.seq_logprobs, inputs.group_ids, correct)
    novelty = ((mean - inputs.seq_logprobs.to(torch.float64)) / (std + cfg.adv_eps)).clamp(0, cfg.xrpo_kappa)
    bonus = torch.where(correct & (count > 1), cfg.xrpo_lambda * novelty, torch.zeros_like(novelty))
    return (adv.to(torch.float64) + bonus).to(adv.dtype)


@MODIFIERS.register("ace", Needs(ref_logprobs=True, seq_logprobs=True))
def ace(adv: Tensor, inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """ACE asymmetric confidence-aware error penalty (catalog A11, [S]+[R]).

    Confidence shift ``c_i = l_theta,i - l_ref,i`` (length-normalised sequence log-likelihoods,
    detached); for ``A_i < 0``: ``A_i' = A_i * (1 + alpha * softplus(c_i))``; ``A_i >= 0`` unchanged.
    Wrong answers the policy has made likelier than the reference are pushed down harder.
    """
    if inputs.seq_logprobs is None or inputs.ref_seq_logprobs is None:
        raise ValueError("ace needs AdvantageInputs.seq_logprobs and ref_seq_logprobs")
    shift = (inputs.seq_logprobs - inputs.ref_seq_logprobs).to(torch.float64)
    scale = 1 + cfg.ace_alpha * F.softplus(shift)
    adv64 = adv.to(torch.float64)
    return torch.where(adv64 < 0, adv64 * scale, adv64).to(adv.dtype)
