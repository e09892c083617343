"""One swarm peer as a separate process, driven by the conformance suite.

Usage: python tests/swarm/peer_proc.py --backend B --swarm-id S --seed HEX --status FILE
           [--bootstrap ADDR ...] [--allowlist FILE] [--msg-rate R --msg-burst N]

Commands arrive on stdin, one JSON object per line:
    {"cmd": "publish", "n": 5, "rate": 2.0, "size": 8000}
    {"cmd": "hostile", "faults": ["garbage", "forged", ...], "flood_rate": 100, "flood_seconds": 2}
    {"cmd": "stop"}
Every 0.1 s the peer rewrites FILE (atomically) with JSON: peer_id, addresses, published and
admitted group ids, metrics.  The test polls that file; nothing here sleeps to "let things
settle".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol import Identity, encode  # noqa: E402
from protocol.messages import Announce, AnnounceItem  # noqa: E402
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
        status = {
            "pid": os.getpid(),
            "peer_id": self.peer.peer_id,
            "addresses": self.peer.addresses,
            "published": self.published,
            "admitted": self.admitted,
            "hostile_sent": self.hostile_sent,
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
                n = int(rate * seconds)
                for _ in range(n):
                    await transport.publish(topic, self.announce_frame())
                    self.hostile_sent[fault.value] = self.hostile_sent.get(fault.value, 0) + 1
                    await asyncio.sleep(1.0 / rate)
                continue
            for frame in frames:
                await transport.publish(topic, frame)
                self.hostile_sent[fault.value] = self.hostile_sent.get(fault.value, 0) + 1
            await asyncio.sleep(0.2)


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
