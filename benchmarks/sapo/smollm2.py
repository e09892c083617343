"""SAPO with the real SmolLM2-135M-Instruct: a lab swarm of N nodes on this machine, each
configuration run with `swarmrl lab up` to completion, then summarized from the nodes' metrics.

    python benchmarks/sapo/smollm2.py --nodes 2 --steps 20 --splits 4/0 2/2 --out benchmarks/sapo/results/smollm2.json

Each split I/J trains every node on I local + J peer groups per step (I + J fixed); 4/0 is the
training-alone baseline with the same batch.  Reported per split: mean over nodes of the
cumulative local reward (sum over steps of the mean reward of the groups the node sampled
itself, the paper's measure), the first/last-quarter local reward, and peer groups used.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def summarize(lab_dir: Path, nodes: int) -> dict:
    per_node = []
    for k in range(1, nodes + 1):
        rows = read_metrics(lab_dir / f"node{k}")
        local = [r["reward_local"] for r in rows]
        q = max(1, len(local) // 4)
        per_node.append({
            "steps": len(rows), "cumulative_local_reward": sum(local), "local_reward": local,
            "first_quarter": statistics.fmean(local[:q]) if local else None,
            "last_quarter": statistics.fmean(local[-q:]) if local else None,
            "external_used": sum(r.get("swarm/external_groups", 0) for r in rows),
            "step_s": statistics.fmean(r["step_s"] for r in rows) if rows else None,
        })  # fmt: skip
    return {"nodes": per_node, "mean_cumulative": statistics.fmean(n["cumulative_local_reward"] for n in per_node)}


def plot(result: dict, out: Path) -> None:
    """Mean local reward per step and its running sum, one line per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, r in result["splits"].items():
        curves = [n["local_reward"] for n in r["nodes"]]
        mean = [statistics.fmean(step) for step in zip(*curves)]
        running = [sum(mean[: i + 1]) for i in range(len(mean))]
        ax1.plot(range(1, len(mean) + 1), mean, label=f"I/J = {split}")
        ax2.plot(range(1, len(running) + 1), running, label=f"I/J = {split}")
    ax1.set(xlabel="step", ylabel="local reward (mean over nodes)")
    ax2.set(xlabel="step", ylabel="cumulative local reward")
    ax1.legend()
    fig.suptitle(f"SmolLM2-135M-Instruct, {result['nodes']} nodes, lab swarm on one machine")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


MIX = "benchmarks/sapo/smollm2_mix.yaml"
# node k's weights on (basic_arithmetic, letter_counting): each node mostly trains on one task
MIXES = {1: (0.8, 0.2), 2: (0.2, 0.8), 3: (0.5, 0.5)}
REUSE = ["swarm.take=information", "swarm.peer_logprobs=reuse", "algorithm.is_level=token", "algorithm.is_cap=2",
         "algorithm.foreign_gate=weight", "algorithm.foreign_gate_stat=ratio"]  # fmt: skip
SHARING_ARMS = {"4/0": ["swarm.external_groups=0"],
                "4/4 info reuse": ["swarm.external_groups=4", "swarm.per_peer_cap=4", *REUSE]}  # fmt: skip


def sharing(args: argparse.Namespace) -> None:
    """Issue 13's SmolLM2 check: a lab whose nodes differ in task mix, solo (4/0) against our
    admission (4/4 info reuse, docs/sapo.md), each node's held-out accuracy (greedy, both tasks,
    the same held-out questions for every node) before and after, and its own reward."""
    from node.checkpoint import latest, load
    from node.config import load_config
    from node.evaluate import accuracy
    from node.policy import load_policy

    common = [f"trainer.steps={args.steps}", "logging.tensorboard=false", "checkpoint.every=1000"]
    per_node = [a for k in range(1, args.nodes + 1) for w, i in zip(MIXES[k], (0, 1))
                for a in ("--node", str(k), f"tasks.sources.{i}.weight={w}")]  # fmt: skip
    cfg = load_config([MIX], [])
    result = {"machine": f"{platform.machine()} {__import__('os').cpu_count()} cores, {platform.platform()}",
              "nodes": args.nodes, "steps": args.steps, "mixes": {k: MIXES[k] for k in range(1, args.nodes + 1)},
              "command": " ".join(sys.argv), "arms": {}}  # fmt: skip
    policy = load_policy(cfg.model, for_training=False)
    result["base"] = accuracy(cfg, policy, cfg.tasks.eval_size)
    print("base", result["base"], flush=True)
    for arm, overrides in SHARING_ARMS.items():
        lab_dir = Path(args.work) / arm.replace("/", "-").replace(" ", "_")
        shutil.rmtree(lab_dir, ignore_errors=True)
        t0 = time.time()
        cmd = [sys.executable, "-m", "node.cli", "lab", "up", "--nodes", str(args.nodes), "--dir", str(lab_dir),
               "-c", MIX, *per_node, *common, *overrides]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        summary = summarize(lab_dir, args.nodes)
        for k, node in enumerate(summary["nodes"], start=1):
            ckpt = latest(lab_dir / f"node{k}" / "checkpoints")
            load(ckpt, policy.model, None, cfg.model.name)
            node["heldout"] = accuracy(cfg, policy, cfg.tasks.eval_size)
        result["arms"][arm] = {**summary, "wall_s": time.time() - t0}
        print(arm, json.dumps({k: v for k, v in result["arms"][arm].items() if k != "nodes"}),
              [n["heldout"] for n in summary["nodes"]], flush=True)  # fmt: skip
        Path(args.out).write_text(json.dumps(result, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--splits", nargs="+", default=["4/0", "2/2"], help="I/J pairs")
    p.add_argument("--work", default="runs/sapo-smollm2")
    p.add_argument("--out", default="benchmarks/sapo/results/smollm2.json")
    p.add_argument("--plot", default="docs/img/sapo_smollm2.png", help="PNG of the curves")
    p.add_argument("--plot-only", action="store_true", help="only redraw --plot from --out")
    p.add_argument("--sharing", action="store_true", help="issue 13's check: task mix per node, 4/0 vs 4/4 info reuse")
    args = p.parse_args()
    if args.sharing:
        sharing(args)
        return
    if args.plot_only:
        plot(json.loads(Path(args.out).read_text()), Path(args.plot))
        return
    result = {"machine": f"{platform.machine()} {__import__('os').cpu_count()} cores, {platform.platform()}",
              "nodes": args.nodes, "steps": args.steps, "command": " ".join(sys.argv), "splits": {}}  # fmt: skip
    for split in args.splits:
        i, j = (int(x) for x in split.split("/"))
        lab_dir = Path(args.work) / split.replace("/", "-")
        shutil.rmtree(lab_dir, ignore_errors=True)
        t0 = time.time()
        cmd = [sys.executable, "-m", "node.cli", "lab", "up", "--nodes", str(args.nodes), "--dir", str(lab_dir),
               "-c", "configs/lab_node.yaml", f"rollout.prompts_per_step={i}", f"swarm.external_groups={j}",
               f"swarm.per_peer_cap={max(1, j)}", f"trainer.steps={args.steps}", "logging.tensorboard=false",
               "checkpoint.every=1000"]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        result["splits"][split] = {**summarize(lab_dir, args.nodes), "wall_s": time.time() - t0}
        print(split, json.dumps({k: v for k, v in result["splits"][split].items() if k != "nodes"}), flush=True)
    base = result["splits"].get(args.splits[0], {}).get("mean_cumulative")
    for r in result["splits"].values():
        r["gain_vs_first"] = (r["mean_cumulative"] / base - 1) if base else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(result, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
