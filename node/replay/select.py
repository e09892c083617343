"""Prompt selection: which of a step's candidate prompts to generate for, by name (`replay.select`).

Every selector sees the candidates (drawn uniformly from the task mix, `replay.candidates` per
slot, retired prompts already removed by the layer) and a `View` of the difficulty estimates, and
returns `n` of them.  `uniform` never gets here: the layer keeps today's sampler for it, so the
batch is exactly the one the node drew before this layer existed.

- `mopps` (Qu et al. 2025, MoPPS): Thompson sampling.  Draw r ~ Beta(alpha, beta) per candidate,
  keep the n with the smallest (r - target)^2.
- `dots` (Sun et al. 2025, DOTS): score(x) = -|p_hat(x) - target|, n drawn without replacement with
  probabilities softmax(score / tau) (Gumbel top-n); tau = 1e-3 is almost greedy.
- `curriculum`: a band of estimated pass rates [c - w/2, c + w/2] whose centre c starts at
  `band_start` and moves by `band_step` toward harder prompts while the realized pass rate of the
  selected groups is above c, back toward easier ones while it is below the band.  Candidates in
  the band come first (in their random order), then the nearest to c.
- `gdro` (Prompt-GDRO; "Group Distributionally Robust Optimization-Driven RL", 2025): prompts
  binned by estimated pass rate; an adversary weights bins by an EMA of their loss L_b (the
  failure rate 1 - pass of the groups selected from the bin, a per-sample mean, which is the
  frequency-debiased loss), q_b ∝ exp(eta L_b) (the entropy-regularised best response of the
  multiplicative-weights player), mixed with `gdro_explore` of the uniform over bins; each slot
  draws a bin from q (among bins with candidates left), then a candidate of that bin.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from node.records import Prompt
from node.replay.config import ReplayConfig


@dataclass(frozen=True)
class View:
    """What a selector may ask about a prompt."""

    mean: Callable[[Prompt], float]  # estimated pass rate (posterior mean, or the prediction)
    draw: Callable[[Prompt, random.Random], float]  # a Thompson draw from its posterior


class Selector:
    """`pick` chooses; `update` sees (estimate before, realized pass rate) of the selected groups."""

    def __init__(self, cfg: ReplayConfig) -> None:
        self.cfg = cfg

    def pick(self, candidates: list[Prompt], n: int, view: View, rng: random.Random) -> list[Prompt]:
        raise NotImplementedError

    def update(self, observed: list[tuple[float, float]]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Uniform(Selector):
    def pick(self, candidates, n, view, rng):
        return candidates[:n]


class MoPPS(Selector):
    def pick(self, candidates, n, view, rng):
        draws = [(view.draw(p, rng) - self.cfg.target) ** 2 for p in candidates]
        order = sorted(range(len(candidates)), key=lambda i: draws[i])
        return [candidates[i] for i in sorted(order[:n])]


def gumbel_top(scores: list[float], n: int, tau: float, rng: random.Random) -> list[int]:
    """n indices drawn without replacement with probabilities softmax(scores / tau): the top n of
    scores / tau + Gumbel noise (Kool et al. 2019)."""
    keys = [s / tau - math.log(-math.log(rng.random() or 1e-300)) for s in scores]
    return sorted(sorted(range(len(scores)), key=lambda i: -keys[i])[:n])


class DOTS(Selector):
    def pick(self, candidates, n, view, rng):
        scores = [-abs(view.mean(p) - self.cfg.target) for p in candidates]
        return [candidates[i] for i in gumbel_top(scores, n, self.cfg.dots_tau, rng)]


class Curriculum(Selector):
    def __init__(self, cfg: ReplayConfig) -> None:
        super().__init__(cfg)
        self.centre = cfg.band_start

    def pick(self, candidates, n, view, rng):
        half = self.cfg.band_width / 2
        dist = [abs(view.mean(p) - self.centre) for p in candidates]
        inside = [i for i in range(len(candidates)) if dist[i] <= half]
        outside = sorted((i for i in range(len(candidates)) if dist[i] > half), key=lambda i: dist[i])
        return [candidates[i] for i in sorted((inside + outside)[:n])]

    def update(self, observed):
        if not observed:
            return
        realized = sum(r for _, r in observed) / len(observed)
        half = self.cfg.band_width / 2
        if realized > self.centre:
            self.centre -= self.cfg.band_step
        elif realized < self.centre - half:
            self.centre += self.cfg.band_step
        self.centre = min(max(self.centre, half), 1 - half)

    def metrics(self):
        return {"replay/band_centre": self.centre}

    def state_dict(self):
        return {"centre": self.centre}

    def load_state_dict(self, state):
        self.centre = float(state["centre"])


class GDRO(Selector):
    def __init__(self, cfg: ReplayConfig) -> None:
        super().__init__(cfg)
        self.loss = [0.5] * cfg.gdro_bins  # EMA of each bin's failure rate

    def bin(self, p: float) -> int:
        return min(int(p * self.cfg.gdro_bins), self.cfg.gdro_bins - 1)

    def weights(self) -> list[float]:
        e = [math.exp(self.cfg.gdro_eta * x) for x in self.loss]
        total = sum(e)
        eps = self.cfg.gdro_explore
        return [(1 - eps) * x / total + eps / len(e) for x in e]

    def pick(self, candidates, n, view, rng):
        bins: dict[int, list[int]] = {}
        for i, p in enumerate(candidates):
            bins.setdefault(self.bin(view.mean(p)), []).append(i)
        q = self.weights()
        chosen: list[int] = []
        while len(chosen) < n and bins:
            names = sorted(bins)
            b = rng.choices(names, weights=[q[k] for k in names])[0]
            chosen.append(bins[b].pop(0))  # candidates are in random order already
            if not bins[b]:
                del bins[b]
        return [candidates[i] for i in sorted(chosen)]

    def update(self, observed):
        by_bin: dict[int, list[float]] = {}
        for predicted, realized in observed:
            by_bin.setdefault(self.bin(predicted), []).append(1.0 - realized)
        g = self.cfg.gdro_ema
        for b, losses in by_bin.items():
            self.loss[b] = g * self.loss[b] + (1 - g) * sum(losses) / len(losses)

    def metrics(self):
        return {f"replay/gdro_q{b}": w for b, w in enumerate(self.weights())}

    def state_dict(self):
        return {"loss": list(self.loss)}

    def load_state_dict(self, state):
        self.loss = [float(x) for x in state["loss"]]


SELECTORS: dict[str, type[Selector]] = {
    "uniform": Uniform, "mopps": MoPPS, "dots": DOTS, "curriculum": Curriculum, "gdro": GDRO,
}  # fmt: skip


def build_selector(cfg: ReplayConfig) -> Selector:
    if cfg.select not in SELECTORS:
        raise ValueError(f"unknown replay.select {cfg.select!r}; valid: {', '.join(SELECTORS)}")
    return SELECTORS[cfg.select](cfg)
