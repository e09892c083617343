"""Collecting one step's scored groups, with what the configured algorithm requires:
G+1 samples (MC-GRPO), a greedy baseline per prompt (ReMax), dynamic sampling rounds that
drop zero-variance groups and draw more prompts until the batch is full (DAPO), and the
per-completion tensors that reward shaping and the advantage estimators read.

Which prompts, and how many completions each, come from the replay layer (`ReplayLayer.plan`,
and `extra` for a second stage); every group generated, kept or not, is shown to it (`observe`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from node.algos.api import keep_groups, row_keep, shape_rewards, should_generate_more
from node.algos.types import AdvantageInputs, Requirements
from node.config import Config
from node.records import Completion, Group, Prompt, SamplingParams
from node.replay.layer import ReplayLayer
from node.rollout import Renderer, RolloutEngine
from node.scoring import score_groups
from node.tasks.base import Task


@dataclass
class Collected:
    groups: list[Group]  # the groups trained on
    baselines: dict[str, float] = field(default_factory=dict)  # prompt_id -> greedy reward (ReMax)
    rounds: int = 1  # generation rounds used (dynamic sampling)
    dropped_groups: int = 0  # zero-variance groups dropped by dynamic sampling
    gen_seconds: float = 0.0
    gen_tokens: int = 0


def generate_sized(engine: RolloutEngine, renderer: Renderer, planned: list[tuple[Prompt, int]],
                   sampling: SamplingParams) -> list[Group]:  # fmt: skip
    """One group per (prompt, G), in order; one engine call per distinct G."""
    by_size: dict[int, list[int]] = {}
    for i, (_, g) in enumerate(planned):
        by_size.setdefault(g, []).append(i)
    out: list[Group | None] = [None] * len(planned)
    for g, idx in by_size.items():
        made = engine.generate(renderer.requests([planned[i][0] for i in idx]), g, sampling)
        for i, group in zip(idx, made):
            out[i] = group
    return out  # type: ignore[return-value]


def _generate(engine, renderer, layer: ReplayLayer, tasks, cfg: Config, step: int, rnd: int, n: int, extra: int,
              sampling) -> list[Group]:  # fmt: skip
    """Plan, generate and score `n` groups (`extra` more completions each: MC-GRPO's G+1); a
    second stage where the layer asks for one (dars); every group is shown to the layer."""
    planned = [(p, g + extra) for p, g in layer.plan(step, n, rnd)]
    score = functools.partial(
        score_groups, tasks=tasks, weights=cfg.tasks.rewards, max_tokens=cfg.rollout.max_new_tokens
    )
    groups = score(generate_sized(engine, renderer, planned, sampling))
    more = layer.extra(groups)
    if any(more):
        second = score(
            generate_sized(engine, renderer, [(g.prompt, m) for g, m in zip(groups, more) if m], sampling)
        )
        it = iter(second)
        groups = [
            g.replace_completions([*g.completions, *next(it).completions]) if m else g
            for g, m in zip(groups, more)
        ]
    layer.observe(groups, step)
    return groups


def filter_signal(cfg: Config) -> str | None:
    """The reward component a zero-variance filter compares (None: the weighted total)."""
    return "correctness" if cfg.algorithm.filter_signal == "correctness" else None


def collect(
    engine: RolloutEngine,
    renderer: Renderer,
    layer: ReplayLayer,
    tasks: dict[str, Task],
    cfg: Config,
    req: Requirements,
    step: int,
    sampling: SamplingParams,
    n_prompts: int | None = None,
) -> Collected:
    """`n_prompts` groups (default `rollout.prompts_per_step`), generated and scored locally."""
    t0 = time.perf_counter()
    algo = cfg.algorithm
    target = cfg.rollout.prompts_per_step if n_prompts is None else n_prompts
    kept: list[Group] = []
    dropped = 0
    rounds = 0
    while True:
        groups = _generate(engine, renderer, layer, tasks, cfg, step, rounds, target, req.extra_rollouts_per_group,
                           sampling)  # fmt: skip
        rounds += 1
        if not algo.dynamic_sampling:
            kept = groups
            break
        signal = filter_signal(cfg)
        rewards = torch.tensor([v for g in groups for v in g.signal(signal)])
        ids = torch.tensor([i for i, g in enumerate(groups) for _ in g.completions])
        mask = keep_groups(rewards, ids)
        good = [g for i, g in enumerate(groups) if bool(mask[ids == i].all())]
        dropped += len(groups) - len(good)
        kept += good
        if not should_generate_more(len(kept), target, rounds, algo.max_gen_rounds):
            break
    if algo.dynamic_sampling:
        kept = (
            kept[:target] if kept else groups
        )  # nothing had variance: train on the last round (zero advantages)
    out = Collected(kept, rounds=rounds, dropped_groups=dropped)
    if req.baseline_rewards:
        out.baselines = baseline_rewards(engine, renderer, kept, tasks, cfg)
    out.gen_seconds = time.perf_counter() - t0
    out.gen_tokens = sum(len(c.completion_ids) for g in kept for c in g.completions)
    return out


def baseline_rewards(
    engine: RolloutEngine, renderer: Renderer, groups: list[Group], tasks: dict[str, Task], cfg: Config
) -> dict[str, float]:
    """ReMax: the reward of one greedy completion per prompt, by prompt id."""
    greedy = SamplingParams(cfg.rollout.max_new_tokens, greedy=True)
    base = engine.generate(renderer.requests([g.prompt for g in groups]), 1, greedy)
    base = score_groups(base, tasks, cfg.tasks.rewards, cfg.rollout.max_new_tokens)
    return {g.prompt.prompt_id: g.completions[0].reward for g in base}


def completion_matrix(completions: list[Completion], values: list[list[float]]) -> tuple[Tensor, Tensor]:
    """Ragged per-token values -> ([N, L] right-padded with 0, [N, L] mask)."""
    width = max([len(v) for v in values] + [1])
    out = torch.zeros(len(values), width)
    mask = torch.zeros(len(values), width)
    for i, v in enumerate(values):
        out[i, : len(v)] = torch.tensor(v, dtype=torch.float32)
        mask[i, : len(v)] = 1
    return out, mask


def advantage_inputs(
    groups: list[Group],
    baselines: dict[str, float],
    cfg: Config,
    req: Requirements,
    ref_logprobs: list[list[float]] | None = None,
) -> tuple[list[Completion], AdvantageInputs, Tensor | None]:
    """Flatten groups into completions and the estimator's inputs (rewards already shaped).
    Returns the completions, the inputs, and the row mask from overlong filtering (or None)."""
    completions = [c for g in groups for c in g.completions]
    names = list(cfg.tasks.rewards)
    lengths = torch.tensor([len(c.completion_ids) for c in completions], dtype=torch.float32)
    behavior, mask = completion_matrix(completions, [c.behavior_logprobs for c in completions])
    ref = completion_matrix(completions, ref_logprobs)[0] if ref_logprobs is not None else None
    rewards = shape_rewards(
        torch.tensor([c.reward for c in completions]),
        lengths,
        cfg.rollout.max_new_tokens,
        cfg.algorithm,
        behavior_logprobs=behavior,
        ref_logprobs=ref,
        mask=mask,
    )
    n_tok = mask.sum(-1).clamp(min=1)
    inputs = AdvantageInputs(
        rewards=rewards,
        group_ids=torch.tensor([gi for gi, g in enumerate(groups) for _ in g.completions]),
        components=torch.tensor([[c.reward_components[n] for n in names] for c in completions]),
        component_weights=torch.tensor([cfg.tasks.rewards[n] for n in names]),
        correct=torch.tensor(
            [
                c.reward_components.get("correctness", 0.0) >= cfg.algorithm.correct_threshold
                for c in completions
            ]
        ),
        seq_logprobs=(behavior * mask).sum(-1) / n_tok if req.seq_logprobs else None,
        ref_seq_logprobs=(ref * mask).sum(-1) / n_tok if ref is not None else None,
        baseline_rewards=torch.tensor([baselines[c.prompt.prompt_id] for c in completions])
        if req.baseline_rewards
        else None,
        lengths=lengths,
    )
    keep = row_keep(cfg.algorithm, truncated=torch.tensor([c.truncated for c in completions]))
    return completions, inputs, keep
