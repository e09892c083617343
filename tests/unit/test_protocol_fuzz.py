"""Seeded fuzzing: 100,000 mutated, truncated and oversized inputs produce only typed rejections.

Three targets share the budget, so mutations reach every layer rather than dying at the
signature check:

* frame:   the whole frame is mutated and fed to ValidatorChain.check (must never raise);
* header:  the signed header is mutated, then correctly re-signed, and fed to the chain, so
           header schema, version, type, timestamp and payload decoding all see junk;
* payload: the payload alone is mutated and run through decode_message and the message
           validators (only ProtocolError may escape decode_message; validators never raise).

The test also asserts the fuzzer reached many distinct rejection reasons, so it cannot pass by
being shallow, and that the process's peak RSS did not grow past the frame caps.
"""

from __future__ import annotations

import dataclasses
import random
import resource
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgpack
from golden import load_make_golden

from protocol import (
    Accepted,
    Identity,
    ProtocolError,
    RejectReason,
    decode_envelope,
    decode_message,
    default_chain,
)
from protocol.envelope import ENVELOPE_TAG, Envelope
from protocol.validators import Reject

CASES = 100_000
SEED = 20260101
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "protocol"




INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC4, 0xC5, 0xC6,
               0xCA, 0xCB, 0xCF, 0xD3, 0xD4, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF]  # fmt: skip
OVERSIZED = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
             b"\xdc\xff\xff", b"\xde\xff\xff", b"\xda\xff\xff", b"\xc5\xff\xff"]  # fmt: skip


# Length-preserving ops (0, 1, 9) are weighted up so that more inputs stay well-formed msgpack
# and reach the schema and validators instead of dying in the structural scan.
OPS = [0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random mutations of `data`."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(OPS)
        pos = rng.randrange(len(buf)) if buf else 0
        if op == 0:  # bit flips
            for _ in range(rng.randint(1, 8)):
                if buf:
                    buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # an interesting byte (type markers, boundaries)
            buf[pos] = rng.choice(INTERESTING)
        elif op == 2:  # truncate
            del buf[pos:]
        elif op == 3:  # random bytes inserted
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:  # delete a range
            del buf[pos : pos + rng.randint(1, 32)]
        elif op == 5:  # oversized length header
            buf[pos : pos + 1] = rng.choice(OVERSIZED)
        elif op == 6:  # deep nesting
            buf[pos:pos] = bytes([rng.choice([0x91, 0x81])]) * rng.randint(8, 2000)
        elif op == 7:  # huge map of tiny entries
            n = rng.randint(17, 5000)
            buf[pos:pos] = b"\xde" + struct.pack(">H", min(n, 0xFFFF)) + b"\xa1k\xc0" * n
        elif op == 8:  # duplicate a range (repeated fields, doubled arrays)
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 8)
        else:  # overwrite with random bytes
            chunk = rng.randbytes(rng.randint(1, 8))
            buf[pos : pos + len(chunk)] = chunk
    return bytes(buf)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def test_fuzzed_inputs_only_produce_typed_rejections() -> None:
    golden = load_make_golden()
    ident: Identity = golden.identity()
    now_ms = golden.TIMESTAMP_MS
    chain = default_chain(golden.SWARM, clock=lambda: now_ms / 1000, nonce_capacity=4096)
    messages = golden.sample_messages()
    frames = [golden.encode(m, ident, golden.SWARM, timestamp_ms=now_ms) for m in messages.values()]
    envelopes = [decode_envelope(f) for f in frames]
    headers = [msgpack.unpackb(f)[0] for f in frames]
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    chain_outcomes: Counter[str] = Counter()  # the subset that went through chain.check

    def through_chain(frame: bytes) -> None:
        result = chain.check(frame, from_peer="fuzzer")  # must not raise anything at all
        outcome = "accepted" if isinstance(result, Accepted) else result.reason.value
        outcomes[outcome] += 1
        chain_outcomes[outcome] += 1

    def payload_case(envelope: Envelope) -> None:
        env = dataclasses.replace(envelope, payload=mutate(envelope.payload, rng))
        try:
            message = decode_message(env)
        except ProtocolError as exc:
            outcomes[exc.reason.value] += 1
            return
        for check in chain.message_validators:
            verdict = check(env, message)
            if isinstance(verdict, Reject):
                outcomes[verdict.reason.value] += 1
                return
        outcomes["accepted"] += 1

    def header_case(header: bytes) -> None:
        raw = mutate(header, rng)
        through_chain(msgpack.packb([raw, ident.sign(ENVELOPE_TAG + raw)], use_bin_type=True))

    targets: list[Callable[[int], None]] = [
        lambda i: through_chain(mutate(frames[i], rng)),
        lambda i: header_case(headers[i]),
        lambda i: payload_case(envelopes[i]),
        lambda i: payload_case(envelopes[i]),
    ]
    rss_before = _peak_rss_bytes()
    start = time.perf_counter()
    for case in range(CASES):
        targets[case % len(targets)](rng.randrange(len(frames)))
    elapsed = time.perf_counter() - start
    rss_growth = _peak_rss_bytes() - rss_before

    assert sum(outcomes.values()) == CASES
    print(f"\n{CASES} cases in {elapsed:.1f} s; peak RSS +{rss_growth >> 20} MiB; outcomes {dict(outcomes)}")
    reached = set(outcomes)
    must_reach = {r.value for r in (
        RejectReason.MALFORMED, RejectReason.SCHEMA, RejectReason.OUT_OF_BOUNDS, RejectReason.LENGTH_LIMIT,
        RejectReason.TOO_DEEP, RejectReason.BAD_SIGNATURE, RejectReason.UNSUPPORTED_VERSION,
        RejectReason.UNKNOWN_TYPE, RejectReason.BAD_GROUP_ID, RejectReason.EXPIRED, RejectReason.REPLAYED,
    )}  # fmt: skip
    assert must_reach <= reached, must_reach - reached
    chain_rejections = chain.counter.for_peer("fuzzer").total()
    assert (
        chain.counter.total == chain_rejections == sum(chain_outcomes.values()) - chain_outcomes["accepted"]
    )
    assert rss_growth < 64 << 20  # 64 MiB: a few frames' worth, nowhere near unbounded
    assert elapsed < 60
