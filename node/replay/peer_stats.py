"""What each peer has been worth to this node: reliability, drift and usefulness, per origin.

The node records three kinds of evidence about every origin (a peer id that sampled groups):

- verdicts: groups admitted, and groups refused as proven lies (a claimed reward or an outcome
  summary that our re-scoring contradicts).  Reliability is the Laplace (Beta(1, 1)) mean

      r_o = (admitted_o + 1) / (admitted_o + lies_o + 2)

  so a new peer starts at 1/2 + (its first admissions pull it up fast), and a liar sinks with
  every lie found.  `peer_value` multiplies a group's value by r_o.
- drift: how unlikely the origin's text is under our policy, relative to our own samples.  For
  the completions of a group we train on,

      d = mean over its completions of (-1/|y| sum_t log pi_ours(y_t))  -  nll_own

  where nll_own is the same per-token NLL over this step's local completions (their behaviour
  log-probs: our sampler's, at the same temperature).  d is 0 for text we could have written,
  and grows as the origin's policy drifts from ours (SAPO's agents drift apart over rounds;
  issue 13 measured a peer's completion about 2x less likely after 50 rounds and 15x by 300 on
  the toy).  drift_o is an exponential moving average of d with weight `alpha` on the newest
  group; `peer_value` multiplies by exp(-max(drift_o, 0) / scale).  It is measured only on
  groups we take (exploration keeps some coming from every origin); unknown: 0.
- usefulness: groups trained on, rows, and the sum of |advantage| of its rows: the mean
  |advantage| says how hard its groups pushed our update; the share of the step's total
  |advantage| that came from peer rows is what the swarm contributed (`swarm/peer_signal_share`).

Pure bookkeeping: no tensors, no network; `state_dict` is checkpointed with the pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass
class OriginStats:
    admitted: int = 0
    lies: int = 0
    used: int = 0  # groups trained on
    rows: int = 0  # completions trained on
    abs_adv: float = 0.0  # sum of |advantage| over those rows
    drift: float | None = None  # EMA of the per-token NLL excess (nats/token); None until measured

    @property
    def reliability(self) -> float:
        return (self.admitted + 1) / (self.admitted + self.lies + 2)

    @property
    def mean_abs_adv(self) -> float:
        return self.abs_adv / self.rows if self.rows else 0.0


def mean_token_nll(logprob_rows: Iterable[list[float]]) -> float | None:
    """Mean over rows of the per-token negative log-likelihood (rows without tokens are skipped)."""
    per_row = [-sum(lp) / len(lp) for lp in logprob_rows if lp]
    return sum(per_row) / len(per_row) if per_row else None


def drift_factor(drift: float | None, scale: float) -> float:
    """exp(-max(drift, 0) / scale); 1 when unknown or `scale` is 0 (the term off)."""
    if drift is None or scale <= 0:
        return 1.0
    return math.exp(-max(drift, 0.0) / scale)


class PeerStats:
    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.by_origin: dict[str, OriginStats] = {}

    def _get(self, origin: str) -> OriginStats:
        return self.by_origin.setdefault(origin, OriginStats())

    def admitted(self, origin: str) -> None:
        self._get(origin).admitted += 1

    def lie(self, origin: str) -> None:
        self._get(origin).lies += 1

    def drifted(self, origin: str, excess_nll: float) -> None:
        s = self._get(origin)
        s.drift = excess_nll if s.drift is None else (1 - self.alpha) * s.drift + self.alpha * excess_nll

    def used(self, origin: str, advantages: list[float]) -> None:
        s = self._get(origin)
        s.used += 1
        s.rows += len(advantages)
        s.abs_adv += sum(abs(a) for a in advantages)

    def reliability(self) -> dict[str, float]:
        return {o: s.reliability for o, s in self.by_origin.items()}

    def drift(self) -> dict[str, float | None]:
        return {o: s.drift for o, s in self.by_origin.items()}

    def table(self, top: int = 8) -> list[dict]:
        """The most used origins first, as `swarmrl status` shows them."""
        rows = sorted(self.by_origin.items(), key=lambda kv: (-kv[1].used, kv[0]))[:top]
        return [
            {"peer": o, "used": s.used, "admitted": s.admitted, "lies": s.lies,
             "mean_abs_adv": round(s.mean_abs_adv, 4), "reliability": round(s.reliability, 3),
             "drift": None if s.drift is None else round(s.drift, 4)}
            for o, s in rows
        ]  # fmt: skip

    def state_dict(self) -> dict:
        return {o: asdict(s) for o, s in self.by_origin.items()}

    def load_state_dict(self, state: dict) -> None:
        self.by_origin = {str(o): OriginStats(**s) for o, s in state.items()}
