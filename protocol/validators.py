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

Here: the envelope validators, the counter and the chain.  The message validators live in
protocol/message_checks.py and the verdict types in protocol/verdicts.py; both are re-exported.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from protocol.codec import decode_envelope, decode_message
from protocol.envelope import Envelope
from protocol.errors import ProtocolError, RejectReason
from protocol.identity import IdentityError
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.message_checks import (  # noqa: F401  (re-exported)
    AnnounceConsistent,
    CardMatchesSender,
    GroupConsistent,
    GroupIdMatches,
    GroupSwarmMatches,
    OriginSignatureValid,
    carried_groups,
)
from protocol.messages import Message
from protocol.replay import NonceCache, Replay
from protocol.verdicts import ACCEPT, Accept, EnvelopeValidator, MessageValidator, Reject, Verdict  # noqa: F401

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
