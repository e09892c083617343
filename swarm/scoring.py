"""Peer scores: rise with valid contributions, fall per rejection reason, ban below a threshold.

Loosely the shape of GossipSub v1.1 peer scoring (libp2p specs, `pubsub/gossipsub/
gossipsub-v1.1.md`), reduced to what a rollout swarm needs: one number per peer.

* A valid group served to us adds `valid_group` (capped at `max_score`, so good history
  cannot buy unlimited credit for later abuse).
* A rejection subtracts `penalties[reason]` (or `default_penalty` for an unknown reason).
* The score decays exponentially toward zero with `half_life` seconds: both old merit and old
  offences fade.  Decay is applied lazily when the score is read, from the injected clock.
* A peer whose score falls below `ban_threshold` is banned for at least `ban_seconds`, and stays
  banned while its (decaying) score is still below the threshold.  Banned peers' messages are
  dropped before decoding; they are not penalized further (so a ban ends on time).

Hand-worked example (defaults): a peer with score 0 sends 3 forged signatures
(`bad_signature`, penalty 20 each): -60 < -50, banned for 60 s.  After 60 s the score has decayed to -60 * 0.5**(60/60)
= -30 >= -50, so the ban lifts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def _default_penalties() -> dict[str, float]:
    """Penalty per rejection reason (protocol/errors.py's RejectReason values plus swarm ones)."""
    structural = ("too_large", "malformed", "too_deep", "too_many_elements", "length_limit", "schema",
                  "out_of_bounds", "unknown_type")  # fmt: skip
    forged = ("bad_signature", "bad_peer_id", "bad_group_id", "bad_origin_signature", "sender_mismatch",
              "not_allowed")  # fmt: skip
    content = ("length_mismatch", "nonfinite", "positive_logprob", "ragged_rewards", "implausible_version",
               "inconsistent")  # fmt: skip
    table = dict.fromkeys(structural, 10.0) | dict.fromkeys(forged, 20.0) | dict.fromkeys(content, 10.0)
    table |= {
        "unsupported_version": 1.0,  # an honest peer on another major version: do not ban fast
        "swarm_mismatch": 5.0,
        "expired": 2.0,  # clocks drift; replays are caught by nonce anyway
        "future": 2.0,
        "replayed": 5.0,
        "replay_unproven": 0.0,  # below its sender's own replay floor: maybe just overtaken in transit
        "rate_limited": 1.0,  # charged per dropped message: a 10x flood bans within seconds
        "empty_limited": 1.0,  # a request refused for asking too often for groups we do not hold
        "fetch_failed": 0.5,  # honest peers die too: kept small
        "reward_mismatch": 10.0,  # reported by the node: a claimed reward our verifier contradicts
        # reported by the node: an announced success count (or prompt key) the fetched group
        # contradicts.  As costly as a reward lie: it steers what receivers train on just as well.
        "summary_mismatch": 10.0,
    }
    return table


@dataclass(frozen=True)
class ScoreParams:
    """Every knob of peer scoring, rate limiting and inbox sharing, in one place."""

    valid_group: float = 1.0  # credit per valid group a peer served us
    max_score: float = 20.0  # cap on accumulated credit
    penalties: Mapping[str, float] = field(default_factory=_default_penalties)
    default_penalty: float = 5.0  # for a rejection reason missing from `penalties`
    ban_threshold: float = -50.0  # score below this: banned
    ban_seconds: float = 60.0  # minimum ban length
    half_life: float = 60.0  # seconds for a score to decay halfway to zero
    # Token buckets, per transport-level sender (messages pushed to us, not fetch answers).
    msg_rate: float = 50.0  # messages per second
    msg_burst: float = 200.0
    byte_rate: float = 2_000_000.0  # bytes per second of pushed messages
    byte_burst: float = 4_000_000.0
    # Separate buckets for requests served (fetches, inventory pulls): a late joiner catching up
    # fetches hundreds of groups at once, which is legitimate and must not eat its push budget.
    request_rate: float = 100.0
    request_burst: float = 1000.0
    response_byte_rate: float = 50_000_000.0  # bytes of requests per second (requests are small)
    # All callers together (swarm/request_budget.py): per-peer buckets do not bound a Sybil set.
    serve_rate: float = 200.0  # inbound requests served per second; beyond it, declined as busy
    serve_burst: float = 1000.0  # one late joiner's catch-up fits in it
    serve_reserve: float = 0.5  # fraction of serve_burst that only peers with a positive score may use
    # Per peer: requests whose answer holds no group (ids we never had or no longer hold).
    empty_fetch_rate: float = 5.0
    empty_fetch_burst: float = 50.0
    # Inbox: the most any one origin peer may hold, as a fraction of the inbox capacity.
    max_inbox_share: float = 0.25

    def penalty(self, reason: str) -> float:
        return self.penalties.get(reason, self.default_penalty)


@dataclass
class _PeerScore:
    value: float = 0.0
    stamp: float = 0.0  # clock time at which `value` was exact
    banned_until: float = float("-inf")


class PeerScores:
    """Scores of every peer we have heard from."""

    def __init__(self, params: ScoreParams, clock: Callable[[], float]) -> None:
        self.params = params
        self._clock = clock
        self._peers: dict[str, _PeerScore] = {}

    def _current(self, peer_id: str) -> _PeerScore:
        now = self._clock()
        s = self._peers.get(peer_id)
        if s is None:
            s = self._peers[peer_id] = _PeerScore(stamp=now)
        elif now > s.stamp:
            s.value *= 0.5 ** ((now - s.stamp) / self.params.half_life)
            s.stamp = now
        return s

    def score(self, peer_id: str) -> float:
        return self._current(peer_id).value

    def peek(self, peer_id: str) -> float:
        """The score, without remembering a peer never heard from (0 for it): cheap to ask for
        every key of a Sybil set."""
        return self._current(peer_id).value if peer_id in self._peers else 0.0

    def reward(self, peer_id: str, amount: float | None = None) -> float:
        s = self._current(peer_id)
        gain = self.params.valid_group if amount is None else amount
        s.value = min(self.params.max_score, s.value + gain)
        return s.value

    def penalize(self, peer_id: str, reason: str) -> bool:
        """Subtract the reason's penalty; True if this pushed the peer into a ban."""
        penalty = self.params.penalty(reason)
        if penalty <= 0.0:  # counted by the caller, charged to nobody
            return False
        s = self._current(peer_id)
        s.value -= penalty
        if s.value < self.params.ban_threshold and s.banned_until < s.stamp:
            s.banned_until = s.stamp + self.params.ban_seconds
            return True
        return False

    def is_banned(self, peer_id: str) -> bool:
        s = self._peers.get(peer_id)
        if s is None:
            return False
        s = self._current(peer_id)
        if s.stamp < s.banned_until:
            return True
        if s.value < self.params.ban_threshold:
            s.banned_until = s.stamp + self.params.ban_seconds  # still bad: extend
            return True
        return False

    def snapshot(self) -> dict[str, float]:
        return {pid: round(self.score(pid), 3) for pid in list(self._peers)}
