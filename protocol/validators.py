"""A chain of small validators between the transport and everything else.

Each validator answers one question and returns `ACCEPT` or `Reject(reason, detail)`; it never
raises.  `ValidatorChain.check(frame)` runs, in this order (cheap and stateless first, crypto
before anything stateful, integrity before semantics):

    decode_envelope      size, structure, header schema, version, type    (codec)
    SwarmIdMatches       envelope addressed to our swarm
    Allowlist            sender on the allowlist (only if one is configured)
    TimestampWindow      sender's clock within [now - max_age, now + max_future]
    SignatureValid       envelope signed by the key the sender id encodes  -> authenticated
    NotReplayed          (sender, nonce) never seen, above the sender's own floor; recorded
                         once authenticated (protocol/replay.py)
    decode_message       payload structure, schema and bounds              (codec)
    GroupSwarmMatches    every carried group is for our swarm
    GroupIdMatches       every group id is its content hash
    OriginSignatureValid every group is signed by its claimed origin
    GroupConsistent      lengths agree, logprobs finite and <= 0, rewards finite and not
                         ragged, policy version plausible, not created in the future
    AnnounceConsistent   outcome summaries (minor 2): prompt key and successes go together,
                         successes <= the item's completion count
    CardMatchesSender    a PeerCard describes its own sender

Blame: every rejection is counted per reason and per peer (`RejectionCounter`) for the swarm
layer's peer scores.  The peer is the transport-authenticated neighbour that delivered the frame
(`from_peer`), since a relay that forwards junk is at fault; without one it is the envelope
sender, but only once its signature verified, so nobody can get a third party blamed by
putting its id on a forged frame.  A rejection with `blame=False` (`replay_unproven`: a frame
the replay memory can no longer prove new) is counted but charged to nobody.  Because group
integrity is checked before consistency, a group refused as inconsistent was provably produced
that way by its origin.
"""

from __future__ import annotations

import math
import sys
import time
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from protocol.codec import compute_group_id, decode_envelope, decode_message, group_signature_valid
from protocol.envelope import Envelope
from protocol.errors import ProtocolError, RejectReason
from protocol.identity import IdentityError
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.messages import Announce, Message, PeerCard, Response, RolloutGroup
from protocol.replay import NonceCache, Replay

# Per-token checks look only at the most significant byte of each 4-byte value (bytes sliced with
# a step, mapped through a 256-entry table, searched with memchr): C speed, no object per token.
_TOP_BYTE = 3 if sys.byteorder == "little" else 0
_HIGH_BIT_SET = bytes(int(i >= 0x80) for i in range(256))  # top byte of a uint32 >= 2^31
_NOT_NEG_FINITE = bytes(int(not 0x80 <= i < 0xFF) for i in range(256))  # see _all_negative_finite


def _all_below_2_31(token_ids: array[int]) -> bool:
    """uint32 values all fit int32 iff no top byte has its high bit set."""
    return b"\x01" not in token_ids.tobytes()[_TOP_BYTE::4].translate(_HIGH_BIT_SET)


def _all_negative_finite(logprobs: array[float]) -> bool:
    """Sufficient, not necessary: every float32 has its sign bit set and a top byte below 0xff
    (exponent < 0xfe), so it is finite and <= 0.  False also for +0.0, which the exact path allows."""
    return b"\x01" not in logprobs.tobytes()[_TOP_BYTE::4].translate(_NOT_NEG_FINITE)


@dataclass(frozen=True, slots=True)
class Accept:
    """The validator found nothing wrong."""


ACCEPT = Accept()


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    detail: str = ""
    blame: bool = True  # False: counted, but charged to no peer (nobody is provably at fault)


Verdict = Accept | Reject


class EnvelopeValidator(Protocol):
    def __call__(self, envelope: Envelope) -> Verdict: ...


class MessageValidator(Protocol):
    def __call__(self, envelope: Envelope, message: Message) -> Verdict: ...


def carried_groups(message: Message) -> tuple[RolloutGroup, ...]:
    """The rollout groups inside a message (a RolloutGroup itself, or a Response's groups)."""
    if isinstance(message, RolloutGroup):
        return (message,)
    if isinstance(message, Response):
        return message.groups
    return ()


