"""LoRA vs full fine-tuning: peak memory and seconds per training step, side by side.

    python benchmarks/lora.py                                   # SmolLM2-135M on the CPU
    python benchmarks/lora.py --model qwen05b --device cuda     # a Qwen2.5-0.5B-shaped model, random init, bf16

Each side runs in its own child process (so that peak RSS is that side's alone) and drives the
node's own `Trainer.update` (proximal pass, PPO-clip loss, AdamW step) on one step's worth of
synthetic rows: `--prompts x --group` completions of `--completion` tokens after a `--prompt`-token
prompt, advantages +-1.  The model is loaded the way `node/policy.py` does it, and LoRA is the
same `node.lora.apply_lora` a node uses.  The first step is a warm-up; the median of the rest is
reported.  Peak memory: the process's max RSS on the CPU (see --exact-rss), `torch.cuda.max_memory_allocated` on
a GPU.  Results go into docs/benchmarks.md by hand, with the machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --exact-rss: glibc raises its mmap threshold as big blocks are freed and then keeps freed memory
# in the heap, so max RSS ratchets with allocation history instead of following live tensors.  A
# fixed threshold sends every large tensor to mmap, returned on free: RSS then tracks what is
# alive, but every large allocation page-faults, so step times under it are not comparable.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}
sys.path.insert(0, str(ROOT))


def build_model(name: str, device, lora_cfg, gradient_checkpointing: bool, layers: int = 24):
    import torch

    from node import lora
    from node.config import ModelConfig
    from node.policy import load_policy, pick_dtype

    if name == "smollm2":
        mcfg = ModelConfig(device=device.type, gradient_checkpointing=gradient_checkpointing, lora=lora_cfg)
        return load_policy(mcfg).model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(  # Qwen2.5-0.5B's shape; random weights, nothing downloaded
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
        max_position_embeddings=32768, rope_theta=1e6, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(pick_dtype("auto", device))  # initialised on the device, in its dtype
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if lora_cfg.enabled:
            model.enable_input_require_grads()
    if lora_cfg.enabled:
        model = lora.apply_lora(model, lora_cfg)
    return model.train()


def rows(n: int, prompt: int, completion: int, vocab: int):
    import torch

    from node.records import Completion, Prompt

    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        p = Prompt(f"bench:{i}", "bench", "q", "a")
        ids = torch.randint(10, vocab, (prompt + completion,), generator=gen).tolist()
        out.append(Completion(p, ids[:prompt], ids[prompt:], [-2.0] * completion, "", "length", 0))
    return out


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def side(args) -> dict:
    """One side, in this process: load, then `--steps` training steps."""
    import torch

    from node.algos.api import requirements
    from node.algos.config import AlgorithmConfig
    from node.config import LoraConfig, TrainerConfig
    from node.policy import pick_device
    from node.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    lora_cfg = LoraConfig(enabled=args.side == "lora", r=args.r, alpha=2.0 * args.r)
    model = build_model(args.model, device, lora_cfg, args.gradient_checkpointing, args.layers)
    cuda = device.type == "cuda"
    loaded_mb = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mb()
    load_peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    algo = AlgorithmConfig()
    tcfg = TrainerConfig(lr=1e-5, micro_batch_size=args.micro)
    trainer = Trainer(model, tcfg, algo, requirements(algo), 0, device, 1.0, args.completion)
    vocab = (
        model.config.vocab_size
        if not hasattr(model, "peft_config")
        else model.base_model.model.config.vocab_size
    )
    batch = rows(args.prompts * args.group, args.prompt, args.completion, vocab)
    advantages = torch.tensor([1.0 if i % 2 else -1.0 for i in range(len(batch))])
    times = []
    for _ in range(args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.update(batch, advantages)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        "side": args.side,
        "trainable_m": trainable / 1e6,
        "total_m": total / 1e6,
        "loaded_mb": loaded_mb,
        "load_peak_mb": load_peak_mb,
        "peak_mb": peak_mb,
        "s_per_step": statistics.median(times[1:] or times),
        "steps": times,
    }


def machine(device: str) -> str:
    try:
        import torch

        if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
            return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    except Exception:
        pass
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
    )
    return f"{cpu or platform.processor()}, {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "qwen05b"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--steps", type=int, default=4, help="training steps per side; the first is a warm-up")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--completion", type=int, default=32, help="completion tokens")
    ap.add_argument("--micro", type=int, default=8, help="trainer.micro_batch_size")
    ap.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = 2r), all linear layers")
    ap.add_argument(
        "--layers", type=int, default=24, help="qwen05b: transformer blocks (24 = the real shape)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument(
        "--exact-rss",
        action="store_true",
        help="CPU: fixed mmap threshold (see MALLOC); for memory, not time",
    )
    ap.add_argument("--side", choices=["full", "lora"], help=argparse.SUPPRESS)  # a child's side
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.side:
        print("RESULT " + json.dumps(side(args)), flush=True)
        return
    results = []
    for name in ("full", "lora"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--side", name]
        env = os.environ | (MALLOC if args.exact_rss else {})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{name} side failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT ") :]))
    mem = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB"
    print(
        f"{args.model} on {machine(args.device)}; {args.prompts}x{args.group} rows of {args.prompt}+{args.completion} "
        f"tokens, micro-batch {args.micro}, {args.steps} steps (first = warm-up), LoRA r={args.r} all-linear"
        f"{', gradient checkpointing' if args.gradient_checkpointing else ''}{', --exact-rss' if args.exact_rss else ''}"
    )
    print(f"| side | trainable params | after load MiB | peak while loading MiB | {mem} training | s/step |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['side']} | {r['trainable_m']:.2f}M of {r['total_m']:.0f}M | {r['loaded_mb']:.0f} | {r['load_peak_mb']:.0f} | "
            f"{r['peak_mb']:.0f} | {r['s_per_step']:.2f} |"
        )
    full, lo = results
    print(
        f"LoRA/full: peak memory x{lo['peak_mb'] / full['peak_mb']:.2f}, step time x{lo['s_per_step'] / full['s_per_step']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
