"""One registry per kind of algorithm: a name -> function map with a helpful lookup error.

Each entry declares, when it is registered, what it needs the node and trainer to compute
(`Needs`: reference log-probs, G+1 samples, greedy baselines...), so nobody checks names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Needs:
    """What an algorithm needs computed besides rewards and policy log-probs."""

    ref_logprobs: bool = False  # per-token log pi_ref of the sampled completions (ACE)
    seq_logprobs: bool = False  # AdvantageInputs.seq_logprobs: mean behaviour log-prob (XRPO, ACE)
    baseline_rewards: bool = False  # one greedy rollout per prompt (ReMax)
    components: bool = False  # every reward component, unweighted (GDPO)
    extra_rollouts_per_group: int = 0  # MC-GRPO samples G+1 and trains on G


NO_NEEDS = Needs()


class Registry(Generic[F]):
    """Functions of one signature, registered under unique names with what they need."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, F] = {}
        self._needs: dict[str, Needs] = {}

    def register(self, name: str, needs: Needs = NO_NEEDS) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._fns[name] = fn
            self._needs[name] = needs
            return fn

        return deco

    def needs(self, name: str) -> Needs:
        self.get(name)  # the helpful error for an unknown name
        return self._needs[name]

    def get(self, name: str) -> F:
        try:
            return self._fns[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._fns))}") from None

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: str) -> bool:
        return name in self._fns


ADVANTAGES: Registry = Registry("advantage estimator")
LOSSES: Registry = Registry("policy loss")
MODIFIERS: Registry = Registry("advantage modifier")
