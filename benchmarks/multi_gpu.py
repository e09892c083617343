"""Issue 16 on a 2-GPU host: one node on 1 vs 2 GPUs, same global batch, DDP and FSDP2.

    python benchmarks/multi_gpu.py --out runs/multi_gpu.json            # 0.5B and 1.5B shapes, 2 H200s
    python benchmarks/multi_gpu.py --shapes qwen1.5b --cases 1,2-ddp     # one shape, two cases
    python benchmarks/multi_gpu.py --shapes qwen1.5b --decode-loop whole_step   # our decode loop
    python benchmarks/multi_gpu.py --device cpu --quick                  # tiny shape, 2 gloo ranks: tests the script

Each case is a fresh process group launched by torchrun (`--nproc-per-node` 1 or 2; the 1-GPU
case runs in one plain process, the node's single-process path): random weights of the shape
(benchmarks/gpu.py `build`, bf16 on CUDA), the transformers engine (compiled decode on CUDA) and
our `Trainer` with the default algorithm, wired exactly as `Node` wires them on several ranks
(`node.distributed.attach`; ranks > 0 run `serve`).  A step = rank 0 generates the step's
`--prompts` x `--group` completions through the sharded engine, computes group-relative
advantages, runs `Trainer.update` (sharded, micro-batch `--micro`) and syncs the engines.  One
warm-up step (compiles), then `--steps` timed ones.

Reported per case: step/s, generated tokens/s, trained tokens/s, the generate and update seconds
of a step, and each GPU's peak memory (`max_memory_allocated`; on CPU each rank's peak resident
memory, `ru_maxrss`).  The issue's goals: 2 GPUs >= 1.8x
the steps/s of 1 at 1.5B with the same global batch, and lower per-GPU memory with FSDP2.

Results on 2 H200s: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CASES = {"1": (1, "ddp"), "2-ddp": (2, "ddp"), "2-fsdp": (2, "fsdp")}  # name -> (ranks, trainer.parallel)


def worker(args) -> None:
    """One rank of one case (under torchrun when there are several)."""
    import torch

    from benchmarks.gpu import EOS, Meter, build, our_trainer, prompts
    from node import distributed
    from node.config import TrainerConfig
    from node.records import Prompt, Request, SamplingParams
    from node.rollout.hf import HFEngine

    if distributed.launched():
        distributed.init(args.device)
    cuda = args.device == "cuda"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    model, tok = build(args.shape, device, torch.bfloat16 if cuda else torch.float32)
    if args.gc:
        from node.policy import enable_checkpointing

        enable_checkpointing(model, lora=False)
    tcfg = TrainerConfig(micro_batch_size=args.micro, lr=1e-6, parallel=args.parallel)
    trainer = our_trainer(model, device, args.new, prox=True, cfg=tcfg)
    compile = args.compile if cuda else "off"
    engine = HFEngine(model, tok, {EOS}, args.prompts * args.group, device, compile, args.decode_loop)
    if distributed.world() > 1:
        engine = distributed.attach(engine, trainer, SimpleNamespace(trainer=tcfg, seed=0))
    rows = prompts(args.prompts, args.prompt_len, model.config.vocab_size, seed=3)
    requests = [Request(Prompt(f"p{i}", "bench", "", ""), r) for i, r in enumerate(rows)]
    sampling = SamplingParams(args.new, temperature=1.0)
    copy_at: list[int] = []  # FSDP2: the address of the engine's whole copy at each generate call
    if getattr(engine, "own_copy", False):
        inner, generate = engine.inner, engine.inner.generate

        def noting_the_copy(*a):
            copy_at.append(next(inner.model.parameters()).data_ptr())
            return generate(*a)

        inner.generate = noting_the_copy
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    steps: list[dict] = []
    if distributed.is_main():
        for _ in range(args.steps + 1):
            meter = Meter(device)
            with meter():
                t0 = time.perf_counter()
                groups = engine.generate(requests, args.group, sampling)
                gen_s = time.perf_counter() - t0
                comps = [c for g in groups for c in g.completions]
                rewards = torch.tensor([float(len(c.completion_ids) % 7) for c in comps]).view(-1, args.group)
                adv = (
                    (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)
                ).view(-1)
                t1 = time.perf_counter()
                trainer.update(comps, adv)
                train_s = time.perf_counter() - t1
                engine.sync_weights(trainer.version)
            gen_tokens = sum(len(c.completion_ids) for c in comps)
            train_tokens = sum(len(c.prompt_ids) + len(c.completion_ids) for c in comps)
            steps.append(dict(step_s=meter.seconds, gen_s=gen_s, train_s=train_s, gen_tokens=gen_tokens,
                              train_tokens=train_tokens))  # fmt: skip
            print(f"[rank 0] step {len(steps)}: {meter.seconds:.2f} s (generate {gen_s:.2f}, update {train_s:.2f})",
                  flush=True)  # fmt: skip
        distributed.release()
    elif distributed.world() > 1:
        distributed.serve(SimpleNamespace(trainer=trainer, engine=engine))
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:  # the process's peak resident memory (Linux: kB), model and optimizer included
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    # calls whose copy moved (its compiled decode's CUDA graphs then record again)
    moved = sum(a != b for a, b in zip(copy_at, copy_at[1:]))
    Path(f"{args.result}.{distributed.rank()}").write_text(
        json.dumps(dict(steps=steps, peak_gb=peak, copy_calls=len(copy_at), copy_moved=moved))
    )
    if distributed.world() > 1:
        torch.distributed.destroy_process_group()


def run_case(args, shape: str, case: str, tmp: str) -> dict:
    nproc, parallel = CASES[case]
    result = f"{tmp}/{shape}-{case}"
    own = ["--worker", "--shape", shape, "--parallel", parallel, "--result", result, "--device", args.device]
    for k in ("prompts", "group", "new", "prompt_len", "micro", "steps", "compile", "decode_loop"):
        own += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    own += ["--gc"] * args.gc
    script = str(Path(__file__).resolve())
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launch if nproc > 1 else [sys.executable]) + [script, *own]
    print(f"[{shape} {case}] {' '.join(cmd[-len(own) - 1 :])}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode != 0:
        return dict(shape=shape, case=case, error=f"exit {done.returncode}")
    ranks = [json.loads(Path(f"{result}.{r}").read_text()) for r in range(nproc)]
    timed = ranks[0]["steps"][1:]  # the first step compiles
    total = lambda key: sum(s[key] for s in timed)  # noqa: E731
    out = dict(shape=shape, case=case, ranks=nproc, parallel=parallel if nproc > 1 else None,
               steps_per_s=len(timed) / total("step_s"), gen_tok_s=total("gen_tokens") / total("gen_s"),
               train_tok_s=total("train_tokens") / total("train_s"), gen_s=total("gen_s") / len(timed),
               train_s=total("train_s") / len(timed), peak_gb=[r["peak_gb"] for r in ranks],
               copy_moved=[f"{r.get('copy_moved', 0)}/{max(r.get('copy_calls', 0) - 1, 0)}" for r in ranks])  # fmt: skip
    print(f"[{shape} {case}] {out['steps_per_s']:.3f} step/s  gen {out['gen_tok_s']:.0f} tok/s  train "
          f"{out['train_tok_s']:.0f} tok/s  peak GB per rank {out['peak_gb']}  copy moved {out['copy_moved']}",
          flush=True)  # fmt: skip
    return out


def plot(results: list[dict], path: str) -> None:
    """Stacked generate / update seconds of a step per case, one panel per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in results if "error" not in r))
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rows = [r for r in results if r["shape"] == shape and "error" not in r]
        names = [r["case"].replace("2-", "2 GPUs, ").replace("1", "1 GPU", 1) for r in rows]
        gen, upd = [r["gen_s"] for r in rows], [r["train_s"] for r in rows]
        ax.bar(names, gen, label="generate")
        ax.bar(names, upd, bottom=gen, label="update")
        for i, r in enumerate(rows):
            ax.text(i, gen[i] + upd[i], f"{r.get('speedup_vs_1') or 0:.2f}x", ha="center", va="bottom")
        ax.set_ylim(0, 1.15 * max(g + u for g, u in zip(gen, upd)))
        ax.set_title(shape)
        ax.set_ylabel("seconds a step")
    axes[0][0].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="qwen0.5b,qwen1.5b", help="shapes of benchmarks/gpu.py SHAPES")
    p.add_argument("--cases", default="1,2-ddp,2-fsdp", help=f"of {', '.join(CASES)}")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--prompts", type=int, default=32, help="prompts per step (the global batch)")
    p.add_argument("--group", type=int, default=8, help="completions per prompt")
    p.add_argument("--new", type=int, default=256, help="max new tokens")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt length (drawn in [L/2, L])")
    p.add_argument("--micro", type=int, default=32, help="trainer.micro_batch_size (per rank)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument(
        "--compile", default="on", choices=["on", "off"], help="the engine's compiled decode (CUDA)"
    )
    p.add_argument(
        "--decode-loop",
        default="transformers",
        choices=["transformers", "whole_step"],
        help="rollout.decode_loop of the compiled engine (node/rollout/decode.py)",
    )
    p.add_argument("--gc", action="store_true", help="gradient checkpointing (model.gradient_checkpointing)")
    p.add_argument(
        "--quick", action="store_true", help="tiny shape and batch (with --device cpu: test the script)"
    )
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--plot", help="draw the step's generate/update split per case to this PNG")
    p.add_argument(
        "--from-json", help="with --plot: draw these earlier results (an --out file) instead of running"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--parallel", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.from_json:
        return plot(json.loads(Path(args.from_json).read_text())["results"], args.plot or "multi_gpu.png")
    if args.quick:
        args.shapes, args.prompts, args.group, args.new, args.prompt_len, args.micro, args.steps = (
            "tiny", 4, 2, 8, 16, 3, 1,
        )  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            for case in args.cases.split(","):
                results.append(run_case(args, shape, case, tmp))
    for r in results:
        if "error" not in r:
            base = next(
                (b for b in results if b["shape"] == r["shape"] and b["case"] == "1" and "error" not in b),
                None,
            )
            r["speedup_vs_1"] = r["steps_per_s"] / base["steps_per_s"] if base else None
    print(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(args=vars(args), results=results), indent=1))


if __name__ == "__main__":
    main()
