"""A swarm across network namespaces: real addresses, a real link cut.  Root only.

Topology (all of it inside namespaces named after this test's PID; the host's own network is
never touched):

    srl<pid>-hub        br0, a bridge; one port `v-<name>` per member below
    srl<pid>-boot       eth0 10.77.0.1/24    `swarmrl bootstrap --backend hivemind`
    srl<pid>-<name>     eth0 10.77.0.11../24  one swarm member each

Each member's eth0 is one end of a veth pair whose other end is a bridge port in the hub, so
"cutting a member's cable" is `ip -n hub link set v-<name> down`: its packets are silently
dropped (no RST, no unreachable error), as when a volunteer's Wi-Fi goes away.

Two scenarios, each: three members join through the bootstrap, exchange groups, one is cut off
while the other two go on, then it is reconnected and exchanges again.
- gossip peers (tests/swarm/peer_proc.py, no model): exact group ids, nothing crosses the cut;
- `swarmrl run` nodes in join mode on the tiny model: steps and the swarm counters of
  RUN_DIR/status.json.

Every process is started in its own session (`ip netns exec` execs in place, so the PID we hold
is the process itself and its p2pd daemon shares its process group) and is killed by that group
in the fixture's teardown; the namespaces are deleted afterwards, whatever happened.  Waits poll
state with generous deadlines (`BOUND`); nothing sleeps before an assertion.  Skipped, with
the reason, where the test is not root or the kernel/sandbox refuses network namespaces or
veth pairs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PEER_SCRIPT, REPO, group_alive, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.slow]

SUBNET = "10.77.0"
BOOT_IP = f"{SUBNET}.1"
BOOT_PORT = 4001
BOUND = 600.0  # failure deadline of every wait (state is polled; a quiet machine needs far less)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


@functools.cache
def netns_unavailable() -> str | None:
    """Why this machine cannot run the test, or None.  Probes with a throwaway namespace."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"srl{os.getpid()}-probe"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed here: {made.stderr.strip()}"
        veth = _ip(
            "-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb", check=False
        )
        if veth.returncode != 0:
            return f"cannot create a veth pair in a namespace: {veth.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", probe, check=False)


