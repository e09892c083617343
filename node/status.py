"""A running node's status, for people (`swarmrl status`) and for monitoring (Prometheus).

`StatusBoard.update(status)` is called after every step.  It writes RUN_DIR/status.json
atomically (a reader never sees half a file) and, when `logging.metrics_port` is set, serves
the same record over HTTP on `logging.metrics_host` (127.0.0.1 by default):

    GET /status    the JSON record
    GET /metrics   its numbers in the Prometheus text format (written by prometheus_client)

The record: {"version", "pid", "updated_at", "run_dir", "mode", "model", "ranks" (processes of one
node: > 1 on several GPUs), "step", "steps", "policy_version", "reward", "reward_local",
"correctness", "step_s", "checkpoints_skipped", "replay": {...}, "swarm": {...}} where
"replay" (node/replay/layer.py `ReplayLayer.status`) holds "select", "allocate",
"replay_fraction", "known_prompts", "histogram" (shares of known prompts per estimated pass-rate
fifth), "brier" and "brier_global" (None before the first local group), "generated", "replayed"
and "buffer"; and
"swarm" (join mode) holds "peer_id", "addresses", "state", "last_error", "peers", "published",
"received", "admitted", "used", "filled_locally", "verdicts", "rejections", "peer_scores", "banned" and
"link" (the link thread's counters).  The board adds "host" and "started" (the process's create
time) to records of its own process, so `swarmrl status` can tell a node that has exited, even
when its PID has been reused, and then says so instead of showing its last swarm state as live.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
STALE_S = 3600.0  # a record from another host this old is taken for a node that has gone
_COUNTERS = ("published", "received", "admitted", "used", "filled_locally")


class _StatusCollector:
    """One status record as Prometheus metric families (prometheus_client writes the text)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self):  # noqa: ANN201 (prometheus_client's collector protocol)
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.status
        for key, help_ in (("step", "training steps done"), ("policy_version", "optimizer steps of the weights"),
                           ("reward", "mean reward of the last step's batch"),
                           ("reward_local", "mean reward of the last step's local groups"),
                           ("step_s", "seconds of the last step")):  # fmt: skip
            if isinstance(status.get(key), (int, float)):
                yield GaugeMetricFamily(f"swarmrl_{key}", help_, value=status[key])
        swarm = status.get("swarm") or {}
        if not swarm:
            return
        yield GaugeMetricFamily(
            "swarmrl_swarm_connected",
            "1 when the swarm transport is up",
            value=swarm.get("state") == "connected",
        )
        yield GaugeMetricFamily("swarmrl_swarm_peers", "connected peers", value=swarm.get("peers") or 0)
        for key in _COUNTERS:
            yield CounterMetricFamily(
                f"swarmrl_swarm_{key}", f"groups {key.replace('_', ' ')}", value=swarm.get(key, 0)
            )
        for name, field, label in (("swarm_verdicts", "verdicts", "verdict"),
                                   ("swarm_rejections", "rejections", "reason"),
                                   ("swarm_peer_score", "peer_scores", "peer")):  # fmt: skip
            values = swarm.get(field) or {}
            if not values:
                continue
            kind = GaugeMetricFamily if field == "peer_scores" else CounterMetricFamily
            family = kind(f"swarmrl_{name}", f"{field.replace('_', ' ')} by {label}", labels=[label])
            for k, v in sorted(values.items()):
                family.add_metric([k], v)
            yield family
        if swarm.get("peer_signal_share") is not None:
            yield GaugeMetricFamily("swarmrl_swarm_signal_share", "share of the last step's |advantage| from peer rows",
                                    value=swarm["peer_signal_share"])  # fmt: skip
        useful = swarm.get("peers_useful") or []
        if useful:
            family = CounterMetricFamily("swarmrl_swarm_peer_used", "peer groups trained on, by origin", labels=["peer"])
            for r in useful:
                family.add_metric([r["peer"]], r["used"])
            yield family


