"""Encode and decode frames, with every limit checked before msgpack allocates anything.

Decoding is three steps, each of which raises only `ProtocolError`:

1. `decode_envelope(frame)`: frame length <= max_frame_bytes; structural scan of the frame and
   of the header (`protocol.scan`); header schema; version and message type.
2. (validators: swarm id, allowlist, timestamp window, signature, replay; see validators.py)
3. `decode_message(envelope)`: structural scan of the payload, then its schema and bounds
   (`protocol.wire`).  Only called on authenticated envelopes by the validator chain.

Version rules (PROTOCOL_VERSION = (major, minor)):

* A receiver accepts any minor of its own major and refuses every other major with
  UNSUPPORTED_VERSION.  The frame layout and the header's "v" key never change, so this check
  always works.
* A minor version may only add optional map keys (decoders ignore keys they do not know and use
  the default for keys that are absent) and new message types (older peers refuse those with
  UNKNOWN_TYPE; the swarm layer should not penalise a peer for them).  It may not change the
  type or meaning of a key, make an optional key required, or tighten a bound.
* The group id covers exactly the group fields of minor 0 (`wire.group_content_to_wire`);
  fields added by later minors are covered by the envelope signature only.
* Anything else needs a new major.

Group ids: sha256(GROUP_ID_TAG || msgpack(canonical content map)).  Canonical = keys in the
order `wire` emits them, absent optionals omitted, ints and lengths in their shortest msgpack
form, every float as float64, text as str and bytes as bin (docs/protocol.md spells it out).
The origin signs GROUP_SIG_TAG || group_id.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack

from protocol import wire
from protocol.envelope import ENVELOPE_TAG, NONCE_BYTES, SIGNATURE_BYTES, Envelope
from protocol.errors import ProtocolError, RejectReason
from protocol.identity import Identity, IdentityError, verify
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Message, MessageType, RolloutGroup
from protocol.scan import ScanLimits, scan

GROUP_ID_TAG = b"swarmrl/group-id\x00"
GROUP_SIG_TAG = b"swarmrl/group\x00"
_I64_MAX = 2**63 - 1

_TO_WIRE: dict[MessageType, Callable[[Any], wire.Wire]] = {
    MessageType.ROLLOUT_GROUP: wire.group_to_wire,
    MessageType.PEER_CARD: wire.card_to_wire,
    MessageType.ANNOUNCE: wire.announce_to_wire,
    MessageType.REQUEST: wire.request_to_wire,
    MessageType.RESPONSE: wire.response_to_wire,
}
_FROM_WIRE: dict[MessageType, Callable[[Any, Limits], Message]] = {
    MessageType.ROLLOUT_GROUP: wire.group_from_wire,
    MessageType.PEER_CARD: wire.card_from_wire,
    MessageType.ANNOUNCE: wire.announce_from_wire,
    MessageType.REQUEST: wire.request_from_wire,
    MessageType.RESPONSE: wire.response_from_wire,
}


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # peers in other languages might keep the first value: refuse
        raise ProtocolError(RejectReason.MALFORMED, "duplicate map key")
    return out


def _unpack(data: bytes, limits: ScanLimits) -> Any:
    """Scan, then decode.  The scan has already bounded everything msgpack will allocate."""
    scan(data, limits)
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, object_pairs_hook=_pairs_to_dict,
            max_str_len=limits.max_str_len, max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len, max_map_len=limits.max_map_len, max_ext_len=0,
        )  # fmt: skip
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # bad UTF-8, chiefly
        raise ProtocolError(RejectReason.MALFORMED, f"msgpack: {exc}") from exc


def _frame_scan(limits: Limits) -> ScanLimits:
    big = limits.max_frame_bytes
    return ScanLimits(
        max_depth=1, max_elements=3, max_str_len=0, max_bin_len=big, max_array_len=2, max_map_len=0
    )


def _header_scan(limits: Limits) -> ScanLimits:
    return ScanLimits(max_depth=2, max_elements=4 * limits.max_map_len + 8, max_str_len=limits.max_name_bytes,
                      max_bin_len=limits.max_frame_bytes, max_array_len=limits.max_map_len,
                      max_map_len=limits.max_map_len)  # fmt: skip


def _payload_scan(limits: Limits) -> ScanLimits:
    return ScanLimits(
        max_depth=limits.max_depth, max_elements=limits.max_elements,
        max_str_len=max(limits.max_text_bytes, limits.max_name_bytes),
        max_bin_len=max(4 * limits.max_tokens_per_completion, 64),
        max_array_len=limits.max_array_len, max_map_len=limits.max_map_len,
    )  # fmt: skip


# ---------------------------------------------------------------- encoding


def encode_payload(message: Message) -> tuple[MessageType, bytes]:
    """The message type and the msgpack payload bytes of `message`."""
    kind = MESSAGE_TYPES[type(message)]
    return kind, _pack(_TO_WIRE[kind](message))


def encode(
    message: Message,
    identity: Identity,
    swarm_id: str,
    *,
    timestamp_ms: int | None = None,
    nonce: bytes | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Seal `message` into a signed frame.  `timestamp_ms`/`nonce` default to now / os.urandom.

    Raises ProtocolError(TOO_LARGE) rather than produce a frame a receiver with `limits` refuses.
    """
    kind, payload = encode_payload(message)
    header = _pack({
        "v": list(PROTOCOL_VERSION),
        "t": int(kind),
        "sw": swarm_id,
        "s": identity.peer_id,
        "ts": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "n": os.urandom(NONCE_BYTES) if nonce is None else nonce,
        "p": payload,
    })  # fmt: skip
    frame = _pack([header, identity.sign(ENVELOPE_TAG + header)])
    if len(frame) > limits.max_frame_bytes:
        raise ProtocolError(RejectReason.TOO_LARGE, f"frame of {len(frame)} bytes > {limits.max_frame_bytes}")
    return frame


