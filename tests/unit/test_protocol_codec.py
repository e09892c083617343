"""Codec: golden frames, round trips, version rules, and every structural limit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from golden import load_make_golden

from protocol import (
    Completion,
    Identity,
    Limits,
    ProtocolError,
    RejectReason,
    RolloutGroup,
    compute_group_id,
    decode,
    decode_envelope,
    decode_message,
    encode,
    token_array,
)
from protocol.envelope import ENVELOPE_TAG

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "protocol"




G = load_make_golden()
GOLDEN = json.loads((GOLDEN_DIR / "golden.json").read_text())


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def seal(header: dict[str, Any], ident: Identity | None = None) -> bytes:
    """A frame around an arbitrary header map, correctly signed."""
    ident = ident or G.identity()
    raw = pack(header)
    return pack([raw, ident.sign(ENVELOPE_TAG + raw)])


def header(payload: bytes, **over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"v": [1, 0], "t": 1, "sw": G.SWARM, "s": G.identity().peer_id,
                         "ts": G.TIMESTAMP_MS, "n": G.NONCE, "p": payload}  # fmt: skip
    h.update(over)
    return h


def reason_of(frame: bytes, limits: Limits | None = None) -> RejectReason:
    with pytest.raises(ProtocolError) as info:
        decode(frame, limits or Limits())
    return info.value.reason


def group_wire() -> dict[str, Any]:
    """The golden group's payload map, to be edited by tests."""
    env = decode_envelope(bytes.fromhex(GOLDEN["frames"]["rollout_group"]))
    return msgpack.unpackb(env.payload, raw=False)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- golden vectors and round trips


@pytest.mark.parametrize("name", sorted(GOLDEN["frames"]))
def test_golden_frames_encode_byte_for_byte_and_decode(name: str) -> None:
    stored = bytes.fromhex(GOLDEN["frames"][name])
    message = G.sample_messages()[name]
    assert encode(message, G.identity(), G.SWARM, timestamp_ms=G.TIMESTAMP_MS, nonce=G.NONCE) == stored
    envelope, decoded = decode(stored)
    assert decoded == message
    assert (envelope.sender, envelope.timestamp_ms, envelope.nonce) == (
        GOLDEN["peer_id"],
        G.TIMESTAMP_MS,
        G.NONCE,
    )
    assert envelope.signature_valid()


def test_golden_group_id_and_peer_id() -> None:
    assert G.identity().peer_id == GOLDEN["peer_id"] == "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV"
    assert G.procedural_group(G.identity()).group_id.hex() == GOLDEN["group_id"]


def test_round_trip_every_type_with_fresh_key_and_clock() -> None:
    ident = Identity.generate()
    for name, message in G.sample_messages().items():
        frame = encode(message, ident, "s")
        envelope, decoded = decode(frame)
        assert decoded == message, name
        assert envelope.sender == ident.peer_id and envelope.signature_valid()


def test_frame_layout_and_signed_bytes_match_the_spec() -> None:
    frame = bytes.fromhex(GOLDEN["frames"]["request"])
    outer = msgpack.unpackb(frame, raw=False)
    assert isinstance(outer, list) and len(outer) == 2 and len(outer[1]) == 64
    header_bytes, signature = outer
    public = Ed25519PublicKey.from_public_bytes(G.identity().public_key)
    public.verify(signature, b"swarmrl/envelope\x00" + header_bytes)  # raises if the spec is wrong
    # Header keys in spec order.
    assert list(msgpack.unpackb(header_bytes, raw=False)) == ["v", "t", "sw", "s", "ts", "n", "p"]


def test_group_id_matches_an_independent_canonical_encoding() -> None:
    # Built straight from docs/protocol.md: keys in spec order, floats as float64, optionals omitted.
    group = G.question_group(G.identity())
    canonical = {
        "sw": G.SWARM,
        "task": {"q": "What is the capital of France?", "vf": "exact"},
        "c": [{"x": "Paris"}, {"x": "Lyon"}],
        "m": "tiny",
        "tok": "",
        "pv": 0,
        "sp": {"t": 1.0, "p": 1.0, "mt": 8},
        "o": G.identity().peer_id,
        "ct": G.CREATED_MS,
    }
    data = msgpack.packb(canonical, use_bin_type=True, use_single_float=False)
    assert b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00" in data  # 1.0 as float64
    assert group.group_id == hashlib.sha256(b"swarmrl/group-id\x00" + data).digest()
    assert compute_group_id(group) == group.group_id


def test_packed_tokens_are_little_endian_uint32_and_float32() -> None:
    completion = group_wire()["c"][0]
    assert completion["tk"][:8] == bytes([17, 0, 0, 0, 0xB1, 0x03, 0, 0])  # 17, 945
    assert completion["lp"][:4] == bytes.fromhex("000000bf")  # -0.5 as float32 LE