# ---------------------------------------------------------------- envelope validators


@dataclass(frozen=True, slots=True)
class SwarmIdMatches:
    swarm_id: str

    def __call__(self, envelope: Envelope) -> Verdict:
        if envelope.swarm_id != self.swarm_id:
            return Reject(RejectReason.SWARM_MISMATCH, f"envelope for swarm {envelope.swarm_id!r}")
        return ACCEPT


@dataclass(frozen=True, slots=True)
class Allowlist:
    peer_ids: frozenset[str]

    def __call__(self, envelope: Envelope) -> Verdict:
        if envelope.sender not in self.peer_ids:
            return Reject(RejectReason.NOT_ALLOWED, f"{envelope.sender} not allowlisted")
        return ACCEPT


@dataclass(frozen=True, slots=True)
class TimestampWindow:
    max_age_ms: int = 300_000  # 5 min: gossip is fast, volunteers' clocks are not
    max_future_ms: int = 60_000
    clock: Callable[[], float] = time.time  # seconds, like time.time

    def __call__(self, envelope: Envelope) -> Verdict:
        now_ms = int(self.clock() * 1000)
        if envelope.timestamp_ms < now_ms - self.max_age_ms:
            return Reject(RejectReason.EXPIRED, f"{now_ms - envelope.timestamp_ms} ms old")
        if envelope.timestamp_ms > now_ms + self.max_future_ms:
            return Reject(RejectReason.FUTURE, f"{envelope.timestamp_ms - now_ms} ms ahead")
        return ACCEPT


class SignatureValid:
    authenticates: ClassVar[bool] = True  # the chain trusts `envelope.sender` after this passes

    def __call__(self, envelope: Envelope) -> Verdict:
        try:
            ok = envelope.signature_valid()
        except IdentityError as exc:
            return Reject(RejectReason.BAD_PEER_ID, str(exc))
        return ACCEPT if ok else Reject(RejectReason.BAD_SIGNATURE, f"not signed by {envelope.sender}")


@dataclass(frozen=True, slots=True)
class NotReplayed:
    """(sender, nonce) accepted once.  Per-sender floors: see protocol/replay.py."""

    cache: NonceCache
    clock: Callable[[], float] = time.time

    def __call__(self, envelope: Envelope) -> Verdict:
        now_ms = int(self.clock() * 1000)
        seen = self.cache.admit(envelope.sender, envelope.nonce, envelope.timestamp_ms, now_ms)
        if seen is Replay.SEEN:
            return Reject(RejectReason.REPLAYED, f"nonce {envelope.nonce.hex()} from {envelope.sender}")
        if seen is Replay.UNPROVEN:  # a replay or a frame overtaken in transit: nobody's fault provably
            floor = self.cache.floor_ms(envelope.sender)
            return Reject(
                RejectReason.REPLAY_UNPROVEN, f"ts {envelope.timestamp_ms} <= floor {floor}", blame=False
            )
        return ACCEPT


# ---------------------------------------------------------------- message validators


@dataclass(frozen=True, slots=True)
class GroupSwarmMatches:
    swarm_id: str

    def __call__(self, envelope: Envelope, message: Message) -> Verdict:
        for group in carried_groups(message):
            if group.swarm_id != self.swarm_id:
                return Reject(RejectReason.SWARM_MISMATCH, f"group for swarm {group.swarm_id!r}")
        return ACCEPT


class GroupIdMatches:
    def __call__(self, envelope: Envelope, message: Message) -> Verdict:
        for group in carried_groups(message):
            if compute_group_id(group) != group.group_id:
                return Reject(
                    RejectReason.BAD_GROUP_ID, f"group {group.group_id.hex()[:16]} content hash differs"
                )
        return ACCEPT


class OriginSignatureValid:
    def __call__(self, envelope: Envelope, message: Message) -> Verdict:
        for group in carried_groups(message):
            if not group_signature_valid(group):
                return Reject(RejectReason.BAD_ORIGIN_SIGNATURE, f"group not signed by origin {group.origin}")
        return ACCEPT


