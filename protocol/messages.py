"""The messages peers exchange: flat, typed, versioned records.

Each field is commented with its meaning, its producer, its wire key (in brackets) and its
bounds; `protocol.wire` enforces exactly these bounds when decoding, and `docs/protocol.md`
repeats them for other implementations.  "Optional" fields may be absent on the wire (None
here); they exist so that older peers can decode newer minor versions (see the version rules in
`protocol.codec`).

Bulk per-token data travels as packed little-endian `bin` (uint32 token ids, float32 logprobs),
held here as `array.array`: no Python object per token, and `torch.frombuffer` reads it without
a copy.  Use `token_array` / `logprob_array` to build them from lists.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

PROTOCOL_VERSION: tuple[int, int] = (1, 2)  # (major, minor); rules in protocol/codec.py
# 1.1 added RolloutGroup.truncated; 1.2 added AnnounceItem.prompt_key and .successes.


class MessageType(IntEnum):
    """Envelope field `t`.  New types may be added in a minor version; numbers are never reused."""

    ROLLOUT_GROUP = 1
    PEER_CARD = 2
    ANNOUNCE = 3
    REQUEST = 4
    RESPONSE = 5


if array("I").itemsize != 4 or array("f").itemsize != 4:  # true on every supported platform
    raise ImportError("protocol needs 4-byte array('I') and array('f')")


def token_array(ids: Iterable[int]) -> array[int]:
    """Token ids as the uint32 array Completion.token_ids holds."""
    return array("I", ids)


def logprob_array(values: Iterable[float]) -> array[float]:
    """Logprobs as the float32 array Completion.behavior_logprobs holds."""
    return array("f", values)


def array_to_le_bytes(values: array[int] | array[float]) -> bytes:
    """Little-endian bytes of a 4-byte array, whatever the host's byte order."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def tokens_from_le_bytes(data: bytes) -> array[int]:
    """uint32 token ids from little-endian bytes; `len(data)` must be a multiple of 4."""
    values = array("I")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def logprobs_from_le_bytes(data: bytes) -> array[float]:
    """float32 logprobs from little-endian bytes; `len(data)` must be a multiple of 4."""
    values = array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRef:
    """What the completions answer.  Either a procedural task (dataset + seed + index, e.g.
    reasoning-gym, which any peer can regenerate) or a literal question with a verifier spec;
    both may be set.  Producer: the origin's task source."""

    dataset: str | None = None  # [ds] procedural dataset name, e.g. "basic_arithmetic"; 1..max_name_bytes
    seed: int | None = None  # [sd] dataset seed; 0..2^63-1; set iff dataset is set
    index: int | None = None  # [ix] item index within the seeded dataset; 0..2^63-1; set iff dataset is set
    question: str | None = None  # [q] prompt text; 1..max_text_bytes
    # [vf] verifier spec, e.g. "math_verify" or "exact"; 1..max_name_bytes; required with q when no ds.
    verifier: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingParams:
    """How the origin sampled the completions (needed to judge off-policy corrections)."""

    temperature: float  # [t] softmax temperature; 0.0..10.0 (0 = greedy)
    top_p: float  # [p] nucleus mass; (0.0, 1.0]
    max_tokens: int  # [mt] generation cap per completion; 1..Limits.max_tokens_per_completion


