"""F1 experiments on T2 (tiny GPT on graded addition) on the node's own trainer.  One seed per
call, JSON-able results.

Common loop (`rl_run`): each step draws `PROMPTS` training problems of `adapter.ToyAddition`
(levels uniform), samples `G` completions with `adapter.ToyEngine` (from the policy itself, or
from a copy of the weights ``lag`` steps old), scores them, computes advantages through
`api.advantages_with_keep`, and hands the rows to `node/trainer.py` `Trainer.update`: one
epoch of `MINIBATCHES` shuffled mini-batches, one Adam step each (so PPO ratios leave 1 and
clipping acts).  Warm starts are cached per seed in the output folder.

Scoring: correctness is the node's (`node/tasks/rewards.py` through `node/scoring.py`; see the
adapter for how it reads the toy's answers); the format component of the GDPO experiment is
the toy's own (`seqmodel.score`: exactly ``>`` + digits + EOS), since the node's `format`
reward wants `<answer>` tags the toy vocabulary cannot write.

What the node's trainer cannot express, and the earlier harness (its own `Trainer`, removed)
could: PPO anchored on the behaviour log-probs instead of a proximal pass (the lag experiment's
``ppo`` arm), a token filter outside the algorithm config (the entropy experiment's
``bottom80`` arm), and a lag of a fraction of a step (the node versions weights per step, so
lags now count steps of `MINIBATCHES` optimizer steps).  Those arms are gone; their results in
docs/experiments.md are marked as measured on the earlier harness.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.toy.adapter import ToyAddition, ToyEngine, ToyLM, ToyRenderer, warm_model
from benchmarks.toy.seqmodel import LEVELS, MAX_NEW, PAD, GPTConfig, TinyGPT, pass_at_k, score
from node.algos import api
from node.algos.config import AlgorithmConfig
from node.algos.types import AdvantageInputs
from node.config import TrainerConfig
from node.records import Completion, Group, SamplingParams
from node.scoring import score_groups
from node.trainer import Trainer

PROMPTS, G, MINIBATCHES, LR = 8, 8, 4, 3e-4  # 4 optimizer steps per batch so PPO ratios leave 1
LAG_MINIBATCHES = 4
SAMPLING = SamplingParams(MAX_NEW, temperature=1.0)


def node_trainer(net: TinyGPT, cfg: AlgorithmConfig, rows: int, minibatches: int, seed: int) -> Trainer:
    """The node's `Trainer` on a toy model: Adam (AdamW without decay) lr `LR`, betas (0.9, 0.99),
    grad clip 1, one epoch of `minibatches` mini-batches of `rows // minibatches` rows."""
    tcfg = TrainerConfig(lr=LR, grad_clip=1.0, ppo_epochs=1, mini_batch_size=max(1, rows // minibatches),
                         micro_batch_size=max(64, rows))  # fmt: skip
    req = api.requirements(cfg)
    return Trainer(ToyLM(net), tcfg, cfg, req, PAD, torch.device("cpu"), 1.0, MAX_NEW, None, seed)


class Toy:
    """One seed's task, engine and renderer around a warm-started model."""

    def __init__(self, seed: int, cache: Path, sample_seed: int) -> None:
        self.net = warm_model(seed, GPTConfig(), cache)
        self.task = ToyAddition(seed)
        self.renderer = ToyRenderer()
        self.engine = ToyEngine(self.net, sample_seed)
        self.gen = torch.Generator().manual_seed(sample_seed + 1)

    def groups(self, n: int, with_format: bool = False) -> list[Group]:
        idx = torch.randint(0, len(self.task), (n,), generator=self.gen).tolist()
        groups = self.engine.generate(self.renderer.requests([self.task.prompt(i) for i in idx]), G, SAMPLING)
        groups = score_groups(groups, {self.task.name: self.task}, {"correctness": 1.0}, MAX_NEW)
        return [with_toy_format(g) for g in groups] if with_format else groups

    def eval(self, samples: int = 4, seed: int = 70_000) -> dict[str, float]:
        from benchmarks.toy.adapter import heldout_pass

        return heldout_pass(self.engine, self.renderer, self.task, samples, seed)


def with_toy_format(g: Group) -> Group:
    """Adds the toy's format component (``>`` + digits + EOS) to every completion; reward = sum."""
    comps = []
    for c in g.completions:
        row = torch.tensor((c.completion_ids + [PAD] * MAX_NEW)[:MAX_NEW])
        fmt = float(score(_problem(g), row[None])[1][0])
        parts = {"correctness": c.reward_components["correctness"], "format": fmt}
        comps.append(c.scored(sum(parts.values()), parts))
    return g.replace_completions(comps)


def _problem(g: Group):
    from benchmarks.toy.adapter import parse_question
    from benchmarks.toy.seqmodel import Problems

    a, b = parse_question(g.prompt.question)
    return Problems(torch.tensor([a]), torch.tensor([b]), torch.tensor([0]))


