"""Reward functions: small named functions of one completion, combined with weights from
`tasks.rewards`.  Each sample keeps every component separately (GDPO and the metrics use them).
`REWARDS` is the registry: the built-ins below, plus the user's functions that `build_tasks`
registers from `tasks.reward_plugins` and entry points (node/plugins.py).

The answer is what stands between the last `<answer>` and `</answer>` tags; without tags, the
last number in the text (so that a small model's bare "12 + 7 = 19" still earns correctness
while the `format` reward teaches it the tags).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from node.records import Prompt
from node.tasks.base import Task

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Scored:
    """What a reward function sees."""

    prompt: Prompt
    text: str  # the decoded completion
    num_tokens: int
    truncated: bool  # stopped at the length cap, not at end-of-turn
    max_tokens: int
    task: Task


def extract_answer(text: str) -> str | None:
    found = ANSWER_RE.findall(text)
    if found:
        return found[-1].strip()
    numbers = NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def correctness(s: Scored) -> float:
    """The task's own checker on the extracted answer, in [0, 1]."""
    return s.task.score(s.prompt, extract_answer(s.text))


def format_reward(s: Scored) -> float:
    """1 if the completion ends its turn with exactly one non-empty <answer>...</answer>."""
    found = ANSWER_RE.findall(s.text)
    return 1.0 if not s.truncated and len(found) == 1 and found[0].strip() else 0.0


def length(s: Scored) -> float:
    """1 - tokens / cap: shorter is better, 0 at the cap."""
    return 1.0 - min(s.num_tokens, s.max_tokens) / max(s.max_tokens, 1)


REWARDS: dict[str, Callable[[Scored], float]] = {
    "correctness": correctness,
    "format": format_reward,
    "length": length,
}
BUILTIN = frozenset(REWARDS)


def check_reward_names(weights: dict[str, float], plugins: dict[str, str] | None = None) -> None:
    """Every weighted name is a built-in, a `tasks.reward_plugins` name or an installed entry
    point (group swarmrl.rewards).  Cheap: nothing is imported (config validation calls it)."""
    from node.plugins import installed

    known = set(BUILTIN) | set(plugins or {})
    unknown = sorted(set(weights) - known)
    if unknown:
        known |= set(installed("reward"))
        unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"tasks.rewards: unknown reward {unknown[0]!r}; valid: {', '.join(sorted(known))} "
                         "(add your own under tasks.reward_plugins)")  # fmt: skip


def register_rewards(weights: dict[str, float], plugins: dict[str, str]) -> None:
    """Load the user's reward functions that `weights` names into `REWARDS` (once per process,
    before scoring; a later config's function of the same name replaces it)."""
    from node.plugins import load_callable

    check_reward_names(weights, plugins)
    for name in weights:
        if name in plugins:
            REWARDS[name] = load_callable(plugins[name], "reward", f"tasks.reward_plugins.{name}")
        elif name not in BUILTIN:  # an installed entry point
            REWARDS[name] = load_callable(name, "reward", f"tasks.rewards.{name}")


def score(s: Scored, weights: dict[str, float]) -> tuple[float, dict[str, float]]:
    """(weighted total, every component unweighted)."""
    parts = {name: REWARDS[name](s) for name in weights}
    return sum(weights[n] * v for n, v in parts.items()), parts
