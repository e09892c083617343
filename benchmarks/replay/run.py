"""The replay/selection experiments: the node's own `Node` (solo) on the T2 toy, one arm per
`replay` setting, several seeds, held-out pass@1 against completions generated.

    python benchmarks/replay/run.py --out runs/replay --seeds 0 1 2 [--arms uniform mopps ...] [--jobs 2]
    python benchmarks/replay/report.py --out runs/replay --img docs/img

Each run is `Node(toy_config(seed, {"replay": ...}), parts=toy_parts(...))` stepping
`--steps` times: selection, allocation, replay, advantages and the PPO update are the node's
(node/replay/, node/collect.py, node/trainer.py).  This file only builds the toy, evaluates
held-out pass@1 every `--eval-every` steps (`heldout_pass`: 8 samples per held-out question, its
own generator, so evaluation never moves the training stream) and records the completions the
engine generated for training (`ToyEngine.generated`, what a user pays for).  Output:
``OUT/<arm>/s<seed>.json`` with the curve, the step metrics averaged, and the setting.

The regime (`--regime`): "wide" is the toy's graded addition, levels 1-4 in equal shares, 1024
training questions (so a prompt comes back about every 128 steps at 8 prompts per step and the
per-prompt estimates can be used), started from the cached warm starts of the SAPO runs (mean
held-out pass@1 about 0.6: level 1 near-solved, level 4 about 0.3).  "hard": levels 3 and 4 only.
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OFFPOLICY = {"is_level": "token", "is_cap": 2.0}  # replayed rows: truncated IS on pi_prox / mu
ARMS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "mopps": {"replay": {"select": "mopps"}},
    "dots": {"replay": {"select": "dots"}},
    "gdro": {"replay": {"select": "gdro"}},
    "curriculum": {"replay": {"select": "curriculum"}},
    "knapsack": {"replay": {"allocate": "knapsack"}},
    "sqrt": {"replay": {"allocate": "sqrt"}},
    "dars": {"replay": {"allocate": "dars"}},
    "replay": {"replay": {"replay_fraction": 0.5}, "algorithm": OFFPOLICY},
    "replay_noIS": {"replay": {"replay_fraction": 0.5}},
    "mopps+replay": {"replay": {"select": "mopps", "replay_fraction": 0.5}, "algorithm": OFFPOLICY},
    "mopps+knapsack": {"replay": {"select": "mopps", "allocate": "knapsack"}},
    # controls for the replay diagnosis (second batch of runs): the fresh prompts of the replay
    # arm without the replayed groups; replay only of the previous version's groups; less replay
    "uniform_4": {"rollout": {"prompts_per_step": 4}},
    "replay_lag1": {"replay": {"replay_fraction": 0.5, "max_version_lag": 1}, "algorithm": OFFPOLICY},
    "replay_f25": {"replay": {"replay_fraction": 0.25}, "algorithm": OFFPOLICY},
}
REGIMES = {"wide": (1, 1, 1, 1), "hard": (0, 0, 1, 1)}
KEYS = ("replay/nonzero_share", "replay/signal_completions", "replay/brier", "replay/brier_global", "replay/brier_unseen",
        "replay/brier_unseen_global", "replay/replay_share", "zero_var_groups", "reward_local")  # fmt: skip


def one_run(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.toy.adapter import ToyAddition, heldout_pass, toy_config, toy_parts, warm_model
    from benchmarks.toy.seqmodel import GPTConfig
    from node.node import Node

    torch.set_num_threads(1)
    net = warm_model(seed, GPTConfig(), Path(args.cache))
    task = ToyAddition(seed, size=args.size, level_weights=REGIMES[args.regime])
    parts = toy_parts(net, task, sample_seed=10_000 + seed)
    engine = parts.engine
    run_dir = Path(args.scratch or args.out) / arm / f"s{seed}"
    cfg = toy_config(
        seed, ARMS[arm] | {"logging": {"run_dir": str(run_dir)}, "checkpoint": {"every": 100_000}}
    )
    node = Node(cfg, run_dir, parts)

    def evaluate(step: int) -> dict[str, Any]:
        return {"step": step, "generated": engine.generated,
                **heldout_pass(engine, parts.renderer, task, samples=8, seed=70_000 + seed)}  # fmt: skip

    t0 = time.perf_counter()
    curve, sums, counts = [evaluate(0)], dict.fromkeys(KEYS, 0.0), dict.fromkeys(KEYS, 0)
    for step in range(1, args.steps + 1):
        m = node.train_step()
        for k in KEYS:
            if k in m:
                sums[k] += float(m[k])
                counts[k] += 1
        if step % args.eval_every == 0:
            curve.append(evaluate(step))
    out = {
        "arm": arm, "seed": seed, "regime": args.regime, "steps": args.steps, "setting": ARMS[arm],
        "curve": curve, "means": {k: sums[k] / counts[k] for k in KEYS if counts[k]},
        "replay_status": node.replay.status(), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    path = Path(args.out) / arm / f"s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def warm(seed: int, cache: str) -> None:
    import torch

    from benchmarks.toy.adapter import warm_model
    from benchmarks.toy.seqmodel import GPTConfig

    torch.set_num_threads(1)
    warm_model(seed, GPTConfig(), Path(cache))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/replay")
    p.add_argument("--cache", default="runs/sapo/cache", help="warm starts (built on first use)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--regime", default="wide", choices=list(REGIMES))
    p.add_argument("--size", type=int, default=1024, help="training questions")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one core each)")
    p.add_argument("--scratch", default=None, help="node run folders (default: under --out)")
    args = p.parse_args()
    todo = [(a, s) for s in args.seeds for a in args.arms if not (Path(args.out) / a / f"s{s}.json").exists()]
    print(f"{len(todo)} runs to do", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(warm, s, args.cache) for s in args.seeds]:  # build missing warm starts once
            f.result()
        futures = [pool.submit(one_run, a, s, args) for a, s in todo]
        for f in futures:
            r = f.result()
            last = st.mean(c["all"] for c in r["curve"][-3:])
            print(f"{r['arm']:16s} s{r['seed']} final {last:.3f} generated {r['curve'][-1]['generated']}"
                  f" ({r['seconds']:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
