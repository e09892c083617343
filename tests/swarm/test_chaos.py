"""The chaos suite, short: `benchmarks/chaos.py swarm` with 3 nodes for 75 s, no control run.

Real `swarmrl run` nodes (tiny model) and real attackers (a liar, a flooder, a replay-floor
attacker with two Sybils) in one swarm, with a kill -9 and resume, a hung node (SIGSTOP), 30%
churn and a partition (network namespaces where root, else a frozen p2pd).  The benchmark
waits on state (status files) throughout; this test reads its results file and checks the
goals that hold at any size: no honest peer banned, no group of a surviving node lost, no
exception, every resume good, every node stops cleanly, the liar banned, nothing left running.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.swarm


def test_chaos_short(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "chaos.json"
    argv = [sys.executable, "benchmarks/chaos.py", "swarm", "--nodes", "3", "--duration", "75", "--sybils", "2",
            "--no-control", "--workdir", str(tmp_path / "work"), "--json", str(out)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0 and out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())["faults"]
    table = done.stdout
    assert r["leftover_pids"] == [], r["leftover_pids"]
    assert r["honest_banned_count"] == 0, (r["honest_banned"], table)
    assert all(r["groups_lost"][m] == 0 for m in r["survivors"]), (r["groups_lost"], table)
    assert r["tracebacks"] == {}, r["tracebacks"]
    assert r["resumes"] and not [x for x in r["resumes"] if x["failed"]], r["resumes"]
    assert all(code == 0 for code in r["exit_codes"].values()), r["exit_codes"]
    assert r["ban_times"]["liar"]["first_s"] is not None, table
    assert all(sum(sent.values()) > 0 for sent in r["attacker_sent"].values()), r["attacker_sent"]
    assert all(steps and steps > 0 for steps in r["steps"].values()), r["steps"]
