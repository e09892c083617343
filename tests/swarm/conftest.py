"""Process harness for the swarm conformance suite: real peers on 127.0.0.1, reaped by PID.

Each peer runs `peer_proc.py` in its own session (process group = its PID), so killing the
group by that PID also takes down its p2pd daemon, and nothing else on the machine is
touched.  Every peer is stopped (gracefully, then SIGKILL to its group) in the fixture's
`finally`, and the suite checks that no process of those groups survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.procs import group_alive  # noqa: F401  (re-exported for the swarm tests)
from swarm.testing import wait_for_sync as wait_for  # noqa: F401  (re-exported for the swarm tests)

REPO = Path(__file__).resolve().parents[2]
PEER_SCRIPT = Path(__file__).with_name("peer_proc.py")


class Peer:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], status_path: Path, seed: bytes) -> None:
        self.name, self.proc, self.status_path, self.seed = name, proc, status_path, seed

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def metrics(self) -> dict[str, Any]:
        return self.status().get("metrics", {})

    def admitted(self) -> set[str]:
        return set(self.status().get("admitted", []))

    def published(self) -> list[str]:
        return list(self.status().get("published", []))

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        """Crash the peer and its daemon (SIGKILL to the process group we created)."""
        if group_alive(self.pid):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="stop")
                self.proc.wait(8)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                pass
        if group_alive(self.pid):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


class Swarm:
    """Starts peers of one backend; `close()` reaps all of them."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend, self.workdir = backend, workdir
        self.peers: list[Peer] = []

    def start(
        self,
        name: str,
        bootstrap: list[str] | None = None,
        allowlist: Path | None = None,
        seed: bytes | None = None,
        wait: bool = True,
        **flags: Any,
    ) -> Peer:
        seed = seed or os.urandom(32)
        status = self.workdir / f"{name}.json"
        cmd = [sys.executable, str(PEER_SCRIPT), "--backend", self.backend, "--seed", seed.hex(),
               "--status", str(status)]  # fmt: skip
        if bootstrap:
            cmd += ["--bootstrap", *bootstrap]
        if allowlist is not None:
            cmd += ["--allowlist", str(allowlist)]
        for key, value in flags.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO, start_new_session=True)  # fmt: skip
        peer = Peer(name, proc, status, seed)
        self.peers.append(peer)
        if wait:
            self.wait_started(peer)
        return peer

    def wait_started(
        self, peer: Peer, timeout: float = 180
    ) -> None:  # generous: p2pd starts slowly under load
        ok = wait_for(lambda: bool(peer.status().get("addresses")) or peer.proc.poll() is not None, timeout)
        if not ok or peer.proc.poll() is not None:
            log = (self.workdir / f"{peer.name}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"peer {peer.name} did not start:\n{log}")

    def close(self) -> None:
        for peer in self.peers:
            try:
                peer.stop()
            except Exception:
                if group_alive(peer.pid):
                    os.killpg(peer.pid, signal.SIGKILL)
        leftovers = [p.name for p in self.peers if group_alive(p.pid)]
        assert not leftovers, f"processes survived: {leftovers}"


@pytest.fixture
def swarm_factory() -> Iterator[Callable[[str], Swarm]]:
    swarms: list[Swarm] = []
    with tempfile.TemporaryDirectory(prefix="swarmrl-conf-") as tmp:

        def make(backend: str) -> Swarm:
            s = Swarm(backend, Path(tmp) / f"{backend}-{len(swarms)}")
            s.workdir.mkdir()
            swarms.append(s)
            return s

        try:
            yield make
        finally:
            for s in swarms:
                s.close()