@dataclass(frozen=True, kw_only=True, slots=True)
class Completion:
    """One of the G sampled answers to the task.  Producer: the origin's rollout engine."""

    text: str  # [x] decoded completion text; 0..max_text_bytes UTF-8 bytes
    # [tk] optional token ids (uint32 LE bin); 0..max_tokens_per_completion and <= sampling.max_tokens;
    # only meaningful to peers whose tokenizer hash equals RolloutGroup.tokenizer_hash.
    token_ids: array[int] | None = None
    # [lp] optional behaviour logprobs, one per token id (float32 LE bin); finite and <= 0;
    # log pi_behaviour(token) under the origin's policy at RolloutGroup.policy_version. Requires token_ids.
    behavior_logprobs: array[float] | None = None
    # [r] claimed reward components, name -> value (advisory: receivers re-score); names
    # 1..max_name_bytes, at most max_reward_components, finite values, same names in every completion.
    claimed_rewards: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutGroup:
    """G completions of one task from one peer: the unit SAPO peers share.

    Content-addressed: `group_id` is sha256 over the canonical encoding of every other field
    except `origin_signature` (protocol.codec.compute_group_id), and the origin signs the id, so
    any peer may forward a group and nobody can alter it or forge its origin.  Build one with
    the id and signature empty and call `protocol.codec.sign_group`.
    """

    swarm_id: str  # [sw] swarm this group belongs to; 1..max_name_bytes; must equal the receiver's
    task: TaskRef  # [task] what was answered
    # [gt] answer (and metadata, as JSON text if structured) needed to re-score; 0..max_text_bytes.
    ground_truth: str | None
    completions: tuple[Completion, ...]  # [c] the G completions; 1..max_completions
    model_id: str  # [m] model that sampled, e.g. "HuggingFaceTB/SmolLM2-135M-Instruct"; 1..max_name_bytes
    # [tok] hex sha256 of the tokenizer files, "" if unknown; 0..max_name_bytes; required with token ids.
    tokenizer_hash: str
    policy_version: int  # [pv] origin's optimizer step that made the weights; 0..max_policy_version
    sampling: SamplingParams  # [sp] sampling settings
    origin: str = ""  # [o] peer id of the peer that sampled; set by sign_group
    created_ms: int = 0  # [ct] unix time in ms when sampling finished; set by sign_group; 0..2^63-1
    group_id: bytes = b""  # [id] 32-byte content hash; set by sign_group
    origin_signature: bytes = b""  # [sig] 64-byte Ed25519 signature of the id by `origin`; set by sign_group
    # [tr] minor 1, optional: per completion, True where the origin stopped at its length cap rather than
    # at end-of-turn; () = not said (text-only receivers then cannot know).  Outside the group id, as
    # every later-minor field (codec rules): a relay could flip it, costing a receiver a misplaced
    # end-of-turn at most.  Length equals `completions` when given.
    truncated: tuple[bool, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerCard:
    """A peer describing itself; its `peer_id` must be the envelope sender."""

    peer_id: str  # [id] the describing peer's id; must equal the envelope sender
    addresses: tuple[str, ...]  # [a] multiaddrs it listens on; 0..max_addresses, each 1..max_name_bytes
    model_id: str  # [m] model it trains; 1..max_name_bytes
    tokenizer_hash: str  # [tok] hex sha256 of its tokenizer files, "" if unknown; 0..max_name_bytes
    policy_version: int  # [pv] its current optimizer step; 0..Limits.max_policy_version
    hardware_class: str  # [hw] coarse class, e.g. "cpu", "gpu-24g"; 1..max_name_bytes
    software_version: str  # [sv] swarmrl version string; 1..max_name_bytes
    protocol_version: tuple[int, int]  # [pr] (major, minor) it speaks; each 0..65535
    tasks: tuple[str, ...]  # [ts] task (dataset) names it serves; 0..max_tasks, each 1..max_name_bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AnnounceItem:
    """Summary of one group a peer holds, enough to decide whether to fetch it."""

    group_id: bytes  # [id] 32-byte group id
    task: str  # [task] dataset name, or "question" for literal tasks; 1..max_name_bytes
    num_completions: int  # [n] G; 1..max_completions
    size_bytes: int  # [sz] encoded group size in bytes; 0..max_frame_bytes
    policy_version: int  # [pv] policy version that sampled it; 0..max_policy_version
    difficulty: float | None = None  # [d] optional estimate in [0, 1] (e.g. 1 - mean reward)
    # [pk] minor 2, optional, with ns: 16-byte protocol.outcome.prompt_key of the group's (task name,
    # question); derived from the signed group, by its origin or a relay.  A claim of the announcer,
    # checked against the group's signed claims on fetch.
    prompt_key: bytes | None = None
    # [ns] minor 2, optional, with pk: completions the origin scored correct (claimed `correctness`
    # >= 0.5, protocol.outcome.claimed_successes); 0..n.
    successes: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Announce:
    """What a peer has (gossiped); peers pull what they want with Request."""

    items: tuple[AnnounceItem, ...]  # [i] 1..max_announce_items summaries


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """Ask a peer for groups by id (direct, not gossiped)."""

    request_id: bytes  # [rid] 16 random bytes chosen by the requester, echoed in the Response
    group_ids: tuple[bytes, ...]  # [ids] 1..max_request_ids group ids, 32 bytes each


@dataclass(frozen=True, kw_only=True, slots=True)
class Response:
    """The groups a peer had of those requested; each is validated on its own."""

    request_id: bytes  # [rid] the Request's request_id
    groups: tuple[RolloutGroup, ...]  # [g] 0..max_response_groups groups
    missing: tuple[bytes, ...] = ()  # [mis] requested ids it does not hold; 0..max_request_ids, 32 bytes each


Message = RolloutGroup | PeerCard | Announce | Request | Response

MESSAGE_TYPES: dict[type[Message], MessageType] = {
    RolloutGroup: MessageType.ROLLOUT_GROUP,
    PeerCard: MessageType.PEER_CARD,
    Announce: MessageType.ANNOUNCE,
    Request: MessageType.REQUEST,
    Response: MessageType.RESPONSE,
}
