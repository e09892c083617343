"""A running node's status, for people (`swarmrl status`) and for monitoring (Prometheus).

`StatusBoard.update(status)` is called after every step.  It writes RUN_DIR/status.json
atomically (a reader never sees half a file) and, when `logging.metrics_port` is set, serves
the same record over HTTP on `logging.metrics_host` (127.0.0.1 by default):

    GET /status    the JSON record
    GET /metrics   Prometheus text exposition (format 0.0.4) of its numbers

The record: {"version", "pid", "updated_at", "run_dir", "mode", "model", "step", "steps",
"policy_version", "reward", "reward_local", "correctness", "step_s", "checkpoints_skipped",
"replay": {...}, "swarm": {...}} where
"replay" (node/replay/layer.py `ReplayLayer.status`) holds "select", "allocate",
"replay_fraction", "known_prompts", "histogram" (shares of known prompts per estimated pass-rate
fifth), "brier" and "brier_global" (None before the first local group), "generated", "replayed"
and "buffer"; and
"swarm" (join mode) holds "peer_id", "addresses", "state", "last_error", "peers", "published",
"received", "admitted", "used", "filled_locally", "verdicts", "rejections", "peer_scores", "banned" and
"link" (the link thread's counters).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
_COUNTERS = ("published", "received", "admitted", "used", "filled_locally")


def prometheus_text(status: dict[str, Any]) -> str:
    """The numeric parts of a status record as Prometheus metrics."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP swarmrl_{name} {help_}", f"# TYPE swarmrl_{name} {kind}"])
        lines.extend(f"swarmrl_{name}{labels} {float(v)!r}" for labels, v in samples)

    for key, help_ in (("step", "training steps done"), ("policy_version", "optimizer steps of the weights"),
                       ("reward", "mean reward of the last step's batch"),
                       ("reward_local", "mean reward of the last step's local groups"),
                       ("step_s", "seconds of the last step")):  # fmt: skip
        if isinstance(status.get(key), (int, float)):
            metric(key, "gauge", help_, [("", status[key])])
    swarm = status.get("swarm") or {}
    if swarm:
        metric(
            "swarm_connected",
            "gauge",
            "1 when the swarm transport is up",
            [("", swarm.get("state") == "connected")],
        )
        metric("swarm_peers", "gauge", "connected peers", [("", swarm.get("peers", 0))])
        for key in _COUNTERS:
            metric(
                f"swarm_{key}_total", "counter", f"groups {key.replace('_', ' ')}", [("", swarm.get(key, 0))]
            )
        for name, field, label in (("swarm_verdicts_total", "verdicts", "verdict"),
                                   ("swarm_rejections_total", "rejections", "reason"),
                                   ("swarm_peer_score", "peer_scores", "peer")):  # fmt: skip
            values = swarm.get(field) or {}
            if values:
                kind = "gauge" if field == "peer_scores" else "counter"
                metric(name, kind, f"{field.replace('_', ' ')} by {label}",
                       [(f'{{{label}="{k}"}}', v) for k, v in sorted(values.items())])  # fmt: skip
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    board: StatusBoard

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status = self.board.current
        if self.path.startswith("/metrics"):
            body, kind = prometheus_text(status).encode(), "text/plain; version=0.0.4"
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


def format_status(s: dict[str, Any]) -> str:
    """A few lines for a person."""

    def num(v: Any, spec: str = ".3f") -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    lines = [
        f"run {s.get('run_dir', '?')}  pid {s.get('pid', '?')}  swarmrl {s.get('version', '?')}  mode {s.get('mode', '?')}",
        f"model {s.get('model', '?')}  step {s.get('step', '?')}/{s.get('steps', '?')}  "
        f"policy v{s.get('policy_version', '?')}  reward {num(s.get('reward'))}  "
        f"local {num(s.get('reward_local'))}  {num(s.get('step_s'), '.1f')} s/step",
    ]
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
    if sw:
        lines.append(f"swarm {sw.get('state')}  peer {sw.get('peer_id')}  peers {sw.get('peers')}")
        lines.append("groups: " + "  ".join(f"{k} {sw.get(k, 0)}" for k in _COUNTERS))
        if sw.get("verdicts"):
            lines.append("admission: " + "  ".join(f"{k} {v}" for k, v in sorted(sw["verdicts"].items())))
        if sw.get("rejections"):
            lines.append(
                "rejected by the swarm layer: "
                + "  ".join(f"{k} {v}" for k, v in sorted(sw["rejections"].items()))
            )
        if sw.get("banned"):
            lines.append(f"banned now: {len(sw['banned'])}  " + "  ".join(p[:16] for p in sw["banned"]))
        if sw.get("last_error") and sw.get("state") != "connected":
            lines.append(f"last error: {sw['last_error']}")
    return "\n".join(lines)
