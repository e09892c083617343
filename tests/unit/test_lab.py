"""`swarmrl lab` without real nodes: how a crashed node is reported, the PID-reuse guard, usage."""

from __future__ import annotations

import os
import sys
import time

from node import lab, procs
from node.cli import main

CRASH = "print('[node] loading'); raise ValueError('tasks.sources.0.path: no such file: data/x.jsonl')"
KILLED = "import os, signal; print('[node] step 1/10'); os.kill(os.getpid(), signal.SIGKILL)"
CLEAN = "print('[node] step 10: checkpoint in runs/x')"


def wait_for(predicate, timeout: float = 30.0, period: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f"not true after {timeout} s")


def test_a_crashed_node_shows_its_exit_and_last_error_line(tmp_path):
    (tmp_path / "logs").mkdir()
    state = {"swarm_id": "lab-test", "backend": "hivemind", "created": time.time(), "processes": []}
    for name, code in (("node1", CRASH), ("node2", KILLED), ("node3", CLEAN)):
        lab._spawn(name, [sys.executable, "-c", code], tmp_path, state, dict(os.environ))
    rows = wait_for(lambda: (r := lab.rows(tmp_path)) and not any(x["running"] for x in r) and r)
    by = {r["node"]: r for r in rows}
    assert by["node1"]["ended"] == "exit 1"
    assert by["node1"]["error"] == "ValueError: tasks.sources.0.path: no such file: data/x.jsonl"
    assert by["node2"]["ended"] == "killed by SIGKILL" and by["node2"]["error"] == "[node] step 1/10"
    assert by["node3"]["ended"] == "exit 0" and by["node3"]["error"] is None
    text = lab.table(rows)
    assert "exit 1" in text and "killed by SIGKILL" in text and "exited -/-" not in text
    assert "node1 exit 1: ValueError: tasks.sources.0.path: no such file" in text
    assert "node3 exit 0:" not in text
    # a later `lab status` (another process: it cannot reap them) still knows how they ended
    lab._EXITS.clear()
    again = {r["node"]: r for r in lab.rows(tmp_path)}
    assert again["node1"]["ended"] == "exit 1" and again["node2"]["ended"] == "killed by SIGKILL"


def test_a_detached_node_with_unknown_exit_still_shows_its_error_line(tmp_path):
    log = tmp_path / "node1.log"
    log.write_text("[node] loading\nTraceback (most recent call last):\n  File x\nnode.policy.PolicyLoadError: "
                   "model.name=foo: not found\n")  # fmt: skip
    assert lab.last_error(str(log)) == "node.policy.PolicyLoadError: model.name=foo: not found"
    assert lab.how_it_ended({"pid": 1}) == "exited"
    log.write_text("[node] step 10: checkpoint in runs/x\n")
    assert lab.last_error(str(log)) is None  # a clean end is no error


def test_a_reused_pid_is_not_the_recorded_process():
    me = os.getpid()
    started = procs.start_time(me)
    assert started and lab.alive({"pid": me, "started": started})
    assert not lab.alive({"pid": me, "started": started - 60})  # same number, another start: not ours
    assert lab.alive({"pid": me, "started": ""})  # lab.json of an older version: PID only


def test_lab_without_an_action_prints_usage(capsys):
    assert main(["lab"]) == 2
    assert "usage: swarmrl lab {up,down,status}" in capsys.readouterr().err


def test_per_node_overrides_are_checked_before_anything_starts(tmp_path, capsys):
    lab_dir = tmp_path / "lab"
    # a node number out of range, and a typo in one node's override: usage errors, nothing started
    assert main(["lab", "up", "--nodes", "2", "--dir", str(lab_dir), "-c", "configs/tiny.yaml",
                 "--node", "3", "rollout.temperature=0.9"]) == 2  # fmt: skip
    assert "--node 3" in capsys.readouterr().err
    assert main(["lab", "up", "--nodes", "2", "--dir", str(lab_dir), "-c", "configs/tiny.yaml",
                 "--node", "2", "rollout.temprature=0.9"]) == 2  # fmt: skip
    assert "temprature" in capsys.readouterr().err
    assert not (lab_dir / "lab.json").exists()
