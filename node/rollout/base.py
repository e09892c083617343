"""The rollout seam: records for completions and groups, and the `RolloutEngine` protocol.

Logprobs are named by where they come from (STYLE.md): `behavior_logprobs` are what the
sampler computed while sampling, under the temperature-scaled, un-truncated distribution
(top-p is ignored), which is exactly what the trainer recomputes for the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from node.tasks.base import Prompt


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False  # argmax decoding (evaluation, ReMax baselines)


@dataclass
class Completion:
    prompt: Prompt
    prompt_ids: list[int]  # chat-templated prompt tokens, no padding
    completion_ids: list[int]  # sampled tokens, up to and including end-of-turn
    behavior_logprobs: list[float]  # [len(completion_ids)] log mu(token) while sampling
    text: str  # completion decoded, special tokens stripped
    finish_reason: Literal["stop", "length"]
    policy_version: int  # version of the weights that sampled it
    peer_id: str = "local"  # who sampled it
    reward: float = 0.0  # weighted total, set by scoring
    reward_components: dict[str, float] = field(default_factory=dict)  # unweighted, set by scoring

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Group:
    """G completions of one prompt: the unit of advantage computation and of sharing."""

    prompt: Prompt
    completions: list[Completion]

    @property
    def rewards(self) -> list[float]:
        return [c.reward for c in self.completions]


class RolloutEngine(Protocol):
    """Turns prompts into groups.  Backends: transformers (`hf.py`); vLLM slots in behind the same
    two methods (its weights are pushed by `sync_weights`)."""

    def generate(self, prompts: list[Prompt], group_size: int, sampling: SamplingParams) -> list[Group]:
        ...

    def sync_weights(self, version: int) -> None:
        """Make generation use the trainer's current weights, tagged `version`."""
        ...
