"""Hostile inputs through the validator chain: crashes, wrongly accepted frames, memory of caches.

    .venv/bin/python benchmarks/hostile.py [--scale 1.0] [--seed 1]

One `default_chain` (default cache sizes: 65,536 nonce pairs, 16,384 sender floors) on a
simulated clock that advances 1 ms per input, fed these inputs (counts at --scale 1):

* mutated frame      50,000  valid frames, 1-3 fuzz mutations each (the fuzz test's mutator)
* mutated header     30,000  the signed header mutated, then re-signed by the fuzzer's own key
* mutated payload    30,000  the payload mutated inside a re-signed, otherwise valid header
* forged signature   20,000  honest frames with a flipped bit, random bytes, another key's
                             signature, another frame's signature, S + L, or a small-order R
* small-order key    20,000  sender or group origin is one of the 8 small-order points or a
                             non-canonical encoding, with the universal forgery `01 00..00` and
                             other R/S choices
* replay             20,000  exact copies of frames accepted earlier
* replay-floor       72,000  64 Sybil keys flood valid frames dated now + 50..60 s past the cache
                             capacity, while 4 honest peers (clock lag 0, 1 s, 30 s, 250 s) keep
                             sending; then the honest peers' early frames are replayed
* front-run relay     4,000  a neighbour forwards an honest frame first (bind_sender), then the
                             honest sender's own copy arrives

"Wrongly accepted" is judged by an oracle that does not use the chain: the (header, signature)
pair must have been signed by this script with the sender's own key, the (sender, nonce) pair
must be new, the timestamp inside the window, the swarm ours, every carried group one that its
origin signed (id recomputed) with finite logprobs <= 0 and token ids < 2^31, a PeerCard about
its sender.  "Honest refused" counts honest frames (fresh nonce, own key, in window) refused;
"honest blamed" counts rejections charged to an honest peer.  Memory: the nonce cache's pairs
and floors (deep size with `sys.getsizeof`, peak of samples every 5,000 inputs), the peers held
by the rejection counter, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "unit")]

import msgpack  # noqa: E402
from golden import load_make_golden  # noqa: E402
from test_protocol_fuzz import mutate  # noqa: E402  # one mutator for the fuzz test and this

from protocol import (  # noqa: E402
    Accepted,
    Identity,
    PeerCard,
    Request,
    Response,
    RolloutGroup,
    compute_group_id,
    default_chain,
    encode,
    peer_id_from_public_key,
    sign_group,
)
from protocol.envelope import ENVELOPE_TAG  # noqa: E402
from protocol.replay import NonceCache  # noqa: E402
from protocol.validators import NotReplayed, ValidatorChain  # noqa: E402

L = 2**252 + 27742317777372353535851937790883648493
SMALL_ORDER = [bytes.fromhex(h) for h in (  # the 8-torsion (tests/unit/test_protocol_identity.py)
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
)]  # fmt: skip
NON_CANONICAL = [bytes.fromhex(h) for h in (
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
)]  # fmt: skip
BAD_KEYS = SMALL_ORDER + NON_CANONICAL
MAX_AGE_MS, MAX_FUTURE_MS = 300_000, 60_000


@dataclasses.dataclass
class Row:
    inputs: int = 0
    crashes: int = 0
    wrongly_accepted: int = 0
    honest_refused: int = 0
    honest_blamed: int = 0
    accepted: int = 0


class Harness:
    """The chain under test, its simulated clock, and the oracle's ground truth."""

    def __init__(self, rng: random.Random) -> None:
        self.golden = load_make_golden()
        self.swarm: str = self.golden.SWARM
        self.now_ms = 1_900_000_000_000
        self.chain: ValidatorChain = default_chain(self.swarm, clock=lambda: self.now_ms / 1000)
        self.cache: NonceCache = next(
            v.cache for v in self.chain.envelope_validators if isinstance(v, NotReplayed)
        )
        self.rng = rng
        self.signed: set[tuple[bytes, bytes]] = set()  # (header, signature) this script signed
        self.groups: set[tuple[str, bytes, bytes]] = set()  # (origin, id, signature) signed here
        self.accepted_pairs: set[tuple[str, bytes]] = set()
        self.accepted_frames: list[bytes] = []
        self.honest: set[str] = set()
        self.rows: dict[str, Row] = {}
        self.peak = {"pairs": 0, "floors": 0, "cache_bytes": 0, "counter_peers": 0}
        self.total = 0

    # -- sealing ---------------------------------------------------------------------------------
    def seal(self, message: Any, ident: Identity, ts: int | None = None) -> bytes:
        for group in _groups(message):
            self.groups.add((group.origin, group.group_id, group.origin_signature))
        frame = encode(message, ident, self.swarm, timestamp_ms=self.now_ms if ts is None else ts)
        self.signed.add(tuple(msgpack.unpackb(frame)))  # type: ignore[arg-type]
        return frame

    def resign(self, header: bytes, ident: Identity) -> bytes:
        signature = ident.sign(ENVELOPE_TAG + header)
        self.signed.add((header, signature))
        return msgpack.packb([header, signature], use_bin_type=True)

    # -- checking --------------------------------------------------------------------------------
    def check(
        self,
        kind: str,
        frame: bytes,
        from_peer: str | None = None,
        *,
        bind: bool = False,
        honest: bool = False,
    ) -> bool:
        """One input; `bind`: the link carries only its own peer's envelopes (swarmrl's gossip)."""
        row = self.rows.setdefault(kind, Row())
        row.inputs += 1
        self.total += 1
        self.now_ms += 1
        try:
            result = self.chain.check(frame, from_peer, bind_sender=bind)
        except Exception:
            row.crashes += 1
            return False
        if isinstance(result, Accepted):
            row.accepted += 1
            if not self.rightly_accepted(result):
                row.wrongly_accepted += 1
            self.accepted_pairs.add((result.envelope.sender, result.envelope.nonce))
            self.accepted_frames.append(frame)
        else:
            row.honest_refused += honest
            row.honest_blamed += result.peer in self.honest
        if self.total % 5000 == 0:
            self.sample_memory()
        return isinstance(result, Accepted)

    def rightly_accepted(self, result: Accepted) -> bool:
        env, msg = result.envelope, result.message
        if (env.header, env.signature) not in self.signed or (env.sender, env.nonce) in self.accepted_pairs:
            return False
        if not self.now_ms - MAX_AGE_MS <= env.timestamp_ms <= self.now_ms + MAX_FUTURE_MS:
            return False
        if env.swarm_id != self.swarm or (isinstance(msg, PeerCard) and msg.peer_id != env.sender):
            return False
        return all(self.group_ok(g) for g in _groups(msg))

    def group_ok(self, g: RolloutGroup) -> bool:
        if (g.origin, g.group_id, g.origin_signature) not in self.groups or compute_group_id(g) != g.group_id:
            return False
        for c in g.completions:
            if c.behavior_logprobs is not None and not all(
                math.isfinite(v) and v <= 0 for v in c.behavior_logprobs
            ):
                return False
            if c.token_ids is not None and any(t >= 2**31 for t in c.token_ids):
                return False
        return g.swarm_id == self.swarm

    def sample_memory(self) -> None:
        seen, floors = self.cache._seen, self.cache._floors
        size = sys.getsizeof(seen) + sys.getsizeof(floors)
        size += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in seen.items())
        size += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in floors.items())
        for key, value in (("pairs", len(seen)), ("floors", len(floors)), ("cache_bytes", size),
                           ("counter_peers", len(self.chain.counter.peers()))):  # fmt: skip
            self.peak[key] = max(self.peak[key], value)


