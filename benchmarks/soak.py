"""Soak: a small lab runs for an hour; does any process grow?

    nice -n 10 .venv/bin/python benchmarks/soak.py                       # 3 tiny nodes, 1 h, sample every 30 s
    nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 10 --nodes 2  # a quick one

It starts a lab through the CLI (`swarmrl lab up --detach`: a bootstrap node and N `swarmrl run`
nodes in join mode on the tiny model, each with its p2pd daemon), then every `--interval`
seconds reads, for every live process of the lab's process groups, the resident set
(/proc/PID/status VmRSS), the open file descriptors (/proc/PID/fd) and the CPU time, plus each
node's step from its status.json.  At the end it stops the lab with `swarmrl lab down`.

Written under --out (default benchmarks/soak/results/):

    soak-STAMP.samples.jsonl   one line per sample: time, per-process usage, node steps
    soak-STAMP.json            the summary below, plus the git commit at start and end

Growth is judged after a warm-up (`--warmup`, default 10 min: model load, first checkpoints,
the swarm meshing): per process, the median of the last three samples against the median of
the three samples that follow the warm-up, and the least-squares slope of RSS after the
warm-up, in % of the starting RSS per hour.  The goal (issue 11) is RSS growth < 5%.

The lab's own files (keys, checkpoints, logs) go to --lab-dir (default runs/soak-lab, not
committed).  Only processes of the groups this script started are read or signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.procs import group_members, signal_group  # noqa: E402
from swarm.testing import proc_usage  # noqa: E402

CLI = [sys.executable, "-m", "node.cli"]


def git_head() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip()


def lab_processes(lab_dir: Path) -> dict[str, int]:
    """Lab member name -> its process group id (= the PID `lab up` started)."""
    state = json.loads((lab_dir / "lab.json").read_text())
    return {p["name"]: p["pid"] for p in state["processes"]}


def sample(groups: dict[str, int], lab_dir: Path, t0: float) -> dict[str, Any]:
    """Usage of every live process of the lab, keyed "member/comm/pid" (a node and its p2pd)."""
    procs: dict[str, dict[str, Any]] = {}
    for name, pgid in groups.items():
        for pid in group_members({pgid}):
            u = proc_usage(pid)
            if u is not None:
                procs[f"{name}/{u.name}/{pid}"] = {
                    "rss_kb": u.rss_kb,
                    "fds": u.fds,
                    "cpu_s": round(u.cpu_s, 2),
                }
    steps = {}
    for name in groups:
        try:
            steps[name] = json.loads((lab_dir / name / "status.json").read_text()).get("step")
        except (OSError, json.JSONDecodeError):
            steps[name] = None
    return {"t": round(time.monotonic() - t0, 1), "procs": procs, "steps": steps}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Per process: RSS and fds after warm-up vs at the end, slope, peak."""
    after = [s for s in samples if s["t"] >= warmup]
    out: dict[str, Any] = {}
    keys = sorted({k for s in samples for k in s["procs"]})
    for key in keys:
        series = [(s["t"], s["procs"][key]) for s in after if key in s["procs"]]
        if len(series) < 4:
            out[key] = {"note": f"only {len(series)} samples after warm-up (restarted or exited?)"}
            continue
        rss = [p["rss_kb"] for _, p in series]
        fds = [p["fds"] for _, p in series]
        start, end = _median(rss[:3]), _median(rss[-3:])
        ts = [t for t, _ in series]
        mt, mr = statistics.fmean(ts), statistics.fmean(rss)
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rss)) / var if var else 0.0  # kB per s
        out[key] = {
            "rss_start_mb": round(start / 1024, 1),
            "rss_end_mb": round(end / 1024, 1),
            "rss_peak_mb": round(max(rss) / 1024, 1),
            "rss_growth_pct": round(100 * (end - start) / start, 2),
            "rss_slope_pct_per_h": round(100 * slope * 3600 / start, 2),
            "fds_start": int(_median(fds[:3])),
            "fds_end": int(_median(fds[-3:])),
            "fds_max": max(fds),
            "cpu_s": series[-1][1]["cpu_s"],
            "samples": len(series),
        }
    return out


def table(summary: dict[str, Any]) -> str:
    lines = ["| process | RSS after warm-up (MB) | RSS at end (MB) | growth | slope (%/h) | peak (MB) | open fds (start -> end, max) |",
             "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for key, s in summary.items():
        name = key.rsplit("/", 1)[0]
        if "note" in s:
            lines.append(f"| {name} | {s['note']} | | | | | |")
            continue
        lines.append(f"| {name} | {s['rss_start_mb']} | {s['rss_end_mb']} | {s['rss_growth_pct']:+.1f}% | "
                     f"{s['rss_slope_pct_per_h']:+.1f} | {s['rss_peak_mb']} | "
                     f"{s['fds_start']} -> {s['fds_end']}, {s['fds_max']} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--minutes", type=float, default=60.0, help="how long the lab runs")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=600.0, help="seconds before growth is measured")
    p.add_argument("--config", "-c", default="configs/tiny.yaml")
    p.add_argument("--lab-dir", type=Path, default=REPO / "runs" / "soak-lab")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "soak" / "results")
    p.add_argument("overrides", nargs="*", help="config overrides for the nodes")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    samples_path = args.out / f"soak-{stamp}.samples.jsonl"
    head_start = git_head()
    overrides = [
        "trainer.steps=100000000",
        "checkpoint.every=20",
        "logging.tensorboard=false",
        *args.overrides,
    ]
    up = subprocess.run(CLI + ["lab", "up", "--detach", "--nodes", str(args.nodes), "--dir", str(args.lab_dir),
                               "-c", args.config, *overrides], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    if up.returncode != 0:
        sys.exit(f"lab up failed:\n{up.stdout}{up.stderr}")
    groups = lab_processes(args.lab_dir)
    print(f"soak: lab up in {args.lab_dir} ({', '.join(f'{n}={g}' for n, g in groups.items())}); "
          f"samples -> {samples_path}", flush=True)  # fmt: skip
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with open(samples_path, "a") as f:
            while not stop and time.monotonic() - t0 < args.minutes * 60:
                s = sample(groups, args.lab_dir, t0)
                samples.append(s)
                f.write(json.dumps(s) + "\n")
                f.flush()
                print(f"t={s['t']:.0f}s steps={s['steps']} rss_mb="
                      f"{ {k: round(v['rss_kb'] / 1024) for k, v in s['procs'].items()} }", flush=True)  # fmt: skip
                deadline = time.monotonic() + args.interval
                while not stop and time.monotonic() < deadline:
                    time.sleep(min(1.0, args.interval))
    finally:
        down = subprocess.run(CLI + ["lab", "down", "--dir", str(args.lab_dir)], cwd=REPO, capture_output=True,
                              text=True)  # fmt: skip
        print(down.stdout + down.stderr, flush=True)
        for pgid in groups.values():  # `lab down` already did; a group left over is ours to end
            signal_group(pgid, signal.SIGKILL)
    summary = {
        "started": stamp,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_end": os.getloadavg(),
        "nodes": args.nodes,
        "config": args.config,
        "overrides": overrides,
        "minutes": round((time.monotonic() - t0) / 60, 1),
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "git_start": head_start,
        "git_end": git_head(),
        "steps_end": samples[-1]["steps"] if samples else {},
        "processes": summarize(samples, args.warmup),
    }
    (args.out / f"soak-{stamp}.json").write_text(json.dumps(summary, indent=1))
    print(table(summary["processes"]))


if __name__ == "__main__":
    main()
