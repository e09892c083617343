"""Outcome summaries on the wire (protocol 1.2): the prompt key, the success count, their bounds,
and both directions of version compatibility."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from golden import load_make_golden

from protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Announce,
    AnnounceItem,
    Completion,
    Identity,
    Rejected,
    RejectReason,
    RolloutGroup,
    SamplingParams,
    TaskRef,
    claimed_successes,
    codec,
    decode,
    default_chain,
    encode,
    group_prompt_key,
    prompt_key,
    task_name,
)
from protocol import wire as wire_mod
from protocol.envelope import ENVELOPE_TAG
from protocol.limits import Limits
from protocol.outcome import prompt_key_digest

G = load_make_golden()
SWARM = "outcome"
ALICE = Identity.from_seed(bytes(range(32)))
KEY = prompt_key_digest("basic_arithmetic", "What is 2 + 2?")


def item(**over: Any) -> AnnounceItem:
    fields: dict[str, Any] = dict(group_id=bytes(range(32)), task="basic_arithmetic", num_completions=4,
                                  size_bytes=900, policy_version=3, prompt_key=KEY, successes=1)  # fmt: skip
    fields.update(over)
    return AnnounceItem(**fields)


def seal_payload(items: list[dict[str, Any]], version: tuple[int, int] = PROTOCOL_VERSION) -> bytes:
    """A correctly signed Announce frame around hand-written item maps (bounds not checked)."""
    header = {"v": list(version), "t": 3, "sw": SWARM, "s": ALICE.peer_id, "ts": G.TIMESTAMP_MS,
              "n": G.NONCE, "p": msgpack.packb({"i": items}, use_bin_type=True)}  # fmt: skip
    raw = msgpack.packb(header, use_bin_type=True)
    return msgpack.packb([raw, ALICE.sign(ENVELOPE_TAG + raw)], use_bin_type=True)  # type: ignore[no-any-return]


def wire_item(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": bytes(range(32)), "task": "basic_arithmetic", "n": 4, "sz": 900, "pv": 3,
                           "pk": KEY, "ns": 1}  # fmt: skip
    out.update(over)
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


def check(frame: bytes) -> Accepted | Rejected:
    chain = default_chain(SWARM, clock=lambda: G.TIMESTAMP_MS / 1000)
    return chain.check(frame, from_peer=ALICE.peer_id)


# ---------------------------------------------------------------- the key and the count


def test_prompt_key_is_the_documented_hash() -> None:
    # docs/protocol.md section 4.3: sha256("swarmrl/prompt-key" 0x00 task 0x00 question)[:16]
    expected = hashlib.sha256(b"swarmrl/prompt-key\x00basic_arithmetic\x00What is 2 + 2?").digest()[:16]
    assert KEY == expected and prompt_key("basic_arithmetic", "What is 2 + 2?") == expected.hex()
    assert KEY.hex() == "ba5e8aa9c18c9a320e6d97703f1822f1"  # pinned: other implementations test against it
    # UTF-8, no normalization; the separator keeps ("ab", "c") and ("a", "bc") apart
    assert prompt_key("a", "bc") != prompt_key("ab", "c")
    assert prompt_key("question", "café") == hashlib.sha256(
        b"swarmrl/prompt-key\x00question\x00caf\xc3\xa9").digest()[:16].hex()  # fmt: skip


def group(task: TaskRef, claims: list[float | None]) -> RolloutGroup:
    return RolloutGroup(
        swarm_id=SWARM, task=task, ground_truth=None,
        completions=tuple(Completion(text=str(i), claimed_rewards={} if c is None else {"correctness": c, "format": 1.0})
                          for i, c in enumerate(claims)),
        model_id="m", tokenizer_hash="", policy_version=0,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8),
    )  # fmt: skip


def test_task_name_key_and_successes_of_a_group() -> None:
    procedural = TaskRef(dataset="chain_sum", seed=1, index=2, question="1 + 2 = ?")
    literal = TaskRef(question="Capital of France?", verifier="exact")
    assert task_name(procedural) == "chain_sum" and task_name(literal) == "question"
    assert group_prompt_key(group(procedural, [1.0])) == prompt_key_digest("chain_sum", "1 + 2 = ?")
    assert group_prompt_key(group(literal, [1.0])) == prompt_key_digest("question", "Capital of France?")
    assert group_prompt_key(group(TaskRef(dataset="chain_sum", seed=1, index=2), [1.0])) is None  # no text
    # >= 0.5 is a success: 1.0, 0.5 yes; 0.49, 0.0 no -> 2 of 4
    assert claimed_successes(group(literal, [1.0, 0.0, 0.5, 0.49])) == 2
    assert claimed_successes(group(literal, [None, None])) is None  # claims no correctness: no count


# ---------------------------------------------------------------- encoding, bounds, validation


def test_round_trip_with_and_without_the_summary() -> None:
    message = Announce(
        items=(item(), item(group_id=bytes(32), prompt_key=None, successes=None, difficulty=0.25))
    )
    envelope, decoded = decode(encode(message, ALICE, SWARM))
    assert decoded == message and envelope.version == PROTOCOL_VERSION == (1, 2)
    payload = msgpack.unpackb(envelope.payload, raw=False)
    assert payload["i"][0]["pk"] == KEY and payload["i"][0]["ns"] == 1
    assert "pk" not in payload["i"][1] and "ns" not in payload["i"][1]  # absent optionals omitted


def test_a_valid_summary_passes_the_chain() -> None:
    result = check(seal_payload([wire_item(ns=0), wire_item(id=bytes(32), ns=4)]))  # 0 and n are legal
    assert isinstance(result, Accepted)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"ns": 5}, RejectReason.OUT_OF_BOUNDS),  # more successes than completions (validator)
        ({"ns": 65}, RejectReason.OUT_OF_BOUNDS),  # above max_completions (decoder)
        ({"ns": -1}, RejectReason.OUT_OF_BOUNDS),
        ({"ns": True}, RejectReason.SCHEMA),  # a bool is not a count
        ({"ns": 1.0}, RejectReason.SCHEMA),
        ({"pk": KEY[:15]}, RejectReason.SCHEMA),  # the key is exactly 16 bytes
        ({"pk": KEY + b"\x00"}, RejectReason.SCHEMA),
        ({"pk": KEY.hex()}, RejectReason.SCHEMA),  # bin, not hex text
        ({"ns": _DROP}, RejectReason.INCONSISTENT),  # a key without a count
        ({"pk": _DROP}, RejectReason.INCONSISTENT),  # a count without a key
    ],
)
def test_bad_summaries_are_counted_rejections_blamed_on_the_sender(
    over: dict[str, Any], reason: RejectReason
) -> None:
    chain = default_chain(SWARM, clock=lambda: G.TIMESTAMP_MS / 1000)
    result = chain.check(seal_payload([wire_item(id=bytes(32)), wire_item(**over)]), from_peer=ALICE.peer_id)
    assert isinstance(result, Rejected) and result.reason is reason and result.peer == ALICE.peer_id
    assert chain.counter.for_peer(ALICE.peer_id)[reason] == 1


def test_a_smaller_max_completions_bounds_the_count() -> None:
    frame = seal_payload([wire_item(n=4, ns=4)])
    with pytest.raises(codec.ProtocolError) as info:
        decode(frame, Limits(max_completions=3, max_array_len=256))
    assert info.value.reason is RejectReason.OUT_OF_BOUNDS


# ---------------------------------------------------------------- version compatibility


def test_a_new_peer_decodes_an_old_item_without_the_fields() -> None:
    old = wire_item(pk=_DROP, ns=_DROP, d=0.5)  # what a 1.1 peer sends
    result = check(seal_payload([old], version=(1, 1)))
    assert isinstance(result, Accepted) and isinstance(result.message, Announce)
    decoded = result.message.items[0]
    assert decoded.prompt_key is None and decoded.successes is None and decoded.difficulty == 0.5
    assert decoded == item(prompt_key=None, successes=None, difficulty=0.5)


def _announce_from_wire_1_1(value: Any, limits: Limits, path: str = "announce") -> Announce:
    """protocol/wire.py's Announce decoder as of protocol 1.1 (commit b13167f), frozen: the old peer."""
    w = wire_mod
    d = w._map(value, path)
    items = []
    for k, raw in enumerate(w._list(d, "i", path, 1, limits.max_announce_items)):
        p = f"{path}.i[{k}]"
        it = w._map(raw, p)
        difficulty = None
        if w._get(it, "d", p, optional=True) is not None:
            difficulty = w._bounded_float(it, "d", p, 0.0, 1.0)
        items.append(AnnounceItem(
            group_id=w._bin(w._get(it, "id", p, optional=False), f"{p}.id", 32),
            task=w._str(it, "task", p, limits.max_name_bytes),
            num_completions=w._req_int(it, "n", p, 1, limits.max_completions),
            size_bytes=w._req_int(it, "sz", p, 0, limits.max_frame_bytes),
            policy_version=w._req_int(it, "pv", p, 0, w._I64_MAX),
            difficulty=difficulty,
        ))  # fmt: skip
    return Announce(items=tuple(items))


def test_an_old_peer_decodes_a_new_item(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = encode(Announce(items=(item(difficulty=0.5),)), ALICE, SWARM, timestamp_ms=G.TIMESTAMP_MS)
    monkeypatch.setitem(codec._FROM_WIRE, codec.MessageType.ANNOUNCE, _announce_from_wire_1_1)
    monkeypatch.setattr(codec, "PROTOCOL_VERSION", (1, 1))
    result = check(frame)  # the whole 1.1 chain: scan limits, unknown keys, validators
    assert isinstance(result, Accepted) and result.envelope.version == (1, 2)
    assert result.message == Announce(items=(replace(item(difficulty=0.5), prompt_key=None, successes=None),))