def _groups(message: Any) -> tuple[RolloutGroup, ...]:
    if isinstance(message, RolloutGroup):
        return (message,)
    return message.groups if isinstance(message, Response) else ()


def fresh_messages(h: Harness, ident: Identity, n: int) -> Iterator[Any]:
    """Valid messages from `ident`: the golden samples, with groups re-signed by `ident`."""
    samples = list(h.golden.sample_messages().values())
    for i in range(n):
        m = samples[i % len(samples)]
        if isinstance(m, RolloutGroup):
            m = sign_group(m, ident, created_ms=h.now_ms)
        elif isinstance(m, Response):
            m = dataclasses.replace(
                m, groups=tuple(sign_group(g, ident, created_ms=h.now_ms) for g in m.groups)
            )
        elif isinstance(m, PeerCard):
            m = dataclasses.replace(m, peer_id=ident.peer_id)
        yield m


def forged_from(frame: bytes, h: Harness, other: Identity, i: int) -> bytes:
    header, sig = msgpack.unpackb(frame)
    r, s = sig[:32], int.from_bytes(sig[32:], "little")
    flipped = bytearray(sig)
    flipped[h.rng.randrange(64)] ^= 1 << h.rng.randrange(8)
    choices: list[Callable[[], bytes]] = [
        lambda: bytes(flipped),
        lambda: os.urandom(64),
        lambda: other.sign(ENVELOPE_TAG + header),
        lambda: msgpack.unpackb(h.accepted_frames[h.rng.randrange(len(h.accepted_frames))])[1],
        lambda: r + (s + L).to_bytes(32, "little"),
        lambda: h.rng.choice(SMALL_ORDER) + s.to_bytes(32, "little"),
    ]
    return msgpack.packb([header, choices[i % len(choices)]()], use_bin_type=True)


