"""Generation and training throughput (tokens/s) and peak memory of the node's own code paths.

    python benchmarks/throughput.py                      # tiny model and SmolLM2, CPU
    python benchmarks/throughput.py --models qwen05b     # a 0.5B-class model built from config (GPU, bf16)

Timings on shared machines are noisy: every model is measured in the same run, and the
machine is printed with the figures.  Results go into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from node.batching import first_completion_position, pack, token_logprobs  # noqa: E402
from node.config import ModelConfig, load_config  # noqa: E402
from node.policy import Policy, load_policy, pick_device, pick_dtype  # noqa: E402
from node.records import Prompt, SamplingParams  # noqa: E402
from node.rollout import Renderer, build_engine  # noqa: E402


def qwen05b_policy(device: str, tokenizer_dir: str | None) -> Policy:
    """A Qwen2-0.5B-shaped model with random weights (no download), SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from node.policy import smollm2_folder

    tok = AutoTokenizer.from_pretrained(tokenizer_dir or smollm2_folder("~/.cache/swarmrl"))
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    dev = pick_device(device)
    model = Qwen2ForCausalLM(cfg).to(dev, pick_dtype("auto", dev))
    return Policy(model, tok, dev, "qwen2-0.5b-shaped")


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(policy: Policy, cfg, n_prompts: int, group: int, new_tokens: int, micro: int, repeats: int) -> dict:
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    engine = build_engine(cfg.rollout.model_copy(update={"batch_size": n_prompts * group}), policy, renderer)
    # the default task's prompt shape, without needing reasoning-gym on the machine
    prompts = renderer.requests(
        [Prompt(f"bench:{i}", "bench", f"Calculate {i % 10} + {(3 * i) % 10}.", "0") for i in range(n_prompts)]
    )
    sampling = SamplingParams(new_tokens, temperature=1.0)
    model = policy.model
    # force every completion to the full length so the figures are comparable
    saved = engine.stop_ids
    engine.stop_ids = set()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    gen_times, train_times = [], []
    for r in range(repeats + 1):
        sync(policy.device)
        t0 = time.perf_counter()
        groups = engine.generate(prompts, group, sampling)
        sync(policy.device)
        t1 = time.perf_counter()
        comps = [c for g in groups for c in g.completions]
        model.train()
        for s in range(0, len(comps), micro):
            rows = comps[s : s + micro]
            b = pack(rows, torch.ones(len(rows)), policy.tokenizer.pad_token_id)
            logp, _ = token_logprobs(model, b.input_ids.to(policy.device), b.attention_mask.to(policy.device),
                                     1.0, True, first_completion_position(rows))
            loss = -(logp * b.mask.to(policy.device)).sum() / b.mask.sum()
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(policy.device)
        t2 = time.perf_counter()
        if r > 0:  # the first round warms up allocators and kernels
            gen_times.append(t1 - t0)
            train_times.append(t2 - t1)
    engine.stop_ids = saved
    gen_tokens = sum(len(c.completion_ids) for c in comps)
    all_tokens = sum(len(c.prompt_ids) + len(c.completion_ids) for c in comps)
    return {
        "sequences": len(comps),
        "gen_tokens_per_s": gen_tokens / min(gen_times),
        "train_tokens_per_s": all_tokens / min(train_times),
        "gen_s": min(gen_times),
        "train_s": min(train_times),
        "peak_mem_mb": peak_mb(policy.device),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2", help="comma list of: tiny, smollm2, qwen05b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="also write results here")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--tokenizer", help="tokenizer folder for qwen05b (default: the converted SmolLM2)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config([Path(__file__).resolve().parents[1] / "configs" / "solo_cpu.yaml"])
    machine = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name(0)}"
    print(f"machine: {machine}; torch threads {torch.get_num_threads()}")
    results = {}
    for name in args.models.split(","):
        if name == "qwen05b":
            policy = qwen05b_policy(args.device, args.tokenizer)
        else:
            mcfg = ModelConfig(name="tiny" if name == "tiny" else "smollm2-135m-instruct", device=args.device)
            policy = load_policy(mcfg)
        if policy.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = measure(policy, base, args.prompts, args.group, args.new_tokens, args.micro, args.repeats)
        r["dtype"] = str(next(policy.model.parameters()).dtype).replace("torch.", "")
        r["device"] = policy.device.type
        results[name] = r
        print(f"{name:8s} {r['device']} {r['dtype']:8s} seqs {r['sequences']:3d}  gen {r['gen_tokens_per_s']:8.1f} tok/s "
              f"({r['gen_s']:.2f} s)  train {r['train_tokens_per_s']:8.1f} tok/s ({r['train_s']:.2f} s)  "
              f"peak {r['peak_mem_mb']:.0f} MB", flush=True)
        del policy
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