@dataclass(frozen=True, slots=True)
class GroupConsistent:
    """Cross-field checks on each group.  Per-token checks run at C speed over the arrays."""

    limits: Limits = DEFAULT_LIMITS
    max_future_ms: int = 60_000  # clock skew tolerated between origin and sender

    def __call__(self, envelope: Envelope, message: Message) -> Verdict:
        for group in carried_groups(message):
            verdict = self.check_group(envelope, group)
            if isinstance(verdict, Reject):
                return verdict
        return ACCEPT

    def check_group(self, envelope: Envelope, group: RolloutGroup) -> Verdict:
        if group.policy_version > self.limits.max_policy_version:
            return Reject(RejectReason.IMPLAUSIBLE_VERSION, f"policy version {group.policy_version}")
        if group.created_ms > envelope.timestamp_ms + self.max_future_ms:
            return Reject(RejectReason.FUTURE, "group created after the envelope was sealed")
        reward_names = set(group.completions[0].claimed_rewards)
        for i, c in enumerate(group.completions):
            where = f"completion {i}"
            if c.token_ids is not None:
                if not group.tokenizer_hash:
                    return Reject(RejectReason.INCONSISTENT, f"{where}: token ids without a tokenizer hash")
                if len(c.token_ids) > group.sampling.max_tokens:
                    return Reject(
                        RejectReason.LENGTH_MISMATCH, f"{where}: {len(c.token_ids)} tokens > max_tokens"
                    )
                if not _all_below_2_31(c.token_ids):
                    return Reject(RejectReason.OUT_OF_BOUNDS, f"{where}: token id above 2^31-1")
            if c.behavior_logprobs is not None:
                n_tokens = -1 if c.token_ids is None else len(c.token_ids)
                if len(c.behavior_logprobs) != n_tokens:
                    return Reject(RejectReason.LENGTH_MISMATCH,
                                  f"{where}: {len(c.behavior_logprobs)} logprobs for {max(n_tokens, 0)} tokens")  # fmt: skip
                if not _all_negative_finite(c.behavior_logprobs):  # fast path; exact check below
                    # Sum of <= 2^24 float32 values cannot overflow float64: finite iff all are.
                    if not math.isfinite(sum(c.behavior_logprobs)):
                        return Reject(RejectReason.NONFINITE, f"{where}: NaN or infinite logprob")
                    if max(c.behavior_logprobs, default=0.0) > 0.0:
                        return Reject(
                            RejectReason.POSITIVE_LOGPROB, f"{where}: logprob {max(c.behavior_logprobs)}"
                        )
            if not all(math.isfinite(v) for v in c.claimed_rewards.values()):
                return Reject(RejectReason.NONFINITE, f"{where}: NaN or infinite reward")
            if set(c.claimed_rewards) != reward_names:
                return Reject(
                    RejectReason.RAGGED_REWARDS, f"{where}: reward components differ from completion 0"
                )
        return ACCEPT


class AnnounceConsistent:
    """An item's outcome summary is whole and possible: `pk` and `ns` both or neither, `ns <= n`.
    (Whether it is true is only known after a fetch: the node's check, node/exchange.py.)"""

    def __call__(self, envelope: Envelope, message: Message) -> Verdict:
        if not isinstance(message, Announce):
            return ACCEPT
        for k, item in enumerate(message.items):
            if (item.prompt_key is None) != (item.successes is None):
                return Reject(RejectReason.INCONSISTENT, f"item {k}: pk and ns go together")
            if item.successes is not None and item.successes > item.num_completions:
                return Reject(
                    RejectReason.OUT_OF_BOUNDS,
                    f"item {k}: {item.successes} successes of {item.num_completions}",
                )
        return ACCEPT


class CardMatchesSender:
    def __call__(self, envelope: Envelope, message: Message) -> Verdict:
        if isinstance(message, PeerCard) and message.peer_id != envelope.sender:
            return Reject(
                RejectReason.SENDER_MISMATCH, f"card for {message.peer_id} sent by {envelope.sender}"
            )
        return ACCEPT


# ---------------------------------------------------------------- counting and the chain


