"""T1 "bandit prompts" (catalog F0): a one-token policy over K answers per prompt whose true
success rate is known exactly.

``pi(a | x) = softmax_a(e_x . u_a / T)`` with prompt embeddings ``E [N, d]`` and answer
embeddings ``U [K, d]`` both trained, so an update on one prompt moves every other prompt that
shares answer directions (d = 16, K = 16).  Each prompt has exactly one correct answer ``c_x``.

Construction of the initial success rates (the "difficulty knob"): a target ``p0_x`` is drawn
from ``Beta(a, b)`` (``difficulty`` shifts the mass towards 0); ``e_x = z_x + alpha_x * v_x``,
where ``z_x`` is a random (clustered) vector and ``v_x`` solves ``U v = T * (onehot(c_x) - 1/K)``,
so increasing ``alpha_x`` raises the correct logit against every other by the same amount;
``alpha_x`` is found by bisection so that ``pi(c_x | x) = p0_x`` exactly at step 0.

`BanditPolicy.success_prob()` gives the exact ``p_x`` at any time; a step of RL goes through
`node.algos.api` like the real trainer: one-token "completions", so ``LossInputs`` is [N, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from node.algos import api
from node.algos.config import AlgorithmConfig
from node.algos.types import AdvantageInputs, LossInputs


@dataclass
class BanditSpec:
    """Sizes of a T1 problem."""

    n_prompts: int = 1024  # N
    n_answers: int = 16  # K
    dim: int = 16  # d
    temperature: float = 1.0  # T
    n_clusters: int = 16  # prompts are drawn around this many centres (similar prompts share them)
    difficulty: float = 0.0  # 0: p0 ~ Beta(1, 1); larger pushes p0 towards 0 (Beta(1, 1 + difficulty))
    p_min: float = 0.02  # initial success rates are clipped to [p_min, 1 - p_min]


class BanditPolicy(nn.Module):
    """``softmax(E U^T / T)`` with one correct answer per prompt."""

    def __init__(self, spec: BanditSpec, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n, k, d, t = spec.n_prompts, spec.n_answers, spec.dim, spec.temperature
        self.spec = spec
        u = torch.randn(k, d, generator=g) / d**0.5
        centres = torch.randn(spec.n_clusters, d, generator=g)
        cluster = torch.randint(0, spec.n_clusters, (n,), generator=g)
        z = 0.5 * (centres[cluster] + 0.5 * torch.randn(n, d, generator=g)) / d**0.5
        correct = torch.randint(0, k, (n,), generator=g)
        p0 = torch.distributions.Beta(1.0, 1.0 + spec.difficulty).sample((n,))
        p0 = p0.clamp(spec.p_min, 1 - spec.p_min)
        target = t * (torch.nn.functional.one_hot(correct, k).float() - 1.0 / k)  # [N, K]
        v = torch.linalg.lstsq(u, target.T).solution.T  # [N, d]: U v_x = target_x
        lo, hi = torch.full((n,), -50.0), torch.full((n,), 50.0)
        for _ in range(60):  # bisection on alpha: p(c | x) is increasing in alpha
            mid = (lo + hi) / 2
            p = torch.softmax((z + mid[:, None] * v) @ u.T / t, -1).gather(1, correct[:, None])[:, 0]
            lo, hi = torch.where(p < p0, mid, lo), torch.where(p < p0, hi, mid)
        self.E = nn.Parameter(z + ((lo + hi) / 2)[:, None] * v)
        self.U = nn.Parameter(u)
        self.register_buffer("correct", correct)
        self.register_buffer("cluster", cluster)
        self.register_buffer("p0", p0)

    def logits(self, prompts: Tensor | None = None) -> Tensor:
        e = self.E if prompts is None else self.E[prompts]
        return e @ self.U.T / self.spec.temperature

    @torch.no_grad()
    def success_prob(self, prompts: Tensor | None = None) -> Tensor:
        """Exact ``p_x = pi(c_x | x)`` for the given prompts (all by default)."""
        idx = torch.arange(self.spec.n_prompts) if prompts is None else prompts
        return torch.softmax(self.logits(idx), -1).gather(1, self.correct[idx][:, None])[:, 0]

    @torch.no_grad()
    def sample(self, prompts: Tensor, g: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``g`` answers per prompt: answers [len(prompts) * g] and their behaviour log-probs."""
        logp = torch.log_softmax(self.logits(prompts), -1)
        answers = torch.multinomial(logp.exp(), g, replacement=True, generator=gen)  # [P, g]
        return answers.reshape(-1), logp.gather(1, answers).reshape(-1)


