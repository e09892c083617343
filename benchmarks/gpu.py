"""Issue 14 on a GPU: our engine and train step against `generate` and TRL, side by side in one run.

    python benchmarks/gpu.py --out runs/gpu.json                      # 0.5B Qwen2.5 shape, H200
    python benchmarks/gpu.py --shape qwen1.5b --sections gen,train    # 1.5B shape, no TRL end to end
    python benchmarks/gpu.py --device cpu --quick                     # a tiny shape, to test the script

Everything runs on one model built from a config (random weights: speed and memory do not depend
on them), in bfloat16 on CUDA, with one batch of prompts (lengths drawn in [P/2, P]) and
completions of `--new` tokens.  Prompts are random token ids spelled as words of a word-level
tokenizer whose vocabulary is the model's, so TRL tokenizes exactly the ids we feed our side.

Sections (`--sections`, comma separated):
- `gen`: `--prompts` rows x `--new` tokens, sampled at temperature 1: plain `generate`, `generate`
  with a static cache and compiled decode (transformers' `CompileConfig`, CUDA graphs), and our
  `HFEngine` eager, compiled, and compiled with the whole-step loop (`rollout.decode_loop`).  Each is timed on its second call; the first, of the same
  length, compiles (its time is the compile figure) and leaves the allocator holding blocks for
  the growing KV cache (a cold eager `generate` spent most of its time in cudaMalloc: 874 against
  3,125 tok/s warm); tok/s counts tokens up to a stop; peak memory is `max_memory_allocated` over
  the timed call, absolute and above the weights.
- `train`: one optimizer step over the same rows (prompt + `--new` completion tokens) at each
  `--micro` micro-batch, no gradient checkpointing: our `Trainer.update` as the node runs it (the
  default algorithm records proximal log-probs first: one extra no-grad forward), ours without
  that pass (what it computes when there is one optimizer step: old = current), ours at another
  `trainer.logprob_chunk` (`--sides`), and TRL's
  `GRPOTrainer.training_step` fed the same tensors (its generation bypassed), then its clip and
  optimizer step.  MFU = 6 x parameters x tokens / time / 989 TFLOP/s (H100/H200 dense bf16).
- `e2e`: a whole GRPO step of `--prompts` completions (groups of 8): ours (compiled engine +
  update, micro-batch 32) and TRL's `GRPOTrainer.train` with its defaults (gradient checkpointing
  on, transformers generation) but the same batch: per-step times from a callback.
- `configs`: peak memory of engine + update at the settings of `configs/single_gpu.yaml` and
  `configs/single_gpu_24gb.yaml`, for the SmolLM2 shape they name and the 0.5B/1.5B shapes their
  comments allow, each in a child process capped at the card's memory
  (`torch.cuda.set_per_process_memory_fraction`), so a run that would not fit fails as OOM.

Results: one JSON (`--out`) and a readable summary on stdout.  docs/benchmarks.md, "GPU: engine
and train step vs TRL (H200)", holds the recorded run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16 spec (a bf16 8k matmul measured 790 on the H200 here)
SHAPES = {  # Qwen2.5 and SmolLM2 shapes (their config.json), plus a tiny one for --quick
    "qwen0.5b": dict(kind="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "qwen1.5b": dict(kind="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                     num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    "smollm2": dict(kind="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152),
    "tiny": dict(kind="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}  # fmt: skip
PAD, EOS = 0, 1


def build(shape: str, device, dtype):
    """(model, tokenizer): random weights of `shape`, a word-level tokenizer over the same ids."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    spec = dict(SHAPES[shape])
    kind = spec.pop("kind")
    common = dict(tie_word_embeddings=True, max_position_embeddings=4096, bos_token_id=None, eos_token_id=EOS,
                  pad_token_id=PAD)  # fmt: skip
    config = (Qwen2Config if kind == "qwen2" else LlamaConfig)(**spec, **common)
    torch.manual_seed(0)
    with torch.device(device):
        model = (Qwen2ForCausalLM if kind == "qwen2" else LlamaForCausalLM)(config)
    model.to(dtype)
    vocab = {"<pad>": PAD, "<eos>": EOS, "<unk>": 2} | {f"t{i}": i for i in range(3, spec["vocab_size"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    return model, tok


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(length // 2, length + 1, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (k,), generator=g).tolist() for k in lens]


class Meter:
    """Wall time and peak CUDA memory of a block (CPU: wall time only)."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.seconds = self.peak_gb = self.base_gb = 0.0

    @contextlib.contextmanager
    def __call__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_gb = torch.cuda.memory_allocated() / 1e9
        t0 = time.perf_counter()
        yield self
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_gb = torch.cuda.max_memory_allocated() / 1e9
        self.seconds = time.perf_counter() - t0


def _left_pad(rows: list[list[int]], device):
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, x in enumerate(rows):
        ids[r, width - len(x) :] = torch.tensor(x)
        mask[r, width - len(x) :] = 1
    return ids.to(device), mask.to(device)


def _until_stop(new) -> int:
    """Tokens generated up to and including each row's first stop (pad after a stop is not work)."""
    total = 0
    for row in new.tolist():
        total += next((k + 1 for k, t in enumerate(row) if t in (EOS, PAD)), len(row))
    return total


def section_gen(model, tok, args, device) -> list[dict]:
    import torch
    from transformers import CompileConfig

    from node.records import Prompt, Request, SamplingParams
    from node.rollout.hf import HFEngine

    rows = prompts(args.prompts, args.prompt_len, model.config.vocab_size)
    ids, mask = _left_pad(rows, device)
    sample = dict(do_sample=True, temperature=1.0, top_k=None, top_p=None, pad_token_id=PAD, eos_token_id=EOS)

    def plain(static: bool, new: int) -> int:
        extra = dict(cache_implementation="static", compile_config=CompileConfig()) if static else {}
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, **sample, **extra)
        return _until_stop(out[:, ids.shape[1] :])

    requests = [Request(Prompt(f"p{i}", "bench", "", ""), r) for i, r in enumerate(rows)]

    def engine(kind: str, new: int) -> int:
        groups = engines[kind].generate(requests, 1, SamplingParams(new, temperature=1.0))
        return sum(len(c.completion_ids) for g in groups for c in g.completions)

    engines = {  # rollout.compile, rollout.decode_loop
        kind: HFEngine(model, tok, {EOS}, args.prompts, device, *settings)
        for kind, settings in [
            ("eager", ("off",)),
            ("compiled", ("on",)),
            ("whole_step", ("on", "whole_step")),
        ]
    }
    cases = [("generate", lambda n: plain(False, n), False), ("generate static+compiled", lambda n: plain(True, n), True),
             ("engine eager", lambda n: engine("eager", n), False), ("engine compiled", lambda n: engine("compiled", n), True),
             ("engine whole-step", lambda n: engine("whole_step", n), True)]  # fmt: skip
    model.eval()
    out = []
    for name, fn, compiled in cases:
        if args.gen_cases and name not in args.gen_cases.split(","):
            continue
        if compiled:  # each compiled side pays its own compile (transformers keeps one on the model)
            torch._dynamo.reset()
            model.__dict__.pop("_compiled_call", None)
        meter = Meter(device)
        with meter():  # a full first call: compile, and the allocator's blocks for the growing KV cache
            fn(args.new)
        first = meter.seconds
        with meter():
            tokens = fn(args.new)
        out.append(dict(case=name, tokens=tokens, seconds=meter.seconds, tok_s=tokens / meter.seconds,
                        peak_gb=meter.peak_gb, above_weights_gb=meter.peak_gb - meter.base_gb,
                        first_call_s=first if compiled else None))  # fmt: skip
        print(f"[gen] {name:26s} {tokens / meter.seconds:9.0f} tok/s  peak {meter.peak_gb:6.2f} GB "
              f"(+{meter.peak_gb - meter.base_gb:.2f})  first call {first:.1f} s", flush=True)  # fmt: skip
    return out


def batch(args, vocab: int, group: int = 8):
    """The train batch: completions of exactly `--new` tokens and group-normalized advantages."""
    import torch

    from node.records import Completion, Prompt

    g = torch.Generator().manual_seed(1)
    rows = prompts(args.prompts, args.prompt_len, vocab, seed=2)
    comps = []
    for i, p in enumerate(rows):
        ids = torch.randint(3, vocab, (args.new,), generator=g).tolist()
        comps.append(
            Completion(Prompt(f"p{i // group}", "bench", "", ""), p, ids, [-8.0] * args.new, "", "length", 0)
        )
    rewards = torch.rand(len(comps), generator=g).view(-1, group)
    adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)).view(-1)
    return comps, adv


def our_trainer(model, device, new: int, prox: bool, micro: int = 8, cfg=None):
    """`Trainer` with the default algorithm; `cfg`: a `TrainerConfig` (default: lr 1e-6 at `micro`)."""
    import dataclasses

    from node.algos.api import requirements
    from node.algos.config import AlgorithmConfig
    from node.config import TrainerConfig
    from node.trainer import Trainer

    algo = AlgorithmConfig()
    req = requirements(algo)
    if not prox:  # one optimizer step: old = current weights, the pass recomputes what logp.detach() holds
        req = dataclasses.replace(req, old_logprobs=False)
    cfg = cfg or TrainerConfig(micro_batch_size=micro, lr=1e-6)
    return Trainer(model, cfg, algo, req, PAD, device, 1.0, new)


def trl_trainer(model, tok, args, micro: int, out_dir: str, **overrides):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = prompts(args.prompts // 8, args.prompt_len, model.config.vocab_size, seed=3)
    data = Dataset.from_dict({"prompt": [" ".join(f"t{i}" for i in r) for r in rows] * 50})
    settings = dict(output_dir=out_dir, per_device_train_batch_size=micro, gradient_accumulation_steps=args.prompts // micro,
                    num_generations=8, max_completion_length=args.new, gradient_checkpointing=False,
                    bf16=args.device == "cuda", use_cpu=args.device == "cpu", report_to=[], logging_steps=100,
                    save_strategy="no", temperature=1.0, max_steps=3, dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    settings.update(overrides)
    config = GRPOConfig(**settings)
    return GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [float(len(c) % 7) for c in completions],
                       args=config, train_dataset=data, processing_class=tok)  # fmt: skip


def trl_step(trainer, comps, adv, micro: int, device) -> None:
    """One TRL optimizer step on our rows: `training_step` per micro-batch (its loss and backward), then
    its clip and optimizer step, as `Trainer._inner_training_loop` does."""
    import torch

    ids, pmask = _left_pad([c.prompt_ids for c in comps], device)
    completion = torch.tensor([c.completion_ids for c in comps], device=device)
    cmask = torch.ones_like(completion)
    n_items = cmask.sum()
    trainer.model.train()
    for s in range(0, len(comps), micro):
        part = dict(prompt_ids=ids[s : s + micro], prompt_mask=pmask[s : s + micro], completion_ids=completion[s : s + micro],
                    completion_mask=cmask[s : s + micro], advantages=adv[s : s + micro].to(device), num_items_in_batch=n_items)  # fmt: skip
        trainer.training_step(trainer.model, part, n_items)
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def mfu(params: int, tokens: int, seconds: float) -> float:
    return 6 * params * tokens / seconds / (PEAK_TFLOPS * 1e12)


def section_train(model, tok, args, device) -> list[dict]:
    import tempfile

    comps, adv = batch(args, model.config.vocab_size)
    tokens = sum(len(c.prompt_ids) + len(c.completion_ids) for c in comps)
    params = sum(p.numel() for p in model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = []
    for micro in args.micro:
        for side in args.sides.split(";"):
            model.load_state_dict(state)  # every side starts from the same weights
            if side == "TRL":
                trainer = trl_trainer(model, tok, args, micro, tempfile.mkdtemp())
                trainer._prepare_inputs = lambda inputs: inputs  # its generation bypassed: our rows instead
                trainer.current_gradient_accumulation_steps = len(comps) // micro
                trainer.create_optimizer()
                step = functools.partial(trl_step, trainer, comps, adv, micro, device)
            else:
                from node.config import TrainerConfig

                chunk = (
                    int(side.rpartition("chunk ")[2]) if "chunk " in side else TrainerConfig().logprob_chunk
                )
                cfg = TrainerConfig(micro_batch_size=micro, lr=1e-6, logprob_chunk=chunk)
                ours = our_trainer(
                    model, device, args.new, prox=not side.startswith("ours, no proximal"), cfg=cfg
                )
                step = functools.partial(ours.update, comps, adv)
            meter = Meter(device)
            try:
                step()  # warm-up: allocator, kernels, optimizer state
                with meter():
                    for _ in range(args.repeat):
                        step()
            except Exception as e:  # noqa: BLE001 -- one side failing must not lose the others' figures
                out.append(dict(case=side, micro=micro, error=f"{type(e).__name__}: {e}"[:400]))
                print(f"[train] {side} micro {micro}: {out[-1]['error']}", flush=True)
                continue
            finally:
                step = ours = trainer = None  # noqa: F841 -- the optimizer state goes before the next side
                _free(device)
            sec = meter.seconds / args.repeat
            out.append(dict(case=side, micro=micro, seconds=sec, tokens=tokens, tok_s=tokens / sec,
                            mfu=mfu(params, tokens, sec), peak_gb=meter.peak_gb))  # fmt: skip
            print(f"[train] {side:24s} micro {micro:3d}: {sec:6.2f} s  {tokens / sec:8.0f} tok/s  "
                  f"MFU {100 * out[-1]['mfu']:5.1f}%  peak {meter.peak_gb:6.2f} GB", flush=True)  # fmt: skip
    model.load_state_dict(state)
    return out


def _free(device) -> None:
    import gc

    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def section_e2e(model, tok, args, device) -> list[dict]:
    import tempfile

    import torch
    from transformers import TrainerCallback

    from node.records import Prompt, Request, SamplingParams
    from node.rollout.hf import HFEngine

    out = []
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rows = prompts(args.prompts // 8, args.prompt_len, model.config.vocab_size, seed=3)
    requests = [Request(Prompt(f"p{i}", "bench", "", ""), r) for i, r in enumerate(rows)]
    engine = HFEngine(model, tok, {EOS}, args.prompts, device, "on" if args.device == "cuda" else "off")
    trainer = our_trainer(model, device, args.new, prox=True, micro=min(32, args.prompts))
    times = []
    for _ in range(3):
        meter = Meter(device)
        with meter():
            groups = engine.generate(requests, 8, SamplingParams(args.new, temperature=1.0))
            comps = [c for g in groups for c in g.completions]
            rewards = torch.tensor([float(len(c.completion_ids) % 7) for c in comps]).view(-1, 8)
            adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)).view(-1)
            trainer.update(comps, adv)
            engine.sync_weights(trainer.version)
        times.append(meter.seconds)
    out.append(dict(case="ours (compiled engine, micro 32)", step_s=times, peak_gb=meter.peak_gb))
    print(f"[e2e] ours: steps {[round(t, 2) for t in times]} s, peak {meter.peak_gb:.2f} GB", flush=True)
    del trainer, engine
    _free(device)

    class Times(TrainerCallback):
        def __init__(self):
            self.t0, self.steps = 0.0, []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            self.steps.append(time.perf_counter() - self.t0)

    for label, over in [("TRL default (gradient checkpointing on)", {"gradient_checkpointing": True})]:
        model.load_state_dict(state)
        meter = Meter(device)
        try:
            trl = trl_trainer(model, tok, args, 8, tempfile.mkdtemp(), **over)
            cb = Times()
            trl.add_callback(cb)
            with meter():
                trl.train()
            out.append(dict(case=label, step_s=cb.steps, peak_gb=meter.peak_gb))
            print(
                f"[e2e] {label}: steps {[round(t, 2) for t in cb.steps]} s, peak {meter.peak_gb:.2f} GB",
                flush=True,
            )
        except Exception as e:  # noqa: BLE001
            out.append(dict(case=label, error=f"{type(e).__name__}: {e}"[:400]))
            print(f"[e2e] {label}: {out[-1]['error']}", flush=True)
        finally:
            if torch.device(device).type == "cuda" and model.is_gradient_checkpointing:
                model.gradient_checkpointing_disable()
            _free(device)
    model.load_state_dict(state)
    return out


def config_case(args) -> dict:
    """Child: engine + update at a config's settings with `--shape`, under a memory cap."""
    import torch

    from node.config import load_config
    from node.records import Prompt, Request, SamplingParams
    from node.rollout.hf import HFEngine

    cfg = load_config([ROOT / args.config], [o for o in args.set.split(",") if o])
    device = torch.device(args.device)
    if device.type == "cuda" and args.cap_gb:
        torch.cuda.set_per_process_memory_fraction(
            args.cap_gb * 2**30 / torch.cuda.get_device_properties(0).total_memory
        )
    dtype = torch.bfloat16 if cfg.model.dtype == "auto" else getattr(torch, cfg.model.dtype)
    model, tok = build(args.shape, device, dtype if device.type == "cuda" else torch.float32)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    r, t = cfg.rollout, cfg.trainer
    rows = prompts(r.prompts_per_step, args.prompt_len, model.config.vocab_size, seed=4)
    requests = [Request(Prompt(f"p{i}", "bench", "", ""), x) for i, x in enumerate(rows)]
    engine = HFEngine(model, tok, set(), r.batch_size, device, "off")  # no stop: every row runs to the cap
    trainer = our_trainer(model, device, r.max_new_tokens, prox=True, cfg=t)
    meter = Meter(device)
    with meter():
        groups = engine.generate(requests, r.group_size, SamplingParams(r.max_new_tokens, r.temperature))
        comps = [c for g in groups for c in g.completions]
        adv = torch.randn(len(comps))
        trainer.update(comps, adv)
    return dict(config=args.config, shape=args.shape, cap_gb=args.cap_gb, overrides=args.set, rows=len(comps),
                seconds=meter.seconds, peak_gb=meter.peak_gb)  # fmt: skip


def section_configs(args) -> list[dict]:
    before = "trainer.micro_batch_size=64,trainer.logprob_chunk=0"  # single_gpu.yaml before issue 14
    cases = [("configs/single_gpu.yaml", "qwen0.5b", 0, before)]
    cases += [("configs/single_gpu.yaml", s, 80, "") for s in ("smollm2", "qwen0.5b", "qwen1.5b")]
    cases += [("configs/single_gpu_24gb.yaml", s, 24, "") for s in ("smollm2", "qwen0.5b")]
    if args.quick:
        cases = [("configs/tiny.yaml", "tiny", 0, "trainer.logprob_chunk=0")]
    out = []
    for config, shape, cap, overrides in cases:
        cmd = [sys.executable, __file__, "--case", "config", "--config", config, "--shape", shape,
               "--cap-gb", str(cap), "--device", args.device, "--prompt-len", str(args.prompt_len), "--set", overrides]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = res.stdout.strip().splitlines()
        if res.returncode == 0 and lines:
            out.append(json.loads(lines[-1]))
        else:
            oom = "OutOfMemoryError" in res.stderr
            error = "OOM" if oom else res.stderr[-600:]
            out.append(dict(config=config, shape=shape, cap_gb=cap, overrides=overrides, error=error))
        print(f"[configs] {json.dumps(out[-1])}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", default="qwen0.5b", choices=sorted(SHAPES))
    ap.add_argument("--sections", default="gen,train,e2e,configs")
    ap.add_argument("--prompts", type=int, default=64, help="rows of a batch (groups of 8 in e2e)")
    ap.add_argument("--prompt-len", type=int, default=128, help="longest prompt; lengths drawn in [P/2, P]")
    ap.add_argument("--new", type=int, default=384, help="new tokens a row")
    ap.add_argument("--micro", default="8,32", help="train: micro-batch sizes, comma separated")
    ap.add_argument(
        "--sides",
        default="ours;ours, no proximal pass;TRL",
        help="train, separated by ;: 'ours', 'ours, no proximal pass', 'ours, chunk N' (logprob_chunk N), 'TRL'",
    )
    ap.add_argument(
        "--gen-cases", default="", help="gen: only these cases (names as printed), comma separated"
    )
    ap.add_argument("--repeat", type=int, default=1, help="train: timed steps after the warm-up")
    ap.add_argument("--quick", action="store_true", help="tiny shape and batch: a test of the script")
    ap.add_argument("--out", help="write the results here as JSON")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--cap-gb", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--set", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.shape, args.prompts, args.prompt_len, args.new = "tiny", 16, 16, 24
        args.micro = "4,8" if args.micro == "8,32" else args.micro
    args.micro = [int(m) for m in args.micro.split(",")]
    if args.case == "config":
        print(json.dumps(config_case(args)))
        return
    import torch

    device = torch.device(args.device)
    model, tok = build(args.shape, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    params = sum(p.numel() for p in model.parameters())
    info = dict(shape=args.shape, params=params, prompts=args.prompts, prompt_len=args.prompt_len, new=args.new,
                device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch=torch.__version__)  # fmt: skip
    with contextlib.suppress(ImportError):
        import transformers
        import trl

        info.update(transformers=transformers.__version__, trl=trl.__version__)
    print(f"[setup] {json.dumps(info)}", flush=True)
    results: dict = {"setup": info}
    sections = {"gen": section_gen, "train": section_train, "e2e": section_e2e}
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        try:
            results[name] = (
                section_configs(args) if name == "configs" else sections[name](model, tok, args, device)
            )
        except Exception as e:  # noqa: BLE001 -- keep the other sections' figures
            import traceback

            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"[:600]}
        print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
