"""Validators: each hostile case is rejected with its own reason, counted, and blamed right."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest

from protocol import (
    Accepted,
    Completion,
    Identity,
    PeerCard,
    Rejected,
    RejectionCounter,
    RejectReason,
    Request,
    Response,
    RolloutGroup,
    SamplingParams,
    TaskRef,
    default_chain,
    encode,
    logprob_array,
    sign_group,
    token_array,
)
from protocol.envelope import ENVELOPE_TAG
from protocol.replay import NonceCache, Replay

SWARM = "test-swarm"
NOW_S = 1_800_000_000.0
NOW_MS = int(NOW_S * 1000)
ALICE = Identity.from_seed(bytes(range(32)))
MALLORY = Identity.from_seed(bytes(range(1, 33)))


class Clock:
    def __init__(self) -> None:
        self.t = NOW_S

    def __call__(self) -> float:
        return self.t


def completion(n_tokens: int = 4, **over: Any) -> Completion:
    fields: dict[str, Any] = {
        "text": "answer",
        "token_ids": token_array(range(n_tokens)),
        "behavior_logprobs": logprob_array([-0.5] * n_tokens),
        "claimed_rewards": {"correct": 1.0, "format": 0.0},
    }
    fields.update(over)
    return Completion(**fields)


def group(*completions: Completion, ident: Identity = ALICE, **over: Any) -> RolloutGroup:
    fields: dict[str, Any] = {
        "swarm_id": SWARM, "task": TaskRef(dataset="chain_sum", seed=1, index=2), "ground_truth": "3",
        "completions": completions or (completion(), completion()), "model_id": "tiny",
        "tokenizer_hash": "abc", "policy_version": 5,
        "sampling": SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16),
    }  # fmt: skip
    fields.update(over)
    return sign_group(RolloutGroup(**fields), ident, created_ms=NOW_MS - 5000)


def frame_of(message: Any, ident: Identity = ALICE, ts: int = NOW_MS, swarm: str = SWARM) -> bytes:
    return encode(message, ident, swarm, timestamp_ms=ts)


def resign(frame: bytes, edit: Any, ident: Identity) -> bytes:
    """Edit the header map of a frame, then sign it with `ident`."""
    header_bytes, _ = msgpack.unpackb(frame)
    header = msgpack.unpackb(header_bytes, raw=False)
    edit(header)
    raw = msgpack.packb(header, use_bin_type=True)
    return msgpack.packb([raw, ident.sign(ENVELOPE_TAG + raw)], use_bin_type=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def chain(clock: Clock, **kw: Any) -> Any:
    return default_chain(SWARM, clock=clock, **kw)


def rejected(result: Accepted | Rejected, reason: RejectReason) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason is reason, (result.reason, result.detail)
    return result


def test_valid_group_accepted_and_nothing_counted(clock: Clock) -> None:
    ch = chain(clock)
    g = group()
    result = ch.check(frame_of(g))
    assert isinstance(result, Accepted) and result.message == g
    assert result.envelope.sender == ALICE.peer_id and ch.counter.total == 0


def test_forged_signature_rejected_and_sender_not_blamed(clock: Clock) -> None:
    frame = bytearray(frame_of(group()))
    frame[-1] ^= 0x01  # last byte of the signature
    ch = chain(clock)
    r = rejected(ch.check(bytes(frame)), RejectReason.BAD_SIGNATURE)
    assert r.peer is None  # the claimed sender is not proven: do not let forgers frame Alice
    r = rejected(ch.check(bytes(frame), from_peer="relay"), RejectReason.BAD_SIGNATURE)
    assert r.peer == "relay"
    assert ch.counter.by_reason[RejectReason.BAD_SIGNATURE] == 2
    assert ch.counter.for_peer("relay")[RejectReason.BAD_SIGNATURE] == 1
    assert ch.counter.for_peer(ALICE.peer_id) == {}


def test_tampered_payload_fails_signature(clock: Clock) -> None:
    frame = frame_of(group())
    tampered = frame.replace(b"answer", b"ANSWER", 1)
    rejected(chain(clock).check(tampered), RejectReason.BAD_SIGNATURE)


def test_wrong_key_rejected(clock: Clock) -> None:
    # Mallory signs a header that names Alice as sender.
    frame = resign(frame_of(group()), lambda h: None, MALLORY)
    rejected(chain(clock).check(frame), RejectReason.BAD_SIGNATURE)


IDENTITY_POINT = bytes([1]) + bytes(31)  # the neutral element of edwards25519, as a public key
UNIVERSAL_SIGNATURE = bytes([1]) + bytes(63)  # R = identity, S = 0: verifies under it on any message


def test_identity_key_forgery_refused_and_nobody_blamed(clock: Clock) -> None:
    from protocol import peer_id_from_public_key

    forger = peer_id_from_public_key(IDENTITY_POINT)
    header_bytes, _ = msgpack.unpackb(frame_of(group()))
    header = msgpack.unpackb(header_bytes, raw=False)
    header["s"] = forger
    raw = msgpack.packb(header, use_bin_type=True)
    frame = msgpack.packb([raw, UNIVERSAL_SIGNATURE], use_bin_type=True)
    ch = chain(clock)
    r = rejected(ch.check(frame), RejectReason.BAD_PEER_ID)
    assert r.peer is None and ch.counter.peers() == []


def test_group_signed_by_the_identity_key_refused(clock: Clock) -> None:
    from protocol import compute_group_id, peer_id_from_public_key

    g = dataclasses.replace(group(), origin=peer_id_from_public_key(IDENTITY_POINT))
    g = dataclasses.replace(g, group_id=compute_group_id(g), origin_signature=UNIVERSAL_SIGNATURE)
    rejected(chain(clock).check(frame_of(g)), RejectReason.BAD_ORIGIN_SIGNATURE)


def test_sender_that_is_no_peer_id_rejected(clock: Clock) -> None:
    frame = resign(frame_of(group()), lambda h: h.update(s="QmNotAnEd25519PeerId"), MALLORY)
    rejected(chain(clock).check(frame), RejectReason.BAD_PEER_ID)


@pytest.mark.parametrize(
    ("offset_ms", "reason"), [(-300_001, RejectReason.EXPIRED), (60_001, RejectReason.FUTURE)]
)
def test_timestamp_window(clock: Clock, offset_ms: int, reason: RejectReason) -> None:
    ch = chain(clock)
    request = Request(request_id=bytes(16), group_ids=(bytes(32),))
    rejected(ch.check(frame_of(request, ts=NOW_MS + offset_ms)), reason)
    assert isinstance(ch.check(frame_of(request, ts=NOW_MS + offset_ms // 2)), Accepted)
    clock.t += offset_ms / 1000  # the same frame is fine for a receiver whose clock agrees
    assert isinstance(ch.check(frame_of(request, ts=NOW_MS + offset_ms)), Accepted)
    assert ch.counter.by_reason[reason] == 1


def test_replayed_nonce_rejected_and_blamed_on_sender(clock: Clock) -> None:
    ch = chain(clock)
    frame = frame_of(group())
    assert isinstance(ch.check(frame), Accepted)
    r = rejected(ch.check(frame), RejectReason.REPLAYED)
    assert r.peer == ALICE.peer_id  # authenticated, so the sender is blamed
    assert isinstance(ch.check(frame_of(group())), Accepted)  # same content, fresh nonce
    assert ch.counter.for_peer(ALICE.peer_id) == {RejectReason.REPLAYED: 1}


def test_replay_of_invalid_frame_does_not_poison_the_cache(clock: Clock) -> None:
    ch = chain(clock)
    good = frame_of(group())
    forged = resign(good, lambda h: None, MALLORY)  # same nonce, bad signature
    rejected(ch.check(forged), RejectReason.BAD_SIGNATURE)
    assert isinstance(ch.check(good), Accepted)


def test_swarm_mismatch_in_envelope_and_in_group(clock: Clock) -> None:
    ch = chain(clock)
    rejected(ch.check(frame_of(group(), swarm="other")), RejectReason.SWARM_MISMATCH)
    rejected(ch.check(frame_of(group(swarm_id="other"))), RejectReason.SWARM_MISMATCH)
    assert ch.counter.by_reason[RejectReason.SWARM_MISMATCH] == 2


def test_allowlist(clock: Clock) -> None:
    ch = chain(clock, allowlist=[ALICE.peer_id])
    assert isinstance(ch.check(frame_of(group())), Accepted)
    rejected(ch.check(frame_of(group(ident=MALLORY), ident=MALLORY)), RejectReason.NOT_ALLOWED)


def test_bad_group_id_rejected(clock: Clock) -> None:
    g = group()
    altered = dataclasses.replace(g, ground_truth="42")  # id and signature no longer match content
    rejected(chain(clock).check(frame_of(altered)), RejectReason.BAD_GROUP_ID)


def test_forged_origin_rejected_even_when_relayed_honestly(clock: Clock) -> None:
    # Mallory re-labels her own group as Alice's (recomputing the id) but cannot sign for Alice.
    from protocol import compute_group_id

    g = dataclasses.replace(group(ident=MALLORY), origin=ALICE.peer_id)
    g = dataclasses.replace(g, group_id=compute_group_id(g))
    rejected(chain(clock).check(frame_of(g, ident=MALLORY)), RejectReason.BAD_ORIGIN_SIGNATURE)


def test_relayed_group_accepted_from_non_origin(clock: Clock) -> None:
    g = group(ident=ALICE)
    result = chain(clock).check(frame_of(Response(request_id=bytes(16), groups=(g,)), ident=MALLORY))
    assert isinstance(result, Accepted) and result.envelope.sender == MALLORY.peer_id


NAN = math.nan
CONSISTENCY_CASES = [
    ("nan_logprob", group(completion(), completion(behavior_logprobs=logprob_array([-1, NAN, -1, -1])))
     , RejectReason.NONFINITE),
    ("inf_logprob", group(completion(behavior_logprobs=logprob_array([-math.inf] * 4))), RejectReason.NONFINITE),
    ("positive_logprob", group(completion(behavior_logprobs=logprob_array([-1, -1, 0.25, -1]))),
     RejectReason.POSITIVE_LOGPROB),
    ("length_mismatch", group(completion(behavior_logprobs=logprob_array([-1] * 3))), RejectReason.LENGTH_MISMATCH),
    ("logprobs_without_tokens", group(completion(token_ids=None)), RejectReason.LENGTH_MISMATCH),
    ("more_tokens_than_max_tokens", group(completion(20)), RejectReason.LENGTH_MISMATCH),
    ("ragged_rewards", group(completion(), completion(claimed_rewards={"correct": 1.0})), RejectReason.RAGGED_REWARDS),
    ("nan_reward", group(completion(claimed_rewards={"correct": NAN, "format": 0.0})), RejectReason.NONFINITE),
    ("implausible_version", group(policy_version=2**41), RejectReason.IMPLAUSIBLE_VERSION),
    ("tokens_without_tokenizer", group(tokenizer_hash=""), RejectReason.INCONSISTENT),
    ("token_id_over_int32", group(completion(token_ids=token_array([0, 1, 2, 2**31]))), RejectReason.OUT_OF_BOUNDS),
]  # fmt: skip


@pytest.mark.parametrize(("name", "g", "reason"), CONSISTENCY_CASES, ids=[c[0] for c in CONSISTENCY_CASES])
def test_inconsistent_groups_rejected_with_reason_and_counted(
    clock: Clock, name: str, g: RolloutGroup, reason: RejectReason
) -> None:
    counter = RejectionCounter()
    ch = chain(clock, counter=counter)
    r = rejected(ch.check(frame_of(g)), reason)
    assert r.peer == ALICE.peer_id
    assert counter.by_reason == {reason: 1} and counter.for_peer(ALICE.peer_id) == {reason: 1}
    # The same defect inside a Response is caught too.
    rejected(ch.check(frame_of(Response(request_id=bytes(16), groups=(group(), g)))), reason)


def test_group_created_long_after_envelope_rejected(clock: Clock) -> None:
    g = dataclasses.replace(group(), created_ms=NOW_MS + 120_000)
    g = sign_group(g, ALICE, created_ms=NOW_MS + 120_000)
    rejected(chain(clock).check(frame_of(g)), RejectReason.FUTURE)


def test_peer_card_must_describe_its_sender(clock: Clock) -> None:
    card = PeerCard(peer_id=ALICE.peer_id, addresses=(), model_id="tiny", tokenizer_hash="", policy_version=0,
                    hardware_class="cpu", software_version="0.1", protocol_version=(1, 0), tasks=())  # fmt: skip
    ch = chain(clock)
    assert isinstance(ch.check(frame_of(card)), Accepted)
    rejected(ch.check(frame_of(card, ident=MALLORY)), RejectReason.SENDER_MISMATCH)


def test_structural_rejections_are_counted_too(clock: Clock) -> None:
    ch = chain(clock)
    rejected(ch.check(b"\xc1", from_peer="p"), RejectReason.MALFORMED)
    rejected(ch.check(b"\x00" * (5 << 20), from_peer="p"), RejectReason.TOO_LARGE)
    assert ch.counter.for_peer("p") == {RejectReason.MALFORMED: 1, RejectReason.TOO_LARGE: 1}


def test_counter_tracks_a_bounded_number_of_peers() -> None:
    counter = RejectionCounter(max_peers=3)
    for peer in ["a", "b", "c", "a", "d"]:  # "b" is least recently blamed when "d" arrives
        counter.record(RejectReason.MALFORMED, peer)
    assert counter.peers() == ["c", "a", "d"]
    assert counter.for_peer("a") == {RejectReason.MALFORMED: 2} and counter.for_peer("b") == {}
    assert counter.total == 5


def test_nonce_cache_floors_are_per_sender() -> None:
    cache = NonceCache(capacity=2, window_ms=1000, max_senders=2)
    assert cache.admit("a", b"1", timestamp_ms=100, now_ms=100) is Replay.NEW
    assert cache.admit("a", b"1", timestamp_ms=100, now_ms=100) is Replay.SEEN
    assert cache.admit("b", b"1", timestamp_ms=100, now_ms=100) is Replay.NEW  # nonces are per sender
    assert cache.admit("a", b"2", timestamp_ms=150, now_ms=150) is Replay.NEW  # evicts (a, 1) at ts 100
    assert (cache.floor_ms("a"), cache.floor_ms("b"), len(cache)) == (100, -1, 2)
    # (a, 1) is forgotten, but its timestamp is at a's floor: not provably new.
    assert cache.admit("a", b"1", timestamp_ms=100, now_ms=150) is Replay.UNPROVEN
    assert cache.admit("b", b"2", timestamp_ms=100, now_ms=150) is Replay.NEW  # a's floor is not b's
    # Mallory floods frames dated far ahead.  The pairs she pushes out raise their owners' floors
    # to their owners' own timestamps only; her date never becomes anyone else's floor.
    for i in range(10):
        assert cache.admit("m", bytes([i]), timestamp_ms=900 + i, now_ms=160) is Replay.NEW
    assert cache.floor_ms("m") == 907 and cache.floor_ms("b") <= 100 and cache.floor_ms("a") <= 150
    assert cache.admit("b", b"3", timestamp_ms=160, now_ms=160) is Replay.NEW
    # max_senders=2: a third floor drops the least recently raised one, inside the window.
    assert cache.senders_with_floor == 2 and cache.forgotten_floors >= 1
    # Past the window everything is purged (those frames would be EXPIRED anyway).
    assert cache.admit("z", b"9", timestamp_ms=5000, now_ms=5000) is Replay.NEW
    assert len(cache) == 1 and cache.senders_with_floor == 0


def test_sybil_flood_of_future_dated_frames_does_not_lock_out_honest_peers(clock: Clock) -> None:
    """The replay-floor attack: valid frames dated ~now + 50 s from many keys overflow the nonce
    cache.  Before per-sender floors, the evicted timestamps became everyone's floor, every
    honest frame was refused as `replayed`, and the honest neighbour relaying it was blamed."""
    ch = chain(clock, nonce_capacity=64)  # 64 stands in for 65,536: the attack needs capacity + 1
    sybils = [Identity.generate() for _ in range(16)]
    request = Request(request_id=bytes(16), group_ids=(bytes(32),))
    for i in range(400):
        sybil = sybils[i % len(sybils)]
        frame = frame_of(request, ident=sybil, ts=NOW_MS + 50_000 + i)
        assert isinstance(ch.check(frame, from_peer=sybil.peer_id), Accepted)
    clock.t += 1.0
    honest = [frame_of(group()), *(frame_of(request, ts=NOW_MS + 1000 - lag) for lag in (0, 2000, 250_000))]
    for frame in honest:
        assert isinstance(ch.check(frame, from_peer="honest-relay"), Accepted)
    assert isinstance(ch.check(frame_of(group(ident=MALLORY), ident=MALLORY)), Accepted)
    assert ch.counter.total == 0 and ch.counter.peers() == []


def test_frame_below_its_senders_own_floor_blames_nobody(clock: Clock) -> None:
    ch = chain(clock, nonce_capacity=4)
    late = frame_of(group(), ts=NOW_MS - 10_000)  # sealed first, overtaken in transit
    for i in range(8):
        assert isinstance(ch.check(frame_of(group(), ts=NOW_MS - 5000 + i)), Accepted)
    r = rejected(ch.check(late, from_peer="honest-relay"), RejectReason.REPLAY_UNPROVEN)
    assert r.peer is None and ch.counter.peers() == []
    assert ch.counter.by_reason == {RejectReason.REPLAY_UNPROVEN: 1}


def test_bound_sender_is_checked_before_the_nonce_is_recorded(clock: Clock) -> None:
    # Mallory forwards Alice's fresh frame first; when Alice's own copy arrives it must pass.
    ch = chain(clock)
    frame = frame_of(group())
    r = rejected(ch.check(frame, from_peer=MALLORY.peer_id, bind_sender=True), RejectReason.SENDER_MISMATCH)
    assert r.peer == MALLORY.peer_id
    assert isinstance(ch.check(frame, from_peer=ALICE.peer_id, bind_sender=True), Accepted)
    assert ch.counter.for_peer(ALICE.peer_id) == {}


def test_fast_per_token_checks_agree_with_a_naive_loop(clock: Clock) -> None:
    """The byte-level fast paths must give the same verdict as checking each value in Python."""
    import random
    import struct

    specials = [0.0, -0.0, -1e-45, -3.4e38, -1.0, 1e-45, 0.5, math.inf, -math.inf, math.nan,
                struct.unpack("<f", b"\x01\x00\xc0\xff")[0]]  # fmt: skip  # the last: a NaN with the sign bit set
    rng = random.Random(7)
    ch = chain(clock)
    for trial in range(300):
        values = [-rng.expovariate(1.0) for _ in range(8)]
        if trial % 3:
            values[rng.randrange(8)] = rng.choice(specials)
        lp = logprob_array(values)
        naive_ok = all(math.isfinite(v) and v <= 0.0 for v in lp)
        ids = [rng.randrange(2**31) for _ in range(8)]
        if trial % 5 == 0:
            ids[rng.randrange(8)] = rng.choice([2**31 - 1, 2**31, 2**32 - 1])
        ids_ok = max(ids) <= 2**31 - 1
        g = group(completion(8, behavior_logprobs=lp, token_ids=token_array(ids)))
        result = ch.check(frame_of(g))
        assert isinstance(result, Accepted) == (naive_ok and ids_ok), (values, ids, result)
