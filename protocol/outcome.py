"""Outcome summaries: what an Announce may say about a group's prompt and result (minor 2).

A peer that announces one of its own groups may add two fields to the `AnnounceItem`: the
group's `prompt_key` and `successes`, the number of its completions the origin itself scored
correct.  A receiver learns from them which prompts the swarm finds hard without fetching the
groups.  Both are claims by the announcer (signed by its envelope, not by the group id): a
receiver that later fetches and re-scores the group can check them (node/exchange.py).

Everything here is a pure function of fields every implementation has, spelled out so that a
peer written elsewhere computes the same key:

    task_name(task)       = task.dataset if set, else "question"  (the AnnounceItem `task`)
    prompt_key(t, q)      = sha256("swarmrl/prompt-key" 0x00 || utf8(t) || 0x00 || utf8(q))[:16]
    claimed_successes(g)  = #completions with claimed_rewards["correctness"] >= 0.5,
                            or None when the group claims no "correctness" reward

The question is the exact text the group carries in `TaskRef.question` (for a procedural task,
the rendered question), taken as is: no normalization, so two peers that render a prompt
differently get different keys, which is what "different prompt" should mean to a receiver.
Literal questions all share the task name "question": receivers match them by text alone
(node/admission.py `our_prompt`), so the key must not depend on which local task holds them.
"""

from __future__ import annotations

import hashlib

from protocol.messages import RolloutGroup, TaskRef

PROMPT_KEY_TAG = b"swarmrl/prompt-key\x00"
PROMPT_KEY_BYTES = 16  # 128 bits: collisions among a swarm's prompts are out of reach
LITERAL_TASK = "question"  # the task name of a TaskRef without a dataset
SUCCESS_REWARD = "correctness"  # the claimed reward component that decides a success
SUCCESS_THRESHOLD = 0.5  # a completion with claimed correctness >= this counts as a success


def task_name(task: TaskRef) -> str:
    """The name an AnnounceItem gives a task: its dataset, or "question" for a literal one."""
    return task.dataset or LITERAL_TASK


def prompt_key_digest(task: str, question: str) -> bytes:
    """The 16-byte key of (task name, question text), as it travels in `AnnounceItem.prompt_key`."""
    data = PROMPT_KEY_TAG + task.encode("utf-8") + b"\x00" + question.encode("utf-8")
    return hashlib.sha256(data).digest()[:PROMPT_KEY_BYTES]


def prompt_key(task: str, question: str) -> str:
    """`prompt_key_digest` as 32 lower-case hex characters (how the swarm and node layers hold it)."""
    return prompt_key_digest(task, question).hex()


def group_prompt_key(group: RolloutGroup) -> bytes | None:
    """The key of the group's prompt, or None when the group carries no question text."""
    if group.task.question is None:
        return None
    return prompt_key_digest(task_name(group.task), group.task.question)


def claimed_successes(group: RolloutGroup) -> int | None:
    """Completions the origin claims correct (`correctness` >= 0.5); None if it claims nothing.

    Validators make reward names equal across completions, so either every completion claims a
    correctness or none does."""
    claims = [c.claimed_rewards.get(SUCCESS_REWARD) for c in group.completions]
    if any(v is None for v in claims):
        return None
    return sum(1 for v in claims if v is not None and v >= SUCCESS_THRESHOLD)
