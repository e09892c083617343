"""Advantage estimators: ``fn(AdvantageInputs, AlgorithmConfig) -> Tensor[N]``.

Every estimator returns one advantage per completion; the trainer broadcasts it to tokens.
An estimator may return NaN for a row to say "drop this row from the loss" (MC-GRPO's median
pivot); `api.advantages_with_keep` turns NaN into ``keep = False`` and nothing NaN reaches the
trainer.  Group statistics are computed in float64 and vectorised over groups of any size
(`group_ids` need not be sorted or contiguous); a group of one never yields NaN or inf.
"""

from __future__ import annotations

import torch
from torch import Tensor

from node.algos.config import AlgorithmConfig
from node.algos.registry import ADVANTAGES, Needs
from node.algos.types import AdvantageInputs


def group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Dense group index [N] in 0..n_groups-1 and the number of groups."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, (int(inverse.max()) + 1 if inverse.numel() else 0)


def masked_group_stats(values: Tensor, group_ids: Tensor, where: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Group mean, unbiased std and count over the rows with ``where`` True, broadcast to [N].

    Rows outside ``where`` still receive their group's statistics.  Empty groups have mean 0;
    groups with fewer than two selected rows have std 1 (so dividing by it is harmless).
    """
    inverse, n_groups = group_index(group_ids)
    values = values.to(torch.float64)
    w = where.to(torch.float64)
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, w)
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, values * w)
    mean = total / count.clamp(min=1)
    sq = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, w * (values - mean[inverse]) ** 2)
    var = sq / (count - 1).clamp(min=1)
    std = torch.where(count > 1, var.sqrt(), torch.ones_like(var))
    return mean[inverse], std[inverse], count[inverse]


def group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group mean, unbiased group std and group size, each [N].

    A group of one has mean = its value and std = 1 (so its advantage is 0, not NaN).
    """
    return masked_group_stats(values, group_ids, torch.ones_like(values, dtype=torch.bool))


def group_median(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample group median [N] (float64) and the pivot mask [N] bool.

    The median is the lower median (``sorted[(n - 1) // 2]``, as ``torch.median``); the pivot
    is the one row at that sorted position, with ties sorted by row index.
    """
    inverse, n_groups = group_index(group_ids)
    values = values.to(torch.float64)
    by_value = torch.argsort(values, stable=True)
    order = by_value[torch.argsort(inverse[by_value], stable=True)]  # by group, then value
    counts = torch.bincount(inverse, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    pivot_idx = order[starts + (counts - 1) // 2]
    pivot = torch.zeros_like(values, dtype=torch.bool)
    pivot[pivot_idx] = True
    return values[pivot_idx][inverse], pivot


def is_correct(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """[N] bool: the verifier's flag if given, else ``reward >= cfg.correct_threshold``."""
    if inputs.correct is not None:
        return inputs.correct.to(torch.bool)
    return inputs.rewards >= cfg.correct_threshold


@ADVANTAGES.register("grpo")
def grpo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath): ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)``.

    `adv_scale="group"` uses the group's unbiased std (as verl), `"batch"` the std of the
    centred rewards over the whole batch, `"none"` skips the division (Dr. GRPO's choice).
    """
    mean, std, _ = group_stats(inputs.rewards, inputs.group_ids)
    centred = inputs.rewards.to(torch.float64) - mean
    if cfg.adv_scale == "group":
        adv = centred / (std + cfg.adv_eps)
    elif cfg.adv_scale == "batch":
        adv = centred / (centred.std() + cfg.adv_eps) if centred.numel() > 1 else centred
    else:
        adv = centred
    return adv.to(torch.float32)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): ``A_i = r_i - mean_g(r)``.

    No division by the group std (it over-weights near-0/near-1 prompts); pair it with
    ``agg: seq-mean-token-sum-norm`` to also remove the length bias.
    """
    mean, _, _ = group_stats(inputs.rewards, inputs.group_ids)
    return (inputs.rewards.to(torch.float64) - mean).to(torch.float32)


@ADVANTAGES.register("rloo")
def rloo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """RLOO (Ahmadian et al. 2024; Kool et al. 2019): leave-one-out baseline.

    ``A_i = r_i - 1/(G-1) sum_{j != i} r_j = G/(G-1) (r_i - mean_g(r))``; a group of one gets 0.
    """
    mean, _, count = group_stats(inputs.rewards, inputs.group_ids)
    scale = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.zeros_like(count))
    return (scale * (inputs.rewards.to(torch.float64) - mean)).to(torch.float32)


@ADVANTAGES.register("remax", Needs(baseline_rewards=True))
def remax(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """ReMax (Li et al. 2024): REINFORCE with the greedy rollout's reward as baseline.

    ``A_i = r(x, y_i) - r(x, y_greedy(x))``; needs ``inputs.baseline_rewards`` ([N], the greedy
    reward of each row's prompt, repeated across the group).
    """
    if inputs.baseline_rewards is None:
        raise ValueError("remax needs AdvantageInputs.baseline_rewards (one greedy rollout per prompt)")
    return (inputs.rewards.to(torch.float64) - inputs.baseline_rewards.to(torch.float64)).to(torch.float32)


@ADVANTAGES.register("mc_grpo", Needs(extra_rollouts_per_group=1))
def mc_grpo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """MC-GRPO (Kim 2026, "Median-Centered GRPO for Small-Rollout RL"), groups of G+1.

    ``m = median_g(r)``, ``MAD = median_g(|r - m|) + mc_mad_eps``,
    ``A_i = clip((r_i - m) / MAD, -mc_clip, mc_clip)``; the pivot (the row that is the median)
    gets NaN, i.e. is dropped, so G rows per group carry gradient.

    This is the official MATH trainer (lotusroot-kim/MC-GRPO at da07745,
    src/open_r1/grpo_trainer_math.py, `_generate_and_score_completions`): median and MAD over all
    G+1 rows, pivot included, eps 1e-3, no std division, pivot removed before the loss.  We
    differ in three ways:

    - the clip is ours (catalog A7): with binary rewards at least half the rows equal the
      median, so the MAD is 0 and ``A`` would be +-1000; the official code does not clip;
    - the official GSM8K trainer (src/open_r1/grpo_trainer_gsm.py) adds a step we do not take:
      after the MAD division it multiplies each group's non-zero advantages by
      ``(G+1) / #non-zero`` (the pivot and rows tied with the median count as zero), so a group
      where one row differs from the median gets a (G+1)x larger advantage.  With binary rewards
      it would change nothing here (every non-zero advantage is already +-1000 and clips to
      +-mc_clip); with continuous rewards it would;
    - the pivot is the lower-median row with ties broken by row index; the official code takes
      whichever index ``torch.median`` returns among tied rows.
    """
    rewards = inputs.rewards.to(torch.float64)
    median, pivot = group_median(rewards, inputs.group_ids)
    mad, _ = group_median((rewards - median).abs(), inputs.group_ids)
    adv = ((rewards - median) / (mad + cfg.mc_mad_eps)).clamp(-cfg.mc_clip, cfg.mc_clip)
    return torch.where(pivot, torch.full_like(adv, float("nan")), adv).to(torch.float32)


def whiten(values: Tensor, weights: Tensor, eps: float) -> Tensor:
    """``(v - mean_w(v)) / (std_w(v) + eps)`` with weights (e.g. token counts), unbiased in sum(w)."""
    w = weights.to(torch.float64)
    n = w.sum()
    if values.numel() == 0 or n <= 0:
        return values
    mean = (w * values).sum() / n
    var = (w * (values - mean) ** 2).sum() / (n - 1).clamp(min=1)
    return (values - mean) / (var.sqrt() + eps)


@ADVANTAGES.register("gdpo", Needs(components=True))
def gdpo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """GDPO (group reward-decoupled normalisation, NVlabs/GDPO).

    Per component k: ``A_k,i = (r_k,i - mean_g(r_k)) / (std_g(r_k) + eps)``;
    ``A_i = sum_k w_k A_k,i``; then batch whitening ``(A - mean_B) / (std_B + eps)`` over tokens
    when ``inputs.lengths`` is given (as the official code, over valid tokens), else over rows.
    Without ``components`` the total reward is the single component.
    """
    comps = inputs.components if inputs.components is not None else inputs.rewards[:, None]
    comps = comps.to(torch.float64)
    weights = (
        inputs.component_weights.to(torch.float64)
        if inputs.component_weights is not None
        else torch.ones(comps.shape[1], dtype=torch.float64)
    )
    total = torch.zeros(comps.shape[0], dtype=torch.float64)
    for k in range(comps.shape[1]):  # K is 2-3 reward components, not a data dimension
        mean, std, _ = group_stats(comps[:, k], inputs.group_ids)
        total = total + weights[k] * (comps[:, k] - mean) / (std + cfg.adv_eps)
    row_w = inputs.lengths if inputs.lengths is not None else torch.ones_like(total)
    return whiten(total, row_w, cfg.adv_eps).to(torch.float32)


def _signed(inputs: AdvantageInputs, cfg: AlgorithmConfig, pos: float, neg: float) -> Tensor:
    return torch.where(is_correct(inputs, cfg), torch.tensor(pos), torch.tensor(neg)).to(torch.float32)


@ADVANTAGES.register("psr")
def psr(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """PSR (Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement"):
    ``A = +1`` for correct, ``0`` for wrong; no baseline."""
    return _signed(inputs, cfg, 1.0, 0.0)


@ADVANTAGES.register("nsr")
def nsr(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """NSR (Zhu et al. 2025): ``A = -1`` for wrong, ``0`` for correct; keeps pass@k diversity."""
    return _signed(inputs, cfg, 0.0, -1.0)


@ADVANTAGES.register("w_reinforce")
def w_reinforce(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> Tensor:
    """W-REINFORCE (Zhu et al. 2025): ``A = lambda`` for correct (0.1), ``-1`` for wrong."""
    return _signed(inputs, cfg, cfg.w_lambda, -1.0)
