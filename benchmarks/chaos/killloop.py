"""`chaos.py killloop`: kill -9 a solo tiny run at random moments, resume it, count what broke.

    nice -n 10 .venv/bin/python benchmarks/chaos.py killloop --kills 100

One run directory, one `swarmrl run --resume -c configs/tiny.yaml` (solo, checkpoint every 2
steps, so saves and deletes happen all the time) started again and again.  Each incarnation
is killed (SIGKILL to its process group) at a random moment, in turn: uniform over its whole
start-up (as long as the last one took, plus a second); 0-0.3 s after it printed "resumed at
step" (loading is done, metrics.jsonl is being rewritten, the first step starts); 0-3 s after
its first status (steps and checkpoint writes, every 2 steps).  Each kill records where it landed: before
the process wrote status.json ("start-up/resume"), while metrics.jsonl was being rewritten
(its temporary file present), or while training.

After every kill, before the next start:
  * lost metrics lines: steps 1..S (S = the newest complete checkpoint) missing from
    metrics.jsonl, or lines that do not parse before the last one;
  * then the restart: a failed resume is an incarnation that exits non-zero, or whose first
    status is below S (it started over or fell back without cause).
At the end, the latest checkpoint is corrupted (a byte of its weights flipped) and the run is
resumed once more: it must fall back to the previous checkpoint's step and say so in a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from node.procs import group_members, signal_group  # noqa: E402

CLI = [sys.executable, "-m", "node.cli"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "chaos-killloop")
    p.add_argument(
        "--json", type=Path, help="results file (default benchmarks/chaos/results/killloop-STAMP.json)"
    )


def checkpoints(run_dir: Path) -> list[int]:
    found = (run_dir / "checkpoints").glob("step_*/MANIFEST.json")
    return sorted(int(m.parent.name.removeprefix("step_")) for m in found)


def metrics_steps(run_dir: Path) -> tuple[list[int], int]:
    """Steps of the parseable lines of metrics.jsonl, and how many lines before the last are torn."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return [], 0
    steps, torn = [], 0
    for i, line in enumerate(lines):
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            torn += i < len(lines) - 1  # a torn last line is what a kill mid-append leaves
    return steps, torn


