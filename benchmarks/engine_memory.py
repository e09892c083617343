"""Peak memory of the engine's log-probs and the trainer's log-prob pass, before and after issue 14.

    python benchmarks/engine_memory.py                    # SmolLM2-135M (offline), CPU
    python benchmarks/engine_memory.py --model tiny       # the tiny test model
    python benchmarks/engine_memory.py --only logprobs    # the trainer's log-prob pass alone

Each case runs in a fresh child process and reports its peak resident memory above what the
process held once the model was loaded (`ru_maxrss`: torch's CPU tensors are invisible to
tracemalloc), and its wall time:

- `engine/output_logits`: `generate(output_logits=True)` and log-probs from every step's logits,
  what `HFEngine` did before; `engine/recorder`: `HFEngine` as it is (`SampledLogprobs`).
- `logprobs/chunk=K`: `token_logprobs` forward + backward at `trainer.logprob_chunk=K` (0 = full
  float32 [B, T, V] logits).  The sum of the log-probs is printed as a checksum.

Timings on shared machines are noisy; results go into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(model: str):
    from node.config import load_config
    from node.policy import load_policy

    paths = [ROOT / "configs" / ("tiny.yaml" if model == "tiny" else "solo_cpu.yaml")]
    cfg = load_config(paths, ["model.threads=2"])
    return load_policy(cfg.model)


def engine_case(policy, kind: str, batch: int, new: int) -> dict:
    import torch

    from node.records import SamplingParams
    from node.rollout.hf import HFEngine

    tok = policy.tokenizer
    prompt = tok("Calculate 7 + 5. Reply with only the result inside answer tags.")["input_ids"]
    engine = HFEngine(policy.model, tok, set(), batch, policy.device)  # no stop: every row runs `new` steps
    sampling = SamplingParams(new, temperature=0.7)
    base = rss_mb()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if kind == "recorder":
        logps = [engine._generate_batch([prompt] * batch, sampling)[r][1] for r in range(1)]
    else:  # the engine before issue 14
        ids = torch.tensor([prompt] * batch)
        with torch.no_grad():
            gen = policy.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7, top_k=None,
                max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id, output_logits=True,
                return_dict_in_generate=True,
            )  # fmt: skip
        out = gen.sequences[:, ids.shape[1] :]
        steps = [
            torch.log_softmax(lg.float() / 0.7, -1).gather(-1, out[:, s : s + 1])
            for s, lg in enumerate(gen.logits)
        ]
        logps = torch.cat(steps, 1).tolist()
    return {"seconds": time.perf_counter() - t0, "peak_mb": rss_mb() - base, "tokens": batch * new,
            "logps_per_row": len(logps[0])}  # fmt: skip


def logprob_case(policy, chunk: int, batch: int, prompt: int, new: int) -> dict:
    import torch

    from node.batching import token_logprobs

    gen = torch.Generator().manual_seed(0)
    vocab = policy.model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt + new), generator=gen)
    attn = torch.ones_like(ids)
    policy.model.train()
    base = rss_mb()
    t0 = time.perf_counter()
    logp, ent = token_logprobs(policy.model, ids, attn, 0.7, True, first=prompt - 1, chunk=chunk)
    (logp.sum() + 0.0 * ent.sum()).backward()
    return {"seconds": time.perf_counter() - t0, "peak_mb": rss_mb() - base, "tokens": batch * new,
            "logp_sum": float(logp.sum())}  # fmt: skip


def child(args) -> None:
    import torch

    torch.manual_seed(0)
    policy = load(args.model)
    kind, _, value = args.case.partition("=")
    if kind == "engine":
        out = engine_case(policy, value, args.batch, args.new)
    else:
        out = logprob_case(policy, int(value), args.batch, args.prompt, args.train_new)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--batch", type=int, default=8, help="rows (engine: a batch; trainer: a micro-batch)")
    ap.add_argument("--new", type=int, default=96, help="engine: new tokens a row")
    ap.add_argument("--prompt", type=int, default=32, help="trainer: prompt tokens a row")
    ap.add_argument("--train-new", type=int, default=224, help="trainer: completion tokens a row")
    ap.add_argument("--chunks", default="0,128,512,2048")
    ap.add_argument("--only", choices=["engine", "logprobs"], help="run one kind of case")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        return child(args)
    cases = ["engine=output_logits", "engine=recorder"] + [f"logprobs={c}" for c in args.chunks.split(",")]
    cases = [c for c in cases if not args.only or c.startswith(args.only)]
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"model={args.model}, batch={args.batch}")  # fmt: skip
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case] + [a for a in sys.argv[1:]]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(case, res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
