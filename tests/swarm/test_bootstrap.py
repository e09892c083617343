"""`swarm.bootstrap`: clear, bounded failures, and a real bootstrap node peers can join."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, Swarm, group_alive, wait_for

from swarm.bootstrap import start_bootstrap
from swarm.peer import SwarmStartError

pytestmark = pytest.mark.swarm
BACKENDS = ["hivemind", "libp2p"]
UNREACHABLE = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGvv3JW3Ewj4STwWGvc1g8jdjB5hNLVpEJL1HbaHciJx9"


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_failures_raise_after_retries_without_hanging(backend: str) -> None:
    # the hivemind and libp2p packages cannot share a process (protobuf descriptor clash)
    code = (
        "import asyncio, sys; sys.path.insert(0, '.'); sys.path.insert(0, 'tests/swarm');"
        f"import test_bootstrap as t; t.run_failure_scenario({backend!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]


def run_failure_scenario(backend: str) -> None:
    """Runs in a fresh interpreter (see above)."""

    async def scenario() -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            t0 = time.monotonic()
            try:
                await start_bootstrap(backend, host="127.0.0.1", port=port, attempts=2, start_timeout=5)
            except SwarmStartError as e:
                assert "after 2 attempts" in str(e) and "in use" in str(e), e
            else:
                raise AssertionError("started on a port in use")
            assert time.monotonic() - t0 < 60  # 2 attempts x 5 s: bounded, not instant (slack for load)
        t0 = time.monotonic()
        try:
            await start_bootstrap(
                backend, host="127.0.0.1", upstream=[UNREACHABLE], attempts=2, start_timeout=5
            )
        except SwarmStartError as e:
            assert "bootstrap" in str(e), e
        else:
            raise AssertionError("started with an unreachable bootstrap")
        assert time.monotonic() - t0 < 90  # bounded: 2 attempts x 5 s plus backoff, slack for load

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", BACKENDS)
def test_peers_join_through_a_bootstrap_node(backend: str, swarm_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_path = tmp_path / "boot.log"
    with open(log_path, "wb") as log:
        boot = subprocess.Popen(
            [sys.executable, "-m", "swarm.bootstrap", "--backend", backend, "--host", "127.0.0.1"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        pattern = re.compile(r"swarm\.bootstrap=(\S+)")
        assert wait_for(lambda: bool(pattern.search(log_path.read_text())) or boot.poll() is not None, 180)
        addrs = pattern.findall(log_path.read_text())
        assert addrs, log_path.read_text()[-2000:]
        swarm: Swarm = swarm_factory(backend)
        peers = [swarm.start(f"p{i}", bootstrap=addrs, wait=False, swarm_id="public") for i in range(2)]
        for p in peers:
            swarm.wait_started(p)
        for p in peers:
            p.send(cmd="publish", n=2, rate=4.0, size=4000)
        assert wait_for(lambda: all(len(p.published()) == 2 for p in peers), 180)
        assert wait_for(lambda: set(peers[0].published()) <= peers[1].admitted()
                        and set(peers[1].published()) <= peers[0].admitted(), 180)  # fmt: skip
    finally:
        if boot.poll() is None:
            os.killpg(boot.pid, signal.SIGTERM)
            try:
                boot.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(boot.pid, signal.SIGKILL)
                boot.wait(10)
        if group_alive(boot.pid):
            os.killpg(boot.pid, signal.SIGKILL)
        assert not group_alive(boot.pid)
