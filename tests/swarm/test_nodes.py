"""Real `swarmrl run` nodes (tiny model) sharing groups over hivemind on 127.0.0.1.

Every process runs in its own session, so its process group id is its PID; teardown signals
exactly those groups (the nodes' p2pd daemons included) and checks nothing of them survives.

Every wait is on state (status.json, metrics.jsonl, a checkpoint on disk), never on time: a
busy machine only makes a test slower.  The bounds (`BOUND`) are failure deadlines, generous
enough for a 2-core machine at load average 10.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from node.procs import group_members, signal_group
from swarm.testing import wait_for_sync as wait_for

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "node.cli"]
BOUND = 600.0  # seconds before a wait counts as a failure (a quiet machine needs a tenth of it)


class Procs:
    def __init__(self, workdir: Path, cache: Path) -> None:
        self.workdir, self.cache = workdir, cache
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 -- lives as long as the process
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                env=env, start_new_session=True)  # fmt: skip
        self.started.append(proc)
        return proc

    def bootstrap(self) -> str:
        addr = self.workdir / "boot.addr"
        proc = self.spawn("bootstrap", CLI + ["bootstrap", "--host", "127.0.0.1", "--swarm-id", "t",
                                              "--address-file", str(addr)])  # fmt: skip
        assert wait_for(lambda: addr.is_file() or proc.poll() is not None, BOUND), self.log("bootstrap")
        assert proc.poll() is None, self.log("bootstrap")
        self.boot = proc
        return addr.read_text().split()[0]

    def node(self, k: int, address: str, *extra: str, ranks: int = 1) -> subprocess.Popen[bytes]:
        run_dir = self.workdir / f"node{k}"
        return self.spawn(f"node{k}", CLI + [
            "run", "--resume", "--nproc", str(ranks), "-c", "configs/tiny.yaml", "swarm.mode=join", "swarm.swarm_id=t",
            "swarm.host=127.0.0.1", f"swarm.bootstrap={address}", "swarm.external_groups=2",
            f"logging.run_dir={run_dir}", "logging.progress=plain", "logging.tensorboard=false",
            f"model.cache_dir={self.cache}", "model.threads=1", f"seed={k}", "trainer.steps=100000",
            "checkpoint.every=5", *extra])  # fmt: skip

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for p in self.started:
            signal_group(p.pid, signal.SIGKILL)
            if p.poll() is None:
                p.wait(10)
        left = group_members({p.pid for p in self.started})
        assert not left, f"processes survived: {left}"


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def used_external(run_dir: Path, after_step: int = 0) -> int:
    return int(sum(m.get("swarm/external_groups", 0) for m in metrics(run_dir) if m["step"] > after_step))


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints on disk (the ones `--resume` can load)."""
    from node.checkpoint import PREFIX, list_checkpoints

    return [int(p.name.removeprefix(PREFIX)) for p in list_checkpoints(run_dir / "checkpoints")]


def shared(run_dir: Path) -> bool:
    """The node trained on a peer's group and its status shows both directions of sharing."""
    sw = status(run_dir).get("swarm") or {}
    return (used_external(run_dir) > 0 and sw.get("published", 0) > 0 and sw.get("received", 0) > 0
            and sw.get("verdicts", {}).get("admitted", 0) > 0)  # fmt: skip


@pytest.fixture
def procs(tmp_path, tmp_path_factory) -> Procs:
    from node.config import load_config
    from node.policy import tiny_folder

    cache = tmp_path_factory.getbasetemp() / "node-model-cache"
    tiny_folder(
        load_config([REPO / "configs" / "tiny.yaml"], [f"model.cache_dir={cache}"]).model
    )  # built once, not raced
    p = Procs(tmp_path, cache)
    yield p
    p.close()


