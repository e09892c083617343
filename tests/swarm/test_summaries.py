"""Outcome summaries between real peers on 127.0.0.1 (hivemind): announced, heard without
fetching, and in place before a fetched group reaches the node.

The three peers are `SwarmLink`s (the node's own link, each on its network thread) in one child
interpreter started in its own session: its process group (PID = group id) holds the p2pd
daemons too, and is reaped by that PID whatever happens.  The scenario waits by polling.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO, group_alive

pytestmark = pytest.mark.swarm
CLAIMS = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0]]  # successes 1, 3, 0


def test_summaries_reach_a_peer_that_never_fetches_and_precede_fetched_groups() -> None:
    code = (
        "import sys; sys.path[:0] = ['.', 'tests/swarm']; import test_summaries as t; t.scenario('hivemind')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(10)
    assert not group_alive(proc.pid), "a process of the scenario's group survived"
    assert proc.returncode == 0, err.decode(errors="replace")[-4000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    # B never fetches, yet heard every summary, with the keys a receiver computes and the claims
    assert result["b_fetch_attempts"] == 0 and result["b_admitted"] == 0
    assert result["b_heard"] == result["expected"]
    # C fetched every group; each was drained with its summary already in `summary_for`
    assert sorted(result["c_drained"]) == sorted(result["expected"])
    assert result["c_missing_summary"] == []


def scenario(backend: str) -> None:
    """Runs in the child interpreter: A publishes, B listens without fetching, C fetches."""
    from types import SimpleNamespace

    from node.sharing import Sharing
    from node.swarm_link import SwarmLink
    from protocol import Completion, Identity, RolloutGroup, SamplingParams, TaskRef, prompt_key
    from swarm.peer import SwarmConfig
    from swarm.testing import wait_for_sync as wait_for

    def link(want: bool, bootstrap: tuple[str, ...] = ()) -> SwarmLink:
        cfg = SwarmConfig(backend=backend, swarm_id="summaries", host="127.0.0.1", bootstrap=bootstrap)  # type: ignore[arg-type]
        return SwarmLink(Identity.generate(), cfg, want=lambda entry: want).start()

    links: list[SwarmLink] = []
    try:
        a = link(want=False)
        links.append(a)
        assert wait_for(lambda: a.connected, 180), a.last_error
        b, c = link(False, tuple(a.addresses)), link(True, tuple(a.addresses))
        links += [b, c]
        assert wait_for(lambda: b.connected and c.connected, 180), (b.last_error, c.last_error)
        node_cfg = SimpleNamespace(swarm=SimpleNamespace(external_groups=2, share=True, swarm_id="summaries"))
        c_sharing = Sharing(node_cfg, c, tok_hash="")  # type: ignore[arg-type]

        groups = [
            RolloutGroup(
                swarm_id="summaries",
                task=TaskRef(dataset="chain_sum", seed=0, index=i, question=f"What is {i} + {i}?"),
                ground_truth=None,
                model_id="m",
                tokenizer_hash="",
                policy_version=5,
                completions=tuple(
                    Completion(text=str(k), claimed_rewards={"correctness": v}) for k, v in enumerate(cl)
                ),
                sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8),
            )  # fmt: skip
            for i, cl in enumerate(CLAIMS)
        ]
        expected = {prompt_key("chain_sum", f"What is {i} + {i}?"): [sum(v >= 0.5 for v in cl), 4]
                    for i, cl in enumerate(CLAIMS)}  # fmt: skip
        a.publish(groups)

        b_heard: dict[str, list[int]] = {}
        c_drained: dict[str, str] = {}  # group id -> prompt key of its summary ("" if none yet)

        def poll() -> bool:
            for s in b.drain_summaries(100):
                # A's own announce, or C's relay of a group it fetched (whichever reaches B first)
                assert (
                    s.origin in (a.peer_id, c.peer_id) and s.task == "chain_sum" and s.policy_version == 5
                ), s
                b_heard[s.prompt_key] = [s.successes, s.n]
            assert b.drain(100) == []  # B wants nothing: nothing is fetched, nothing admitted
            for item in c_sharing.drain():
                s = c_sharing.summary_for(item.group_id)
                c_drained[item.group_id] = s.prompt_key if s is not None else ""
            return len(b_heard) == len(CLAIMS) and len(c_drained) == len(CLAIMS)

        assert wait_for(poll, 180), (b_heard, c_drained, b.last_metrics, c.last_metrics)
        b.drain(1)  # refresh B's metrics snapshot
        result = {
            "expected": expected,
            "b_heard": b_heard,
            "b_fetch_attempts": b.last_metrics.get("fetch_attempts", 0),
            "b_admitted": b.last_metrics.get("admitted_groups", 0),
            "c_drained": [k for k in c_drained.values() if k],
            "c_missing_summary": [g for g, k in c_drained.items() if not k],
        }
    finally:
        for lk in reversed(links):
            lk.stop()
    print(json.dumps(result))