# ---------------------------------------------------------------- decoding


def decode_envelope(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Check a frame's size, structure and header; the payload stays undecoded bytes."""
    if len(frame) > limits.max_frame_bytes:
        raise ProtocolError(RejectReason.TOO_LARGE, f"frame of {len(frame)} bytes > {limits.max_frame_bytes}")
    outer = _unpack(frame, _frame_scan(limits))
    if (
        type(outer) is not list
        or len(outer) != 2
        or type(outer[0]) is not bytes
        or type(outer[1]) is not bytes
    ):
        raise ProtocolError(RejectReason.SCHEMA, "frame must be [header: bin, signature: bin]")
    header_bytes, signature = outer
    if len(signature) != SIGNATURE_BYTES:
        raise ProtocolError(RejectReason.SCHEMA, f"signature must be {SIGNATURE_BYTES} bytes")
    header = _unpack(header_bytes, _header_scan(limits))
    if type(header) is not dict:
        raise ProtocolError(RejectReason.SCHEMA, "header must be a map")
    version = header.get("v")
    if (type(version) is not list or len(version) != 2
            or not all(type(x) is int and 0 <= x <= 65535 for x in version)):  # fmt: skip
        raise ProtocolError(RejectReason.SCHEMA, "header.v must be [major, minor], each 0..65535")
    if version[0] != PROTOCOL_VERSION[0]:
        raise ProtocolError(
            RejectReason.UNSUPPORTED_VERSION, f"major {version[0]}, we speak {PROTOCOL_VERSION[0]}"
        )
    kind = header.get("t")
    if type(kind) is not int:
        raise ProtocolError(RejectReason.SCHEMA, "header.t must be an int")
    if kind not in MessageType._value2member_map_:
        raise ProtocolError(RejectReason.UNKNOWN_TYPE, f"message type {kind}")
    swarm_id, sender, ts, nonce, payload = (header.get(k) for k in ("sw", "s", "ts", "n", "p"))
    if type(swarm_id) is not str or not swarm_id or type(sender) is not str or not sender:
        raise ProtocolError(RejectReason.SCHEMA, "header.sw and header.s must be non-empty str")
    if type(ts) is not int or not 0 <= ts <= _I64_MAX:
        raise ProtocolError(RejectReason.SCHEMA, "header.ts must be an int in [0, 2^63-1]")
    if type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
        raise ProtocolError(RejectReason.SCHEMA, f"header.n must be {NONCE_BYTES} bytes")
    if type(payload) is not bytes:
        raise ProtocolError(RejectReason.SCHEMA, "header.p must be bin")
    return Envelope(version=(version[0], version[1]), type=MessageType(kind), swarm_id=swarm_id, sender=sender,
                    timestamp_ms=ts, nonce=nonce, payload=payload, signature=signature, header=header_bytes)  # fmt: skip


def decode_message(envelope: Envelope, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode an envelope's payload into its typed message (schema and bounds checked)."""
    return _FROM_WIRE[envelope.type](_unpack(envelope.payload, _payload_scan(limits)), limits)


def decode(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Envelope, Message]:
    """Decode WITHOUT verifying anything (tests, tools).  Peers' frames go through a ValidatorChain."""
    envelope = decode_envelope(frame, limits)
    return envelope, decode_message(envelope, limits)


# ---------------------------------------------------------------- group identity


def compute_group_id(group: RolloutGroup) -> bytes:
    """sha256 over GROUP_ID_TAG and the canonical msgpack of the group without id and signature."""
    return hashlib.sha256(GROUP_ID_TAG + _pack(wire.group_content_to_wire(group))).digest()


def sign_group(group: RolloutGroup, identity: Identity, *, created_ms: int | None = None) -> RolloutGroup:
    """Copy of `group` with origin, creation time, content id and origin signature filled in."""
    stamped = replace(
        group,
        origin=identity.peer_id,
        created_ms=int(time.time() * 1000) if created_ms is None else created_ms,
        group_id=b"",
        origin_signature=b"",
    )
    group_id = compute_group_id(stamped)
    return replace(stamped, group_id=group_id, origin_signature=identity.sign(GROUP_SIG_TAG + group_id))


def group_signature_valid(group: RolloutGroup) -> bool:
    """True when the origin signed this group id.  False also for an origin that is no peer id."""
    try:
        return verify(group.origin, group.origin_signature, GROUP_SIG_TAG + group.group_id)
    except IdentityError:
        return False