def test_nodes_share_keep_training_alone_and_rejoin(procs):
    """Three nodes (one of another size and vocabulary) share; a crashed one resumes and rejoins;
    the last one standing keeps training on local groups; Ctrl-C saves."""
    address = procs.bootstrap()
    # node 3 runs another model with another tokenizer: its groups are re-tokenized by the others
    other = ("model.tiny.vocab_size=400", "model.tiny.hidden_size=64", "model.tiny.num_layers=1")
    nodes = {k: procs.node(k, address, *(other if k == 3 else ())) for k in (1, 2, 3)}
    dirs = {k: procs.workdir / f"node{k}" for k in nodes}

    # 1. three nodes: each one trains on groups that another node sampled
    ok = wait_for(lambda: all(shared(d) for d in dirs.values()), BOUND, interval=1)
    assert ok, {
        k: (used_external(d), status(d).get("swarm"), procs.log(f"node{k}")[-800:]) for k, d in dirs.items()
    }

    # 2. a crashed node restarts from its checkpoint, with the same identity, and shares again.
    # It is killed only once a complete checkpoint is on disk: on a busy machine sharing can
    # start before the first checkpoint, and a node killed then rightly starts at step 0.
    assert wait_for(lambda: bool(checkpoint_steps(dirs[3])), BOUND, interval=0.5), procs.log("node3")
    signal_group(nodes[3].pid, signal.SIGKILL)
    nodes[3].wait(60)
    saved = max(checkpoint_steps(dirs[3]))  # a save under way when it died does not count
    peer_id = status(dirs[3])["swarm"]["peer_id"]
    nodes[3] = procs.node(3, address, *other)
    assert wait_for(lambda: status(dirs[3]).get("pid") == nodes[3].pid, BOUND, interval=0.5), procs.log(
        "node3"
    )
    restart_step = status(dirs[3])["step"]
    assert restart_step >= saved > 0  # resumed from its last checkpoint, not started over
    assert status(dirs[3])["swarm"]["peer_id"] == peer_id
    assert wait_for(lambda: used_external(dirs[3], restart_step) > 0, BOUND, interval=1), procs.log("node3")

    # 3. every peer and the bootstrap die: node 1 keeps training on local groups alone.  Groups
    # it admitted before may still be pooled for a few steps; once they are used up, its steps
    # are made of local groups only (J filled locally).
    for k in (2, 3):
        signal_group(nodes[k].pid, signal.SIGKILL)
    signal_group(procs.boot.pid, signal.SIGKILL)
    alone_from = status(dirs[1])["step"]

    def alone() -> bool:
        last = metrics(dirs[1])[-1]
        return (
            last["step"] >= alone_from + 6
            and last["swarm/external_groups"] == 0
            and last["swarm/filled_locally"] == 2
        )

    assert wait_for(alone, BOUND, interval=0.5), (metrics(dirs[1])[-1], procs.log("node1"))
    assert nodes[1].poll() is None

    # 4. Ctrl-C: the step finishes, a checkpoint is saved, the process exits cleanly
    os.kill(nodes[1].pid, signal.SIGINT)
    assert nodes[1].wait(BOUND) == 0, procs.log("node1")
    final = status(dirs[1])["step"]
    assert (dirs[1] / "checkpoints" / f"step_{final:08d}").is_dir()


