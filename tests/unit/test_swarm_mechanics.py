"""Seen-cache, token buckets, peer scores and the inbox, with hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from swarm.inbox import Inbox, InboxItem
from swarm.membership import Membership
from swarm.pending import Heard, PendingFetches
from swarm.rate_limit import PeerRateLimiter, TokenBucket
from swarm.scoring import PeerScores, ScoreParams
from swarm.seen_cache import SeenCache


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- seen-cache ------------------------------------------------------------------------------
def test_seen_cache_dedups_within_ttl_and_forgets_after() -> None:
    clock = Clock()
    seen = SeenCache(capacity=10, ttl=5.0, clock=clock)
    assert seen.add("a") is True
    assert seen.add("a") is False  # duplicate
    clock.t = 4.9
    assert "a" in seen and seen.add("a") is False
    clock.t = 5.0  # expiry = 0 + 5: gone at exactly t = 5
    assert "a" not in seen
    assert seen.add("a") is True


def test_seen_cache_evicts_oldest_beyond_capacity() -> None:
    clock = Clock()
    seen = SeenCache(capacity=3, ttl=100.0, clock=clock)
    for i, key in enumerate("abcd"):
        clock.t = float(i)
        seen.add(key)
    assert "a" not in seen  # evicted: 4 entries > capacity 3
    assert all(k in seen for k in "bcd")
    assert len(seen) == 3


# -- token buckets ---------------------------------------------------------------------------
def test_token_bucket_hand_worked() -> None:
    # rate 2/s, burst 3: three immediate takes succeed, the fourth fails;
    # 0.5 s later exactly one token (0.5 * 2) has been refilled.
    b = TokenBucket(rate=2.0, burst=3.0)
    assert [b.take(1, 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(1, 0.5) is True
    assert b.take(1, 0.5) is False
    # after 10 s the bucket is full again, but never above the burst
    b.refill(10.5)
    assert b.tokens == 3.0


def test_peer_limiter_refuses_without_spending_other_bucket() -> None:
    clock = Clock()
    lim = PeerRateLimiter(msg_rate=1.0, msg_burst=2.0, byte_rate=100.0, byte_burst=100.0, clock=clock)
    assert lim.allow("p", 60)  # msgs 2 -> 1, bytes 100 -> 40
    assert not lim.allow("p", 60)  # bytes short (40 < 60): refused, msg token NOT taken
    assert lim.allow("p", 40)  # msgs 1 -> 0, bytes 40 -> 0
    assert not lim.allow("p", 0)  # no msg token left
    assert lim.allow("q", 100)  # other peers have their own buckets
    clock.t = 1.0  # +1 msg token, +100 bytes
    assert lim.allow("p", 100)


def test_peer_limiter_flood_at_10x_passes_about_a_tenth() -> None:
    clock = Clock()
    lim = PeerRateLimiter(msg_rate=10.0, msg_burst=10.0, byte_rate=1e9, byte_burst=1e9, clock=clock)
    passed = 0
    for i in range(1000):  # 100 msg/s for 10 s = 10x the rate
        clock.t = i / 100
        passed += lim.allow("flooder", 10)
    # burst 10 + 10/s * 9.99 s ~= 110
    assert 105 <= passed <= 111


# -- scoring ---------------------------------------------------------------------------------
def test_score_ban_and_decay_hand_worked() -> None:
    clock = Clock()
    scores = PeerScores(ScoreParams(), clock)  # bad_signature = 20, threshold -50, half-life 60 s, ban 60 s
    assert scores.penalize("x", "bad_signature") is False  # -20
    assert scores.penalize("x", "bad_signature") is False  # -40
    assert scores.penalize("x", "bad_signature") is True  # -60 < -50: banned now
    assert scores.is_banned("x")
    clock.t = 30.0  # -60 * 2^(-30/60) = -42.43: above threshold, but the 60 s minimum ban holds
    assert math.isclose(scores.score("x"), -60 / math.sqrt(2), rel_tol=1e-9)
    assert scores.is_banned("x")
    clock.t = 60.0  # -60 * 0.5 = -30 and the minimum ban is over
    assert math.isclose(scores.score("x"), -30.0, rel_tol=1e-9)
    assert not scores.is_banned("x")


def test_score_rewards_are_capped_and_reasons_weighted() -> None:
    clock = Clock()
    params = ScoreParams(valid_group=1.0, max_score=5.0)
    scores = PeerScores(params, clock)
    for _ in range(10):
        scores.reward("good")
    assert scores.score("good") == 5.0  # capped
    scores.penalize("good", "fetch_failed")  # 0.5: honest peers die, a small cost
    assert scores.score("good") == 4.5
    scores.penalize("good", "some_new_reason")  # unknown reason: default 5
    assert scores.score("good") == -0.5
    assert params.penalty("rate_limited") == 1.0 and params.penalty("bad_signature") == 20.0


def test_banned_peer_stays_banned_while_score_is_below_threshold() -> None:
    clock = Clock()
    scores = PeerScores(ScoreParams(ban_seconds=1.0, half_life=60.0), clock)
    for _ in range(10):
        scores.penalize("x", "bad_signature")  # -200
    clock.t = 2.0  # minimum ban over, but -200 * 2^(-2/60) ~= -195 < -50
    assert scores.is_banned("x")


def test_unprovable_replay_is_charged_to_nobody() -> None:
    # A frame below its sender's own replay floor may just have been overtaken in transit.
    clock = Clock()
    scores = PeerScores(ScoreParams(), clock)
    for _ in range(1000):
        assert scores.penalize("relay", "replay_unproven") is False
    assert scores.score("relay") == 0.0 and not scores.is_banned("relay")


# -- pending fetches -------------------------------------------------------------------------
def test_pending_fetches_try_each_usable_holder_once() -> None:
    pending = PendingFetches(max_pending=2, max_holders=3)
    banned = {"b"}
    usable = lambda h: h not in banned  # noqa: E731
    assert pending.heard("g1", "a") is Heard.NEW
    assert [pending.heard("g1", h) for h in "bcde"] == [Heard.KNOWN] * 4  # d, e: over max_holders
    assert pending.next_holder("g1", usable) == "a"
    assert pending.next_holder("g1", usable) == "c"  # b is banned, skipped but not marked tried
    assert not pending.has_untried("g1", usable) and pending.next_holder("g1", usable) is None
    banned.clear()  # b's ban ends: it becomes worth asking
    assert pending.has_untried("g1", usable) and pending.next_holder("g1", usable) == "b"
    assert pending.heard("g2", "a") is Heard.NEW and pending.heard("g3", "a") is Heard.FULL
    pending.drop("g1")
    assert "g1" not in pending and len(pending) == 1 and pending.next_holder("g1", usable) is None


# -- inbox -----------------------------------------------------------------------------------
def item(gid: str, origin: str) -> InboxItem:
    return InboxItem(gid, origin, None, 0.0, 10)


def test_inbox_caps_each_origins_share() -> None:
    inbox = Inbox(capacity=8, max_share=0.25)  # at most 2 per origin
    for i in range(5):
        inbox.put(item(f"a{i}", "A"))
    inbox.put(item("b0", "B"))
    assert [it.group_id for it in inbox.drain()] == ["a3", "a4", "b0"]  # A kept its 2 newest


def test_inbox_full_evicts_from_the_largest_origin() -> None:
    inbox = Inbox(capacity=4, max_share=1.0)
    for gid, origin in [("a0", "A"), ("a1", "A"), ("a2", "A"), ("b0", "B")]:
        inbox.put(item(gid, origin))
    inbox.put(item("c0", "C"))  # full: A holds most, its oldest goes
    assert [it.group_id for it in inbox.drain()] == ["a1", "a2", "b0", "c0"]
    assert inbox.evicted == 1


def test_inbox_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Inbox(capacity=0, max_share=0.5)


def test_membership_drops_peers_that_stop_refreshing() -> None:
    clock = Clock()
    members = Membership(ttl=30.0, clock=clock)
    assert members.update("a", ["/ip4/1.2.3.4/tcp/1"]) is True
    members.update("b", [])
    clock.t = 20.0
    members.update("a", [])  # refreshed; keeps its old addresses
    clock.t = 35.0
    assert members.expire() == ["b"]
    assert [m.peer_id for m in members.alive()] == ["a"] and members.alive()[0].addresses