def advantage_inputs(groups: list[Group], with_format: bool) -> tuple[list[Completion], AdvantageInputs]:
    comps = [c for g in groups for c in g.completions]
    names = ["correctness", "format"] if with_format else ["correctness"]
    parts = torch.tensor([[c.reward_components[n] for n in names] for c in comps])
    return comps, AdvantageInputs(
        rewards=parts.sum(1),
        group_ids=torch.tensor([i for i, g in enumerate(groups) for _ in g.completions]),
        components=parts,
        component_weights=torch.ones(len(names)),
        correct=parts[:, 0] > 0.5,
        lengths=torch.tensor([float(len(c.completion_ids)) for c in comps]),
    )


def rl_run(
    seed: int,
    steps: int,
    cfg: AlgorithmConfig,
    cache: Path,
    lag: int = 0,
    with_format: bool = False,
    on_batch=None,
    minibatches: int = MINIBATCHES,
) -> tuple[Toy, dict]:
    """The common RL loop; returns the toy (its trained model) and per-step curves.  With
    ``lag`` = k the sampler holds the weights of k steps ago (its rows carry that version)."""
    toy = Toy(seed, cache, 20_000 + seed)
    torch.manual_seed(seed)
    trainer = node_trainer(toy.net, cfg, PROMPTS * G, minibatches, seed)
    history = [copy.deepcopy(toy.net.state_dict())] if lag else []
    lagged = copy.deepcopy(toy.net) if lag else None
    curves: dict[str, list[float]] = {
        "reward": [],
        "correct": [],
        "format": [],
        "entropy": [],
        "grad_norm": [],
    }
    for _ in range(steps):
        if lagged is not None:
            lagged.load_state_dict(history[max(0, len(history) - 1 - lag)])
            toy.engine.net = lagged
            toy.engine.sync_weights(max(0, trainer.version - lag))
        groups = toy.groups(PROMPTS, with_format)
        comps, inputs = advantage_inputs(groups, with_format)
        out = api.advantages_with_keep(inputs, cfg)
        if on_batch is not None:
            on_batch(groups, inputs)
        keep = out.keep.tolist()
        m = trainer.update([c for c, k in zip(comps, keep) if k], out.advantages[out.keep])
        toy.engine.sync_weights(trainer.version)
        if lag:
            history = (history + [copy.deepcopy(toy.net.state_dict())])[-(lag + 1) :]
        curves["reward"].append(float(inputs.rewards.mean()))
        curves["correct"].append(float(inputs.components[:, 0].mean()))
        curves["format"].append(float(inputs.components[:, 1].mean()) if with_format else float("nan"))
        curves["entropy"].append(m.get("entropy", float("nan")))
        curves["grad_norm"].append(m.get("grad_norm", float("nan")))
        for k in ("lr_scale", "clip_frac", "offpolicy/is_weight", "offpolicy/is_masked",
                  "offpolicy/m2po_masked", "offpolicy/logratio_sq"):  # fmt: skip
            if k in m:
                curves.setdefault(k, []).append(m[k])
    if lagged is not None:
        toy.engine.net = toy.net
    return toy, curves


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

    def on_batch(groups: list[Group], inputs: AdvantageInputs) -> None:
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


def heldout_samples(toy: Toy, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """[P, n] correctness of `n` samples per held-out problem, and [P] levels."""
    saved, toy.engine.gen = toy.engine.gen, torch.Generator().manual_seed(seed)
    prompts = toy.task.heldout()
    groups = toy.engine.generate(toy.renderer.requests(prompts), n, SAMPLING)
    toy.engine.gen = saved
    groups = score_groups(groups, {toy.task.name: toy.task}, {"correctness": 1.0}, MAX_NEW)
    return torch.tensor([g.rewards for g in groups]) > 0.5, torch.tensor(
        [p.metadata["level"] for p in prompts]
    )


def run_w_reinforce(seed: int, steps: int, cache: Path, advantage: str, n_eval: int) -> dict:
    """Train with `advantage` (or not at all for "base"), then pass@k on the held-out set."""
    if advantage == "base":
        toy, c = Toy(seed, cache, 20_000 + seed), {}
    else:
        toy, c = rl_run(seed, steps, AlgorithmConfig(advantage=advantage), cache)
    correct, levels = heldout_samples(toy, n_eval, 30_000 + seed)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n_eval]
    by_level = {k: {f"L{lv}": float(pass_at_k(correct[levels == lv], k).mean()) for lv in LEVELS} for k in ks}
    return {
        "curves": c,
        "pass_at_k": {k: sum(v.values()) / len(v) for k, v in by_level.items()},
        "pass_at_k_by_level": by_level,
    }


