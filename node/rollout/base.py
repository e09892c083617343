"""The rollout seam: the `RolloutEngine` protocol.  Records live in `node/records.py`.

Engines take rendered token ids (`Request`, see `node/rollout/render.py`) and return groups whose
`behavior_logprobs` are what the sampler computed while sampling, under the temperature-scaled,
un-truncated distribution (top-p is ignored), which is exactly what the trainer recomputes for
the same weights.
"""

from __future__ import annotations

from typing import Protocol

from node.records import Group, Request, SamplingParams


class RolloutEngine(Protocol):
    """Turns requests into groups.  Backends: transformers (`hf.py`); vLLM slots in behind the same
    two methods (its weights are pushed by `sync_weights`)."""

    def generate(self, requests: list[Request], group_size: int, sampling: SamplingParams) -> list[Group]:
        ...

    def sync_weights(self, version: int) -> None:
        """Make generation use the trainer's current weights, tagged `version`."""
        ...
