"""Translating between the node's `Group` records and the wire's `RolloutGroup`.

Outgoing, a group carries the question text (what a receiver matches to its own ground truth),
the completion texts, and our token ids and behaviour logprobs with our tokenizer's hash, so a
peer with the same tokenizer may reuse them.  Claimed rewards are advisory.

Incoming, `to_local` rebuilds completions for *our* policy: the peer's text is re-tokenized
with our tokenizer and closed with our end-of-turn token, unless its tokenizer hash equals ours
and the caller asks to reuse its tokens (and then its logprobs, for off-policy correction).
Scoring is left to the caller, against our task's ground truth.  Every row keeps who sampled it
(`origin`) and the origin's own version counter (`origin_version`); `policy_version` is ours
(see node/records.py).

Outcome summaries (protocol 1.2): the swarm layer announces, for each of our groups, its prompt
key and how many completions we scored correct (protocol/outcome.py: our own `correctness`
claims >= 0.5).  `prompt_key_of` gives the key a receiver computes for its own prompt to match
them; `summary_agrees` is the check a receiver runs once it has fetched and re-scored a group
that was summarised, and a `False` proves the announcer lied (`Misconduct.SUMMARY_MISMATCH`).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from node.records import Completion, Group, Prompt, SamplingParams
from protocol import Completion as WireCompletion
from protocol import (
    RolloutGroup,
    TaskRef,
    group_prompt_key,
    logprob_array,
    prompt_key,
    task_name,
    token_array,
)
from protocol import SamplingParams as WireSampling

if TYPE_CHECKING:  # solo mode imports this module and never the swarm layer
    from swarm.summaries import Summary

_RG_ID = re.compile(r"^(?P<name>.+):(?P<seed>\d+):(?P<index>\d+)$")


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's full serialization (vocabulary, merges, special tokens) and
    chat template: equal hashes mean equal token ids for the same text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    body += "\x00" + str(getattr(tokenizer, "chat_template", "") or "")
    return hashlib.sha256(body.encode()).hexdigest()


def task_ref(prompt: Prompt) -> TaskRef:
    """The question text always; dataset/seed/index too when the prompt id has that form."""
    m = _RG_ID.match(prompt.prompt_id)
    if m is None:  # a literal question (jsonl): receivers find it among their own questions
        return TaskRef(question=prompt.question, verifier="math_verify")
    return TaskRef(dataset=prompt.task, seed=int(m["seed"]), index=int(m["index"]), question=prompt.question)


def to_wire(
    group: Group,
    swarm_id: str,
    model_id: str,
    tok_hash: str,
    sampling: SamplingParams,
    with_tokens: bool = True,
) -> RolloutGroup:
    """An unsigned RolloutGroup of one of our groups (the swarm layer signs it)."""
    completions = tuple(
        WireCompletion(
            text=c.text,
            token_ids=token_array(c.completion_ids) if with_tokens else None,
            behavior_logprobs=logprob_array(c.behavior_logprobs) if with_tokens else None,
            claimed_rewards=dict(c.reward_components),
        )
        for c in group.completions
    )
    return RolloutGroup(
        swarm_id=swarm_id,
        task=task_ref(group.prompt),
        ground_truth=None,  # receivers score against their own copy of the task
        completions=completions,
        model_id=model_id,
        tokenizer_hash=tok_hash if with_tokens else "",
        policy_version=max(c.policy_version for c in group.completions),
        truncated=tuple(c.truncated for c in group.completions),
        sampling=WireSampling(
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
        ),
    )


def cut_by_peer(wire: RolloutGroup, i: int) -> bool:
    """Whether completion `i` may have been cut at the origin's length cap: its flag when the
    origin says (`RolloutGroup.truncated`), else its token count when it sent ids, else True
    (we never close with our end-of-turn a text that may stop mid-answer)."""
    if wire.truncated:
        return wire.truncated[i]
    ids = wire.completions[i].token_ids
    return ids is None or len(ids) >= wire.sampling.max_tokens


def to_local(
    wire: RolloutGroup,
    prompt: Prompt,
    prompt_ids: list[int],
    tokenizer,
    stop_id: int,
    max_new_tokens: int,
    local_version: int,
    origin: str,
    reuse_tokens: bool,
) -> Group:
    """Our view of a peer's group: completions on our prompt ids, ready to score.

    Re-tokenized completions get empty `behavior_logprobs` (the caller fills them from the local
    policy, `Completion.with_behavior`); reused ones keep the peer's ids and logprobs.  Both carry
    `local_version` as our version and the peer's counter as `origin_version`.  Text longer than
    `max_new_tokens` of our tokens is cut and marked truncated ("length"); so is text the peer
    marked truncated, which is never closed with our end-of-turn token."""
    out: list[Completion] = []
    for i, wc in enumerate(wire.completions):
        if reuse_tokens and wc.token_ids is not None and wc.behavior_logprobs is not None:
            ids = list(wc.token_ids)[:max_new_tokens]
            logps = list(wc.behavior_logprobs)[: len(ids)]
            reason = "stop" if ids and ids[-1] == stop_id else "length"
        else:
            ids = list(tokenizer(wc.text, add_special_tokens=False)["input_ids"])
            reason = "stop" if len(ids) < max_new_tokens and not cut_by_peer(wire, i) else "length"
            ids = ids + [stop_id] if reason == "stop" else ids[:max_new_tokens]
            logps = []
        out.append(Completion(prompt, prompt_ids, ids, logps, wc.text, reason, local_version, origin, wire.policy_version))
    return Group(prompt, tuple(out))



def prompt_key_of(prompt: Prompt) -> str:
    """The outcome-summary key of one of our prompts: the key a peer announces for a group on the
    same question (the task name as `task_ref` puts it on the wire, the question text)."""
    return prompt_key(task_name(task_ref(prompt)), prompt.question)


def summary_matches(summary_successes: int, rescored_successes: int, n: int, tolerance: int = 0) -> bool:
    """True when an announced success count agrees with ours on the same n completions, within
    `tolerance` completions.  0 by default: the claims behind the count are the same per-completion
    claims admission already holds to our verifier (`claims_match`), so an honest origin whose
    verifier agrees with ours matches exactly, and one whose verifier does not is refused there."""
    if n <= 0 or not 0 <= rescored_successes <= n or tolerance < 0:
        raise ValueError(f"rescored {rescored_successes} of n={n} (tolerance {tolerance})")
    return 0 <= summary_successes <= n and abs(summary_successes - rescored_successes) <= tolerance


def summary_agrees(summary: Summary, wire: RolloutGroup, rescored_successes: int, tolerance: int = 0) -> bool:
    """Whether the summary announced for the fetched group `wire` is true: same group, same
    completion count, the key of the question the group really answers, and a success count that
    `summary_matches` ours.  False proves the summary's `origin` (its signer) lied."""
    n = len(wire.completions)
    key = group_prompt_key(wire)
    return (
        summary.group_id == wire.group_id.hex()
        and summary.n == n
        and key is not None
        and summary.prompt_key == key.hex()
        and summary_matches(summary.successes, rescored_successes, n, tolerance)
    )
