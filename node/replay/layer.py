"""`ReplayLayer`: the one object the node asks what to generate, with what G, and what to replay.

The node calls, each step:
- `plan(step, n, round)` -> [(prompt, G)]: which prompts to generate for and how many completions
  each (selection, node/replay/select.py, then allocation, node/replay/allocate.py);
- `extra(groups)` -> [dG]: a second stage for hard prompts (`allocate=dars`), zeros otherwise;
- `observe(groups, step, local)`: every scored group, ours (weight 1) and admitted peers' (weight
  `rho`), updates the prompt's Beta posterior (node/replay/difficulty.py), the calibration score
  and the predictor's references (node/replay/predictor.py);
- `keep(groups, ...)` and `replay(k, ...)`: recent local groups with a learning signal are stored
  with their behaviour log-probs and handed back, up to `replay_fraction` of a batch (DOTS-RR);
  the trainer's off-policy corrections (`algorithm.is_level`, `is_cap`, ...) then apply to them,
  since they carry the older `policy_version` that sampled them.

With `select=uniform, allocate=uniform, replay_fraction=0` (the defaults), `plan` returns exactly
the prompts `PromptSampler` draws with G each, so the node trains as it did before this layer; the
estimates are still kept and logged (they cost no generation).

Every random choice comes from a generator seeded by (seed, step, round), so a resumed run makes
the choices an uninterrupted one would have made; `state_dict()` holds the estimates, the
calibration sums, the selector's state, the predictor's references and the replay buffer.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from node.records import Group, Prompt
from node.replay.allocate import allocate, dars_extra, fit_to_budget
from node.replay.buffer import BufferConfig, ReplayBuffer, local_entry
from node.replay.config import ReplayConfig
from node.replay.difficulty import Calibration, DifficultyTable
from node.replay.predictor import PassRatePredictor
from node.replay.select import View, build_selector
from node.sampler import PromptSampler

HIST_BINS = 5


def success_fraction(group: Group, signal: str | None = "correctness") -> float:
    """Share of the group's completions that succeed: the `signal` component (binary rewards are
    0/1; a graded one counts as its value, clipped to [0, 1]), or the total reward."""
    values = group.signal(signal)
    return sum(min(max(v, 0.0), 1.0) for v in values) / len(values)


class ReplayLayer:
    def __init__(self, cfg: ReplayConfig, sampler: PromptSampler, group_size: int, seed: int,
                 model_id: str = "", signal: str | None = "correctness") -> None:  # fmt: skip
        self.cfg, self.sampler, self.group_size, self.seed = cfg, sampler, group_size, seed
        self.model_id, self.signal = model_id, signal
        self.table = DifficultyTable(cfg.prior, cfg.decay, cfg.rho)
        self.predictor = (
            PassRatePredictor(cfg.predictor_refs, cfg.predictor_temperature, cfg.predictor_top_k)
            if cfg.predictor == "ngram"
            else None
        )
        self.calibration = Calibration()
        self.selector = build_selector(cfg)
        self.buffer = ReplayBuffer(
            BufferConfig(
                cfg.capacity, max_age_s=None, max_version_lag=cfg.max_version_lag, max_uses=cfg.max_uses
            )
        )
        self.totals: Counter[str] = Counter()  # generated, replayed, retired_skips
        self.step_counts: Counter[str] = Counter()  # this step's, reset by `metrics`
        self._stage1: int | None = None  # dars: the first stage's G of the current plan

    # -- estimates -----------------------------------------------------------------------------
    def predicted(self, prompts: list[Prompt]) -> list[float]:
        """Pass rates of prompts never observed: the predictor's, else the prior mean."""
        a0, b0 = self.cfg.prior
        out = (
            self.predictor.predict([p.question for p in prompts]) if self.predictor else [None] * len(prompts)
        )
        return [a0 / (a0 + b0) if p is None else p for p in out]

    def means(self, prompts: list[Prompt]) -> list[float]:
        unseen = [p for p in prompts if p.prompt_id not in self.table]
        guess = dict(zip((p.prompt_id for p in unseen), self.predicted(unseen)))
        return [
            guess[p.prompt_id] if p.prompt_id in guess else self.table.get(p.prompt_id).mean for p in prompts
        ]

    def _start(self, p: float) -> tuple[float, float]:
        """The prior of an unseen prompt whose predicted pass rate is p: worth `predict_strength`."""
        a0, b0 = self.cfg.prior
        k = self.cfg.predict_strength if self.predictor is not None else 0.0
        return a0 + k * p, b0 + k * (1 - p)

    def retired(self, prompt: Prompt) -> bool:
        est = self.table.get(prompt.prompt_id)
        if est is None or est.evidence < self.cfg.retire_evidence:
            return False
        solved, hopeless = self.cfg.retire_solved, self.cfg.retire_hopeless
        return (solved is not None and est.mean >= solved) or (hopeless is not None and est.mean <= hopeless)

    # -- what to generate ----------------------------------------------------------------------
    def plan(self, step: int, n: int, round: int = 0) -> list[tuple[Prompt, int]]:
        if self.cfg.select == "uniform":
            prompts = self.sampler.sample(step, n, round)
        else:
            prompts = self._select(step, n, round)
        return list(zip(prompts, self._sizes(prompts)))

    def _select(self, step: int, n: int, round: int) -> list[Prompt]:
        rng = random.Random(f"select:{self.seed}:{step}:{round}")
        want, seen, candidates, skipped = n * self.cfg.candidates, set(), [], []
        for _ in range(4):  # a few draws, in case retirement empties most of them
            for p in self.sampler.draw(rng, want):
                if p.prompt_id in seen:
                    continue
                seen.add(p.prompt_id)
                if self.retired(p) and rng.random() >= self.cfg.revisit:
                    self.step_counts["retired_skips"] += 1
                    skipped.append(p)
                    continue
                candidates.append(p)
            if len(candidates) >= want:
                break
        if len(candidates) < n:  # almost everything retired: retired prompts rather than none
            candidates += skipped[: n - len(candidates)]
        if len(candidates) < n:  # a task smaller than a batch: repeats
            candidates += self.sampler.draw(rng, n - len(candidates))
        means = dict(zip((p.prompt_id for p in candidates), self.means(candidates)))
        starts = {pid: self._start(m) for pid, m in means.items() if pid not in self.table}
        view = View(
            mean=lambda p: means[p.prompt_id],
            draw=lambda p, r: self.table.thompson(p.prompt_id, r, starts.get(p.prompt_id)),
        )
        return self.selector.pick(candidates, n, view, rng)

    def _sizes(self, prompts: list[Prompt]) -> list[int]:
        name, g, n = self.cfg.allocate, self.group_size, len(prompts)
        if name == "uniform" or n == 0:
            return [g] * n
        lo, hi = self.cfg.min_group, max(self.cfg.max_group, g)
        if name == "dars":
            self._stage1 = max(lo, int(n * g * self.cfg.dars_stage1) // n)
            return [self._stage1] * n
        return allocate(name, self.means(prompts), n * g, lo, hi)

    def extra(self, groups: list[Group]) -> list[int]:
        """dars: extra completions per group from its first-stage success, within the budget."""
        if self.cfg.allocate != "dars" or not groups or self._stage1 is None:
            return [0] * len(groups)
        n1 = self._stage1
        acc = [success_fraction(g, self.signal) for g in groups]
        want = dars_extra(acc, n1, max(self.cfg.max_group, self.group_size), self.cfg.dars_schedule)
        return fit_to_budget(want, max(0, len(groups) * (self.group_size - n1)))

    # -- evidence ------------------------------------------------------------------------------
    def observe(self, groups: list[Group], step: int, local: bool = True) -> None:
        """Fold scored groups into the estimates; local groups are also scored for calibration
        and fed to the selector, and count as generated completions."""
        unseen = [g.prompt for g in groups if g.prompt.prompt_id not in self.table]
        guess = dict(zip((p.prompt_id for p in unseen), self.predicted(unseen)))
        observed = []
        for g in groups:
            pid, n = g.prompt.prompt_id, len(g.completions)
            s = success_fraction(g, self.signal)
            est = self.table.get(pid)
            before = est.mean if est is not None else guess[pid]
            if local:
                self.calibration.record(before, s, n, unseen=est is None)
                observed.append((before, s))
                self.step_counts["generated"] += n
            after = self.table.observe(
                pid, s * n, n, step, local, None if est is not None else self._start(before)
            )
            if self.predictor is not None:
                self.predictor.update(pid, g.prompt.question, after.mean)
        if local:
            self.selector.update(observed)

    def observe_counts(self, prompt: Prompt, successes: int, n: int, step: int) -> None:
        """A peer's announced outcome of one of its groups (an outcome summary, not fetched):
        peer evidence, weighted `rho` as an admitted peer group is."""
        est = self.table.get(prompt.prompt_id)
        start = None if est is not None else self._start(self.predicted([prompt])[0])
        after = self.table.observe(prompt.prompt_id, float(successes), n, step, False, start)
        if self.predictor is not None:
            self.predictor.update(prompt.prompt_id, prompt.question, after.mean)

    # -- rollout replay ------------------------------------------------------------------------
    def keep(self, groups: list[Group], step: int, now_ms: int, tokenizer_hash: str = "") -> None:
        """Store this step's fresh local groups that carry a signal (replay on only)."""
        if self.cfg.replay_fraction <= 0:
            return
        for i, g in enumerate(groups):
            if g.has_signal(self.signal):
                version = g.completions[0].policy_version
                self.buffer.add(local_entry(g, version, now_ms, self.model_id, tokenizer_hash, step, i))

    def replay_count(self, n: int) -> int:
        """Groups of an `n`-group batch to take from the buffer (at least one stays fresh)."""
        return min(round(self.cfg.replay_fraction * n), n - 1)

    def replay(self, k: int, step: int, version: int, now_ms: int) -> list[Group]:
        if k <= 0:
            return []
        rng = random.Random(f"replay:{self.seed}:{step}")
        out = [e.group for e in self.buffer.replay(k, rng, now_ms, version)]
        self.step_counts["replayed"] += len(out)
        return out

    # -- what is shown -------------------------------------------------------------------------
    def histogram(self) -> list[float]:
        """Share of observed prompts per estimated pass-rate bin [0, .2), ..., [.8, 1]."""
        counts = [0] * HIST_BINS
        for est in self.table.table.values():
            counts[min(int(est.mean * HIST_BINS), HIST_BINS - 1)] += 1
        total = sum(counts) or 1
        return [c / total for c in counts]

    def metrics(self, trained: list[Group]) -> dict[str, float]:
        """This step's replay/* metrics (`trained`: every group the step trained on)."""
        out = self.calibration.metrics() | self.selector.metrics()
        hist = self.histogram()
        out |= {f"replay/p_bin{i}": h for i, h in enumerate(hist)}
        sig = [g.has_signal(self.signal) for g in trained]
        out |= {
            "replay/known_prompts": float(len(self.table)),
            "replay/nonzero_share": sum(sig) / len(sig) if sig else 0.0,
            "replay/signal_completions": sum(len(g.completions) for g, x in zip(trained, sig) if x)
            / max(1, sum(len(g.completions) for g in trained)),
            "replay/replayed": float(self.step_counts["replayed"]),
            "replay/replay_share": self.step_counts["replayed"] / len(trained) if trained else 0.0,
            "replay/generated": float(self.step_counts["generated"]),
            "replay/retired_skips": float(self.step_counts["retired_skips"]),
            "replay/buffer": float(len(self.buffer)),
        }
        self.totals.update(self.step_counts)
        self.step_counts = Counter()
        return out

    def status(self) -> dict:
        s = self.calibration.sums
        return {
            "select": self.cfg.select, "allocate": self.cfg.allocate, "replay_fraction": self.cfg.replay_fraction,
            "known_prompts": len(self.table), "histogram": self.histogram(),
            "brier": s["brier"] / s["n"] if s["n"] else None,
            "brier_global": s["brier_global"] / s["n"] if s["n"] else None,
            "generated": self.totals["generated"], "replayed": self.totals["replayed"], "buffer": len(self.buffer),
        }  # fmt: skip

    # -- checkpoint state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "table": self.table.state_dict(),
            "calibration": self.calibration.state_dict(),
            "selector": self.selector.state_dict(),
            "predictor": self.predictor.state_dict() if self.predictor else None,
            "buffer": self.buffer.state_dict(),
            "totals": dict(self.totals),
        }

    def load_state_dict(self, state: dict, find_prompt: Callable[[str, str], Prompt | None]) -> None:
        self.table.load_state_dict(state["table"])
        self.calibration.load_state_dict(state["calibration"])
        self.selector.load_state_dict(state["selector"])
        if self.predictor is not None and state.get("predictor") is not None:
            self.predictor.load_state_dict(state["predictor"])
        self.buffer.load_state_dict(state["buffer"], find_prompt)
        self.totals = Counter({str(k): int(v) for k, v in state["totals"].items()})
