"""Helpers shared by the swarm tests, the test peer script and the benchmark (no pytest here).

* `synthetic_group`: a valid unsigned RolloutGroup of about `size` bytes;
* `wait_for`: poll a predicate until true or a deadline (tests never assert after a fixed sleep);
* `Fault`: the hostile behaviours the conformance suite injects.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable

from protocol import Completion, RolloutGroup, SamplingParams, TaskRef, logprob_array, token_array


class Fault(enum.Enum):
    GARBAGE = "garbage"  # random bytes on the topic
    FORGED = "forged"  # an envelope whose signature does not verify
    OVERSIZED = "oversized"  # a frame above the codec's max_frame_bytes
    REPLAY = "replay"  # the same signed frame pushed twice
    FLOOD = "flood"  # valid announces at 10x the rate limit


def synthetic_group(swarm_id: str, index: int, size: int = 8_000, completions: int = 4) -> RolloutGroup:
    """A well-formed group (sign it with `protocol.sign_group` or let the gossip layer sign it)."""
    n_tokens = max(1, size // (8 * completions))
    comps = tuple(
        Completion(
            text=f"answer {index}.{c}",
            token_ids=token_array((index + c + t) % 50_000 for t in range(n_tokens)),
            behavior_logprobs=logprob_array([-0.5] * n_tokens),
            claimed_rewards={"correct": float(c % 2)},
        )
        for c in range(completions)
    )
    return RolloutGroup(
        swarm_id=swarm_id,
        task=TaskRef(dataset="basic_arithmetic", seed=0, index=index),
        ground_truth=str(index),
        completions=comps,
        model_id="test-model",
        tokenizer_hash="ab" * 32,
        policy_version=0,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=max(n_tokens, 1)),
    )


def wait_for_sync(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, interval: float = 0.02
) -> bool:
    """Poll `predicate` (sync or async) on the running loop's clock; True once it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
