"""The validators that look inside a decoded message: carried groups (swarm, content id, origin
signature, internal consistency), announces' outcome summaries, and peer cards.  They run after
the envelope checks, in the order protocol/validators.py lists; group integrity before
consistency, so a group refused as inconsistent was provably produced that way by its origin."""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass

from protocol.codec import compute_group_id, group_signature_valid
from protocol.envelope import Envelope
from protocol.errors import RejectReason
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.messages import Announce, Message, PeerCard, Response, RolloutGroup
from protocol.verdicts import ACCEPT, Reject, Verdict

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


def carried_groups(message: Message) -> tuple[RolloutGroup, ...]:
    """The rollout groups inside a message (a RolloutGroup itself, or a Response's groups)."""
    if isinstance(message, RolloutGroup):
        return (message,)
    if isinstance(message, Response):
        return message.groups
    return ()


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