class NetLab:
    """Namespaces on one bridge.  `close()` kills every process started here, then deletes
    every namespace created here; both are safe to call after a partial setup."""

    def __init__(self, workdir: Path) -> None:
        self.tag = f"srl{os.getpid()}"
        self.hub = f"{self.tag}-hub"
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ips: dict[str, str] = {}
        self._add_ns(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def add(self, name: str, ip: str) -> str:
        """A namespace `name` with eth0 = `ip`/24, cabled to the bridge through port v-<name>."""
        ns, port = self.ns(name), f"v-{name}"
        self._add_ns(ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.hub)
        _ip("-n", self.hub, "link", "set", port, "master", "br0")
        _ip("-n", self.hub, "link", "set", port, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.ips[name] = ip
        return ip

    def cut(self, name: str) -> None:
        _ip("-n", self.hub, "link", "set", f"v-{name}", "down")

    def restore(self, name: str) -> None:
        _ip("-n", self.hub, "link", "set", f"v-{name}", "up")

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              stdin: int | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, stdin=stdin, start_new_session=True,
                                env={**os.environ, **(env or {})})  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else "(no log)"

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None and group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(10)
        # a p2pd daemon orphaned by its peer's death lingers until init reaps it
        wait_for(lambda: not group_alive(proc.pid), 15)

    def close(self) -> None:
        errors: list[str] = []
        try:
            for proc in self.procs.values():  # all at once: the bootstrap takes seconds to stop
                if proc.poll() is None and group_alive(proc.pid):
                    os.killpg(proc.pid, signal.SIGTERM)
            for name in self.procs:
                try:
                    self.stop(name)
                except Exception as e:  # keep going: every namespace must still be deleted
                    errors.append(f"{name}: {e}")
        finally:
            for ns in reversed(self.namespaces):
                done = _ip("netns", "del", ns, check=False)
                if done.returncode != 0:
                    errors.append(f"netns del {ns}: {done.stderr.strip()}")
        leftovers = [n for n, p in self.procs.items() if group_alive(p.pid)]
        left_ns = set(self.namespaces) & set(_ip("netns", "list").stdout.split())
        assert not leftovers and not left_ns and not errors, (leftovers, left_ns, errors)

    def start_bootstrap(self) -> list[str]:
        """`swarmrl bootstrap` in its own namespace; returns its multiaddrs once it is up."""
        self.add("boot", BOOT_IP)
        addr_file = self.workdir / "bootstrap.addr"
        proc = self.spawn("boot", [sys.executable, "-m", "node.cli", "bootstrap", "--backend", "hivemind",
                                   "--host", BOOT_IP, "--port", str(BOOT_PORT), "--swarm-id", "netns",
                                   "--address-file", str(addr_file)])  # fmt: skip
        up = wait_for(lambda: addr_file.exists() or proc.poll() is not None, BOUND)
        assert up and proc.poll() is None, f"bootstrap did not start:\n{self.log('boot')}"
        addrs = addr_file.read_text().split()
        assert addrs and all(f"/ip4/{BOOT_IP}/tcp/{BOOT_PORT}/p2p/" in a for a in addrs), addrs
        return addrs


@pytest.fixture
def netlab(tmp_path: Path) -> Iterator[NetLab]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    lab = NetLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


# -- gossip peers (tests/swarm/peer_proc.py) across namespaces ------------------------------------


class GossipPeer:
    def __init__(self, lab: NetLab, name: str, ip: str, bootstrap: list[str]) -> None:
        self.name, self.status_path = name, lab.workdir / f"{name}.json"
        argv = [sys.executable, str(PEER_SCRIPT), "--host", ip, "--backend", "hivemind", "--swarm-id", "netns",
                "--seed", os.urandom(32).hex(), "--status", str(self.status_path), "--bootstrap", *bootstrap]  # fmt: skip
        self.proc = lab.spawn(name, argv, stdin=subprocess.PIPE)

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def admitted(self) -> set[str]:
        return set(self.status().get("admitted", []))

    def published(self) -> set[str]:
        return set(self.status().get("published", []))

    def publish(self, n: int, rate: float = 2.0) -> None:
        assert self.proc.stdin is not None
        line = json.dumps({"cmd": "publish", "n": n, "rate": rate, "size": 4000}) + "\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()


def test_gossip_peers_across_namespaces_survive_a_link_cut(netlab: NetLab) -> None:
    boot = netlab.start_bootstrap()
    peers = []
    for k in (1, 2, 3):
        ip = netlab.add(f"n{k}", f"{SUBNET}.{10 + k}")
        peers.append(GossipPeer(netlab, f"n{k}", ip, boot))
    for p in peers:
        ok = wait_for(lambda p=p: bool(p.status().get("addresses")) or p.proc.poll() is not None, BOUND)
        assert ok and p.proc.poll() is None, f"{p.name} did not start:\n{netlab.log(p.name)}"
        addrs = p.status()["addresses"]
        assert any(f"/ip4/{netlab.ips[p.name]}/" in a for a in addrs), addrs
    n1, n2, n3 = peers

    def everyone_has_everything() -> bool:
        return all({g for q in peers if q is not p for g in q.published()} <= p.admitted() for p in peers)

    for p in peers:
        p.publish(3)
    assert wait_for(lambda: all(len(p.published()) == 3 for p in peers), BOUND)
    assert wait_for(everyone_has_everything, BOUND), [(p.name, len(p.admitted())) for p in peers]

    # cut n3: n1 and n2 keep exchanging; n3 receives nothing new while it is away
    netlab.cut("n3")
    before_cut = n3.admitted()
    n1.publish(3)
    n2.publish(3)
    assert wait_for(lambda: len(n1.published()) == len(n2.published()) == 6, BOUND)
    assert wait_for(lambda: n2.published() <= n1.admitted() and n1.published() <= n2.admitted(), BOUND)
    assert n3.admitted() == before_cut, "n3 received groups through a cut cable"

    # restore: n3 is back in the swarm, catches up on what it missed and sends again
    netlab.restore("n3")
    n3.publish(3)
    assert wait_for(lambda: len(n3.published()) == 6, BOUND)
    assert wait_for(everyone_has_everything, BOUND), [(p.name, len(p.admitted())) for p in peers]


# -- swarmrl nodes (`swarmrl run`, swarm.mode=join) across namespaces ------------------------------


class TrainingNode:
    """`swarmrl run` on the tiny model in namespace `name`, joined to the bootstrap."""

    def __init__(self, lab: NetLab, k: int, bootstrap: list[str], cache: Path) -> None:
        self.name = f"node{k}"
        ip = lab.add(self.name, f"{SUBNET}.{10 + k}")
        self.run_dir = lab.workdir / self.name
        argv = [sys.executable, "-m", "node.cli", "run", "--config", "configs/tiny.yaml",
                "swarm.mode=join", "swarm.backend=hivemind", "swarm.swarm_id=netns", f"swarm.host={ip}",
                f"swarm.bootstrap={bootstrap[0]}", f"logging.run_dir={self.run_dir}", "trainer.steps=1000",
                f"seed={k}", "checkpoint.every=1000", "logging.progress=plain", "model.threads=1",
                f"model.cache_dir={cache}"]  # fmt: skip
        self.proc = lab.spawn(self.name, argv, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def step(self) -> int:
        return int(self.status().get("step") or 0)

    def swarm(self, key: str) -> int:
        return int((self.status().get("swarm") or {}).get(key) or 0)

    def describe(self) -> str:
        s = self.status()
        sw = s.get("swarm") or {}
        return (f"{self.name}: step={s.get('step')} state={sw.get('state')} peers={sw.get('peers')} "
                f"published={sw.get('published')} received={sw.get('received')} admitted={sw.get('admitted')}")  # fmt: skip


def test_nodes_keep_training_through_a_link_cut(netlab: NetLab) -> None:
    boot = [a for a in netlab.start_bootstrap() if f"/ip4/{BOOT_IP}/" in a]
    cache = netlab.workdir / "model-cache"
    nodes = [TrainingNode(netlab, k, boot, cache) for k in (1, 2, 3)]
    n1, n2, n3 = nodes

    def report() -> str:
        return "\n".join(n.describe() for n in nodes)

    def check_alive() -> None:
        for n in nodes:
            assert n.proc.poll() is None, f"{n.name} exited {n.proc.returncode}:\n{netlab.log(n.name)}"

    def until(predicate: Any, timeout: float) -> bool:
        def ok() -> bool:
            check_alive()
            return bool(predicate())

        return wait_for(ok, timeout, interval=0.5)

    # groups flow: every node publishes, receives and admits its peers' groups
    assert until(lambda: all(n.swarm("admitted") > 0 and n.swarm("published") > 0 for n in nodes), BOUND), (
        report()
    )

    # cut node3's cable: node1 and node2 keep training and exchanging; node3 trains on alone
    # (its missing peer groups are made locally) and hears nothing
    netlab.cut("node3")
    steps = {n.name: n.step() for n in nodes}
    # the swarm counters in status.json are read at the start of a step: two steps on, they are
    # from after the cut, and whatever was already in node3's socket buffers is counted
    assert until(lambda: n3.step() >= steps["node3"] + 2, BOUND), report()
    cut_received = n3.swarm("received")
    assert until(lambda: all(n.step() >= steps[n.name] + 4 for n in (n1, n2)), BOUND), report()
    received = {n.name: n.swarm("received") for n in (n1, n2)}
    assert until(lambda: all(n.swarm("received") > received[n.name] for n in (n1, n2)), BOUND), report()
    assert until(lambda: n3.step() >= steps["node3"] + 5, BOUND), report()
    assert n3.swarm("received") == cut_received, f"node3 received groups through a cut cable\n{report()}"

    # restore: node3 receives and admits peer groups again, and its peers hear from it
    netlab.restore("node3")
    back = {key: n3.swarm(key) for key in ("received", "admitted")}
    assert until(
        lambda: n3.swarm("received") > back["received"] and n3.swarm("admitted") > back["admitted"], BOUND
    ), report()
    print(report())
