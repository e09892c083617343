"""One swarm peer as a separate process, driven by the conformance suite.

Usage: python tests/swarm/peer_proc.py --backend B --swarm-id S --seed HEX --status FILE
           [--bootstrap ADDR ...] [--allowlist FILE] [--msg-rate R --msg-burst N]

Commands arrive on stdin, one JSON object per line:
    {"cmd": "publish", "n": 5, "rate": 2.0, "size": 8000}
    {"cmd": "hostile", "faults": ["garbage", "forged", ...], "flood_rate": 100, "flood_seconds": 2,
     "flood_stop": false}
    {"cmd": "liar", "rate": 2.0, "seconds": 60}
    {"cmd": "replay_floor", "targets": [["PEER_ID", "MULTIADDR"], ...], "rate": 100, "seconds": 60,
     "ahead_ms": 59000}
    {"cmd": "stop"}
Hostile commands (used by benchmarks/chaos.py): `liar` republishes groups it received, as their
origin, with every claimed correctness flipped (a peer that scores honestly finds the lie);
`replay_floor` sends each target valid, signed fetch requests dated `ahead_ms` in the future,
each with a fresh nonce, at `rate` per target: the frames a replay cache must remember.
Every 0.1 s the peer rewrites FILE (atomically) with JSON: peer_id, addresses, published and
admitted group ids, metrics.  The test polls that file; nothing here sleeps to "let things
settle".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol import Identity, RolloutGroup, encode  # noqa: E402
from protocol.messages import Announce, AnnounceItem, Request  # noqa: E402
from swarm.gossip import GossipConfig  # noqa: E402
from swarm.peer import SwarmConfig, SwarmPeer  # noqa: E402
from swarm.scoring import ScoreParams  # noqa: E402
from swarm.testing import Fault, synthetic_group  # noqa: E402


class PeerProcess:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.identity = Identity.from_seed(bytes.fromhex(args.seed))
        self.published: list[str] = []
        self.admitted: list[str] = []
        self.peer: SwarmPeer | None = None
        self.done = asyncio.Event()
        self.hostile_sent: dict[str, int] = {}
        self.received: collections.deque[RolloutGroup] = collections.deque(maxlen=64)  # for `liar`
        self.request_errors: collections.Counter[str] = collections.Counter()
        self.origins: collections.Counter[str] = collections.Counter()  # admitted groups per origin

    async def run(self) -> None:
        a = self.args
        score = ScoreParams(msg_rate=a.msg_rate, msg_burst=a.msg_burst)
        gossip = GossipConfig(sync_interval=a.sync_interval, card_interval=3.0, card_ttl=10.0, score=score)
        config = SwarmConfig(
            backend=a.backend,
            swarm_id=a.swarm_id,
            host=a.host,
            bootstrap=tuple(a.bootstrap),
            allowlist_file=a.allowlist,
            gossip=gossip,
        )
        self.peer = await SwarmPeer.start(self.identity, config)
        tasks = [asyncio.ensure_future(self.status_loop()), asyncio.ensure_future(self.command_loop())]
        await self.done.wait()
        for t in tasks:
            t.cancel()
        self.write_status()
        await self.peer.stop()

    def write_status(self) -> None:
        assert self.peer is not None
        while True:
            try:
                item = self.peer.inbox.drain(1)
            except Exception:
                break
            if not item:
                break
            self.admitted.append(item[0].group_id)
            self.received.append(item[0].group)
            self.origins[item[0].origin] += 1
        status = {
            "pid": os.getpid(),
            "peer_id": self.peer.peer_id,
            "addresses": self.peer.addresses,
            "published": self.published,
            "admitted": self.admitted,
            "hostile_sent": self.hostile_sent,
            "request_errors": dict(self.request_errors),
            "origins": dict(self.origins),
            "members": [m.peer_id for m in self.peer.gossip.members.alive()],
            "metrics": self.peer.metrics(),
        }
        tmp = self.args.status + ".tmp"
        with open(tmp, "w") as f:
            json.dump(status, f)
        os.replace(tmp, self.args.status)

    async def status_loop(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(0.1)

    async def command_loop(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:  # the test closed our stdin (or died): exit cleanly
                self.done.set()
                return
            cmd = json.loads(line)
            if cmd["cmd"] == "publish":
                asyncio.ensure_future(self.publish(cmd["n"], cmd.get("rate", 2.0), cmd.get("size", 8000)))
            elif cmd["cmd"] == "hostile":
                asyncio.ensure_future(self.hostile(cmd))
            elif cmd["cmd"] == "liar":
                asyncio.ensure_future(self.lie(float(cmd.get("rate", 2.0)), float(cmd.get("seconds", 60))))
            elif cmd["cmd"] == "replay_floor":
                for peer_id, address in cmd["targets"]:
                    asyncio.ensure_future(self.replay_floor(peer_id, address, cmd))
            elif cmd["cmd"] == "stop":
                self.done.set()
                return

    async def publish(self, n: int, rate: float, size: int) -> None:
        assert self.peer is not None
        for _ in range(n):
            index = int.from_bytes(os.urandom(4), "big")
            self.published.append(await self.peer.publish(synthetic_group(self.args.swarm_id, index, size)))
            await asyncio.sleep(1.0 / rate)

    def announce_frame(self) -> bytes:
        item = AnnounceItem(group_id=os.urandom(32), task="basic_arithmetic", num_completions=4,
                            size_bytes=1000, policy_version=0)  # fmt: skip
        return encode(Announce(items=(item,)), self.identity, self.args.swarm_id)

    async def hostile(self, cmd: dict[str, object]) -> None:
        """Push each fault straight through the transport, bypassing our own gossip checks."""
        assert self.peer is not None
        transport, topic = self.peer.transport, self.peer.gossip.config.topic
        faults = [Fault(f) for f in cmd["faults"]]  # type: ignore[union-attr]
        for fault in faults:
            if fault is Fault.GARBAGE:
                frames = [os.urandom(300)]
            elif fault is Fault.FORGED:
                frame = bytearray(self.announce_frame())
                frame[-5] ^= 0xFF  # inside the signature
                frames = [bytes(frame)]
            elif fault is Fault.OVERSIZED:
                frames = [b"\x92" + os.urandom(300_000)]
            elif fault is Fault.REPLAY:
                frame = self.announce_frame()
                frames = [frame, frame]
            else:  # FLOOD: valid announces at flood_rate for flood_seconds
                rate, seconds = float(cmd.get("flood_rate", 100)), float(cmd.get("flood_seconds", 2))  # type: ignore[arg-type]
                # flood_stop: end after flood_seconds even if a slow machine sent fewer frames
                # (the chaos benchmark's time window); otherwise every frame is sent, catching up
                stop = seconds if cmd.get("flood_stop") else None
                await self.paced(int(rate * seconds), rate, fault.value, self.announce_frame, stop)
                continue
            for frame in frames:
                await transport.publish(topic, frame)
                self.hostile_sent[fault.value] = self.hostile_sent.get(fault.value, 0) + 1
            await asyncio.sleep(0.2)

    async def lie(self, rate: float, seconds: float) -> None:
        """Republish received groups as our own with every claimed correctness flipped."""
        assert self.peer is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if self.received:
                group = self.received.popleft()
                flipped = tuple(
                    dataclasses.replace(c, claimed_rewards={**c.claimed_rewards,
                                                            "correctness": 1.0 - c.claimed_rewards.get("correctness", 0.0)})
                    for c in group.completions
                )  # fmt: skip
                forged = dataclasses.replace(group, completions=flipped, origin="", created_ms=0, group_id=b"",
                                             origin_signature=b"")  # fmt: skip
                try:
                    self.published.append(await self.peer.publish(forged))
                    self.hostile_sent["liar"] = self.hostile_sent.get("liar", 0) + 1
                except Exception as e:  # a refused group (e.g. a field we broke) is counted, not fatal
                    self.request_errors[type(e).__name__] += 1
            await asyncio.sleep(1.0 / rate)

    async def replay_floor(self, target: str, address: str, cmd: dict[str, object]) -> None:
        """Valid fetch requests dated `ahead_ms` ahead, fresh nonces, `rate` per second to `target`."""
        assert self.peer is not None
        transport, protocol = self.peer.transport, self.peer.gossip.config.fetch_protocol
        rate, seconds = float(cmd.get("rate", 100)), float(cmd.get("seconds", 60))  # type: ignore[arg-type]
        ahead = int(cmd.get("ahead_ms", 59_000))  # type: ignore[call-overload]
        try:
            await transport.connect(address)
        except Exception as e:
            self.request_errors[f"connect:{type(e).__name__}"] += 1

        def frame() -> bytes:
            request = Request(request_id=os.urandom(16), group_ids=(os.urandom(32),))
            return encode(
                request, self.identity, self.args.swarm_id, timestamp_ms=int(time.time() * 1000) + ahead
            )

        async def one() -> None:
            try:
                await transport.request(target, protocol, frame(), 10.0)
                self.hostile_sent["replay_floor"] = self.hostile_sent.get("replay_floor", 0) + 1
            except Exception as e:  # refused (rate limited, banned) or unreachable: count and go on
                self.request_errors[type(e).__name__] += 1

        loop = asyncio.get_running_loop()
        t0, n, inflight = loop.time(), int(rate * seconds), set()
        for i in range(n):
            ahead_s = t0 + i / rate - loop.time()
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)
            if len(inflight) >= 256:  # bounded: a stalled target must not grow our memory
                _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            inflight.add(asyncio.ensure_future(one()))
        if inflight:
            await asyncio.wait(inflight)

    async def paced(
        self, n: int, rate: float, label: str, make: Callable[[], bytes], stop_after: float | None = None
    ) -> None:
        """Send `n` frames at `rate` on a schedule: a sender slowed down by a busy machine catches
        up with a burst instead of falling below the rate it is meant to test.  Up to 64 sends
        are in flight at once (one at a time, a daemon round trip per frame caps the rate)."""
        assert self.peer is not None
        transport, topic = self.peer.transport, self.peer.gossip.config.topic
        loop = asyncio.get_running_loop()

        async def one() -> None:
            await transport.publish(topic, make())
            self.hostile_sent[label] = self.hostile_sent.get(label, 0) + 1

        t0, inflight = loop.time(), set()
        for i in range(n):
            ahead = t0 + i / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
            elif stop_after is not None and loop.time() - t0 > stop_after:
                break
            if len(inflight) >= 64:
                _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            inflight.add(asyncio.ensure_future(one()))
        if inflight:
            await asyncio.wait(inflight)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True)
    p.add_argument("--swarm-id", default="conformance")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--seed", required=True, help="32-byte identity seed, hex")
    p.add_argument("--status", required=True)
    p.add_argument("--bootstrap", nargs="*", default=[])
    p.add_argument("--allowlist", default=None)
    p.add_argument("--msg-rate", type=float, default=10.0)
    p.add_argument("--msg-burst", type=float, default=30.0)
    p.add_argument("--sync-interval", type=float, default=1.0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(PeerProcess(args).run())


if __name__ == "__main__":
    main()
