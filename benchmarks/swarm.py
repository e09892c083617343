"""Swarm benchmark: real backends side by side on loopback, then a 10..10,000-peer simulation.

    .venv/bin/python benchmarks/swarm.py                 # everything, prints markdown
    .venv/bin/python benchmarks/swarm.py --part real     # 16 peers: hivemind, libp2p, reference
    .venv/bin/python benchmarks/swarm.py --part sim --sizes 10 100 1000 10000
    .venv/bin/python benchmarks/swarm.py --json out.json # also keep the raw numbers

Part 1 (real): for each approach, 16 peers on 127.0.0.1, one process per peer (each with its own
daemon or host and sockets), started one approach after the other.  Peers follow a fixed
schedule from a shared start time and record wall-clock times (one host, one clock), so
"available at every peer" is measured exactly:
  * latency: 5 rounds, 1 s apart; in each round every peer publishes one ~25 KB group
    (16 groups/s nominal).  Per group: time from publish until the last of the other 15 peers
    has admitted it; p50/p99 over the 80 groups.
  * throughput: every peer publishes 10 groups back to back (160 groups); groups/s = 160 / time
    until all are at every peer.
  * bytes sent per node per group: application bytes each node handed to its transport
    (announces x neighbours or mesh peers, requests, responses), summed, / (16 x groups).
  * loss: (group, peer) pairs not delivered 30 s after the last publish.
The reference approach is rl-swarm's: every peer stores its whole payload in a hivemind DHT
(`hivemind.DHT`, its own process per peer, all 16 driven from one worker process, one thread per
DHT) under key = round, subkey = peer id, and readers `get(round, latest=True)`.  rl-swarm reads once after a 1 s sleep; here readers poll every
0.25 s (more generous to it) until all 16 entries are visible or 20 s pass.

Part 2 (sim): gossip over the memory transport on a simulated clock, degree-8 random graph,
one-way latency 40-100 ms, 100 Mbit/s per link.  One 10 s round: 4 new groups (25 KB each)
published by random peers, periodic PeerCards and inventory syncs included.  Reports per-node
messages and bytes for the round and the time until 99% of peers hold each group.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protocol import Identity, encode, sign_group  # noqa: E402
from swarm.gossip import GossipConfig  # noqa: E402
from swarm.testing import synthetic_group  # noqa: E402

GROUP_BYTES = 25_000
N_PEERS = 16
ROUNDS = 5
BURST_PER_PEER = 10
DEADLINE = 30.0
BURST_GAP = 10.0  # seconds between the last latency round and the burst


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# ---------------------------------------------------------------- real backends: one process per peer
async def bench_peer(args: argparse.Namespace) -> None:
    """One benchmark peer.  Follows a fixed schedule from the orchestrator's `go` file and
    records wall-clock publish and admit times (all peers share the host's clock)."""

    from swarm.peer import SwarmConfig, SwarmPeer

    cfg = SwarmConfig(backend=args.peer, swarm_id="bench", bootstrap=tuple(args.bootstrap),
                      gossip=GossipConfig(sync_interval=2.0))  # fmt: skip
    peer = await SwarmPeer.start(Identity.generate(), cfg)
    status = Path(args.status)
    published: dict[str, float] = {}
    admitted: dict[str, float] = {}

    def write(final: bool = False) -> None:
        data = {"addresses": peer.addresses, "connected": peer.metrics()["connected_peers"], "published": published,
                "admitted": admitted, "metrics": {k: v for k, v in peer.metrics().items() if k != "peer_scores"},
                "final": final}  # fmt: skip
        tmp = status.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, status)

    async def drain() -> None:
        while True:
            item = await peer.inbox.get()
            admitted[item.group_id] = time.time()

    async def report() -> None:
        while True:
            write()
            await asyncio.sleep(0.2)

    tasks = [asyncio.ensure_future(drain()), asyncio.ensure_future(report())]
    go = Path(args.status).with_name("go")
    while not go.exists():
        await asyncio.sleep(0.05)
    t0 = float(go.read_text())

    async def at(t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.time()))

    async def publish(index: int) -> None:
        gid = await peer.publish(synthetic_group("bench", index, GROUP_BYTES))
        published[gid] = time.time()

    for r in range(ROUNDS):  # latency rounds, 1 s apart
        await at(t0 + r)
        await publish(args.index * 1000 + r)
    await at(t0 + ROUNDS + BURST_GAP)  # burst, back to back
    for k in range(BURST_PER_PEER):
        await publish(args.index * 1000 + 100 + k)
    stop = Path(args.status).with_name("stop")
    while not stop.exists():
        await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    write(final=True)
    await peer.stop()


