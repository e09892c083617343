"""F1 experiments on T2 (tiny GPT on graded addition).  One seed per call, JSON-able results.

Common loop (`rl_run`): each step draws `PROMPTS` problems (levels uniform over 1..4), samples
`G` completions from the sampler (the policy itself, or a copy ``lag`` optimizer steps old),
scores them, computes advantages through `api.advantages_with_keep`, and hands them to
`Trainer.train_on`, which does `MINIBATCHES` optimizer steps on the batch (so PPO ratios leave
1 and clipping is active).  Warm starts are cached per seed in the output folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from benchmarks.toy.seqmodel import (
    LEVELS,
    Problems,
    Rollouts,
    TinyGPT,
    Trainer,
    make_problems,
    pass_at_k,
    pass_rates,
    sample,
    warm_start,
)
from node.algos import api
from node.algos.config import AlgorithmConfig
from node.algos.losses import high_entropy_mask
from node.algos.types import AdvantageInputs

PROMPTS, G, MINIBATCHES, LR = 8, 8, 4, 3e-4  # 4 optimizer steps per batch so PPO ratios leave 1
WARM_STEPS, WARM_STOP_AT = 3000, 0.4  # supervised warm start: cap, and mean pass rate to stop at
LAG_MINIBATCHES = 4  # lag runs: 4 optimizer steps per batch, so a lag of 128 steps is reached


def warm_model(seed: int, cache: Path) -> TinyGPT:
    path = cache / f"warm_seed{seed}.pt"
    model = TinyGPT()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model
    model = warm_start(seed, steps=WARM_STEPS, stop_at=WARM_STOP_AT)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def eval_set(seed: int, per_level: int) -> Problems:
    gen = torch.Generator().manual_seed(10_000 + seed)
    return make_problems(torch.tensor(LEVELS).repeat_interleave(per_level), gen)


def level_pass(model: TinyGPT, problems: Problems, n: int, gen: torch.Generator) -> dict[str, float]:
    c = pass_rates(model, problems, n, gen).float().mean(1)
    return {f"L{lv}": float(c[problems.level == lv].mean()) for lv in LEVELS} | {"all": float(c.mean())}


def advantage_inputs(roll: Rollouts, with_format: bool) -> AdvantageInputs:
    comps = torch.stack([roll.correct.float(), roll.format_ok.float()], 1)
    if not with_format:
        comps = comps[:, :1]
    return AdvantageInputs(
        rewards=comps.sum(1),
        group_ids=roll.group_ids,
        components=comps,
        component_weights=torch.ones(comps.shape[1]),
        correct=roll.correct,
        lengths=roll.lengths,
    )


def rl_run(
    seed: int,
    steps: int,
    cfg: AlgorithmConfig,
    cache: Path,
    lag: int = 0,
    anchor: str = "prox",
    with_format: bool = False,
    token_filter=None,
    on_batch=None,
    minibatches: int = MINIBATCHES,
) -> tuple[TinyGPT, dict]:
    """The common RL loop; returns the trained model and per-step curves."""
    model = warm_model(seed, cache)
    trainer = Trainer(model, cfg, lr=LR, keep_history=lag)
    gen = torch.Generator().manual_seed(20_000 + seed)
    torch.manual_seed(seed)
    curves: dict[str, list[float]] = {
        "reward": [],
        "correct": [],
        "format": [],
        "entropy": [],
        "grad_norm": [],
    }
    for _ in range(steps):
        levels = torch.tensor(LEVELS)[torch.randint(0, len(LEVELS), (PROMPTS,), generator=gen)]
        sampler = trainer.snapshot(lag) if lag else model
        roll = sample(sampler, make_problems(levels, gen), G, gen, version=max(0, trainer.version - lag))
        inputs = advantage_inputs(roll, with_format)
        out = api.advantages_with_keep(inputs, cfg)
        if on_batch is not None:
            on_batch(roll, inputs)
        m = trainer.train_on(
            roll, out.advantages, out.keep, minibatches, anchor=anchor, token_filter=token_filter
        )
        curves["reward"].append(float(inputs.rewards.mean()))
        curves["correct"].append(float(roll.correct.float().mean()))
        curves["format"].append(float(roll.format_ok.float().mean()))
        curves["entropy"].append(m.get("entropy_all", float("nan")))
        curves["grad_norm"].append(m.get("grad_norm", float("nan")))
        for k in (
            "lr_scale",
            "clip_frac",
            "offpolicy/is_weight",
            "offpolicy/is_masked",
            "offpolicy/m2po_masked",
            "offpolicy/logratio_sq",
        ):
            if k in m:
                curves.setdefault(k, []).append(m[k])
    return model, curves


def tail(xs: list[float], n: int = 10) -> float:
    xs = [x for x in xs[-n:] if x == x]
    return sum(xs) / max(len(xs), 1)


# --- experiments --------------------------------------------------------------------------------


def run_clip_higher(
    seed: int, steps: int, cache: Path, clip_high: float, minibatches: int = MINIBATCHES
) -> dict:
    """DAPO's clip-higher; ``minibatches`` optimizer steps per rollout batch set how far the
    ratios drift from 1, i.e. how often the clip binds (DAPO: 16 mini-batches per step)."""
    cfg = AlgorithmConfig(advantage="grpo", clip_high=clip_high, agg="token-mean")
    _, c = rl_run(seed, steps, cfg, cache, minibatches=minibatches)
    return {
        "curves": c,
        "entropy_end": tail(c["entropy"]),
        "correct_end": tail(c["correct"]),
        "clip_frac": tail(c["clip_frac"]),
    }


def run_gdpo(seed: int, steps: int, cache: Path, advantage: str) -> dict:
    """Correctness + format rewards; counts distinct advantage values per group for both
    estimators on the same batches, whichever estimator trains."""
    counts: dict[str, list[float]] = {"grpo": [], "gdpo": [], "combos": []}  # per step, mean over groups

    def distinct(values: Tensor, group_ids: Tensor) -> float:
        per = [len(torch.unique(values[group_ids == gid], dim=0)) for gid in torch.unique(group_ids)]
        return sum(per) / len(per)

    def on_batch(roll: Rollouts, inputs: AdvantageInputs) -> None:
        for name in ("grpo", "gdpo"):
            adv = api.compute_advantages(inputs, AlgorithmConfig(advantage=name))
            counts[name].append(distinct(torch.round(adv * 1e4), inputs.group_ids))
        counts["combos"].append(distinct(inputs.components, inputs.group_ids))  # the ceiling

    cfg = AlgorithmConfig(advantage=advantage)
    _, c = rl_run(seed, steps, cfg, cache, with_format=True, on_batch=on_batch)
    c.update({f"distinct_{k}": v for k, v in counts.items()})
    return {
        "curves": c,
        "distinct": {k: sum(v) / len(v) for k, v in counts.items()},
        "distinct_first10": {k: sum(v[:10]) / len(v[:10]) for k, v in counts.items()},
        "correct_end": tail(c["correct"]),
        "format_end": tail(c["format"]),
    }


def run_w_reinforce(seed: int, steps: int, cache: Path, advantage: str, n_eval: int, per_level: int) -> dict:
    """Train with `advantage` (or not at all for "base"), then pass@k on a held-out set."""
    gen = torch.Generator().manual_seed(30_000 + seed)
    problems = eval_set(seed, per_level)
    if advantage == "base":
        model, c = warm_model(seed, cache), {}
    else:
        model, c = rl_run(seed, steps, AlgorithmConfig(advantage=advantage), cache)
    correct = pass_rates(model, problems, n_eval, gen)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n_eval]
    return {
        "curves": c,
        "pass_at_k": {k: float(pass_at_k(correct, k).mean()) for k in ks},
        "pass_at_k_by_level": {k: pass_at_k_levels(correct, problems, k) for k in ks},
    }


def run_entropy_mask(seed: int, steps: int, cache: Path, variant: str) -> dict:
    """full gradient, top-20% entropy tokens (``entropy_mask_rho=0.2``, the project's mask), or
    the complement (bottom 80%): the same `high_entropy_mask`, inverted, passed as a token
    filter so the loss denominator still counts every token (as the paper's ablation)."""
    if variant == "top20":
        cfg, filt = AlgorithmConfig(advantage="grpo", clip_high=0.28, entropy_mask_rho=0.2), None
    else:
        cfg = AlgorithmConfig(advantage="grpo", clip_high=0.28)
        filt = (
            None if variant == "full" else (lambda ent, mask: mask * (1 - high_entropy_mask(ent, mask, 0.2)))
        )
    gen = torch.Generator().manual_seed(40_000 + seed)
    model, c = rl_run(seed, steps, cfg, cache, token_filter=filt)
    return {
        "curves": c,
        "correct_end": tail(c["correct"]),
        "eval": level_pass(model, eval_set(seed, 32), 4, gen),
    }


LAG_METHODS: dict[str, tuple[dict, str]] = {
    # name: (AlgorithmConfig overrides, ratio anchor)
    "ppo": ({}, "behavior"),
    "decoupled": ({"is_level": "token", "is_cap": 5.0, "is_mode": "mask"}, "prox"),
    "tis": ({"is_level": "token", "is_cap": 2.0, "is_mode": "truncate"}, "prox"),
    "m2po": ({"is_level": "token", "is_cap": 5.0, "is_mode": "mask", "m2po_tau": 0.04}, "prox"),
    "ess_lr": ({"is_level": "sequence", "is_cap": 8.0, "is_mode": "truncate", "ess_lr": True}, "prox"),
}

# Diagnostics for why `decoupled` trails `ppo` under lag (docs/experiments.md section 7):
# no behaviour weight at all, the decoupled loss without its cap, and with sequence weights.
LAG_DIAG_METHODS: dict[str, tuple[dict, str]] = {
    "prox_no_is": ({}, "prox"),
    "decoupled_nocap": ({"is_level": "token"}, "prox"),
    "decoupled_seq": ({"is_level": "sequence", "is_cap": 5.0, "is_mode": "mask"}, "prox"),
}


def run_lag(seed: int, steps: int, cache: Path, method: str, lag: int) -> dict:
    over, anchor = {**LAG_METHODS, **LAG_DIAG_METHODS}[method]
    cfg = AlgorithmConfig(advantage="grpo", **over)
    gen = torch.Generator().manual_seed(50_000 + seed)
    warm = level_pass(warm_model(seed, cache), eval_set(seed, 32), 4, torch.Generator().manual_seed(seed))
    model, c = rl_run(seed, steps, cfg, cache, lag=lag, anchor=anchor, minibatches=LAG_MINIBATCHES)
    gn = torch.tensor(c["grad_norm"])
    return {
        "curves": c,
        "eval_warm": warm,
        "correct_end": tail(c["correct"]),
        "eval": level_pass(model, eval_set(seed, 32), 4, gen),
        "grad_norm_var": float(gn.var()),
    }


def pass_at_k_levels(correct: Tensor, problems: Problems, k: int) -> dict[str, float]:
    p = pass_at_k(correct, k)
    return {f"L{lv}": float(p[problems.level == lv].mean()) for lv in LEVELS}


def select_rollouts(parts: list[tuple[Rollouts, Tensor]], max_groups: int) -> Rollouts:
    """Concatenate the kept rows (``keep`` [N] bool, whole groups) of several rollouts, group ids
    renumbered, at most ``max_groups`` groups."""
    fields = {
        "a": lambda r: r.problems.a,
        "b": lambda r: r.problems.b,
        "level": lambda r: r.problems.level,
        "tokens": lambda r: r.tokens,
        "mask": lambda r: r.mask,
        "blp": lambda r: r.behavior_logprobs,
        "c": lambda r: r.correct,
        "f": lambda r: r.format_ok,
        "t": lambda r: r.truncated,
    }
    rows: dict[str, list[Tensor]] = {k: [] for k in [*fields, "gid"]}
    n_groups = 0
    for roll, keep in parts:
        gid = torch.unique(roll.group_ids[keep], return_inverse=True)[1] + n_groups
        n_groups += len(torch.unique(gid))
        rows["gid"].append(gid)
        for k, get in fields.items():
            rows[k].append(get(roll)[keep])
    cat = {k: torch.cat(v) for k, v in rows.items()}
    take = cat["gid"] < max_groups
    cat = {k: v[take] for k, v in cat.items()}
    return Rollouts(
        problems=Problems(cat["a"], cat["b"], cat["level"]),
        tokens=cat["tokens"],
        mask=cat["mask"],
        behavior_logprobs=cat["blp"],
        group_ids=cat["gid"],
        correct=cat["c"],
        format_ok=cat["f"],
        truncated=cat["t"],
        behavior_version=parts[0][0].behavior_version,
    )


def run_dynamic_sampling(seed: int, steps: int, cache: Path, dynamic: bool, target: float = 0.7) -> dict:
    """DAPO dynamic sampling on T2: rounds of `PROMPTS` problems × G, `api.keep_groups` drops
    zero-variance groups, `api.should_generate_more` decides on another round (cap 10); train
    on the first `PROMPTS` kept groups.  The first round of each step is an unbiased sample of
    the policy, so its pass rate is the progress measure (kept groups are not)."""
    cfg = AlgorithmConfig(advantage="grpo", dynamic_sampling=dynamic)
    model = warm_model(seed, cache)
    trainer = Trainer(model, cfg, lr=LR)
    gen = torch.Generator().manual_seed(60_000 + seed)
    torch.manual_seed(seed)
    first_pass, eff, rollouts, curve_rollouts = [], [], 0, []
    steps_to_target = rollouts_to_target = None
    for step in range(steps):
        parts: list[tuple[Rollouts, Tensor]] = []
        rounds = kept = 0
        while True:
            levels = torch.tensor(LEVELS)[torch.randint(0, len(LEVELS), (PROMPTS,), generator=gen)]
            roll = sample(model, make_problems(levels, gen), G, gen)
            rollouts += len(roll.correct)
            if rounds == 0:
                first_pass.append(float(roll.correct.float().mean()))
            rounds += 1
            keep = (
                api.keep_groups(roll.correct.float(), roll.group_ids)
                if dynamic
                else torch.ones_like(roll.correct)
            )
            parts.append((roll, keep))
            kept += int(keep.sum()) // G
            if not dynamic or not api.should_generate_more(kept, PROMPTS, rounds, cfg.max_gen_rounds):
                break
        batch = select_rollouts(parts, PROMPTS)
        curve_rollouts.append(rollouts)
        if len(batch.correct) == 0:
            continue
        eff.append(float(api.keep_groups(batch.correct.float(), batch.group_ids).float().mean()))
        inputs = advantage_inputs(batch, with_format=False)
        out = api.advantages_with_keep(inputs, cfg)
        trainer.train_on(batch, out.advantages, out.keep, MINIBATCHES)
        if steps_to_target is None and len(first_pass) >= 10 and sum(first_pass[-10:]) / 10 >= target:
            steps_to_target, rollouts_to_target = step + 1, rollouts
    return {
        "curves": {"first_pass": first_pass, "rollouts": curve_rollouts},
        "eff_grad_ratio": sum(eff) / max(len(eff), 1),
        "steps_to_target": steps_to_target,
        "rollouts_to_target": rollouts_to_target,
        "rollouts": rollouts,
        "target": target,
        "eval": level_pass(model, eval_set(seed, 32), 4, torch.Generator().manual_seed(70_000 + seed)),
    }
