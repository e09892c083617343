"""Node status: the JSON file, the HTTP endpoint with Prometheus text, and `swarmrl status`."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request

import pytest

from node.cli import main
from node.status import StatusBoard, format_status, prometheus_text, read_status

STATUS = {
    "version": "0.1.0", "pid": 1, "run_dir": "runs/x", "mode": "join", "model": "tiny", "step": 7, "steps": 10,
    "policy_version": 7, "reward": 0.5, "reward_local": 0.25, "step_s": 1.5,
    "swarm": {"peer_id": "12D3KooWabc", "state": "connected", "peers": 3, "published": 20, "received": 11,
              "admitted": 6, "used": 4, "filled_locally": 2, "verdicts": {"admitted": 6, "zero_variance": 5},
              "rejections": {"bad_signature": 2}, "peer_scores": {"12D3KooWxyz": -12.5}},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_text_has_every_number():
    text = prometheus_text(STATUS)
    lines = set(text.splitlines())
    for line in ("swarmrl_step 7.0", "swarmrl_reward_local 0.25", "swarmrl_swarm_connected 1.0",
                 "swarmrl_swarm_peers 3.0", "swarmrl_swarm_admitted_total 6.0",
                 'swarmrl_swarm_verdicts_total{verdict="zero_variance"} 5.0',
                 'swarmrl_swarm_rejections_total{reason="bad_signature"} 2.0',
                 'swarmrl_swarm_peer_score{peer="12D3KooWxyz"} -12.5',
                 "# TYPE swarmrl_swarm_published_total counter"):  # fmt: skip
        assert line in lines, line
    solo = prometheus_text({**STATUS, "swarm": None})
    assert "swarmrl_step 7.0" in solo and "swarm_" not in solo


def test_file_and_endpoint_serve_the_same_record(tmp_path, capsys):
    port = free_port()
    board = StatusBoard(tmp_path, write_file=True, port=port)
    try:
        board.update(STATUS)
        assert read_status(str(tmp_path)) == STATUS
        assert read_status(f"http://127.0.0.1:{port}") == STATUS
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain") and b"swarmrl_step 7.0" in r.read()
        assert main(["status", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "step 7/10" in out and "peers 3" in out and "bad_signature 2" in out
        assert main(["status", f"http://127.0.0.1:{port}", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == STATUS
    finally:
        board.close()


def test_port_in_use_and_missing_status_are_clear_errors(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ValueError, match="logging.metrics_port"):
            StatusBoard(tmp_path, port=s.getsockname()[1])
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "no status at" in capsys.readouterr().err


def test_format_names_the_error_of_a_disconnected_node():
    s = {**STATUS, "swarm": {**STATUS["swarm"], "state": "retrying", "last_error": "bootstrap unreachable"}}
    assert "last error: bootstrap unreachable" in format_status(s)


REPLAY = {"select": "mopps", "allocate": "knapsack", "replay_fraction": 0.25, "known_prompts": 412,
          "histogram": [0.1, 0.2, 0.3, 0.25, 0.15], "brier": 0.0812, "brier_global": 0.1534,
          "generated": 5120, "replayed": 96, "buffer": 31}  # fmt: skip


def test_format_shows_the_replay_section(tmp_path, capsys):
    text = format_status({**STATUS, "replay": REPLAY})
    assert (
        "replay select mopps  allocate knapsack  replay fraction 0.25  known prompts 412  buffer 31" in text
    )
    assert "estimated pass rate [0,.2) .. [.8,1]: 0.10 0.20 0.30 0.25 0.15" in text
    assert "brier 0.081 (global mean 0.153)  generated 5120  replayed 96" in text
    # before the first local group there is no score yet; a record without the section shows none
    fresh = format_status(
        {**STATUS, "replay": {**REPLAY, "brier": None, "brier_global": None, "histogram": []}}
    )
    assert "brier - (global mean -)" in fresh and "estimated pass rate" not in fresh
    assert "replay" not in format_status(STATUS)
    board = StatusBoard(tmp_path)
    board.update({**STATUS, "replay": REPLAY})
    assert main(["status", str(tmp_path)]) == 0
    assert "known prompts 412" in capsys.readouterr().out


def _exited_pid() -> int:
    """The PID of a process that has come and gone (reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_of_an_exited_node_says_so_and_shows_no_live_swarm(tmp_path, capsys):
    record = {**STATUS, "pid": _exited_pid(), "updated_at": time.time() - 300}
    (tmp_path / "status.json").write_text(json.dumps(record))
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "NOT RUNNING" in out and f"pid {record['pid']} has exited" in out and "5 min ago" in out
    assert "stopped or crashed at step 7/10" in out
    assert "connected" not in out and "peers 3" not in out and "swarm: left" in out
    # --json stays the raw record
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == record


def test_a_reused_pid_is_not_taken_for_the_node(tmp_path):
    from node.status import exit_reason

    board = StatusBoard(tmp_path)
    board.update({**STATUS, "pid": os.getpid()})
    mine = read_status(str(tmp_path))
    assert mine["started"] and exit_reason(mine) is None  # this very process: running
    reused = {**mine, "started": mine["started"] - 3600}  # same number, process started at another time
    assert "another process" in exit_reason(reused)
    elsewhere = {**mine, "host": "some-other-host", "updated_at": 0.0}
    assert "no update from host some-other-host" in exit_reason(elsewhere)
    assert exit_reason({**elsewhere, "updated_at": time.time()}) is None  # recent: may well be running


def test_prometheus_label_values_are_escaped():
    """A reason or peer label with a quote, backslash or newline cannot break the exposition."""
    odd = {**STATUS, "swarm": {**STATUS["swarm"], "rejections": {'bad "sig"\\\n': 2}}}
    text = prometheus_text(odd)
    assert 'swarmrl_swarm_rejections_total{reason="bad \\"sig\\"\\\\\\n"} 2.0' in text.splitlines()
