"""Every way a frame from a peer can be refused, as one enum, and the one exception that carries it.

`RejectReason` values are stable lower-case strings: they appear in metrics, logs and the swarm
layer's peer scores, and `docs/protocol.md` lists them in the order the receiver checks them.
Decoding raises only `ProtocolError`; validators return `Reject(reason)` instead of raising.
"""

from __future__ import annotations

from enum import Enum


class RejectReason(str, Enum):
    """Why a frame was refused.  Grouped by the step that finds it (see docs/protocol.md)."""

    # -- structure: found by the codec before anything is allocated from the frame
    TOO_LARGE = "too_large"  # frame longer than Limits.max_frame_bytes
    MALFORMED = "malformed"  # not exactly one msgpack object: truncated, trailing bytes, reserved/ext type, bad UTF-8, duplicate key
    TOO_DEEP = "too_deep"  # containers nested deeper than Limits.max_depth
    TOO_MANY_ELEMENTS = "too_many_elements"  # more msgpack objects than Limits.max_elements
    LENGTH_LIMIT = "length_limit"  # a str, bin, array or map longer than its limit
    # -- header and payload schema
    UNSUPPORTED_VERSION = "unsupported_version"  # protocol major version other than ours
    UNKNOWN_TYPE = "unknown_type"  # message type this version does not know
    SCHEMA = "schema"  # a required field missing or of the wrong msgpack type
    OUT_OF_BOUNDS = "out_of_bounds"  # a value outside its documented range (counts included)
    # -- envelope checks (validators)
    SWARM_MISMATCH = "swarm_mismatch"  # envelope or group swarm id is not ours
    NOT_ALLOWED = "not_allowed"  # sender not on the configured allowlist
    EXPIRED = "expired"  # timestamp older than the window
    FUTURE = "future"  # timestamp further ahead than the allowed clock skew
    BAD_PEER_ID = "bad_peer_id"  # sender id is not an Ed25519 libp2p peer id
    BAD_SIGNATURE = "bad_signature"  # envelope signature does not verify under the sender's key
    REPLAYED = "replayed"  # (sender, nonce) already accepted: provably a replay
    REPLAY_UNPROVEN = "replay_unproven"  # at or below its sender's own replay floor: blamed on nobody
    # -- message checks (validators)
    BAD_GROUP_ID = "bad_group_id"  # group id is not the content hash of the group
    BAD_ORIGIN_SIGNATURE = "bad_origin_signature"  # group's origin signature does not verify
    SENDER_MISMATCH = "sender_mismatch"  # a PeerCard describing someone other than its sender
    LENGTH_MISMATCH = "length_mismatch"  # token ids and logprobs disagree, or exceed max_tokens
    NONFINITE = "nonfinite"  # NaN or infinite logprob or reward
    POSITIVE_LOGPROB = "positive_logprob"  # a logprob above 0
    RAGGED_REWARDS = "ragged_rewards"  # completions of one group claim different reward components
    IMPLAUSIBLE_VERSION = "implausible_version"  # policy version out of the plausible range
    INCONSISTENT = "inconsistent"  # other cross-field contradictions (e.g. token ids without tokenizer hash)


class ProtocolError(Exception):
    """A frame (or a message we were asked to encode) breaks the wire contract."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