def status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def spawn(run_dir: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = CLI + ["run", "--resume", "-c", "configs/tiny.yaml", f"logging.run_dir={run_dir}", "logging.progress=plain",
                  "logging.tensorboard=false", f"model.cache_dir={cache}", "model.threads=1", "trainer.steps=100000000",
                  "checkpoint.every=2"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    with open(log, "ab") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env,
                                start_new_session=True)  # fmt: skip


def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.workdir / stamp
    run_dir, cache, log = work / "run", work / "model-cache", work / "run.log"
    work.mkdir(parents=True)
    span = 10.0  # seconds from start to the third step after resume; re-measured every round
    kills: list[dict[str, Any]] = []
    started: set[int] = set()
    try:
        for i in range(args.kills):
            before = checkpoints(run_dir)
            expect = before[-1] if before else 0
            proc = spawn(run_dir, cache, log)
            started.add(proc.pid)
            t0 = time.monotonic()
            mode = ("uniform", "after resume", "training")[i % 3]
            at = rng.uniform(0, span)  # "uniform": from the start
            delay = rng.uniform(0, 0.3) if mode == "after resume" else rng.uniform(0, 3.0)
            first_step, anchor, offset = None, None, log.stat().st_size if log.exists() else 0
            while proc.poll() is None:
                now = time.monotonic() - t0
                st = status(run_dir)
                if first_step is None and st.get("pid") == proc.pid:
                    first_step = st.get("step")
                    if mode == "training":
                        anchor = now
                if mode == "after resume" and anchor is None:
                    tail = log.read_text(errors="replace")[offset:]
                    if "resumed at step" in tail or first_step is not None:
                        anchor = now
                if (mode == "uniform" and now >= at) or (anchor is not None and now >= anchor + delay):
                    break
                time.sleep(0.01)
            at = time.monotonic() - t0
            st = status(run_dir)
            resumed = st.get("pid") == proc.pid
            if resumed and first_step is None:
                first_step = st.get("step")
            phase = "training" if resumed else "start-up/resume"
            if any(run_dir.glob(".metrics*")) or any(run_dir.glob("metrics.jsonl.*")):
                phase = "metrics rewrite"
            exited = proc.poll()
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(60)
            ckpts = checkpoints(run_dir)
            last = ckpts[-1] if ckpts else 0
            steps, torn = metrics_steps(run_dir)
            missing = sorted(set(range(1, last + 1)) - set(steps))
            failed = exited not in (None, 0) or (first_step is not None and first_step < expect)
            kills.append({"i": i, "mode": mode, "at_s": round(at, 2), "phase": phase, "resumed_at": first_step, "expected": expect,
                          "exited_by_itself": exited, "failed_resume": failed, "checkpoint": last,
                          "lost_lines": len(missing), "torn_lines": torn})  # fmt: skip
            if mode != "uniform" and resumed:  # start-up takes this long now: the next uniform span
                span = at + 1.0
            print(f"[killloop] {i + 1}/{args.kills} at {at:.1f}s ({phase}): resumed at {first_step} (>= {expect}?), "
                  f"checkpoint {last}, lost lines {len(missing)}{' FAILED' if failed else ''}", flush=True)  # fmt: skip
        fallback = corrupt_latest_and_resume(run_dir, cache, log, started)
    finally:
        for pgid in started:
            signal_group(pgid, signal.SIGKILL)
    left = group_members(started)
    out = {
        "stamp": stamp,
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()}",
        "kills": len(kills),
        "phases": {p: sum(k["phase"] == p for k in kills) for p in {k["phase"] for k in kills}},
        "failed_resumes": sum(k["failed_resume"] for k in kills),
        "lost_metrics_lines": sum(k["lost_lines"] for k in kills),
        "torn_lines_before_last": sum(k["torn_lines"] for k in kills),
        "tracebacks_in_log": log.read_text(errors="replace").count("Traceback"),
        "corrupt_latest": fallback,
        "leftover_pids": left,
        "detail": kills,
    }
    path = args.json or REPO / "benchmarks" / "chaos" / "results" / f"killloop-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "detail"}, indent=1))
    print(f"results: {path}")


def corrupt_latest_and_resume(run_dir: Path, cache: Path, log: Path, started: set[int]) -> dict[str, Any]:
    """Flip a byte in the newest checkpoint's weights; the next resume must use the one before."""
    ckpts = checkpoints(run_dir)
    if len(ckpts) < 2:
        return {"skipped": "fewer than two checkpoints"}
    newest, previous = ckpts[-1], ckpts[-2]
    weights = run_dir / "checkpoints" / f"step_{newest:08d}" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    mark = log.stat().st_size
    proc = spawn(run_dir, cache, log)
    started.add(proc.pid)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and status(run_dir).get("pid") != proc.pid:
        time.sleep(0.1)
    st = status(run_dir)
    exited = proc.poll()
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait(60)
    tail = log.read_text(errors="replace")[mark:]
    lines = [line for line in tail.splitlines() if "corrupt" in line.lower() or "skip" in line.lower()]
    said = re.search(r"resumed at step (\d+)", tail)
    resumed_at = int(said.group(1)) if said else (st.get("step") if st.get("pid") == proc.pid else None)
    return {
        "corrupted_step": newest,
        "previous_step": previous,
        "resumed_at": resumed_at,
        "fell_back": resumed_at == previous,
        "exited_by_itself": exited,
        "warned": bool(lines) and exited in (None, 0),  # said so (a line naming it) and went on
        "log_excerpt": "\n".join(lines)[:600],
    }