def gossip_real(backend: str, n: int, workdir: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(i: int, bootstrap: list[str]) -> Path:
        st = workdir / f"{backend}-{i}.json"
        cmd = [sys.executable, __file__, "--peer", backend, "--index", str(i), "--status", str(st)]
        if bootstrap:
            cmd += ["--bootstrap", *bootstrap]
        log = open(workdir / f"{backend}-{i}.log", "wb")  # noqa: SIM115 -- lives as long as the process
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        return st

    def read(st: Path) -> dict[str, Any]:
        try:
            return json.loads(st.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def until(pred: Any, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.2)
        return pred()

    t_start = time.time()
    try:
        statuses = [spawn(0, [])]
        if not until(lambda: read(statuses[0]).get("addresses"), 60):
            raise RuntimeError("bootstrap peer did not start")
        boot = read(statuses[0])["addresses"]
        statuses += [spawn(i, boot) for i in range(1, n)]
        # hivemind keeps up to 8 neighbours, libp2p dials every member it hears of
        joined = until(lambda: all(read(s).get("connected", 0) >= min(n - 1, 6) for s in statuses), 120)
        startup = time.time() - t_start
        (workdir / "go").write_text(str(time.time() + 1.0))
        expected = n * (ROUNDS + BURST_PER_PEER)

        def everything_delivered() -> bool:
            views = [read(s) for s in statuses]
            return sum(len(v.get("published", {})) for v in views) == expected and all(
                len(v.get("admitted", {})) == expected - len(v.get("published", {})) for v in views
            )

        until(everything_delivered, 1.0 + ROUNDS + BURST_GAP + DEADLINE + 30)
        (workdir / "stop").write_text("")
        until(lambda: all(read(s).get("final") for s in statuses), 30)
        views = [read(s) for s in statuses]
    finally:
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait(10)
    pub: dict[str, float] = {g: t for v in views for g, t in v.get("published", {}).items()}
    burst_ids = {g for v in views for g in list(v.get("published", {}))[ROUNDS:]}
    lat_ids = [g for g in pub if g not in burst_ids]
    arrivals: dict[str, list[float]] = {g: [] for g in pub}
    for v in views:
        for g, t in v.get("admitted", {}).items():
            if g in arrivals:
                arrivals[g].append(t)
    complete = {g for g, a in arrivals.items() if len(a) == n - 1}
    per_group = [max(arrivals[g]) - pub[g] for g in lat_ids if g in complete]
    per_pair = [t - pub[g] for g in lat_ids for t in arrivals[g]]
    burst_done = [g for g in burst_ids if g in complete]
    burst_time = (
        (max(max(arrivals[g]) for g in burst_done) - min(pub[g] for g in burst_ids)) if burst_done else 0
    )
    lost = sum((n - 1) - len(a) for a in arrivals.values())
    sent = sum(v.get("metrics", {}).get("sent_bytes", 0) for v in views)
    return {
        "approach": backend,
        "peers": n,
        "startup_s": round(startup, 1),
        "joined": joined,
        "p50_ms": round(pct(per_group, 50) * 1000, 1),
        "p99_ms": round(pct(per_group, 99) * 1000, 1),
        "pair_p50_ms": round(pct(per_pair, 50) * 1000, 1),
        "groups_per_s": round(len(burst_done) / burst_time, 1) if burst_time > 0 else None,
        "bytes_per_node_per_group": round(sent / n / max(1, len(pub))),
        "loss": round(lost / max(1, len(pub) * (n - 1)), 4),
        "rejected": sum(v.get("metrics", {}).get("rejected_total", 0) for v in views),
        "groups": len(pub),
        "counters": {
            k: sum(v.get("metrics", {}).get(k, 0) for v in views)
            for k in (
                "fetch_failures",
                "fetch_missing",
                "sync_failures",
                "syncs",
                "sent_requests",
                "duplicate_announces",
                "publish_errors",
            )
        },  # fmt: skip
    }


async def wait(predicate: Any, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def reference_worker(n: int) -> dict[str, Any]:
    """rl-swarm's approach: whole payloads in a hivemind DHT under key = round."""
    import hivemind

    # hivemind.DHT forks its process and blocks until ready: do it before any event loop runs
    t0 = time.time()
    dhts = [hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])]
    addrs = dhts[0].get_visible_maddrs()
    dhts += [
        hivemind.DHT(start=True, initial_peers=addrs, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
        for _ in range(n - 1)
    ]
    startup = time.time() - t0
    return asyncio.run(reference_measure(hivemind, dhts, startup))


async def reference_measure(hivemind: Any, dhts: list[Any], startup: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    n = len(dhts)
    ids = [Identity.generate() for _ in range(n)]
    errors = {"store": 0, "get": 0}
    # hivemind.DHT talks to its process through a pipe; with values over ~16 KB that process can
    # stop reading and the *caller* blocks in a pipe write.  Calls run in threads so a stuck one
    # costs its thread, not the benchmark; the orchestrator kills the process group afterwards.
    # One thread per DHT: its pipe is not safe for concurrent callers (rl-swarm uses one thread).
    pools = [concurrent.futures.ThreadPoolExecutor(max_workers=1) for _ in range(n)]

    async def call(i: int, fn: Any) -> Any:
        return await asyncio.wait_for(loop.run_in_executor(pools[i], fn), 10)

    received_bytes = 0
    stored_bytes = 0
    per_group: list[float] = []
    per_pair: list[float] = []
    lost = 0
    groups = 0

    async def run_round(key: str, index0: int) -> tuple[int, float]:
        nonlocal received_bytes, stored_bytes, lost, groups
        payloads = {
            ids[i].peer_id: encode(
                sign_group(synthetic_group("bench", index0 + i, GROUP_BYTES), ids[i]), ids[i], "bench"
            )
            for i in range(n)
        }
        start = loop.time()
        stored_at: dict[str, float] = {}

        async def store(i: int) -> None:
            nonlocal stored_bytes
            pid = ids[i].peer_id
            expiration = hivemind.utils.get_dht_time() + 600
            try:
                await call(i, lambda: dhts[i].store(key, payloads[pid], expiration, subkey=pid))
                stored_at[pid] = loop.time()
                stored_bytes += len(payloads[pid])
            except Exception:
                errors["store"] += 1

        seen: dict[int, dict[str, float]] = {i: {} for i in range(n)}

        async def read(i: int) -> None:
            nonlocal received_bytes
            deadline = loop.time() + 20
            while len(seen[i]) < n - 1 and loop.time() < deadline:
                try:
                    res = await call(i, lambda: dhts[i].get(key, latest=True))
                except Exception:
                    errors["get"] += 1
                    res = None
                if res is not None and isinstance(res.value, dict):
                    for sub, item in res.value.items():
                        received_bytes += len(item.value) if isinstance(item.value, bytes) else 0
                        if sub != ids[i].peer_id and sub not in seen[i]:
                            seen[i][sub] = loop.time()
                await asyncio.sleep(0.25)

        await asyncio.gather(*(store(i) for i in range(n)), *(read(i) for i in range(n)))
        for i in range(n):
            pid = ids[i].peer_id
            at = [seen[j][pid] for j in range(n) if j != i and pid in seen[j]]
            if pid in stored_at:
                per_pair.extend(t - start for t in at)
            if len(at) == n - 1:
                per_group.append(max(at) - start)
            lost += (n - 1) - len(at)
            groups += 1
        done = sum(1 for i in range(n) if sum(ids[i].peer_id in seen[j] for j in range(n) if j != i) == n - 1)
        return done, loop.time() - start

    print(f"[reference] {n} DHTs up in {startup:.1f}s", file=sys.stderr, flush=True)
    for r in range(ROUNDS):
        await run_round(f"round_{r}", r * n)
        print(f"[reference] round {r}: lost so far {lost}, errors {errors}", file=sys.stderr, flush=True)
    b0 = loop.time()
    burst_done = 0
    for r in range(3):  # back-to-back rounds: the reference's sustained rate
        done, _ = await run_round(f"burst_{r}", 10_000 + r * n)
        burst_done += done
    burst_time = loop.time() - b0
    alive = sum(d.is_alive() for d in dhts)
    return {
        "approach": "reference (DHT payloads)",
        "peers": n,
        "startup_s": round(startup, 2),
        "p50_ms": round(pct(per_group, 50) * 1000, 1),
        "p99_ms": round(pct(per_group, 99) * 1000, 1) if per_group else None,
        "pair_p50_ms": round(pct(per_pair, 50) * 1000, 1),
        "groups_per_s": round(burst_done / burst_time, 1),
        # estimated: stores replicate to hivemind's default 5 nodes; every poll returns the whole round dict
        "bytes_per_node_per_group": round((stored_bytes * 5 + received_bytes) / n / groups),
        "loss": round(lost / (groups * (n - 1)), 4),
        "errors": errors,
        "dht_processes_alive": f"{alive}/{n}",
        "groups": groups,
    }


def install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def reference_real(n: int) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, __file__, "--reference", "--peers", str(n)], stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)  # fmt: skip
        line = ""
        try:
            # read up to the result line: the forked DHT processes keep the pipe open after the
            # worker exits, so waiting for EOF (communicate) would wait for them
            assert proc.stdout is not None
            deadline = time.time() + 600
            while time.time() < deadline and not line.startswith("{"):
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
        finally:  # its DHT processes and daemons share its process group: reap them all
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if not line.startswith("{"):
            err.seek(0)
            raise RuntimeError(err.read().decode(errors="replace")[-1500:])
    return json.loads(line)


def real_part(n: int, approaches: list[str]) -> list[dict[str, Any]]:
    import tempfile

    results = []
    for kind in approaches:
        print(f"[swarm bench] {kind}: {n} peers ...", file=sys.stderr, flush=True)
        t0 = time.time()
        try:
            if kind == "reference":
                results.append(reference_real(n))
            else:
                with tempfile.TemporaryDirectory(prefix=f"swarm-bench-{kind}-") as tmp:
                    results.append(gossip_real(kind, n, Path(tmp)))
        except Exception as e:  # one approach failing must not hide the others
            results.append({"approach": kind, "error": str(e)})
        print(f"[swarm bench] {kind}: done in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------- simulation
def simulate(n: int, groups: int = 4, round_s: float = 10.0, seed: int = 0) -> dict[str, Any]:
    from swarm.peer import SwarmConfig, SwarmPeer
    from swarm.transports.memory import MemoryHub, VirtualClockLoop

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        hub = MemoryHub(latency=0.04, jitter=0.06, bandwidth=12_500_000, degree=8, seed=seed)
        cfg = SwarmConfig(backend="memory", swarm_id="sim",
                          gossip=GossipConfig(sync_interval=10.0, card_interval=10.0, fetch_timeout=2.0))  # fmt: skip
        peers = [await SwarmPeer.start(Identity.generate(), cfg, hub=hub) for _ in range(n)]
        await asyncio.sleep(1.0)  # first cards and syncs go out before the measured round
        hub.stats.clear()
        start = loop.time()
        rng = random.Random(seed)
        gids = [
            await peers[rng.randrange(n)].publish(synthetic_group("sim", k, GROUP_BYTES))
            for k in range(groups)
        ]
        reach: dict[str, float] = {}
        need = int(0.99 * n)
        while loop.time() - start < round_s:
            await asyncio.sleep(0.05)
            for g in gids:
                if g not in reach and sum(g in p.gossip.outbox for p in peers) >= need:
                    reach[g] = loop.time() - start
        msgs = sum(s.messages for s in hub.stats.values())
        nbytes = sum(s.bytes for s in hub.stats.values())
        everyone = sum(all(g in p.gossip.outbox for g in gids) for p in peers)
        for p in peers:
            await p.stop()
        return {
            "peers": n,
            "msgs_per_node_round": round(msgs / n, 1),
            "kb_per_node_round": round(nbytes / n / 1000, 1),
            "t99_p50_s": round(statistics.median(reach.values()), 2) if reach else None,
            "t99_max_s": round(max(reach.values()), 2) if len(reach) == groups else None,
            "all_groups_at_all_peers": f"{everyone}/{n}",
        }

    loop = VirtualClockLoop()
    t0 = time.time()
    try:
        result = loop.run_until_complete(scenario())
    finally:
        loop.close()
    result["wall_s"] = round(time.time() - t0, 1)
    return result


# ---------------------------------------------------------------- report
def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}, no GPU, Python {platform.python_version()}"


def markdown(real: list[dict[str, Any]], sim: list[dict[str, Any]]) -> str:
    out = []
    if real:
        out += ["| approach | p50 to all peers (ms) | p99 to all peers (ms) | p50 per peer (ms) | sustained groups/s "
                "| bytes sent / node / group | loss | notes |", "|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in real:
            if "error" in r:
                out.append(f"| {r['approach']} | failed | | | | | | {r['error'][-200:]!r} |")
                continue
            notes = f"start {r['startup_s']} s"
            if "errors" in r:
                notes += f"; DHT errors {r['errors']}; DHT processes alive {r['dht_processes_alive']}"
            if r.get("rejected"):
                notes += f"; rejected {r['rejected']}"
            out.append(f"| {r['approach']} | {r['p50_ms']} | {r['p99_ms']} | {r['pair_p50_ms']} | {r['groups_per_s']} "
                       f"| {r['bytes_per_node_per_group']:,} | {r['loss']:.2%} | {notes} |")  # fmt: skip
    if sim:
        out += ["", "| peers | messages / node / round | KB sent / node / round | time to 99% of peers, p50 (s) "
                "| slowest group to 99% (s) | peers holding all 4 groups | sim wall time (s) |",
                "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for s in sim:
            out.append(f"| {s['peers']:,} | {s['msgs_per_node_round']} | {s['kb_per_node_round']} | {s['t99_p50_s']} "
                       f"| {s['t99_max_s']} | {s['all_groups_at_all_peers']} | {s['wall_s']} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["real", "sim", "all"], default="all")
    p.add_argument("--peers", type=int, default=N_PEERS)
    p.add_argument("--approaches", nargs="*", default=["hivemind", "libp2p", "reference"])
    p.add_argument("--sizes", nargs="*", type=int, default=[10, 100, 1000, 10000])
    p.add_argument("--json", help="also write raw results here")
    p.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run one benchmark peer
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--status", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer:
        install_uvloop()
        asyncio.run(bench_peer(args))
        return
    if args.reference:
        install_uvloop()
        try:
            result = reference_worker(args.peers)
        except Exception as e:  # always answer: the orchestrator reads until this line
            result = {"approach": "reference (DHT payloads)", "error": repr(e)}
        print(json.dumps(result), flush=True)
        os._exit(0)  # threads stuck in a DHT pipe write would block a normal exit
    real = real_part(args.peers, args.approaches) if args.part in ("real", "all") else []
    sim = []
    if args.part in ("sim", "all"):
        for n in args.sizes:
            print(f"[swarm bench] simulating {n} peers ...", file=sys.stderr, flush=True)
            sim.append(simulate(n))
    print(f"Machine: {machine()}\n")
    print(markdown(real, sim))
    for r in real:
        print(
            f"\n{r.get('approach')}: {json.dumps({k: v for k, v in r.items() if k != 'approach'})}",
            file=sys.stderr,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "real": real, "sim": sim}, indent=1))


if __name__ == "__main__":
    main()
