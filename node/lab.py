"""`swarmrl lab up/down/status`: a private swarm of N nodes on this machine in one command.

`up` makes a lab directory:

    DIR/keys/boot.key, node1.key ...   Ed25519 identities (0600)
    DIR/allowlist.txt                  their peer ids: only these may join (private swarm)
    DIR/bootstrap.addr                 the bootstrap node's multiaddr, once it is up
    DIR/lab.json                       what was started: pid, start time, command, log of each
    DIR/logs/*.log                     each process's output
    DIR/node1/ ...                     each node's run directory (metrics, checkpoints, status.json)

then starts a bootstrap node and N `swarmrl run` processes (each in its own session, so a
Ctrl-C in the terminal reaches only `up`), and shows a live table of the nodes until they
finish or Ctrl-C, which stops the lab like `down`.  `down` stops exactly the processes in
lab.json: SIGINT first (a node finishes its step and saves), SIGKILL to the process group
after a grace period.  A recorded PID is only signalled while the process's start time
(psutil's create time, Linux and macOS) still matches, so a PID reused by another program is
never touched.  A node that ended on its own shows how (`exit 1`, `killed by SIGKILL`; the code
is known when this process reaped it, not for a detached lab's nodes) and, unless it exited
cleanly, the last error line of its log under the table.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from node import procs
from node.procs import signal_group
from node.status import STATUS_FILE
from protocol.identity import generate_key_file

STATE = "lab.json"
# "ValueError: ...", "node.policy.PolicyLoadError: ...", "error: ...", "Killed", "Segmentation fault"
ERROR_LINE = re.compile(
    r"^([\w.]*(Error|Exception|Interrupt|Exit)\b.*|error: .*|Killed.*|Segmentation fault.*)$"
)


class LabError(RuntimeError):
    pass


def start_time(pid: int) -> float | None:
    """Start time of `pid` (psutil's create time; 0.0 where unknown), None if it is not running.
    An exited child of this process (a zombie until reaped) is reaped here, its status kept."""
    now = procs.start_time(pid)
    if now is None:
        _reap(pid)
    return now


def alive(proc: dict[str, Any]) -> bool:
    now, then = start_time(proc["pid"]), proc["started"]
    if now is None:
        return False
    if not isinstance(then, (int, float)) or not now or not then:  # unknown, or lab.json of an older version
        return True
    return abs(now - then) < 0.5  # else the PID now belongs to another program


def read_state(lab_dir: Path) -> dict[str, Any] | None:
    path = lab_dir / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LabError(f"{path}: unreadable ({e}); stop its processes by hand, then delete it") from None


def write_state(lab_dir: Path, state: dict[str, Any]) -> None:
    tmp = lab_dir / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(lab_dir / STATE)


def _spawn(
    name: str, argv: list[str], lab_dir: Path, state: dict[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    log_path = lab_dir / "logs" / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)  # fmt: skip
    _CHILDREN[proc.pid] = proc  # kept: a dropped Popen is reaped by subprocess, its exit code lost
    entry = {
        "name": name,
        "pid": proc.pid,
        "started": start_time(proc.pid) or 0.0,
        "argv": argv,
        "log": str(log_path),
    }
    state["processes"].append(entry)
    write_state(lab_dir, state)  # recorded at once: a failure later still lets `down` find it
    return entry


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def up(
    lab_dir: Path,
    nodes: int,
    config_files: list[str],
    overrides: list[str],
    backend: str = "hivemind",
    boot_timeout: float = 90.0,
    per_node: dict[int, list[str]] | None = None,
) -> dict[str, Any]:
    """Create keys and allowlist, start the bootstrap and `nodes` nodes; returns the state.
    `per_node[k]`: overrides for node k only (after the common ones), e.g. its task mix."""
    if nodes < 1:
        raise LabError("--nodes must be at least 1")
    lab_dir.mkdir(parents=True, exist_ok=True)
    old = read_state(lab_dir)
    if old and any(alive(p) for p in old["processes"]):
        raise LabError(
            f"a lab is already running in {lab_dir}; stop it with `swarmrl lab down --dir {lab_dir}`"
        )
    (lab_dir / "logs").mkdir(exist_ok=True)
    keys = lab_dir / "keys"
    keys.mkdir(exist_ok=True)
    names = ["boot"] + [f"node{k}" for k in range(1, nodes + 1)]
    peer_ids = {}
    for name in names:
        key = keys / f"{name}.key"
        peer_ids[name] = generate_key_file(key) if not key.exists() else _peer_id(key)
    (lab_dir / "allowlist.txt").write_text(
        "# peers admitted to this lab swarm (written by `swarmrl lab up`)\n"
        + "".join(f"{peer_ids[n]}  # {n}\n" for n in names)
    )
    swarm_id = old["swarm_id"] if old else f"lab-{secrets.token_hex(4)}"
    state: dict[str, Any] = {
        "swarm_id": swarm_id,
        "backend": backend,
        "created": time.time(),
        "processes": [],
    }
    write_state(lab_dir, state)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    addr_file = lab_dir / "bootstrap.addr"
    addr_file.unlink(missing_ok=True)
    cli = [sys.executable, "-m", "node.cli"]
    boot = _spawn("bootstrap", cli + [
        "bootstrap", "--backend", backend, "--host", "127.0.0.1", "--swarm-id", swarm_id,
        "--identity", str(keys / "boot.key"), "--allowlist", str(lab_dir / "allowlist.txt"),
        "--address-file", str(addr_file)], lab_dir, state, env)  # fmt: skip
    deadline = time.monotonic() + boot_timeout
    while not addr_file.is_file():
        if not alive(boot) or time.monotonic() > deadline:
            down(lab_dir, grace=5)
            raise LabError(
                f"the bootstrap node did not come up; its log ({boot['log']}):\n{_tail(boot['log'])}"
            )
        time.sleep(0.2)
    address = addr_file.read_text().split()[0]
    files = [a for f in config_files for a in ("--config", f)]
    for k in range(1, nodes + 1):
        run_dir = lab_dir / f"node{k}"
        _spawn(f"node{k}", cli + ["run", "--resume", *files,
               "swarm.mode=join", f"swarm.backend={backend}", f"swarm.swarm_id={swarm_id}", "swarm.host=127.0.0.1",
               f"swarm.bootstrap={address}", f"swarm.identity={keys / f'node{k}.key'}",
               f"swarm.allowlist={lab_dir / 'allowlist.txt'}", f"logging.run_dir={run_dir}",
               "logging.progress=plain", f"seed={k}", "model.threads=1", *overrides, *(per_node or {}).get(k, [])],
               lab_dir, state, env)  # fmt: skip
    return state


def _peer_id(key: Path) -> str:
    from protocol.identity import load_key_file

    return load_key_file(key).peer_id


def down(lab_dir: Path, grace: float = 30.0) -> list[str]:
    """Stop every process the lab started (nodes first, then the bootstrap); returns what was
    stopped and how.  Idempotent."""
    state = read_state(lab_dir)
    if state is None:
        return []
    procs = sorted(state["processes"], key=lambda p: p["name"] == "bootstrap")
    report = []
    running = [p for p in procs if alive(p)]
    for p in running:
        signal_group(p["pid"], signal.SIGINT)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in running:
        if alive(p):
            report.append(f"{p['name']} (pid {p['pid']}): killed after {grace:.0f} s")
        else:
            report.append(f"{p['name']} (pid {p['pid']}): stopped")
        signal_group(p["pid"], signal.SIGKILL)  # the process, if still up, and its p2pd, if it survived
    for p in running:
        _reap(p["pid"])
    state["stopped"] = time.time()
    write_state(lab_dir, state)
    return report


_CHILDREN: dict[int, subprocess.Popen] = {}  # processes this process started
_EXITS: dict[int, int] = {}  # pid -> exit code (negative: killed by that signal) of children reaped here


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _EXITS[pid] = child.returncode
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (a detached lab's): init reaps it
        pass


def last_error(log: str, or_last_line: bool = False) -> str | None:
    """The line of a log that says why the process failed: the last exception or `error:` line
    (else, with `or_last_line`, its last line)."""
    lines = [line.strip() for line in _tail(log, 60).splitlines() if line.strip()]
    for line in reversed(lines):
        if ERROR_LINE.match(line):
            return line
    return lines[-1] if lines and or_last_line else None


def how_it_ended(proc: dict[str, Any]) -> str:
    """How a process ended: `exit 1`, `killed by SIGKILL`, or `exited` where the code is
    unknown (a detached lab's nodes are reaped by init, not by us)."""
    code = proc.get("exit")
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def rows(lab_dir: Path) -> list[dict[str, Any]]:
    """One row per node: process state plus its status.json."""
    state = read_state(lab_dir) or {"processes": []}
    out = []
    statuses = {}
    for p in state["processes"]:
        if p["name"] == "bootstrap":
            continue
        try:
            statuses[p["name"]] = json.loads((lab_dir / p["name"] / STATUS_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            statuses[p["name"]] = {}
    ids = {n: (s.get("swarm") or {}).get("peer_id") for n, s in statuses.items()}
    running = {p["name"]: alive(p) for p in state["processes"]}
    recorded = [p for p in state["processes"] if p["pid"] in _EXITS and "exit" not in p]
    for p in recorded:
        p["exit"] = _EXITS[p["pid"]]
    if recorded:  # kept, so a later `lab status` still says how they ended
        write_state(lab_dir, state)
    for p in state["processes"]:
        if p["name"] == "bootstrap":
            continue
        s = statuses[p["name"]]
        sw = s.get("swarm") or {}
        given = [(o.get("swarm") or {}).get("peer_scores", {}).get(ids[p["name"]]) for o in statuses.values()]
        given = [g for g in given if g is not None]
        code = p.get("exit")  # None where unknown: then only an error line in the log tells
        failed = not running[p["name"]] and code != 0
        out.append({
            "node": p["name"], "pid": p["pid"], "running": running[p["name"]],
            "ended": None if running[p["name"]] else how_it_ended(p),
            "error": last_error(p["log"], or_last_line=code is not None) if failed else None, "log": p["log"], "step": s.get("step"),
            "steps": s.get("steps"), "reward": s.get("reward_local"), "peers": sw.get("peers"),
            "sent": sw.get("published"), "received": sw.get("received"), "admitted": sw.get("admitted"),
            "used": sw.get("used"), "signal": sw.get("peer_signal_share"),
            "score": sum(given) / len(given) if given else None,
        })  # fmt: skip
    return out


def table(node_rows: list[dict[str, Any]]) -> str:
    """`rows()` as aligned text."""
    cols = [
        "node",
        "pid",
        "state",
        "step",
        "reward",
        "peers",
        "sent",
        "received",
        "admitted",
        "used",
        "signal",
        "score",
    ]
    lines = [cols]
    for r in node_rows:

        def f(v: Any, spec: str = "") -> str:
            return "-" if v is None else format(v, spec)

        lines.append([r["node"], str(r["pid"]), "running" if r["running"] else r.get("ended") or "exited",
                      f"{f(r['step'])}/{f(r['steps'])}", f(r["reward"], ".3f"), f(r["peers"]), f(r["sent"]),
                      f(r["received"]), f(r["admitted"]), f(r["used"]), f(r.get("signal"), ".0%"), f(r["score"], ".1f")])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)
    errors = [f"{r['node']} {r.get('ended') or 'exited'}: {r['error']}  (log: {r['log']})"
              for r in node_rows if r.get("error")]  # fmt: skip
    return "\n".join([text, *errors])
