"""Prompt selection.  The prompts of step `s` are a pure function of (seed, s), so a resumed
run draws exactly the batch it would have drawn without the interruption."""

from __future__ import annotations

import random

from node.records import Prompt
from node.tasks.base import Task


class PromptSampler:
    def __init__(self, tasks: list[Task], weights: list[float], seed: int):
        self.tasks = tasks
        self.weights = weights
        self.seed = seed

    def sample(self, step: int, n: int, round: int = 0) -> list[Prompt]:
        """`n` prompts for `step`; `round` > 0 draws the extra batches of dynamic sampling."""
        return self.draw(random.Random(f"prompts:{self.seed}:{step}:{round}"), n)

    def draw(self, rng: random.Random, n: int) -> list[Prompt]:
        """`n` prompts from `rng`: a task by weight, then a uniform index into it."""
        out = []
        for _ in range(n):
            task = rng.choices(self.tasks, weights=self.weights)[0]
            out.append(task.prompt(rng.randrange(len(task))))
        return out

    def state_dict(self) -> dict:
        """Stateless by design (a pure function of seed and step); the seed is kept so that a
        resume under another seed is caught."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint sampler seed {state.get('seed')} != configured seed {self.seed}")
