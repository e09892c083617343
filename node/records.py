"""The records every stage passes: prompts, sampling parameters, completions and groups.

One module, so that an engine, a peer, the replay layer and the trainer agree on one shape.
Records are frozen: a stage that adds something (scores, behaviour log-probs) returns a new
record (`Completion.scored`, `Completion.with_behavior`), so a buffer may hold a group across
steps without anyone changing it underneath.

Versions and origins (STYLE.md: name log-probs by where they came from):

- `policy_version` is always *our* counter: the version of our weights that produced
  `behavior_logprobs` (our sampler, or our forward pass over a peer's re-tokenized text).  For a
  peer's group whose own tokens and log-probs are reused, the behaviour policy is the peer's; the
  row then carries the version we held when we took it in, so our staleness rules never compare
  our counter with somebody else's.
- `origin` is who sampled the text ("local" for us); `origin_version` is the origin's own
  counter (equal to `policy_version` for local rows), which only the origin's own staleness
  (`swarm.max_version_lag`) compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

LOCAL = "local"  # `origin` of our own samples

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Prompt:
    prompt_id: str  # stable across runs and peers: "<task>:<seed>:<index>" or a content hash
    task: str  # name of the source that made it (and can score it)
    question: str  # the user message
    answer: str  # ground truth, as the task's checker expects it
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False  # argmax decoding (evaluation, ReMax baselines)


@dataclass(frozen=True, eq=False)
class Request:
    """One prompt as an engine receives it: already rendered to token ids (node/rollout/render.py)."""

    prompt: Prompt
    prompt_ids: list[int]  # chat-templated prompt tokens, no padding


@dataclass(frozen=True, eq=False)
class Completion:
    prompt: Prompt
    prompt_ids: list[int]  # chat-templated prompt tokens, no padding
    completion_ids: list[int]  # sampled tokens, up to and including end-of-turn
    behavior_logprobs: list[float]  # [len(completion_ids)] log mu(token); [] until filled
    text: str  # completion decoded, special tokens stripped
    finish_reason: FinishReason
    policy_version: int  # OUR version that produced behavior_logprobs (see the module docstring)
    origin: str = LOCAL  # peer id that sampled the text
    origin_version: int | None = None  # the origin's own version counter (None: ours)
    reward: float = 0.0  # weighted total, set by scoring
    reward_components: dict[str, float] = field(default_factory=dict)  # unweighted, set by scoring

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def local(self) -> bool:
        return self.origin == LOCAL

    def scored(self, reward: float, components: dict[str, float]) -> Completion:
        return replace(self, reward=reward, reward_components=dict(components))

    def with_behavior(self, logprobs: list[float], version: int) -> Completion:
        """Behaviour log-probs computed by our policy at `version` (a peer's re-tokenized text)."""
        if len(logprobs) != len(self.completion_ids):
            raise ValueError(f"{len(logprobs)} logprobs for {len(self.completion_ids)} tokens")
        return replace(self, behavior_logprobs=list(logprobs), policy_version=version)


@dataclass(frozen=True, eq=False)
class Group:
    """G completions of one prompt: the unit of advantage computation, sharing and replay."""

    prompt: Prompt
    completions: tuple[Completion, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "completions", tuple(self.completions))

    @property
    def rewards(self) -> list[float]:
        return [c.reward for c in self.completions]

    @property
    def origin(self) -> str:
        return self.completions[0].origin if self.completions else LOCAL

    def signal(self, name: str | None) -> list[float]:
        """Per-completion values a zero-variance filter looks at: the reward component `name`
        (e.g. "correctness"), or the weighted total when `name` is None or not scored."""
        if name is None:
            return self.rewards
        return [c.reward_components.get(name, c.reward) for c in self.completions]

    def has_signal(self, name: str | None, atol: float = 1e-8) -> bool:
        values = self.signal(name)
        return bool(values) and max(values) - min(values) > atol

    def replace_completions(self, completions: list[Completion]) -> Group:
        return Group(self.prompt, tuple(completions))