def run_entropy_mask(seed: int, steps: int, cache: Path, variant: str) -> dict:
    """full gradient or the top-20% entropy tokens (``entropy_mask_rho=0.2``, the project's mask).
    The earlier harness's bottom-80% arm (a token filter outside the algorithm config) is not
    expressible on the node's trainer."""
    if variant not in ("full", "top20"):
        raise ValueError(f"variant {variant!r}: the node's trainer runs 'full' and 'top20' only")
    rho = {"entropy_mask_rho": 0.2} if variant == "top20" else {}
    cfg = AlgorithmConfig(advantage="grpo", clip_high=0.28, **rho)
    toy, c = rl_run(seed, steps, cfg, cache)
    return {"curves": c, "correct_end": tail(c["correct"]), "eval": toy.eval(seed=40_000 + seed)}


LAG_METHODS: dict[str, dict] = {  # name: AlgorithmConfig overrides (the ratio anchor is the proximal pass)
    "decoupled": {"is_level": "token", "is_cap": 5.0, "is_mode": "mask"},
    "tis": {"is_level": "token", "is_cap": 2.0, "is_mode": "truncate"},
    "m2po": {"is_level": "token", "is_cap": 5.0, "is_mode": "mask", "m2po_tau": 0.04},
    "ess_lr": {"is_level": "sequence", "is_cap": 8.0, "is_mode": "truncate", "ess_lr": True},
}

# Diagnostics for why `decoupled` trailed plain PPO under lag (docs/experiments.md section 7):
# no behaviour weight at all, the decoupled loss without its cap, and with sequence weights.
LAG_DIAG_METHODS: dict[str, dict] = {
    "prox_no_is": {},
    "decoupled_nocap": {"is_level": "token"},
    "decoupled_seq": {"is_level": "sequence", "is_cap": 5.0, "is_mode": "mask"},
}


def run_lag(seed: int, steps: int, cache: Path, method: str, lag: int) -> dict:
    """`lag` in steps (policy versions) of `LAG_MINIBATCHES` optimizer steps each."""
    cfg = AlgorithmConfig(advantage="grpo", **{**LAG_METHODS, **LAG_DIAG_METHODS}[method])
    warm = Toy(seed, cache, 20_000 + seed).eval(seed=seed)
    toy, c = rl_run(seed, steps, cfg, cache, lag=lag, minibatches=LAG_MINIBATCHES)
    gn = torch.tensor(c["grad_norm"])
    return {
        "curves": c,
        "eval_warm": warm,
        "correct_end": tail(c["correct"]),
        "eval": toy.eval(seed=50_000 + seed),
        "grad_norm_var": float(gn.var()),
    }


def run_dynamic_sampling(seed: int, steps: int, cache: Path, dynamic: bool, target: float = 0.7) -> dict:
    """DAPO dynamic sampling on T2: rounds of `PROMPTS` problems x G, `api.keep_groups` drops
    zero-variance groups, `api.should_generate_more` decides on another round (cap 10); train
    on the first `PROMPTS` kept groups.  The first round of each step is an unbiased sample of
    the policy, so its pass rate is the progress measure (kept groups are not)."""
    cfg = AlgorithmConfig(advantage="grpo", dynamic_sampling=dynamic)
    toy = Toy(seed, cache, 60_000 + seed)
    torch.manual_seed(seed)
    trainer = node_trainer(toy.net, cfg, PROMPTS * G, MINIBATCHES, seed)
    first_pass, eff, rollouts, curve_rollouts = [], [], 0, []
    steps_to_target = rollouts_to_target = None
    for step in range(steps):
        kept: list[Group] = []
        rounds = 0
        while True:
            groups = toy.groups(PROMPTS)
            rollouts += PROMPTS * G
            if rounds == 0:
                first_pass.append(sum(sum(g.rewards) for g in groups) / (PROMPTS * G))
            rounds += 1
            kept += [g for g in groups if g.has_signal("correctness")] if dynamic else groups
            if not dynamic or not api.should_generate_more(len(kept), PROMPTS, rounds, cfg.max_gen_rounds):
                break
        batch = kept[:PROMPTS]
        curve_rollouts.append(rollouts)
        if not batch:
            continue
        eff.append(sum(g.has_signal("correctness") for g in batch) / len(batch))
        comps, inputs = advantage_inputs(batch, with_format=False)
        out = api.advantages_with_keep(inputs, cfg)
        trainer.update([c for c, k in zip(comps, out.keep.tolist()) if k], out.advantages[out.keep])
        toy.engine.sync_weights(trainer.version)
        if steps_to_target is None and len(first_pass) >= 10 and sum(first_pass[-10:]) / 10 >= target:
            steps_to_target, rollouts_to_target = step + 1, rollouts
    return {
        "curves": {"first_pass": first_pass, "rollouts": curve_rollouts},
        "eff_grad_ratio": sum(eff) / max(len(eff), 1),
        "steps_to_target": steps_to_target,
        "rollouts_to_target": rollouts_to_target,
        "rollouts": rollouts,
        "target": target,
        "eval": toy.eval(seed=70_000 + seed),
    }