def test_a_node_on_two_ranks_is_one_peer_that_shares_and_stops_on_sigterm(procs):
    """Node 1 runs on 2 CPU ranks (gloo), node 2 in one process.  Node 1 is one peer (rank 0 holds
    the swarm link): both train on each other's groups, peer groups reaching node 1's other rank
    through the sharded update; SIGTERM to rank 0 alone finishes the step, saves, releases rank 1,
    and the whole torchrun tree exits 0."""
    address = procs.bootstrap()
    nodes = {1: procs.node(1, address, ranks=2), 2: procs.node(2, address)}
    dirs = {k: procs.workdir / f"node{k}" for k in nodes}
    tree: list[psutil.Process] = []
    try:
        ok = wait_for(lambda: all(shared(d) for d in dirs.values()), BOUND, interval=1)
        assert ok, {
            k: (used_external(d), status(d).get("swarm"), procs.log(f"node{k}")[-800:])
            for k, d in dirs.items()
        }
        # one peer: node 2 knows node 1 by one peer id, and node 1's process tree (torchrun, two
        # ranks) runs one p2p daemon: rank 1 opened no swarm link of its own
        boot_id = address.rsplit("/p2p/", 1)[-1]
        known = set(status(dirs[2])["swarm"].get("peer_scores", {})) - {boot_id}
        assert known == {status(dirs[1])["swarm"]["peer_id"]}, known
        tree = psutil.Process(nodes[1].pid).children(recursive=True)
        cmdlines = [" ".join(c.cmdline()) for c in tree]
        assert sum("p2pd" in c for c in cmdlines) == 1, cmdlines
        rank0 = status(dirs[1])["pid"]
        assert rank0 in {c.pid for c in tree}  # the CLI re-launched itself: rank 0 is a torchrun child
        os.kill(rank0, signal.SIGTERM)
        assert nodes[1].wait(BOUND) == 0, procs.log("node1")
        final = status(dirs[1])["step"]
        assert (dirs[1] / "checkpoints" / f"step_{final:08d}").is_dir()
        gone = lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in tree)  # noqa: E731
        assert wait_for(gone, BOUND, interval=0.5), [c.pid for c in tree if c.is_running()]
    finally:  # torchrun may start ranks in sessions of their own: end what this test saw, by PID
        for c in tree:
            with contextlib.suppress(psutil.Error):
                c.kill()


def test_lab_up_then_down_leaves_no_process_behind(tmp_path, procs):
    lab_dir = tmp_path / "lab"
    up = subprocess.run(CLI + ["lab", "up", "--nodes", "2", "--detach", "--dir", str(lab_dir), "-c", "configs/tiny.yaml",
                               "trainer.steps=100000", f"model.cache_dir={procs.cache}", "logging.tensorboard=false",
                               "--node", "2", "rollout.temperature=0.9"],
                        cwd=REPO, capture_output=True, text=True, timeout=BOUND)  # fmt: skip
    state = json.loads((lab_dir / "lab.json").read_text()) if (lab_dir / "lab.json").is_file() else {}
    pgids = {p["pid"] for p in state.get("processes", [])}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(pgids) == 3  # bootstrap + 2 nodes
        allow = (lab_dir / "allowlist.txt").read_text()
        assert allow.count("12D3KooW") == 3
        steps = lambda: [status(lab_dir / f"node{k}").get("step", 0) for k in (1, 2)]  # noqa: E731
        assert wait_for(lambda: min(steps()) >= 2, BOUND, interval=1), steps()
        temps = [yaml.safe_load((lab_dir / f"node{k}" / "config.yaml").read_text())["rollout"]["temperature"]
                 for k in (1, 2)]  # fmt: skip
        assert temps[1] == 0.9 and temps[0] != 0.9  # `--node 2 KEY=VALUE` reached node 2 only
        table = subprocess.run(CLI + ["lab", "status", "--dir", str(lab_dir)], cwd=REPO, capture_output=True,
                               text=True, timeout=BOUND).stdout  # fmt: skip
        assert "node1" in table and "running" in table
        assert group_members(pgids)
        down = subprocess.run(CLI + ["lab", "down", "--dir", str(lab_dir)], cwd=REPO, capture_output=True, text=True,
                              timeout=BOUND)  # fmt: skip
        assert down.returncode == 0 and down.stdout.count("stopped") == 3, down.stdout + down.stderr
        assert group_members(pgids) == []
        for k in (1, 2):  # stopped with SIGINT: each saved a checkpoint of its last step
            assert (
                lab_dir / f"node{k}" / "checkpoints" / f"step_{status(lab_dir / f'node{k}')['step']:08d}"
            ).is_dir()
    finally:
        for pgid in pgids:
            signal_group(pgid, signal.SIGKILL)
