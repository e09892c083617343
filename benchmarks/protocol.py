"""Throughput of the wire protocol for a typical rollout group.

    .venv/bin/python benchmarks/protocol.py [--seconds 2]

A typical group is 8 completions of 256 tokens (~4 characters of text per token), with and
without token ids + behaviour logprobs.  Rows:

* sign group     sign_group: canonical encoding, sha256 content id, origin signature (once per group, by its origin)
* encode+sign    encode: payload + header msgpack and the Ed25519 envelope signature (every send)
* decode+verify  ValidatorChain.check: scan, decode, every validator including envelope
                 signature, group id recomputation and origin signature (every receive)

MB/s counts encoded frame bytes (1 MB = 10^6 bytes).  Single thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import (  # noqa: E402
    Accepted,
    Completion,
    Identity,
    RolloutGroup,
    SamplingParams,
    TaskRef,
    compute_group_id,
    decode_envelope,
    decode_message,
    default_chain,
    encode,
    group_signature_valid,
    logprob_array,
    sign_group,
    token_array,
)
from protocol.validators import GroupConsistent  # noqa: E402

SWARM = "bench"
WORDS = ["the", "answer", "is", "therefore", "we", "add", "both", "sides", "=", "42", "step", "so"]


def typical_group(ident: Identity, with_tokens: bool, n: int = 8, tokens: int = 256) -> RolloutGroup:
    rng = random.Random(0)
    completions = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(tokens))[: 4 * tokens]
        completions.append(Completion(
            text=text,
            token_ids=token_array(rng.randrange(49_152) for _ in range(tokens)) if with_tokens else None,
            behavior_logprobs=logprob_array(-rng.expovariate(1.0) for _ in range(tokens)) if with_tokens else None,
            claimed_rewards={"correct": float(rng.random() < 0.5), "format": 1.0},
        ))  # fmt: skip
    group = RolloutGroup(
        swarm_id=SWARM, task=TaskRef(dataset="basic_arithmetic", seed=1, index=3), ground_truth="42",
        completions=tuple(completions), model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        tokenizer_hash="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", policy_version=100,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=tokens),
    )  # fmt: skip
    return sign_group(group, ident)


def rate(fn: Callable[[int], object], seconds: float) -> tuple[float, int]:
    """Calls per second of fn(i), i = 0, 1, ..., for about `seconds`."""
    i, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            fn(i)
            i += 1
    return i / elapsed, i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    ident = Identity.generate()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share these CPUs)")  # fmt: skip
    print(f"{'group (8 x 256 tokens)':<30}{'operation':<16}{'frame bytes':>12}{'msg/s':>10}{'MB/s':>9}")
    for with_tokens in (False, True):
        label = "text + token ids + logprobs" if with_tokens else "text only"
        size, rates = measure(typical_group(ident, with_tokens), ident, args.seconds)
        for op, r in rates.items():
            print(f"{label:<30}{op:<16}{size:>12,}{r:>10,.0f}{r * size / 1e6:>9.1f}")
    print("\ndecode+verify broken down, text + token ids + logprobs (microseconds per call):")
    for step, micros in breakdown(typical_group(ident, True), ident, args.seconds / 4).items():
        print(f"  {step:<34}{micros:>8.0f}")


def measure(group: RolloutGroup, ident: Identity, seconds: float) -> tuple[int, dict[str, float]]:
    """Encoded frame size and calls/s of each operation for one group."""
    frames: list[bytes] = []
    size = len(encode(group, ident, SWARM))
    sign_rate, _ = rate(lambda i: sign_group(group, ident), seconds)
    enc_rate, n_frames = rate(lambda i: frames.append(encode(group, ident, SWARM)), seconds)
    chain = default_chain(SWARM, nonce_capacity=n_frames + 1)

    def check(i: int) -> None:
        if not isinstance(chain.check(frames[i % n_frames]), Accepted):  # a second lap would be a replay
            raise SystemExit("benchmark frame rejected")

    dec_rate, checked = rate(check, seconds)
    if checked > n_frames:
        raise SystemExit("decode outran the encoded frames; use a longer --seconds")
    return size, {"sign group": sign_rate, "encode+sign": enc_rate, "decode+verify": dec_rate}


def breakdown(group: RolloutGroup, ident: Identity, seconds: float) -> dict[str, float]:
    """Microseconds per call of each step ValidatorChain.check runs on an accepted group."""
    frame = encode(group, ident, SWARM)
    envelope = decode_envelope(frame)
    message = decode_message(envelope)
    consistent = GroupConsistent()
    steps: dict[str, Callable[[int], object]] = {
        "decode_envelope (scan, header)": lambda i: decode_envelope(frame),
        "envelope signature verify": lambda i: envelope.signature_valid(),
        "decode_message (scan, schema)": lambda i: decode_message(envelope),
        "group id (canonical + sha256)": lambda i: compute_group_id(message),
        "origin signature verify": lambda i: group_signature_valid(message),
        "consistency checks": lambda i: consistent(envelope, message),
    }
    return {name: 1e6 / rate(fn, seconds)[0] for name, fn in steps.items()}


if __name__ == "__main__":
    main()
