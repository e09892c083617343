"""Per-prompt difficulty: a decayed Beta posterior on the pass rate, and its calibration.

A prompt's pass rate p (the chance one completion is correct) gets a Beta(alpha, beta) posterior,
starting from the prior Beta(alpha0, beta0).  After a group of n completions with success
fraction s, sampled by a policy whose evidence counts with weight w (1 for ours, `rho` < 1 for a
peer's group, since another policy sampled it):

    alpha <- lambda alpha + (1 - lambda) alpha0 + w n s
    beta  <- lambda beta  + (1 - lambda) beta0  + w n (1 - s)

MoPPS (Qu et al. 2025, "Can Prompt Difficulty be Online Predicted for Accelerating RL Finetuning
of Reasoning Models?") gives the decayed update with lambda the weight kept (1 = never forget); BOTS
(2025, "Bayesian online task selection") adds discounted evidence from other sources, the `rho`
here.  The decay is applied when a prompt is observed, as in MoPPS: a prompt nobody samples keeps
its estimate.

Calibration: before each update, the predicted pass rate (posterior mean, or the predictor's for
a prompt never seen) is compared with the realized group mean; `Calibration` keeps the Brier score
(p_hat - s)^2 and, as the baseline a predictor must beat, the same score of the running global
mean pass rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def beta_update(
    alpha: float,
    beta: float,
    successes: float,
    n: float,
    decay: float,
    prior: tuple[float, float],
    weight: float = 1.0,
) -> tuple[float, float]:
    """One observation: `successes` of `n` (fractional successes allowed), evidence `weight`."""
    a0, b0 = prior
    return (
        decay * alpha + (1 - decay) * a0 + weight * successes,
        decay * beta + (1 - decay) * b0 + weight * (n - successes),
    )


def beta_mean(alpha: float, beta: float) -> float:
    return alpha / (alpha + beta)


@dataclass
class Estimate:
    alpha: float
    beta: float
    evidence: float = 0.0  # weighted observations, decayed like alpha + beta - prior
    seen: int = 0  # groups observed
    last_step: int = -1

    @property
    def mean(self) -> float:
        return beta_mean(self.alpha, self.beta)


class DifficultyTable:
    """Beta posteriors by prompt id.  Prompts never observed fall back to `prior_for(prompt_id)`,
    which the layer points at the predictor (a prediction p worth `strength` pseudo-counts)."""

    def __init__(self, prior: tuple[float, float], decay: float, rho: float) -> None:
        self.prior, self.decay, self.rho = prior, decay, rho
        self.table: dict[str, Estimate] = {}

    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, prompt_id: str) -> bool:
        return prompt_id in self.table

    def get(self, prompt_id: str) -> Estimate | None:
        return self.table.get(prompt_id)

    def observe(self, prompt_id: str, successes: float, n: int, step: int, local: bool = True,
                start: tuple[float, float] | None = None) -> Estimate:  # fmt: skip
        """Fold one group in; `start` is the (alpha, beta) a first observation starts from
        (default the prior); peers' groups count with weight `rho`."""
        est = self.table.get(prompt_id)
        if est is None:
            est = self.table[prompt_id] = Estimate(*(start or self.prior))
        w = 1.0 if local else self.rho
        est.alpha, est.beta = beta_update(est.alpha, est.beta, successes, n, self.decay, self.prior, w)
        est.evidence = self.decay * est.evidence + w * n
        est.seen += 1
        est.last_step = step
        return est

    def thompson(self, prompt_id: str, rng: random.Random, start: tuple[float, float] | None = None) -> float:
        """A draw r ~ Beta(alpha, beta) of the prompt (or of `start`, the prior of an unseen one)."""
        est = self.table.get(prompt_id)
        a, b = (est.alpha, est.beta) if est is not None else (start or self.prior)
        return rng.betavariate(a, b)

    def state_dict(self) -> dict:
        return {k: (e.alpha, e.beta, e.evidence, e.seen, e.last_step) for k, e in self.table.items()}

    def load_state_dict(self, state: dict) -> None:
        self.table = {
            k: Estimate(float(a), float(b), float(ev), int(n), int(s))
            for k, (a, b, ev, n, s) in state.items()
        }


class Calibration:
    """Brier score of predicted pass rates against realized group means, overall and for
    predictions of prompts never seen; the same score of the running global mean is the baseline."""

    def __init__(self) -> None:
        self.sums = {"brier": 0.0, "brier_global": 0.0, "n": 0.0, "unseen_brier": 0.0, "unseen_global": 0.0,
                     "unseen_n": 0.0, "success": 0.0, "trials": 0.0}  # fmt: skip
        self.step: list[tuple[float, float]] = []  # this step's (predicted, realized), for the metrics

    def global_mean(self) -> float:
        return self.sums["success"] / self.sums["trials"] if self.sums["trials"] else 0.5

    def record(self, predicted: float, realized: float, n: int, unseen: bool) -> None:
        base = self.global_mean()
        s = self.sums
        s["brier"] += (predicted - realized) ** 2
        s["brier_global"] += (base - realized) ** 2
        s["n"] += 1
        if unseen:
            s["unseen_brier"] += (predicted - realized) ** 2
            s["unseen_global"] += (base - realized) ** 2
            s["unseen_n"] += 1
        s["success"] += realized * n
        s["trials"] += n
        self.step.append((predicted, realized))

    def metrics(self) -> dict[str, float]:
        """Cumulative scores, and this step's mean predicted / realized pass rate; resets the step."""
        s, out = self.sums, {}
        if s["n"]:
            out |= {"replay/brier": s["brier"] / s["n"], "replay/brier_global": s["brier_global"] / s["n"]}
        if s["unseen_n"]:
            out |= {"replay/brier_unseen": s["unseen_brier"] / s["unseen_n"],
                    "replay/brier_unseen_global": s["unseen_global"] / s["unseen_n"]}  # fmt: skip
        if self.step:
            out["replay/predicted"] = sum(p for p, _ in self.step) / len(self.step)
            out["replay/realized"] = sum(r for _, r in self.step) / len(self.step)
        self.step = []
        return out

    def state_dict(self) -> dict:
        return dict(self.sums)

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: float(v) for k, v in state.items()}
