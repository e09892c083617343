"""The task seam: the `Task` protocol every prompt source implements (records: node/records.py)."""

from __future__ import annotations

from typing import Protocol

from node.records import Prompt


class Task(Protocol):
    """A source of verifiable prompts.  Scoring never trusts anyone's claimed reward."""

    name: str

    def __len__(self) -> int:
        """Number of training prompts."""
        ...

    def prompt(self, index: int) -> Prompt:
        """The training prompt at `index` (0 <= index < len)."""
        ...

    def lookup(self, question: str) -> Prompt | None:
        """The training prompt with exactly this question, or None (how a peer's group is
        matched to our own ground truth: held-out prompts are never returned)."""
        ...

    def heldout(self, n: int) -> list[Prompt]:
        """`n` prompts disjoint from the training prompts, for evaluation."""
        ...

    def score(self, prompt: Prompt, answer: str | None) -> float:
        """Correctness of an extracted answer in [0, 1] (None: no answer found)."""
        ...