def prometheus_text(status: dict[str, Any]) -> str:
    """The numeric parts of a status record in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    return generate_latest(registry).decode()


class _Handler(BaseHTTPRequestHandler):
    board: StatusBoard

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status = self.board.current
        if self.path.startswith("/metrics"):
            from prometheus_client import CONTENT_TYPE_LATEST

            body, kind = prometheus_text(status).encode(), CONTENT_TYPE_LATEST
        elif self.path.startswith("/status") or self.path == "/":
            body, kind = json.dumps(status).encode(), "application/json"
        else:
            self.send_error(404, "try /status or /metrics")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # keep scrapes out of the training output
        pass


class StatusBoard:
    def __init__(
        self, run_dir: Path, write_file: bool = True, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.path = Path(run_dir) / STATUS_FILE if write_file else None
        self.current: dict[str, Any] = {}
        self.server: ThreadingHTTPServer | None = None
        if port:
            handler = type("Handler", (_Handler,), {"board": self})
            try:
                self.server = ThreadingHTTPServer((host, port), handler)
            except OSError as e:
                raise ValueError(
                    f"logging.metrics_port={port}: cannot listen on {host}:{port}: {e}"
                ) from None
            threading.Thread(target=self.server.serve_forever, name="status-http", daemon=True).start()

    def update(self, status: dict[str, Any]) -> None:
        if status.get("pid") == os.getpid():  # a record of this process: stamp who wrote it
            status = {**status, "host": socket.gethostname(), "started": _create_time(os.getpid())}
        self.current = status
        if self.path is not None:
            tmp = self.path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(status, indent=1))
            tmp.replace(self.path)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def read_status(target: str) -> dict[str, Any]:
    """A status record from a run directory, a status.json path or an http(s) endpoint."""
    if target.startswith(("http://", "https://")):
        url = target.rstrip("/") + ("" if target.rstrip("/").endswith("/status") else "/status")
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (the user's own URL)
            return json.loads(answer.read())
    path = Path(target)
    path = path / STATUS_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no status at {path}: is a node running with logging.run_dir={target}?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a status file: {e}") from None


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def exit_reason(s: dict[str, Any], now: float | None = None) -> str | None:
    """Why the node that wrote this record is no longer running, or None while it may be.

    On the machine that wrote it: its PID is gone, is a zombie, or now belongs to a process
    started at another time (PID reuse, told apart by psutil's create time, Linux and macOS).
    From another machine (a shared folder) only the age can tell: no update for STALE_S."""
    import psutil

    now = time.time() if now is None else now
    pid, updated = s.get("pid"), s.get("updated_at")
    age = f"; last update {_ago(now - updated)}" if isinstance(updated, (int, float)) else ""
    if s.get("host") not in (None, socket.gethostname()):
        if isinstance(updated, (int, float)) and now - updated > STALE_S:
            return f"no update from host {s['host']} for {_ago(now - updated, suffix=False)}"
        return None
    if not isinstance(pid, int):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return f"pid {pid} has exited{age}"
        started = s.get("started")
        if isinstance(started, (int, float)) and abs(proc.create_time() - started) > 1.0:
            return f"pid {pid} has exited (the number now belongs to another process){age}"
    except psutil.NoSuchProcess:
        return f"pid {pid} has exited{age}"
    except psutil.Error:  # AccessDenied: some process is there
        return None
    return None


def _ago(seconds: float, suffix: bool = True) -> str:
    seconds = max(0.0, seconds)
    text = (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )
    return f"{text} ago" if suffix else text


def format_status(s: dict[str, Any], exited: str | None = None) -> str:
    """A few lines for a person.  `exited` (from `exit_reason`) marks the numbers as the last
    ones the node wrote, and leaves out the live-looking swarm state and peer count."""

    def num(v: Any, spec: str = ".3f") -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    lines = [
        f"run {s.get('run_dir', '?')}  pid {s.get('pid', '?')}  swarmrl {s.get('version', '?')}  mode {s.get('mode', '?')}"
        + (f"  ranks {s['ranks']}" if (s.get("ranks") or 1) > 1 else ""),
        f"model {s.get('model', '?')}  step {s.get('step', '?')}/{s.get('steps', '?')}  "
        f"policy v{s.get('policy_version', '?')}  reward {num(s.get('reward'))}  "
        f"local {num(s.get('reward_local'))}  {num(s.get('step_s'), '.1f')} s/step",
    ]
    if exited:
        done = s.get("step") is not None and s.get("step") == s.get("steps")
        lines.insert(
            0,
            f"NOT RUNNING: {exited}; {'it finished' if done else 'it stopped or crashed'} "
            f"at step {s.get('step', '?')}/{s.get('steps', '?')}. The numbers below are its last ones.",
        )
    rp = s.get("replay")
    if rp:
        lines.append(
            f"replay select {rp.get('select')}  allocate {rp.get('allocate')}  "
            f"replay fraction {num(rp.get('replay_fraction'), '.2f')}  known prompts {rp.get('known_prompts', 0)}  "
            f"buffer {rp.get('buffer', 0)}"
        )
        hist = rp.get("histogram") or []
        if hist:
            lines.append("estimated pass rate [0,.2) .. [.8,1]: " + " ".join(num(h, ".2f") for h in hist))
        lines.append(
            f"brier {num(rp.get('brier'))} (global mean {num(rp.get('brier_global'))})  "
            f"generated {rp.get('generated', 0)}  replayed {rp.get('replayed', 0)}"
        )
    sw = s.get("swarm")
    if sw and exited:
        lines.append(f"swarm: left (this node is not running)  peer {sw.get('peer_id')}")
        lines.append(
            "groups, totals at its last update: " + "  ".join(f"{k} {sw.get(k, 0)}" for k in _COUNTERS)
        )
    elif sw:
        lines.append(f"swarm {sw.get('state')}  peer {sw.get('peer_id')}  peers {sw.get('peers')}")
        lines.append("groups: " + "  ".join(f"{k} {sw.get(k, 0)}" for k in _COUNTERS))
        if sw.get("verdicts"):
            lines.append("admission: " + "  ".join(f"{k} {v}" for k, v in sorted(sw["verdicts"].items())))
        if sw.get("peer_signal_share") is not None or sw.get("summaries"):
            lines.append(
                f"from the swarm: {num(sw.get('peer_signal_share'), '.0%')} of the last step's |advantage|  "
                f"outcome summaries {sw.get('summaries', 0)} (false {sw.get('summary_lies', 0)})"
            )
        for r in sw.get("peers_useful") or []:
            lines.append(
                f"  peer {r['peer'][:16]}  used {r['used']}  admitted {r['admitted']}  lies {r['lies']}  "
                f"mean |adv| {num(r['mean_abs_adv'], '.2f')}  drift {num(r['drift'], '.2f')} nats/token  "
                f"reliability {num(r['reliability'], '.2f')}"
            )
        if sw.get("rejections"):
            lines.append(
                "rejected by the swarm layer: "
                + "  ".join(f"{k} {v}" for k, v in sorted(sw["rejections"].items()))
            )
        if sw.get("banned") and not exited:
            lines.append(f"banned now: {len(sw['banned'])}  " + "  ".join(p[:16] for p in sw["banned"]))
        if sw.get("last_error") and sw.get("state") != "connected" and not exited:
            lines.append(f"last error: {sw['last_error']}")
    return "\n".join(lines)
