"""F1 experiments on T1 (bandit prompts): MC-GRPO vs the mean baseline, and DAPO dynamic sampling.

Each function runs one seed and returns a JSON-able dict; `experiments.py` loops over seeds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.toy.bandit import BanditBatch, BanditPolicy, BanditSpec, sample_batch, train_step
from node.algos import api
from node.algos.config import AlgorithmConfig
from node.algos.types import AdvantageInputs

NOISE = (0.5, 0.1, 5.0)  # sigma, outlier probability, outlier size (symmetric)
LR = 0.02
PROMPTS_PER_STEP = 32


def sign_flips(adv: Tensor, keep: Tensor, rewards: Tensor, p_true: Tensor) -> tuple[float, float]:
    """Share of trained rows whose advantage sign disagrees with ``sign(r - p_x)`` (the oracle
    baseline is the true mean reward ``p_x``), and the share with advantage exactly 0."""
    oracle = torch.sign(rewards - p_true)[keep]
    a = torch.sign(adv)[keep]
    return float((a * oracle < 0).float().mean()), float((a == 0).float().mean())


def run_mc_grpo(seed: int, steps: int, g: int, estimator: str, noisy: bool) -> dict:
    """GRPO (mean/std) or MC-GRPO (median of G+1, pivot dropped, clipped) at group size G."""
    spec = BanditSpec()
    policy = BanditPolicy(spec, seed=seed)
    opt = torch.optim.Adam(policy.parameters(), lr=LR)
    cfg = AlgorithmConfig(advantage=estimator)
    gen = torch.Generator().manual_seed(1000 + seed)
    n_sample = g + api.requirements(cfg).extra_rollouts_per_group
    flips, zeros, curve = [], [], []
    for step in range(steps):
        prompts = torch.randint(0, spec.n_prompts, (PROMPTS_PER_STEP,), generator=gen)
        batch = sample_batch(policy, prompts, n_sample, gen, NOISE if noisy else None)
        p_true = policy.success_prob(batch.prompts)
        out = api.advantages_with_keep(
            AdvantageInputs(rewards=batch.rewards, group_ids=batch.group_ids, correct=batch.correct), cfg
        )
        f, z = sign_flips(out.advantages, out.keep, batch.rewards, p_true)
        flips.append(f)
        zeros.append(z)
        train_step(policy, opt, batch, cfg)
        if step % 10 == 0 or step == steps - 1:
            curve.append((step, float(policy.success_prob().mean())))
    return {
        "flip_rate": sum(flips) / len(flips),
        "zero_rate": sum(zeros) / len(zeros),
        "final_p": float(policy.success_prob().mean()),
        "curve": curve,
        "rollouts_per_step": PROMPTS_PER_STEP * n_sample,
    }


def run_dynamic_sampling(seed: int, steps: int, dynamic: bool, g: int = 8, target: float = 0.85) -> dict:
    """GRPO with or without dynamic sampling at equal optimizer steps; 16 groups per step.

    Dynamic sampling (DAPO): generate rounds of 16 prompts, keep groups with reward variance
    (`api.keep_groups`), repeat while `api.should_generate_more`, train on at most 16 kept groups.
    """
    spec = BanditSpec()
    policy = BanditPolicy(spec, seed=seed)
    opt = torch.optim.Adam(policy.parameters(), lr=LR)
    cfg = AlgorithmConfig(advantage="grpo", dynamic_sampling=dynamic)
    gen = torch.Generator().manual_seed(2000 + seed)
    n_groups = 16
    rollouts, eff, curve = 0, [], []
    steps_to_target = rollouts_to_target = None
    for step in range(steps):
        parts: list[BanditBatch] = []
        rounds = n_kept = 0
        while True:
            prompts = torch.randint(0, spec.n_prompts, (n_groups,), generator=gen)
            batch = sample_batch(policy, prompts, g, gen)
            rollouts += len(batch.rewards)
            rounds += 1
            if not cfg.dynamic_sampling:
                parts = [batch]
                break
            keep = api.keep_groups(batch.rewards, batch.group_ids)
            parts.append(select_rows(batch, keep, offset=n_kept))
            n_kept += int(keep.sum()) // g
            if not api.should_generate_more(n_kept, n_groups, rounds, cfg.max_gen_rounds):
                break
        batch = concat(parts, max_rows=n_groups * g)
        if len(batch.rewards) == 0:  # every round had zero variance: nothing to train on
            continue
        eff.append(float(api.keep_groups(batch.rewards, batch.group_ids).float().mean()))
        train_step(policy, opt, batch, cfg)
        p = float(policy.success_prob().mean())
        if steps_to_target is None and p >= target:
            steps_to_target, rollouts_to_target = step + 1, rollouts
        if step % 10 == 0 or step == steps - 1:
            curve.append((step, p, rollouts))
    return {
        "eff_grad_ratio": sum(eff) / len(eff),
        "final_p": float(policy.success_prob().mean()),
        "steps_to_target": steps_to_target,
        "rollouts_to_target": rollouts_to_target,
        "rollouts": rollouts,
        "target": target,
        "curve": curve,
    }


def select_rows(b: BanditBatch, keep: Tensor, offset: int) -> BanditBatch:
    """Rows of ``b`` where ``keep``, group ids renumbered from ``offset``."""
    gid = torch.unique(b.group_ids[keep], return_inverse=True)[1] + offset
    return BanditBatch(
        b.prompts[keep], b.answers[keep], b.behavior_logprobs[keep], gid, b.correct[keep], b.rewards[keep]
    )


def concat(parts: list[BanditBatch], max_rows: int) -> BanditBatch:
    """Concatenate batches and keep the first ``max_rows`` rows (whole groups if a multiple of G)."""
    cat = [torch.cat([getattr(p, f) for p in parts])[:max_rows] for f in BanditBatch.__dataclass_fields__]
    return BanditBatch(*cat)