def small_order_forgery(h: Harness, template: dict[str, Any], attacker: Identity, i: int) -> bytes:
    key = BAD_KEYS[i % len(BAD_KEYS)]
    forger = peer_id_from_public_key(key)
    signature = [bytes([1]) + bytes(63), key + bytes(32), h.rng.choice(SMALL_ORDER) + os.urandom(31) + b"\x00",
                 os.urandom(32) + bytes(32)][(i // len(BAD_KEYS)) % 4]  # fmt: skip
    if i % 2:  # forged envelope: the sender is the bad key
        header = dict(template, s=forger, n=os.urandom(16), ts=h.now_ms)
        return msgpack.packb([msgpack.packb(header, use_bin_type=True), signature], use_bin_type=True)
    group = h.golden.procedural_group(attacker)  # forged origin inside a validly signed envelope
    group = dataclasses.replace(group, origin=forger, created_ms=h.now_ms)
    group = dataclasses.replace(group, group_id=compute_group_id(group), origin_signature=signature)
    return encode(group, attacker, h.swarm, timestamp_ms=h.now_ms)


def run(h: Harness, scale: float) -> None:
    rng = h.rng
    n = {k: int(v * scale) for k, v in dict(mutated_frame=50_000, mutated_header=30_000, mutated_payload=30_000,
         forged=20_000, small_order=20_000, replay=20_000, sybil=70_000, front_run=2_000).items()}  # fmt: skip
    alice, mallory, fuzzer = Identity.generate(), Identity.generate(), Identity.generate()
    pool = [h.seal(m, alice) for m in fresh_messages(h, alice, 2000)]
    for f in pool[:200]:
        h.check("valid (warm-up)", f)
    headers = [msgpack.unpackb(f)[0] for f in pool]
    for i in range(n["mutated_frame"]):
        h.check("mutated frame", mutate(pool[i % len(pool)], rng))
    for i in range(n["mutated_header"]):
        h.check("mutated header", h.resign(mutate(headers[i % len(headers)], rng), alice))
    for i in range(n["mutated_payload"]):
        header = msgpack.unpackb(headers[i % len(headers)], raw=False)
        header.update(p=mutate(header["p"], rng), n=os.urandom(16), ts=h.now_ms, s=fuzzer.peer_id)
        h.check("mutated payload", h.resign(msgpack.packb(header, use_bin_type=True), fuzzer))
    fresh = fresh_messages(h, alice, n["forged"])
    for i in range(n["forged"]):
        h.check("forged signature", forged_from(h.seal(next(fresh), alice), h, mallory, i))
    template = msgpack.unpackb(headers[0], raw=False)
    for i in range(n["small_order"]):
        h.check("small-order key", small_order_forgery(h, template, mallory, i))
    for _ in range(n["replay"]):  # relayed by Mallory: the chain cannot tell a replay's source
        h.check("replay", h.accepted_frames[rng.randrange(len(h.accepted_frames))], mallory.peer_id)
    replay_floor(h, n["sybil"], mallory)
    front_run(h, n["front_run"], mallory)


def replay_floor(h: Harness, n_sybil: int, mallory: Identity) -> None:
    sybils = [Identity.generate() for _ in range(64)]
    honest = [Identity.generate() for _ in range(4)]
    lags = [0, 1000, 30_000, 250_000]
    relay = Identity.generate().peer_id  # an honest neighbour relaying the odd honest frames
    h.honest |= {p.peer_id for p in honest} | {relay}
    request = Request(request_id=bytes(16), group_ids=(bytes(32),))
    early: list[bytes] = []
    for i in range(n_sybil):
        sybil = sybils[i % len(sybils)]
        frame = h.seal(request, sybil, h.now_ms + 50_000 + i % 10_000)
        h.check("replay-floor: Sybil flood", frame, sybil.peer_id, bind=True)
        if i % 50 == 0:
            k = (i // 50) % len(honest)
            frame = h.seal(request, honest[k], h.now_ms - lags[k])
            if i % 100:
                h.check("replay-floor: honest, relayed", frame, relay, honest=True)
            else:
                h.check("replay-floor: honest, direct", frame, honest[k].peer_id, bind=True, honest=True)
            if len(early) < 400:
                early.append(frame)
    for frame in early:  # long evicted from the exact cache by now
        h.check("replay-floor: replayed honest", frame, mallory.peer_id)


def front_run(h: Harness, n: int, relay: Identity) -> None:
    bob = Identity.generate()
    h.honest.add(bob.peer_id)
    for m in fresh_messages(h, bob, n):
        frame = h.seal(m, bob)
        h.check("front-run: relay's copy", frame, relay.peer_id, bind=True)
        h.check("front-run: sender's copy", frame, bob.peer_id, bind=True, honest=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every input count")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    h = Harness(random.Random(args.seed))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    run(h, args.scale)
    elapsed = time.perf_counter() - start
    h.sample_memory()
    total = Row()
    print(f"\n{'inputs':<32}{'count':>9}{'crashes':>9}{'accepted':>10}{'wrongly':>9}{'honest refused':>16}"
          f"{'honest blamed':>15}")  # fmt: skip
    for kind, row in h.rows.items():
        print(f"{kind:<32}{row.inputs:>9,}{row.crashes:>9}{row.accepted:>10,}{row.wrongly_accepted:>9}"
              f"{row.honest_refused:>16}{row.honest_blamed:>15}")  # fmt: skip
        for f in dataclasses.fields(Row):
            setattr(total, f.name, getattr(total, f.name) + getattr(row, f.name))
    print(f"{'total':<32}{total.inputs:>9,}{total.crashes:>9}{total.accepted:>10,}{total.wrongly_accepted:>9}"
          f"{total.honest_refused:>16}{total.honest_blamed:>15}")  # fmt: skip
    reasons = Counter({r.value: c for r, c in h.chain.counter.by_reason.items()})
    print(f"\nrejections by reason: {dict(reasons.most_common())}")
    p = h.peak
    print(f"nonce cache peak: {p['pairs']:,} pairs (cap {h.cache.capacity:,}), {p['floors']:,} floors "
          f"(cap {h.cache.max_senders:,}), {p['cache_bytes'] / 2**20:.1f} MiB; forgotten floors "
          f"{h.cache.forgotten_floors}; rejection counter peak {p['counter_peers']:,} peers (cap "
          f"{h.chain.counter.max_peers:,})")  # fmt: skip
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"process peak RSS +{rss_growth:.0f} MiB; {total.inputs:,} inputs in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
