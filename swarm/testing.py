"""Helpers shared by the swarm tests, the test peer script and the benchmark (no pytest here).

* `synthetic_group`: a valid unsigned RolloutGroup of about `size` bytes;
* `wait_for`: poll a predicate until true or a deadline (tests never assert after a fixed sleep);
* `Fault`: the hostile behaviours the conformance suite injects;
* `proc_usage`: a process's RSS, CPU time and open files from /proc (chaos and soak benchmarks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

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


def run_virtual(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run `coro_fn()` to completion on a fresh virtual-clock loop (simulated time: timeouts and
    sleeps cost no wall time) and close the loop."""
    from swarm.transports.memory import VirtualClockLoop

    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


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


@dataclasses.dataclass(frozen=True)
class ProcUsage:
    """One process's footprint, read from /proc (Linux)."""

    pid: int
    name: str  # /proc/PID/comm: "python", "p2pd", ...
    rss_kb: int  # resident set size now (VmRSS)
    peak_rss_kb: int  # high-water mark of the resident set (VmHWM)
    cpu_s: float  # user + system CPU seconds used so far
    fds: int  # open file descriptors (entries of /proc/PID/fd)


def proc_usage(pid: int) -> ProcUsage | None:
    """The process's usage now, or None once it is gone (or a zombie)."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/stat") as f:
            comm_end = (stat := f.read()).rindex(")")
        fields = stat[comm_end + 2 :].split()
        if fields[0] in ("Z", "X"):
            return None
        with open(f"{base}/status") as f:
            kv = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"{base}/fd"))
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    kb = lambda key: int(kv.get(key, "0 kB").split()[0])  # noqa: E731
    return ProcUsage(pid=pid, name=stat[stat.index("(") + 1 : comm_end], rss_kb=kb("VmRSS"), peak_rss_kb=kb("VmHWM"),
                     cpu_s=(int(fields[11]) + int(fields[12])) / ticks, fds=fds)  # fmt: skip