# ---------------------------------------------------------------- version rules


def test_newer_minor_with_unknown_keys_decodes() -> None:
    wire = group_wire()
    wire["future_field"] = {"anything": [1, 2, 3]}
    wire["c"][0]["new_per_completion"] = 1.5
    frame = seal(header(pack(wire), v=[1, 7], extra_header_key="x"))
    envelope, group = decode(frame)
    assert envelope.version == (1, 7)
    assert group == G.sample_messages()["rollout_group"]  # unknown keys ignored; id still matches
    assert isinstance(group, RolloutGroup) and compute_group_id(group) == group.group_id


def test_absent_optional_fields_take_defaults() -> None:
    wire = group_wire()
    del wire["gt"]
    for c in wire["c"]:
        del c["tk"], c["lp"], c["r"]
    _, group = decode(seal(header(pack(wire))))
    assert isinstance(group, RolloutGroup) and group.ground_truth is None
    assert all(c.token_ids is None and c.behavior_logprobs is None and c.claimed_rewards == {}
               for c in group.completions)  # fmt: skip


@pytest.mark.parametrize("version", [[2, 0], [0, 9], [65535, 0]])
def test_other_major_refused(version: list[int]) -> None:
    assert reason_of(seal(header(b"\x80", v=version))) is RejectReason.UNSUPPORTED_VERSION


def test_unknown_message_type_refused() -> None:
    assert reason_of(seal(header(b"\x80", t=99))) is RejectReason.UNKNOWN_TYPE


# ---------------------------------------------------------------- structural limits


def test_frame_over_size_refused_before_parsing() -> None:
    limits = Limits(max_frame_bytes=500)
    frame = bytes.fromhex(GOLDEN["frames"]["rollout_group"])
    assert len(frame) > 500 and reason_of(frame, limits) is RejectReason.TOO_LARGE
    with pytest.raises(ProtocolError) as info:
        encode(G.sample_messages()["rollout_group"], G.identity(), G.SWARM, limits=limits)
    assert info.value.reason is RejectReason.TOO_LARGE


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x91" * 50 + b"\xc0", RejectReason.TOO_DEEP),
        (b"\xdf\xff\xff\xff\xff", RejectReason.LENGTH_LIMIT),  # map claiming 2^32-1 entries
        (b"\xdd\x7f\xff\xff\xff", RejectReason.LENGTH_LIMIT),  # array claiming 2^31-1 entries
        (b"\xdb\x7f\xff\xff\xff", RejectReason.LENGTH_LIMIT),  # str claiming 2 GiB
        (b"\xc6\xff\xff\xff\xff", RejectReason.LENGTH_LIMIT),  # bin claiming 4 GiB
        (
            b"\xdc\x00\xff" + b"\x90" * 255 + b"\xdc\x00\xff" + b"\x90" * 255,
            RejectReason.MALFORMED,
        ),  # trailing
        (b"\xdc\x01\x00" + b"\xc0" * 255, RejectReason.MALFORMED),  # truncated array
        (b"\xd9\x05ab", RejectReason.MALFORMED),  # truncated str
        (b"\xd4\x01\x00", RejectReason.MALFORMED),  # ext type
        (b"\xc1", RejectReason.MALFORMED),  # reserved byte
        (b"\x81\x01\xc0", RejectReason.MALFORMED),  # int map key
        (b"\x82\xa1a\x01\xa1a\x02", RejectReason.MALFORMED),  # duplicate key
        (b"\x81\xa2\xff\xfe\xc0", RejectReason.MALFORMED),  # invalid UTF-8 key
        (b"\x90", RejectReason.SCHEMA),  # not a map
        (b"", RejectReason.MALFORMED),
    ],
)
def test_payload_structure_refused_with_reason(payload: bytes, reason: RejectReason) -> None:
    assert reason_of(seal(header(payload))) is reason


def test_too_many_elements_refused() -> None:
    limits = Limits(max_elements=1000)
    payload = b"\x81\xa1a" + b"\xdc\x00\xff" + b"\x93\xc0\xc0\xc0" * 255  # 1 + 1 + 1 + 255 * 4 objects
    with pytest.raises(ProtocolError) as info:
        decode_message(dataclasses.replace(decode_envelope(seal(header(payload))), payload=payload), limits)
    assert info.value.reason is RejectReason.TOO_MANY_ELEMENTS


