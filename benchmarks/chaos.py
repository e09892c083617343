"""Chaos suite: real `swarmrl run` nodes under attack, crashes, hangs, churn and a partition.

    nice -n 10 .venv/bin/python benchmarks/chaos.py swarm --nodes 4 --duration 300   # faults, then a control
    nice -n 10 .venv/bin/python benchmarks/chaos.py swarm --no-control --duration 90  # faults only, short
    nice -n 10 .venv/bin/python benchmarks/chaos.py swarm --no-attacks   # crashes, hang, churn, partition only
    nice -n 10 .venv/bin/python benchmarks/chaos.py killloop --kills 100              # kill -9 a solo run
    # results: benchmarks/chaos/results/{swarm,killloop}-STAMP.json; a markdown table on stdout

`swarm`: a bootstrap node, N nodes started through the CLI exactly as a user would
(`swarmrl run --resume -c configs/tiny.yaml swarm.mode=join ...`), and one honest observer peer
(tests/swarm/peer_proc.py: the gossip stack without a model; it counts every group it admits
by origin, which is how lost groups are counted).  After every node has made a step, the fault
window of `--duration` seconds follows this schedule (fractions of the window):

    0.00-0.45  attacks     a liar (re-publishes honest groups with flipped reward claims), a
                           flooder (announces at 10x the rate limit), a replay-floor attacker and
                           a Sybil set of --sybils keys (valid fetch requests dated now + 59 s
                           with fresh nonces, each key at the request rate limit, against node1)
    0.45       kill -9     node2 (and its p2pd), restarted with --resume at 0.50
    0.55-0.65  hang        SIGSTOP / SIGCONT to node3's process group
    0.70       churn       kill -9 30% of the nodes (never node1), restarted at 0.80
    0.72-0.85  partition   the last node is cut off: its network namespace's cable is pulled
                           (--netns, root only); without namespaces its p2pd is frozen instead
                           (SIGSTOP: sockets stay open, nothing moves), which the table says

The control run (`--control`, default on) runs the same nodes for the same time with no fault.
The table compares: steps of the honest nodes, groups lost (published by a node that was never
killed, per its status.json, but never admitted by the observer), honest peers banned (an
honest peer id scored below the ban threshold anywhere, any time), exceptions (Traceback in
any honest log), peak RSS and CPU of the victim node1 during the attacks, the time from the
start of each attack until the first and the last honest node banned the attacker, and failed
resumes (a restarted node that exits or comes back below its last checkpoint).

`killloop`: see benchmarks/chaos/killloop.py.

Every process runs in its own session and is signalled by its process group id (= the PID
started here); nothing is ever killed by name.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "chaos"))

from node.procs import group_members, signal_group  # noqa: E402
from swarm.scoring import ScoreParams  # noqa: E402
from swarm.testing import proc_usage  # noqa: E402

CLI = [sys.executable, "-m", "node.cli"]
PEER_SCRIPT = REPO / "tests" / "swarm" / "peer_proc.py"
RESULTS = REPO / "benchmarks" / "chaos" / "results"
SWARM_ID = "chaos"
BAN = ScoreParams().ban_threshold
# Node status shows peer scores, not bans.  A ban starts below BAN and lasts at least
# ban_seconds, while the score decays halfway to 0 every half_life: within a ban the score is
# at most BAN * 0.5 ** (ban_seconds / half_life) = -25.  "Banned" below is "seen at or below it".
BANNED_SCORE = BAN * 0.5 ** (ScoreParams().ban_seconds / ScoreParams().half_life)
MSG_RATE, REQUEST_RATE = ScoreParams().msg_rate, ScoreParams().request_rate


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def wait_until(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Cluster:
    """Processes of one run; `close()` kills every group started here and checks none is left."""

    def __init__(self, workdir: Path, cache: Path, netns: Any = None) -> None:
        self.workdir, self.cache, self.netns = workdir, cache, netns
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.all_pgids: set[int] = set()
        self.hosts: dict[str, str] = {}
        workdir.mkdir(parents=True, exist_ok=True)

    def host(self, name: str) -> str:
        if self.netns is None:
            return "127.0.0.1"
        if name not in self.hosts:
            self.hosts[name] = self.netns.add(name, f"10.77.0.{10 + len(self.hosts)}")
        return self.hosts[name]

    def spawn(
        self, name: str, argv: list[str], stdin: int | None = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        if self.netns is not None:
            self.host(name)
            argv = ["ip", "netns", "exec", self.netns.ns(name), *argv]
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=stdin, cwd=REPO, env=env,
                                    start_new_session=True)  # fmt: skip
        self.procs[name] = proc
        self.all_pgids.add(proc.pid)
        return proc

    def bootstrap(self) -> str:
        addr = self.workdir / "boot.addr"
        proc = self.spawn("boot", CLI + ["bootstrap", "--host", self.host("boot"), "--swarm-id", SWARM_ID,
                                         "--address-file", str(addr)])  # fmt: skip
        if not wait_until(lambda: addr.is_file() or proc.poll() is not None, 300):
            raise RuntimeError("bootstrap did not start")
        if proc.poll() is not None:
            raise RuntimeError(f"bootstrap exited:\n{self.log('boot')}")
        return addr.read_text().split()[0]

    def start_node(self, k: int, address: str) -> subprocess.Popen[bytes]:
        name = f"node{k}"
        return self.spawn(name, CLI + [
            "run", "--resume", "-c", "configs/tiny.yaml", "swarm.mode=join", f"swarm.swarm_id={SWARM_ID}",
            f"swarm.host={self.host(name)}", f"swarm.bootstrap={address}", "swarm.external_groups=2",
            f"logging.run_dir={self.workdir / name}", "logging.progress=plain", "logging.tensorboard=false",
            f"model.cache_dir={self.cache}", "model.threads=1", f"seed={k}", "trainer.steps=100000000",
            "checkpoint.every=10"])  # fmt: skip

    def start_peer(self, name: str, address: str, seed: bytes | None = None) -> subprocess.Popen[bytes]:
        """A gossip peer (tests/swarm/peer_proc.py) with a node's default rate limits."""
        seed = seed or os.urandom(32)
        return self.spawn(name, [sys.executable, str(PEER_SCRIPT), "--backend", "hivemind", "--swarm-id", SWARM_ID,
                                 "--host", self.host(name), "--seed", seed.hex(), "--status",
                                 str(self.workdir / f"{name}.json"), "--bootstrap", address, "--msg-rate",
                                 str(MSG_RATE), "--msg-burst", str(ScoreParams().msg_burst)],
                          stdin=subprocess.PIPE)  # fmt: skip

    def send(self, name: str, **cmd: Any) -> None:
        stdin = self.procs[name].stdin
        assert stdin is not None
        stdin.write((json.dumps(cmd) + "\n").encode())
        stdin.flush()

    def status(self, name: str) -> dict[str, Any]:
        path = (
            self.workdir / name / "status.json" if name.startswith("node") else self.workdir / f"{name}.json"
        )
        return read_json(path)

    def log(self, name: str, tail: int = 2000) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait(60)

    def daemon_pids(self, name: str) -> list[int]:
        pgid = self.procs[name].pid
        return [p for p in group_members({pgid}) if p != pgid]

    def close(self) -> list[int]:
        for proc in self.procs.values():
            signal_group(proc.pid, signal.SIGCONT)  # a stopped group must not outlive us
            signal_group(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.wait(30)
        wait_until(lambda: not group_members(self.all_pgids), 30)
        return group_members(self.all_pgids)


def ids_of(cluster: Cluster, names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        st = cluster.status(n)
        pid = (st.get("swarm") or {}).get("peer_id") if n.startswith("node") else st.get("peer_id")
        if pid:
            out[n] = pid
    return out


def run_swarm(args: argparse.Namespace, faults: bool, workdir: Path) -> dict[str, Any]:
    """One run (faults or control) of `args.duration` seconds; returns its measurements."""
    netlab = None
    if faults and args.netns:
        from test_netns import NetLab, netns_unavailable  # tests/swarm, on sys.path below

        why = netns_unavailable()
        if why:
            print(f"[chaos] no network namespaces ({why}): the partition freezes a p2pd instead", flush=True)
        else:
            netlab = NetLab(workdir)
    cluster = Cluster(workdir, args.cache, netlab)
    n = args.nodes
    names = [f"node{k}" for k in range(1, n + 1)]
    attacking = faults and args.attacks
    attackers = (
        ["liar", "flooder", "replayer", *[f"sybil{i}" for i in range(1, args.sybils + 1)]]
        if attacking
        else []
    )
    record: dict[str, Any] = {"faults": faults, "nodes": n, "duration_s": args.duration, "events": []}
    samples: list[dict[str, Any]] = []
    try:
        address = cluster.bootstrap()
        nodes = {name: cluster.start_node(k, address) for k, name in enumerate(names, 1)}
        cluster.start_peer("observer", address)
        for a in attackers:
            cluster.start_peer(a, address)

        def up(m: str) -> bool:  # stepping, and in the swarm with at least one peer
            st = cluster.status(m)
            sw = st.get("swarm") or {}
            return st.get("step", 0) >= 1 and sw.get("state") == "connected" and bool(sw.get("addresses")) \
                and sw.get("peers", 0) >= 1  # fmt: skip

        ready = wait_until(lambda: all(up(m) for m in names)
                           and all(cluster.status(a).get("addresses") for a in ["observer", *attackers]), 900)  # fmt: skip
        if not ready:
            raise RuntimeError(
                "swarm did not come up: " + "; ".join(f"{m}: {cluster.log(m, 300)}" for m in names)
            )
        honest_ids = ids_of(cluster, [*names, "observer"])
        attacker_ids = ids_of(cluster, attackers)
        record.update(honest_ids=honest_ids, attacker_ids=attacker_ids)
        d = args.duration
        victim = "node1"
        stopped_daemons: list[int] = []
        # churn: 30% of the nodes (rounded up), from the last one down, never node1 or node2
        churn = [m for m in reversed(names) if m not in (victim, "node2")][: math.ceil(0.3 * n)]
        cut = next((m for m in reversed(names) if m not in churn and m != victim), None)
        plan: list[tuple[float, str]] = []
        if faults:
            plan = [(0.0, "attacks"), (0.45, "kill:node2"), (0.50, "restart:node2"), (0.55, "stop:node3"),
                    (0.65, "cont:node3"), (0.70, "churn"), (0.72, "partition"), (0.80, "rejoin"),
                    (0.85, "heal")]  # fmt: skip
            plan = [(t, e) for t, e in plan if not any(f"node{k}" in e for k in range(n + 1, 10))]
            plan = [(t, e) for t, e in plan if cut is not None or e not in ("partition", "heal")]
            plan = [(t, e) for t, e in plan if attacking or e != "attacks"]
        killed: set[str] = set()
        incarnations: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
        last_ckpt: dict[str, int] = {}
        resumes: list[dict[str, Any]] = []
        t0 = time.monotonic()

        def victim_usage() -> tuple[float, int]:
            cpu, peak = 0.0, 0
            for pid in group_members({nodes[victim].pid}):
                u = proc_usage(pid)
                if u is not None:
                    cpu, peak = cpu + u.cpu_s, max(peak, u.rss_kb)
            return cpu, peak

        def kill(m: str) -> None:
            incarnations[m].append((cluster.status(m).get("swarm") or {}).get("published", 0))
            ckpts = sorted((workdir / m / "checkpoints").glob("step_*/MANIFEST.json"))
            last_ckpt[m] = int(ckpts[-1].parent.name.removeprefix("step_")) if ckpts else 0
            cluster.kill9(m)
            killed.add(m)

        def restart(m: str) -> None:
            nodes[m] = cluster.start_node(int(m.removeprefix("node")), address)
            resumes.append(
                {"node": m, "pid": nodes[m].pid, "expect_step": last_ckpt[m], "at": time.monotonic() - t0}
            )

        peak_rss = 0
        attack_cpu: float | None = None
        victim_cpu0 = (victim_usage()[0], 0.0)  # the attacks start at 0: the control measures the same span
        while (now := time.monotonic() - t0) < d:
            while plan and plan[0][0] * d <= now:
                _, event = plan.pop(0)
                record["events"].append({"t": round(now, 1), "event": event})
                print(f"[chaos] t={now:.0f}s {event}", flush=True)
                what, _, who = event.partition(":")
                if what == "attacks":
                    seconds = 0.45 * d
                    cluster.send("liar", cmd="liar", rate=2.0, seconds=seconds)
                    cluster.send("flooder", cmd="hostile", faults=["flood"], flood_rate=10 * MSG_RATE,
                                 flood_seconds=seconds, flood_stop=True)  # fmt: skip
                    target = [[honest_ids[victim], cluster.status(victim)["swarm"]["addresses"][0]]]
                    for a in ["replayer", *attackers[3:]]:
                        cluster.send(a, cmd="replay_floor", targets=target, rate=REQUEST_RATE, seconds=seconds,
                                     ahead_ms=59_000)  # fmt: skip
                elif what == "kill":
                    kill(who)
                elif what in ("restart",):
                    restart(who)
                elif what in ("stop", "cont"):
                    signal_group(nodes[who].pid, signal.SIGSTOP if what == "stop" else signal.SIGCONT)
                elif what == "churn":
                    for m in churn:
                        kill(m)
                elif what == "rejoin":
                    for m in churn:
                        restart(m)
                elif what == "partition":
                    assert cut is not None
                    record["partitioned"] = cut
                    if netlab is not None:
                        netlab.cut(cut)
                        record["partition_kind"] = "netns cable cut"
                    else:
                        stopped_daemons = cluster.daemon_pids(cut)
                        for pid in stopped_daemons:
                            os.kill(pid, signal.SIGSTOP)
                        record["partition_kind"] = "p2pd frozen (SIGSTOP; no network namespaces)"
                elif what == "heal":
                    if netlab is not None:
                        netlab.restore(record["partitioned"])
                    for pid in stopped_daemons:
                        os.kill(pid, signal.SIGCONT)
            for r in resumes:  # the first status of a restarted node says where it resumed
                st = cluster.status(r["node"])
                if r.get("came_back_at_step") is None and st.get("pid") == r["pid"]:
                    r["came_back_at_step"], r["came_back_after_s"] = st.get("step"), round(now - r["at"], 1)
            cpu, rss = victim_usage()
            peak_rss = max(peak_rss, rss)
            if attack_cpu is None and now >= 0.45 * d:
                attack_cpu = (cpu - victim_cpu0[0]) / (now - victim_cpu0[1])
            samples.append({"t": round(now, 1), **{m: cluster.status(m) for m in [*names, "observer"]}})
            time.sleep(1.0)
        # measure: what every honest node published (by its status) vs what the observer admitted
        final = {m: cluster.status(m) for m in names}
        published = {
            m: sum(incarnations[m]) + (final[m].get("swarm") or {}).get("published", 0) for m in names
        }
        want = {honest_ids[m]: published[m] for m in names if m in honest_ids}

        def settled() -> bool:  # the observer has every group, every restarted node came back
            for r in resumes:
                st = cluster.status(r["node"])
                if r.get("came_back_at_step") is None and st.get("pid") == r["pid"]:
                    r["came_back_at_step"] = st.get("step")
            return all(r.get("came_back_at_step") is not None for r in resumes) and all(
                cluster.status("observer").get("origins", {}).get(pid, 0) >= k for pid, k in want.items()
            )

        wait_until(settled, 180, interval=1)
        origins = cluster.status("observer").get("origins", {})
        lost = {m: max(0, published[m] - origins.get(honest_ids[m], 0)) for m in names if m in honest_ids}
        for r in resumes:
            r.setdefault("came_back_at_step", None)
            r["running_at_end"] = nodes[r["node"]].poll() is None
            r["failed"] = (r["came_back_at_step"] is None or r["came_back_at_step"] < r["expect_step"]
                           or not r["running_at_end"])  # fmt: skip
        for m in names:  # a clean stop: SIGINT, the step finishes, a checkpoint, exit 0
            signal_group(nodes[m].pid, signal.SIGCONT)
            signal_group(nodes[m].pid, signal.SIGINT)
        exits = {}
        for m in names:
            try:
                exits[m] = nodes[m].wait(300)
            except subprocess.TimeoutExpired:
                exits[m] = "timeout"
        record.update(
            steps={m: final[m].get("step") for m in names},
            survivors=[m for m in names if m not in killed],
            groups_lost=lost,
            published=published,
            observer_origins=origins,
            exit_codes=exits,
            resumes=resumes,
            victim={
                "peak_rss_mb": round(peak_rss / 1024, 1),
                "attack_cpu_pct": None if attack_cpu is None else round(100 * attack_cpu, 1),
            },  # fmt: skip
        )
        record.update(judge(samples, record, names, attackers, workdir))
    finally:
        record["leftover_pids"] = cluster.close()
        if netlab is not None:
            netlab.close()
    (workdir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return record


def judge(samples: list[dict[str, Any]], record: dict[str, Any], names: list[str], attackers: list[str],
          workdir: Path) -> dict[str, Any]:  # fmt: skip
    """Bans (honest and attackers, first and last time seen), exceptions in logs."""
    honest_ids, attacker_ids = record["honest_ids"], record.get("attacker_ids", {})
    start = next((e["t"] for e in record["events"] if e["event"] == "attacks"), 0.0)
    first_ban: dict[str, dict[str, float]] = {}  # attacker -> honest node -> t
    honest_banned: set[str] = set()
    lowest_honest = 0.0
    for s in samples:
        for m in [*names, "observer"]:
            st = s.get(m) or {}
            scores = (st.get("swarm") or {}).get("peer_scores", {}) if m != "observer" else \
                st.get("metrics", {}).get("peer_scores", {})  # fmt: skip
            for who, pid in honest_ids.items():
                if who != m:
                    lowest_honest = min(lowest_honest, scores.get(pid, 0.0))
                if scores.get(pid, 0) < BAN:  # strict for honest peers: a ban, not a low score
                    honest_banned.add(f"{who} (by {m} at t={s['t']})")
            for a, pid in attacker_ids.items():
                if scores.get(pid, 0) <= BANNED_SCORE and m not in first_ban.setdefault(a, {}):
                    first_ban[a][m] = s["t"] - start
    ban_times = {}
    for a in attacker_ids:
        by_node = {m: t for m, t in first_ban.get(a, {}).items() if m != "observer"}
        ban_times[a] = {"first_s": round(min(by_node.values()), 1) if by_node else None,
                        "all_s": round(max(by_node.values()), 1) if len(by_node) == len(names) else None,
                        "banned_by": sorted(first_ban.get(a, {}))}  # fmt: skip
    tracebacks = {}
    for m in [*names, "observer", "boot"]:
        text = (workdir / f"{m}.log").read_text(errors="replace") if (workdir / f"{m}.log").exists() else ""
        if "Traceback" in text:
            tracebacks[m] = text.count("Traceback")
    rejections: dict[str, dict[str, int]] = {}
    last = samples[-1] if samples else {}
    for m in names:
        rejections[m] = ((last.get(m) or {}).get("swarm") or {}).get("rejections", {})
    sent = {a: read_json(workdir / f"{a}.json").get("hostile_sent", {}) for a in attackers}
    failed = {a: read_json(workdir / f"{a}.json").get("request_errors", {}) for a in attackers}
    return {"ban_times": ban_times, "honest_banned": sorted(honest_banned)[:20],
            "honest_banned_count": len({h.split(" ")[0] for h in honest_banned}), "lowest_honest_score": lowest_honest,
            "tracebacks": tracebacks, "rejections": rejections, "attacker_sent": sent, "attacker_failed": failed}  # fmt: skip


def swarm_table(fault: dict[str, Any], control: dict[str, Any] | None) -> str:
    def total(r: dict[str, Any] | None, key: str, only: list[str] | None = None) -> Any:
        if r is None:
            return "-"
        vals = r.get(key, {})
        return sum(v for m, v in vals.items() if (only is None or m in only) and isinstance(v, int))

    survivors = fault["survivors"]
    rows = [
        ("steps, all honest nodes", total(fault, "steps"), total(control, "steps")),
        (f"steps, survivors ({', '.join(survivors)})", total(fault, "steps", survivors),
         total(control, "steps", survivors)),
        ("groups published by survivors", total(fault, "published", survivors), total(control, "published", survivors)),
        ("survivors' groups lost (never reached the observer)", total(fault, "groups_lost", survivors),
         total(control, "groups_lost", survivors)),
        ("all nodes' groups lost (killed nodes: in flight when killed)", total(fault, "groups_lost"),
         total(control, "groups_lost")),
        ("honest peers banned", fault["honest_banned_count"], control["honest_banned_count"] if control else "-"),
        ("lowest score an honest peer gave another", round(fault["lowest_honest_score"], 1),
         round(control["lowest_honest_score"], 1) if control else "-"),
        ("exceptions (Traceback) in honest logs", sum(fault["tracebacks"].values()),
         sum(control["tracebacks"].values()) if control else "-"),
        ("victim node1: peak RSS (MB)", fault["victim"]["peak_rss_mb"], control["victim"]["peak_rss_mb"] if control else "-"),
        ("victim node1: CPU during the attacks (% of a core)", fault["victim"]["attack_cpu_pct"],
         control["victim"]["attack_cpu_pct"] if control else "-"),
        ("failed resumes", sum(r["failed"] for r in fault["resumes"]), "-"),
        ("nodes not exiting 0 on SIGINT at the end", sum(v != 0 for v in fault["exit_codes"].values()),
         sum(v != 0 for v in control["exit_codes"].values()) if control else "-"),
    ]  # fmt: skip
    lines = ["| measure | with faults | control (no fault) |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    window = 0.45 * fault["duration_s"]
    lines += ["", "| attacker | sent (per s) | refused or timed out | banned by the first node after | by every node after "
              "| banned by |", "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for a, b in fault["ban_times"].items():
        f = lambda v: "never" if v is None else f"{v:.0f} s"  # noqa: E731
        sent = sum(fault["attacker_sent"].get(a, {}).values())
        failed = sum(fault.get("attacker_failed", {}).get(a, {}).values())
        lines.append(f"| {a} | {sent} ({sent / window:.0f}) | {failed} | {f(b['first_s'])} | {f(b['all_s'])} | "
                     f"{', '.join(b['banned_by']) or '-'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("swarm", help="N nodes under attack, crashes, hangs, churn and a partition")
    sw.add_argument("--nodes", type=int, default=4)
    sw.add_argument(
        "--duration", type=float, default=300.0, help="seconds of the fault window (and of the control)"
    )
    sw.add_argument("--sybils", type=int, default=10, help="extra keys running the replay-floor attack")
    sw.add_argument("--control", action=argparse.BooleanOptionalAction, default=True)
    sw.add_argument("--attacks", action=argparse.BooleanOptionalAction, default=True,
                    help="--no-attacks: crashes, hang, churn and partition only")  # fmt: skip
    sw.add_argument("--netns", action=argparse.BooleanOptionalAction, default=True,
                    help="partition by network namespaces where root (else a frozen p2pd)")  # fmt: skip
    sw.add_argument("--workdir", type=Path, default=REPO / "runs" / "chaos")
    sw.add_argument(
        "--json", type=Path, help="results file (default benchmarks/chaos/results/swarm-STAMP.json)"
    )
    kl = sub.add_parser("killloop", help="kill -9 a solo tiny run at random moments and resume it")
    import killloop

    killloop.add_args(kl)
    args = p.parse_args()
    if args.cmd == "killloop":
        killloop.main(args)
        return
    sys.path.insert(0, str(REPO / "tests" / "swarm"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.cache = args.workdir / "model-cache"
    from node.config import load_config
    from node.policy import tiny_folder

    tiny_folder(load_config([REPO / "configs" / "tiny.yaml"], [f"model.cache_dir={args.cache}"]).model)
    fault = run_swarm(args, True, args.workdir / f"{stamp}-faults")
    control = run_swarm(args, False, args.workdir / f"{stamp}-control") if args.control else None
    out = {"machine": f"{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()}", "stamp": stamp,
           "faults": fault, "control": control}  # fmt: skip
    path = args.json or RESULTS / f"swarm-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(swarm_table(fault, control))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
