"""Run the catalog's F1 toy experiments (shared/reference/algorithms.md, F0/F1) for the suite.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/toy/experiments.py --exp mc_grpo --seeds 3 --out runs/toy
    python benchmarks/toy/experiments.py --exp all --seeds 3 --out runs/toy
    python benchmarks/toy/report.py --out runs/toy          # plots -> docs/img, tables -> stdout

Every experiment writes ``OUT/NAME.json``: the arguments, wall time, and for each variant a
list of per-seed results (scalars and curves).  The file is rewritten after every run, so an
interrupted experiment keeps what it finished.  Steps default to small values that fit the
shared 2-core machine; pass ``--steps`` to scale them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.toy import exp_t1, exp_t2  # noqa: E402

Variant = tuple[str, Callable[[int, int, Path], dict]]


def plan(name: str) -> tuple[int, list[Variant]]:
    """Default steps and the variants of one experiment; each variant is ``fn(seed, steps, cache)``."""
    if name == "mc_grpo":
        vs: list[Variant] = []
        for noisy in (False, True):
            for g in (2, 4, 8):
                for est in ("grpo", "mc_grpo"):
                    label = f"{'noisy' if noisy else 'binary'}/G{g}/{est}"
                    vs.append(
                        (
                            label,
                            lambda s, n, c, g=g, est=est, noisy=noisy: exp_t1.run_mc_grpo(
                                s, n, g, est, noisy
                            ),
                        )
                    )
        return 300, vs
    if name == "dynamic_sampling":
        return 300, [
            (f"dynamic={d}", lambda s, n, c, d=d: exp_t1.run_dynamic_sampling(s, n, d)) for d in (False, True)
        ]
    if name == "dynamic_sampling_t2":
        return 150, [
            (f"dynamic={d}", lambda s, n, c, d=d: exp_t2.run_dynamic_sampling(s, n, c, d))
            for d in (False, True)
        ]
    if name == "clip_higher":
        return 200, [
            (
                f"clip_high={h}" + (f"/mb{mb}" if mb != 4 else ""),
                lambda s, n, c, h=h, mb=mb: exp_t2.run_clip_higher(s, n, c, h, mb),
            )
            for mb in (4, 16)
            for h in (0.2, 0.28)
        ]
    if name == "gdpo":
        return 150, [(a, lambda s, n, c, a=a: exp_t2.run_gdpo(s, n, c, a)) for a in ("grpo", "gdpo")]
    if name == "w_reinforce":
        return 200, [
            (a, lambda s, n, c, a=a: exp_t2.run_w_reinforce(s, n, c, a, n_eval=64))
            for a in ("base", "grpo", "w_reinforce")
        ]
    if name == "entropy_mask":
        return 200, [(v, lambda s, n, c, v=v: exp_t2.run_entropy_mask(s, n, c, v)) for v in ("full", "top20")]
    if name == "lag":
        vs = [("prox_no_is/lag0", lambda s, n, c: exp_t2.run_lag(s, n, c, "prox_no_is", 0))]
        for lag in (1, 2, 8, 32):  # steps of 4 optimizer steps (the earlier harness: 2..128 optimizer steps)
            for m in exp_t2.LAG_METHODS:
                vs.append((f"{m}/lag{lag}", lambda s, n, c, m=m, lag=lag: exp_t2.run_lag(s, n, c, m, lag)))
        return 150, vs
    if name == "lag_diag":
        return 150, [
            (f"{m}/lag{lag}", lambda s, n, c, m=m, lag=lag: exp_t2.run_lag(s, n, c, m, lag))
            for lag in (8, 32)
            for m in exp_t2.LAG_DIAG_METHODS
        ]
    raise SystemExit(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")


EXPERIMENTS = (
    "mc_grpo",
    "dynamic_sampling",
    "dynamic_sampling_t2",
    "clip_higher",
    "gdpo",
    "w_reinforce",
    "entropy_mask",
    "lag",
    "lag_diag",
)


def compact(x):
    """Floats to 4 significant digits, so result files stay small enough to keep in the repo."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: compact(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [compact(v) for v in x]
    return x


def run(name: str, seeds: int, steps: int | None, out: Path, only: str | None, first_seed: int = 0) -> None:
    """Run seeds ``first_seed .. seeds-1`` of each variant; with ``first_seed > 0`` the new seeds
    are appended to the ones already in ``OUT/NAME.json`` (to add seeds to a finished run)."""
    default_steps, variants = plan(name)
    n_steps = steps or default_steps
    path = out / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.update({"exp": name, "steps": n_steps, "seeds": seeds, "machine": os.uname().nodename})
    result.setdefault("runs", {})
    result.setdefault("wall_s", {})
    t_exp = time.time()
    for label, fn in variants:
        if only and only not in label:
            continue
        t0 = time.time()
        done = result["runs"].get(label, [])[:first_seed] if first_seed else []
        result["runs"][label] = done + [fn(seed, n_steps, out / "cache") for seed in range(first_seed, seeds)]
        result["wall_s"][label] = round(
            time.time() - t0 + (result["wall_s"].get(label, 0) if first_seed else 0), 1
        )
        path.write_text(json.dumps(compact(result)))
        print(f"{name} {label}: {result['wall_s'][label]} s", flush=True)
    result["wall_total_s"] = round(time.time() - t_exp, 1)
    path.write_text(json.dumps(compact(result)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", required=True, help=f"one of {', '.join(EXPERIMENTS)}, or all")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="RL steps (default: per experiment)")
    ap.add_argument("--out", type=Path, default=Path("runs/toy"))
    ap.add_argument("--only", default=None, help="run only variants whose label contains this")
    ap.add_argument(
        "--first-seed", type=int, default=0, help="add seeds first-seed..seeds-1 to existing results"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in EXPERIMENTS if args.exp == "all" else (args.exp,):
        run(name, args.seeds, args.steps, args.out, args.only, args.first_seed)


if __name__ == "__main__":
    main()