class RejectionCounter:
    """Rejections per reason, and per peer for the `max_peers` most recently blamed peers."""

    def __init__(self, max_peers: int = 4096) -> None:
        self.max_peers = max_peers
        self.by_reason: Counter[RejectReason] = Counter()
        self._by_peer: OrderedDict[str, Counter[RejectReason]] = OrderedDict()

    def record(self, reason: RejectReason, peer: str | None) -> None:
        self.by_reason[reason] += 1
        if peer is None:
            return
        counts = self._by_peer.pop(peer, None) or Counter()
        counts[reason] += 1
        self._by_peer[peer] = counts
        if len(self._by_peer) > self.max_peers:
            self._by_peer.popitem(last=False)

    def for_peer(self, peer: str) -> Counter[RejectReason]:
        """A copy of `peer`'s counts (empty if never blamed or evicted)."""
        return Counter(self._by_peer.get(peer, ()))

    def peers(self) -> list[str]:
        return list(self._by_peer)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


@dataclass(frozen=True, slots=True)
class Accepted:
    envelope: Envelope
    message: Message


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str
    peer: str | None  # who was blamed (see module docstring); None if nobody could be


class ValidatorChain:
    """Runs decode and validators in order; the first rejection wins and is counted."""

    def __init__(
        self,
        envelope_validators: Sequence[EnvelopeValidator],
        message_validators: Sequence[MessageValidator],
        *,
        limits: Limits = DEFAULT_LIMITS,
        counter: RejectionCounter | None = None,
    ) -> None:
        self.envelope_validators = tuple(envelope_validators)
        self.message_validators = tuple(message_validators)
        self.limits = limits
        self.counter = counter if counter is not None else RejectionCounter()

    def check(
        self, frame: bytes, from_peer: str | None = None, *, bind_sender: bool = False
    ) -> Accepted | Rejected:
        """Validate one frame.  `from_peer`: the transport-authenticated neighbour it came from.

        `bind_sender`: the envelope must be signed by `from_peer` itself (a link that carries no
        relayed envelopes).  Checked right after the signature, before the nonce is recorded, so
        a neighbour that forwards someone else's fresh frame first cannot get that frame's own
        sender refused as `replayed` when it arrives.
        """
        blame = from_peer
        try:
            envelope = decode_envelope(frame, self.limits)
            for validator in self.envelope_validators:
                verdict = validator(envelope)
                if isinstance(verdict, Reject):
                    return self._reject(verdict.reason, verdict.detail, blame if verdict.blame else None)
                if getattr(validator, "authenticates", False):
                    if bind_sender and envelope.sender != from_peer:
                        detail = f"envelope signed by {envelope.sender}, not by the peer that sent it"
                        return self._reject(RejectReason.SENDER_MISMATCH, detail, blame)
                    if blame is None:
                        blame = envelope.sender
            message = decode_message(envelope, self.limits)
            for check in self.message_validators:
                verdict = check(envelope, message)
                if isinstance(verdict, Reject):
                    return self._reject(verdict.reason, verdict.detail, blame if verdict.blame else None)
        except ProtocolError as exc:
            return self._reject(exc.reason, exc.detail, blame)
        return Accepted(envelope, message)

    def _reject(self, reason: RejectReason, detail: str, peer: str | None) -> Rejected:
        self.counter.record(reason, peer)
        return Rejected(reason, detail, peer)


def default_chain(
    swarm_id: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
    allowlist: Iterable[str] | None = None,
    window: TimestampWindow | None = None,
    nonce_capacity: int = 65_536,
    nonce_senders: int = 16_384,
    clock: Callable[[], float] = time.time,
    counter: RejectionCounter | None = None,
) -> ValidatorChain:
    """The standard chain for `swarm_id`, in the order the module docstring lists."""
    window = window if window is not None else TimestampWindow(clock=clock)
    envelope_validators: list[EnvelopeValidator] = [SwarmIdMatches(swarm_id)]
    if allowlist is not None:
        envelope_validators.append(Allowlist(frozenset(allowlist)))
    envelope_validators += [
        window,
        SignatureValid(),
        NotReplayed(NonceCache(nonce_capacity, window.max_age_ms, nonce_senders), clock),
    ]
    message_validators: list[MessageValidator] = [
        GroupSwarmMatches(swarm_id),
        GroupIdMatches(),
        OriginSignatureValid(),
        GroupConsistent(limits, window.max_future_ms),
        AnnounceConsistent(),
        CardMatchesSender(),
    ]
    return ValidatorChain(envelope_validators, message_validators, limits=limits, counter=counter)