def _edited(edit: Any) -> RejectReason:
    wire = group_wire()
    edit(wire)
    return reason_of(seal(header(pack(wire))))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda w: w.pop("m"), RejectReason.SCHEMA),
        (lambda w: w.update(pv=True), RejectReason.SCHEMA),  # bool is not an int here
        (lambda w: w.update(pv=-1), RejectReason.OUT_OF_BOUNDS),
        (lambda w: w.update(c=[]), RejectReason.OUT_OF_BOUNDS),
        (lambda w: w.update(c=w["c"] * 33), RejectReason.OUT_OF_BOUNDS),  # 66 > max_completions
        (lambda w: w["sp"].update(t=math.nan), RejectReason.OUT_OF_BOUNDS),
        (lambda w: w["sp"].update(p=0.0), RejectReason.OUT_OF_BOUNDS),
        (lambda w: w["sp"].update(mt=10**6), RejectReason.OUT_OF_BOUNDS),
        (lambda w: w.update(id=b"short"), RejectReason.SCHEMA),
        (lambda w: w["c"][0].update(tk=b"\x00" * 5), RejectReason.SCHEMA),  # not a multiple of 4
        (lambda w: w["c"][0].update(x=7), RejectReason.SCHEMA),
        (lambda w: w["c"][0].update(r={"a": "1"}), RejectReason.SCHEMA),
        (lambda w: w["c"][0].update(r={str(i): 0.0 for i in range(17)}), RejectReason.OUT_OF_BOUNDS),
        (lambda w: w.update(task={"ds": "x", "sd": 1}), RejectReason.SCHEMA),  # ix missing
        (lambda w: w.update(task={"q": "why?"}), RejectReason.SCHEMA),  # verifier missing
        (lambda w: w.update(m="m" * 257), RejectReason.OUT_OF_BOUNDS),
    ],
)
def test_schema_and_bounds_refused_with_reason(edit: Any, reason: RejectReason) -> None:
    assert _edited(edit) is reason


def test_tokens_per_completion_limit_checked_on_packed_length() -> None:
    limits = Limits(max_tokens_per_completion=4)
    wire = group_wire()  # first completion has 5 tokens
    with pytest.raises(ProtocolError) as info:
        decode(seal(header(pack(wire))), limits)
    assert info.value.reason is RejectReason.LENGTH_LIMIT  # the 20-byte bin exceeds 4 * 4 bytes


def test_encoder_and_decoder_agree_on_empty_and_unicode_text() -> None:
    group = G.sample_messages()["rollout_group"]
    assert isinstance(group, RolloutGroup)
    weird = dataclasses.replace(
        group, ground_truth="", completions=(Completion(text=""), Completion(text="naïve ✓ 𝔘"))
    )
    assert decode(encode(weird, G.identity(), "s"))[1] == weird


def test_decoding_hostile_inputs_stays_within_memory_cap() -> None:
    """Inputs that claim huge sizes, nest deeply or pack many tiny containers: the traced peak
    stays within a few copies of the frame (documented bound: 2 * max_frame_bytes + 100 B per
    element), where naive msgpack decoding of the same bytes takes ~60x the input."""
    limits = Limits(max_frame_bytes=1 << 20)
    ident = G.identity()
    many_lists = b"\xdc\x00\xff" + (b"\xdc\x00\xff" + b"\x91\x90" * 255) * 255  # 130k lists, 130 KB
    hostile_payloads = [
        b"\x91" * (1 << 19) + b"\xc0",
        many_lists,
        b"\xdf\xff\xff\xff\xff" + b"\xa1a\xc0" * 1000,
        b"\xc6\x7f\xff\xff\xff" + b"\x00" * 100,
        b"\x81\xa1c" + b"\xdc\x00\xff" + (b"\x8f" + b"\xa1a\x90" * 15) * 255,
    ]
    tracemalloc.start()
    try:
        for payload in hostile_payloads:
            frame = seal(header(payload), ident)
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            with pytest.raises(ProtocolError):
                decode(frame, limits)
            peak = tracemalloc.get_traced_memory()[1] - base
            assert peak < 3 * len(frame) + 100 * limits.max_elements, (payload[:8], peak)
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        msgpack.unpackb(many_lists)
        assert tracemalloc.get_traced_memory()[1] - base > 20 * len(many_lists)  # what the scan prevents
        # A tiny frame that claims a 4 GiB bin must not allocate anywhere near that.
        tiny = b"\x92\xc6\xff\xff\xff\xff" + b"\x00" * 100
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        with pytest.raises(ProtocolError) as info:
            decode(tiny, limits)
        assert info.value.reason is RejectReason.LENGTH_LIMIT
        assert tracemalloc.get_traced_memory()[1] - base < 64 * 1024
    finally:
        tracemalloc.stop()


def test_token_array_helper_rejects_negative_ids() -> None:
    with pytest.raises(OverflowError):
        token_array([-1])
