"""Run the SAPO toy experiments: one hivemind bootstrap node and N agent processes per run.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/sapo/run.py --exp ij --seeds 0 1 2 --rounds 300
    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/sapo/run.py --exp liar --seeds 0 1 2 --rounds 300
    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/sapo/run.py --exp mixed --seeds 0 1 2 --rounds 300
    .venv/bin/python benchmarks/sapo/report.py

A run is one (configuration, seed): every agent starts from the seed's warm start (the paper's
agents share one base model), with its own problem and sampling streams.  Experiments:

* ``ij``: I/J in 8/0, 6/2, 4/4, 2/6, all agents alike;
* ``liar``: 4/4 with agent 0 lying (`agent.liar_groups`); the node refuses its groups (REWARD_MISMATCH);
* ``mixed``: half the agents at `SMALL` size, the rest at the default, 8/0 (each size's
  baseline) vs 4/4;
* ``offpolicy``: diagnostics for why sharing hurt here: 4/4 whose "external" groups are the
  agent's own extra samples sent through the same path (a control), 4/4 trained against the
  peers' sampler log-probs with truncated IS, and 8/0 vs 4/4 at a third of the learning rate.

Process discipline (as `tests/swarm/conftest.py`): every child starts in its own session, so
its process group is its PID and holds its p2pd daemon; the runner waits by polling files, and
its `finally` stops every group it started by that PID (SIGTERM, then SIGKILL), never by name.
``RESULTS/EXP.json`` is rewritten after every run; ``--resume`` skips runs already in it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.procs import group_alive, signal_group  # noqa: E402
from swarm.testing import wait_for_sync as wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--d-model", "32", "--n-layer", "1"]  # the small size of the ``mixed`` experiment
IJ = [(8, 0), (6, 2), (4, 4), (2, 6)]


def plan(exp: str, n: int) -> dict[str, list[list[str]]]:
    """Configurations of one experiment: label -> the extra arguments of each of the n agents."""
    ij = lambda i, j: ["--I", str(i), "--J", str(j)]  # noqa: E731
    if exp == "ij":
        return {f"{i}/{j}": [ij(i, j)] * n for i, j in IJ}
    if exp == "liar":
        return {"liar": [ij(4, 4) + ["--liar"]] + [ij(4, 4)] * (n - 1)}
    if exp == "mixed":
        sizes = [SMALL if k >= n // 2 else [] for k in range(n)]
        return {f"mixed {i}/{j}": [ij(i, j) + s for s in sizes] for i, j in [(8, 0), (4, 4)]}
    if exp == "offpolicy":  # is the peers' policy drift what hurts? (docs/experiments.md)
        return {
            "4/4 own-as-external": [ij(4, 4) + ["--own-as-external"]] * n,
            "4/4 reuse+tis": [ij(4, 4) + ["--peer-logprobs", "reuse"]] * n,
            "8/0 lr1e-4": [ij(8, 0) + ["--lr", "1e-4"]] * n,
            "4/4 lr1e-4": [ij(4, 4) + ["--lr", "1e-4"]] * n,
        }
    if exp.startswith("sharing-"):  # issue 13's check over the real network (docs/sapo.md)
        regime = ["--regime", exp.split("-", 1)[1], "--size", "2048"]
        info = ["--take", "information"]
        reuse = ["--peer-logprobs", "reuse", "--gate"]  # the sampler's log-probs, token TIS C=2, ratio gate
        return {
            "8/0": [ij(8, 0) + regime] * n,
            "4/0": [ij(4, 0) + regime] * n,
            "4/4 uniform": [ij(4, 4) + regime] * n,
            "4/4 info": [ij(4, 4) + info + regime] * n,
            "4/4 info adaptive": [ij(4, 4) + info + ["--adaptive-j"] + regime] * n,
            "4/4 info reuse": [ij(4, 4) + info + reuse + regime] * n,
            "4/4 info adaptive reuse": [ij(4, 4) + info + ["--adaptive-j"] + reuse + regime] * n,
        }
    raise SystemExit(f"unknown --exp {exp!r}; choose ij, liar, mixed, offpolicy or sharing-REGIME")


class Children:
    """Processes this runner started, each the leader of its own process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                    start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def reap(self, grace: float = 10.0) -> list[int]:
        """SIGTERM each leader still running (it stops its own p2pd: a SIGTERM to the whole group
        would kill the daemon under it first), wait up to `grace` s by polling, then SIGKILL the
        groups left, naming each; returns the PIDs of groups that needed SIGKILL.

        The poll reaps each leader as it exits (`Popen.poll`): a leader that exited but was
        never waited on stays a zombie, and `group_alive` counts zombies, so without it every
        bootstrap (the one child nothing else polls) looked alive for the whole grace."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        wait_for(lambda: all(p.poll() is not None and not group_alive(p.pid) for p in self.procs), grace)
        killed = [p for p in self.procs if p.poll() is None or group_alive(p.pid)]
        for p in killed:
            args = [str(a) for a in p.args]
            who = f"agent {args[args.index('--index') + 1]}" if "--index" in args else "bootstrap"
            state = "still running" if p.poll() is None else f"exited {p.returncode}; its p2pd did not"
            print(f"  {who} (pid {p.pid}) needed SIGKILL {grace:.0f} s after SIGTERM ({state})", flush=True)
            signal_group(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait(10)
        return [p.pid for p in killed]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


CURVES = ("reward", "generated", "external_groups", "filled_locally", "pool", "clip_frac", "waited", "seconds",
          "ext_seq_logratio", "ext_far_tokens")  # fmt: skip
SUMMARY = ("eval_start", "eval_end", "generated", "verdicts", "swarm", "seconds")


def _round(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else x  # keeps the results files small


def collect(d: Path, agents: list[list[str]]) -> list[dict[str, Any]]:
    """Per agent of a finished run folder: its arguments, per-round curves (None where a round
    has no value, e.g. no drift without peer log-probs) and its summary."""
    out = []
    for k, extra in enumerate(agents):
        rows = read_jsonl(d / f"agent{k}.jsonl")
        summary = json.loads((d / f"agent{k}.json").read_text())
        curves = {key: [_round(r.get(key)) for r in rows] for key in CURVES}
        curves = {key: v for key, v in curves.items() if any(x is not None for x in v)}
        out.append({"index": k, "extra": extra, "curves": curves, **{key: summary[key] for key in SUMMARY}})
    return out


def run_dir(args: argparse.Namespace, label: str, seed: int) -> Path:
    return Path(args.work) / args.exp / label.replace("/", "-").replace(" ", "_") / f"seed{seed}"


def run_one(label: str, seed: int, agents: list[list[str]], args: argparse.Namespace) -> dict[str, Any]:
    """Bootstrap + agents for one configuration and seed; the per-agent curves and summaries."""
    d = run_dir(args, label, seed)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    kids = Children()
    t0 = time.monotonic()
    try:
        swarm_id = f"sapo-{args.exp}-{seed}-{os.getpid()}"
        boot = kids.start([sys.executable, "-m", "node.cli", "bootstrap", "--backend", "hivemind", "--host",
                           "127.0.0.1", "--swarm-id", swarm_id, "--address-file", str(d / "boot.addr")],
                          d / "boot.log")  # fmt: skip
        if not wait_for(lambda: (d / "boot.addr").exists() or boot.poll() is not None, 90):
            raise RuntimeError(f"bootstrap did not start; see {d / 'boot.log'}")
        addrs = (d / "boot.addr").read_text().split()
        procs = []
        for k, extra in enumerate(agents):
            cmd = [sys.executable, "-m", "benchmarks.sapo.agent", "--index", str(k), "--seed", str(seed),
                   "--rounds", str(args.rounds), "--out", str(d), "--cache", args.cache, "--swarm-id", swarm_id,
                   "--n-agents", str(len(agents)), "--wait-s", str(args.wait_s), "--bootstrap", *addrs, *extra]  # fmt: skip
            procs.append(kids.start(cmd, d / f"agent{k}.log"))

        def all_have(suffix: str) -> bool:
            dead = [
                k for k, p in enumerate(procs) if p.poll() is not None and not (d / f"agent{k}.json").exists()
            ]
            if dead:
                raise RuntimeError(f"agents {dead} exited early; see {d}/agent*.log")
            return all((d / f"agent{k}.{suffix}").exists() for k in range(len(procs)))

        if not wait_for(lambda: all_have("ready"), 180):
            raise RuntimeError("agents not ready in 180 s")
        (d / "go").touch()
        if not wait_for(lambda: all_have("json"), args.run_timeout, interval=1.0):
            raise RuntimeError(f"run exceeded {args.run_timeout} s")
        (d / "stop").touch()
        wait_for(lambda: all(p.poll() is not None for p in procs), 20)
        out = collect(d, agents)
        return {"seed": seed, "wall_s": time.monotonic() - t0, "agents": out}
    finally:
        killed = kids.reap()
        if killed:
            print(f"  needed SIGKILL: process groups {killed}", flush=True)


def prepare_warm_starts(exp: str, seeds: list[int], cache: str) -> None:
    """Build the warm starts before any agent starts, so agents only ever load them."""
    import torch

    from benchmarks.toy.adapter import warm_model
    from benchmarks.toy.seqmodel import GPTConfig

    torch.set_num_threads(1)
    sizes = [GPTConfig()] + (
        [GPTConfig(d_model=int(SMALL[1]), n_layer=int(SMALL[3]))] if exp == "mixed" else []
    )
    for seed in seeds:
        for c in sizes:
            warm_model(seed, c, Path(cache))
        if exp.startswith("sharing-"):
            from benchmarks.sapo.lockstep import warm

            for agent in (0, 1):
                warm(exp.split("-", 1)[1], seed, agent, Path(cache))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exp", required=True,
                   choices=["ij", "liar", "mixed", "offpolicy", "sharing-easy", "sharing-sparse", "sharing-hetero"])  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--only", nargs="*", default=None, help="labels of the plan to run (default: all)")
    p.add_argument("--wait-s", type=float, default=2.0)
    p.add_argument("--run-timeout", type=float, default=1800.0)
    p.add_argument("--work", default="runs/sapo", help="per-run folders (logs, JSONL)")
    p.add_argument("--cache", default="runs/sapo/cache", help="warm starts")
    p.add_argument("--results", default="benchmarks/sapo/results")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--recollect", action="store_true",
                   help="rebuild the agent records of RESULTS/EXP.json from the run folders, then exit")  # fmt: skip
    args = p.parse_args(argv)
    # A background runner ignores SIGINT; SIGTERM then unwinds through `run_one`'s `finally`, which
    # stops every process group it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    path = Path(args.results) / f"{args.exp}{args.tag}.json"
    if args.recollect:  # after a change to `collect`: same runs, more curves
        data = json.loads(path.read_text())
        for label, runs in data["runs"].items():
            for r in runs:
                r["agents"] = collect(run_dir(args, label, r["seed"]), [a["extra"] for a in r["agents"]])
        path.write_text(json.dumps(data))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = (
        json.loads(path.read_text())["runs"] if args.resume and path.exists() else {}
    )
    prepare_warm_starts(args.exp, args.seeds, args.cache)
    t0 = time.time()
    for seed in args.seeds:  # seed-major, so an interrupted experiment has every label for some seeds
        for label, agents in plan(args.exp, args.agents).items():
            if (args.only and label not in args.only) or any(r["seed"] == seed for r in runs.get(label, [])):
                continue
            print(f"{args.exp} {label} seed {seed} ...", flush=True)
            result = run_one(label, seed, agents, args)
            runs.setdefault(label, []).append(result)
            cum = [sum(a["curves"]["reward"]) for a in result["agents"]]
            print(
                f"  {result['wall_s']:.0f} s, cumulative reward per agent {[round(c, 1) for c in cum]}",
                flush=True,
            )
            meta = {"exp": args.exp, "rounds": args.rounds, "agents": args.agents, "wait_s": args.wait_s,
                    "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
                    "command": " ".join(sys.argv), "wall_s": time.time() - t0}  # fmt: skip
            path.write_text(json.dumps({**meta, "runs": runs}))


if __name__ == "__main__":
    main()
