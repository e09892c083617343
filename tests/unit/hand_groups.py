"""Hand-built scored groups for the replay tests: one completion per reward, correctness = reward."""

from __future__ import annotations

from collections.abc import Sequence

from node.records import Completion, Group, Prompt


def scored_group(prompt: Prompt, rewards: Sequence[float], version: int = 0) -> Group:
    """A group of `prompt` whose completions (two tokens, behaviour log-probs -0.5 and -0.25)
    were sampled by our `version` and scored `rewards`."""
    comps = [
        Completion(
            prompt,
            [1, 2],
            [3, 4],
            [-0.5, -0.25],
            "ab",
            "stop",
            version,
            reward=r,
            reward_components={"correctness": r},
        )  # fmt: skip
        for r in rewards
    ]
    return Group(prompt, tuple(comps))