def noisy_rewards(
    correct: Tensor, gen: torch.Generator, sigma: float, outlier_p: float, outlier_scale: float
) -> Tensor:
    """Continuous reward ``1[correct] + N(0, sigma^2) + outlier``, outliers ``+-outlier_scale``
    with probability ``outlier_p`` (symmetric, so the true mean stays ``p_x``)."""
    r = correct.float() + sigma * torch.randn(correct.shape, generator=gen)
    hit = torch.rand(correct.shape, generator=gen) < outlier_p
    sign = torch.where(torch.rand(correct.shape, generator=gen) < 0.5, -1.0, 1.0)
    return r + hit.float() * sign * outlier_scale


@dataclass
class BanditBatch:
    """One step's samples: rows are (prompt, answer) pairs, grouped by prompt."""

    prompts: Tensor  # [N] long prompt index of each row
    answers: Tensor  # [N] long sampled answer
    behavior_logprobs: Tensor  # [N] log pi(answer | prompt) when sampled
    group_ids: Tensor  # [N] long
    correct: Tensor  # [N] bool
    rewards: Tensor  # [N] float


def sample_batch(
    policy: BanditPolicy,
    prompts: Tensor,
    g: int,
    gen: torch.Generator,
    noise: tuple[float, float, float] | None = None,
) -> BanditBatch:
    """Sample ``g`` answers for each prompt; binary rewards, or noisy ones if ``noise`` =
    (sigma, outlier_p, outlier_scale)."""
    answers, blp = policy.sample(prompts, g, gen)
    rows = prompts.repeat_interleave(g)
    correct = answers == policy.correct[rows]
    rewards = correct.float() if noise is None else noisy_rewards(correct, gen, *noise)
    group_ids = torch.arange(len(prompts)).repeat_interleave(g)
    return BanditBatch(rows, answers, blp, group_ids, correct, rewards)


def train_step(
    policy: BanditPolicy, opt: torch.optim.Optimizer, batch: BanditBatch, cfg: AlgorithmConfig
) -> dict[str, float]:
    """Advantages and loss through `node.algos.api`; one optimizer step.  Returns metrics,
    including the advantages' effective-gradient share (rows with a non-zero advantage)."""
    out = api.advantages_with_keep(
        AdvantageInputs(rewards=batch.rewards, group_ids=batch.group_ids, correct=batch.correct), cfg
    )
    keep = out.keep
    logp = torch.log_softmax(policy.logits(batch.prompts[keep]), -1).gather(1, batch.answers[keep][:, None])
    n = int(keep.sum())
    inputs = LossInputs(
        policy_logprobs=logp,
        old_logprobs=logp.detach(),
        behavior_logprobs=batch.behavior_logprobs[keep][:, None],
        advantages=out.advantages[keep][:, None],
        mask=torch.ones(n, 1),
        global_tokens=float(n),
        global_seqs=float(n),
        max_len=1,
    )
    loss = api.policy_loss(inputs, cfg)
    opt.zero_grad(set_to_none=True)
    loss.loss.backward()
    opt.step()
    return {
        "loss": float(loss.loss.detach()),
        "nonzero_adv": float((out.advantages[keep] != 0).float().mean()),
    }
