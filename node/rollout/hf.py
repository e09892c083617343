"""Rollouts with transformers' `generate`, sharing the policy module with the trainer.

Prompts are left-padded for batched generation (the model derives position ids from the
attention mask); completions are cut at the first end-of-turn token.  The records keep prompt
and completion ids unpadded, so training sequences are contiguous `prompt + completion` with
no pad in between.

Memory: the engine keeps the sampled tokens' log-probs only.  `SampledLogprobs`, a logits
processor, sees each step's raw logits (custom processors run before the temperature and top-p
warpers, `GenerationMixin._get_logits_processor`), gathers the previous step's chosen token from the
one [B, V] log-softmax it holds, and the last step's token after `generate` returns.  Asking
`generate` for `output_logits=True` instead kept every step's float32 [B, V] (16.8 GB for 64 x 384
tokens of a 150k vocabulary); recomputing from one forward pass after generation would cost a full
prefill of prompt + completion and give the trainer's numbers rather than the sampler's.  The value
is the same as before: log_softmax(raw logits / temperature) at the chosen token (the full
distribution, not the top-p nucleus), what the trainer computes.

Prompts are bucketed by length: jobs are sorted by prompt length (stably, so a group's
completions stay together and in order) before they are cut into batches, and the groups come
back in request order.  Less left padding; the draws differ from an unsorted run's, the
distribution does not.

Compiled decode (`rollout.compile`): `generate` runs with transformers' static KV cache
(`cache_implementation="static"`), and its decode step, one token for every row, goes through
`torch.compile` (`CompileConfig`; on CUDA mode `reduce-overhead`, i.e. CUDA graphs).  The
sampling loop, the stop checks and `SampledLogprobs` stay in eager Python around it, so stop
handling and the recorded log-probs are the eager path's.  `rollout.decode_loop=whole_step`
replaces `generate` with our own loop (node/rollout/decode.py): the whole token step (forward,
log-softmax, nucleus, sampling, stop flags) in one compiled function, one CUDA graph a token, and
a host check for the end every 16 tokens instead of a sync every token; records as the eager path
makes them.  A compiled graph is specialised on the cache's shape, [rows, prompt width +
max_new_tokens].  transformers' loop: the prompt width is rounded up to a multiple of `WIDTH_STEP`
(more left padding, which the attention mask hides), so steps with prompts of similar lengths
reuse one graph.  The whole-step loop keeps one cache per row count, as long as the longest call
so far needed (rounded up to `WIDTH_STEP`), and its graph serves every shorter width.  The first
call for each shape pays the compile; its time is printed once and kept in `compile_s`
(`metrics()` hands it out once).  `auto` compiles on CUDA only: on CPU it did not pay
(docs/benchmarks.md, "Engine and log-prob memory (CPU)"; with `whole_step` it ties eager at
SmolLM2 on 2 cores).  The static cache stays allocated between calls (transformers keeps the latest on the
model; the whole-step loop one per row count): rows x cache length x layers x 2 x KV heads x head
dim x 2 B (0.4 GB for 64 x 512 positions of the 0.5B Qwen shape).  On an H200 the compiled engine
(transformers' loop) ran 4.0-4.7x plain `generate` at 0.5B, 3.4x at 1.5B, in 1.07x its memory
(docs/benchmarks.md, "GPU: engine and train step vs TRL (H200)"); the whole-step loop is not yet
measured on a GPU.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from node.records import Completion, Group, Request, SamplingParams


class SampledLogprobs(LogitsProcessor):
    """log pi(chosen token) at `temperature` for every generated step, holding one step's [B, V]."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.last: torch.Tensor | None = None  # [B, V] float32 log-softmax of the latest step
        self.steps: list[torch.Tensor] = []  # [B] each: the chosen token's log-prob, one per step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.last is not None:  # input_ids now ends with the token chosen from `last`
            self.steps.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """[B, S] log-probs of `generate`'s S new tokens (the last one gathered here)."""
        if self.last is not None and len(self.steps) < new_tokens.shape[1]:
            self.steps.append(
                self.last.gather(-1, new_tokens[:, len(self.steps) : len(self.steps) + 1]).squeeze(-1)
            )
        self.last = None
        if not self.steps:
            return torch.zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self.steps, dim=1).cpu()


CompileMode = Literal["auto", "on", "off"]
WIDTH_STEP = 64  # compiled decode: prompt widths are padded up to a multiple of this


def use_compile(mode: CompileMode, device: torch.device) -> bool:
    """`rollout.compile` resolved for `device`: auto = CUDA only."""
    if mode == "auto":
        return torch.device(device).type == "cuda"
    return mode == "on"


def compile_options(device: torch.device) -> dict:
    """`generate` keywords for the static cache and the compiled decode step on `device`."""
    from transformers import CompileConfig

    cuda = torch.device(device).type == "cuda"
    config = CompileConfig(fullgraph=False, mode="reduce-overhead" if cuda else "default")
    if not cuda:  # transformers compiles on accelerators only unless told otherwise
        config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": config}


class HFEngine:
    def __init__(self, model, tokenizer, stop_ids: set[int], batch_size: int, device: torch.device,
                 compile: CompileMode = "auto", decode_loop: str = "transformers"):  # fmt: skip
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = device
        self.version = 0
        self.stop_ids = set(stop_ids)
        self.pad_id = tokenizer.pad_token_id
        self.compiled = use_compile(compile, device)
        self.whole_step = self.compiled and decode_loop == "whole_step"  # node/rollout/decode.py
        self.compile_s: dict[tuple[int, int], float] = {}  # (rows, cache length) -> first call's seconds
        self._decoders: dict = {}  # whole_step: rows -> the loop and its static cache
        self._unreported = 0.0  # compile seconds not yet handed out by `metrics()`

    def metrics(self) -> dict[str, float]:
        """`rollout/compile_s`: seconds of first calls (compile included) since the last call; once."""
        if not self._unreported:
            return {}
        out, self._unreported = {"rollout/compile_s": self._unreported}, 0.0
        return out

    def sync_weights(self, version: int) -> None:
        self.version = version  # same module as the trainer: nothing to copy

    def generate(self, requests: list[Request], group_size: int, sampling: SamplingParams) -> list[Group]:
        jobs = [(i, r.prompt_ids) for i, r in enumerate(requests) for _ in range(group_size)]
        jobs.sort(key=lambda job: len(job[1]))  # stable: a group's completions keep their order
        out: list[list[Completion]] = [[] for _ in requests]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            for (i, ids), comp in zip(chunk, self._generate_batch([ids for _, ids in chunk], sampling)):
                ids_c, logps, reason = comp
                text = self.tokenizer.decode(ids_c, skip_special_tokens=True)
                out[i].append(Completion(requests[i].prompt, ids, ids_c, logps, text, reason, self.version))
        return [Group(r.prompt, tuple(cs)) for r, cs in zip(requests, out)]

    def _decoder_for(self, rows: int, need: int):
        """The whole-step loop for `rows` rows, its cache at least `need` positions long (kept per
        row count; a longer need replaces it, rounded up to a multiple of `WIDTH_STEP`)."""
        from node.rollout.decode import Decoder

        d = self._decoders.get(rows)
        if d is None or d.model is not self.model or d.length < need:
            self._decoders.pop(rows, None)  # free the old static cache first
            mode = "reduce-overhead" if torch.device(self.device).type == "cuda" else "default"
            length = -(-need // WIDTH_STEP) * WIDTH_STEP
            d = self._decoders[rows] = Decoder(self.model, length, self.pad_id, self.stop_ids, mode)
        return d

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], sampling: SamplingParams):
        width = max(len(ids) for ids in prompt_ids)
        if self.compiled and not self.whole_step:  # whole_step: any width fits its graph
            width = -(-width // WIDTH_STEP) * WIDTH_STEP
        shape = (len(prompt_ids), width + sampling.max_new_tokens)  # (rows, cache length) compiled for
        if self.whole_step:
            loop = self._decoder_for(*shape)
            shape = (shape[0], loop.length)  # one graph for every width that fits
        first_call = self.compiled and shape not in self.compile_s
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        temp = 1.0 if sampling.greedy else sampling.temperature
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        try:
            if self.whole_step:
                new, logps = loop.run(input_ids.to(self.device), attention.to(self.device),
                                      sampling.max_new_tokens, temp, sampling.top_p, sampling.greedy)  # fmt: skip
            else:
                new, logps = self._generate(input_ids, attention, sampling, temp)
        finally:
            self.model.train(was_training)
        if first_call:
            seconds = time.perf_counter() - t0
            self.compile_s[shape] = seconds
            self._unreported += seconds
            print(f"[engine] compiled decode for {shape[0]} rows x {shape[1]} cache positions: first call "
                  f"{seconds:.1f} s (compile included; later calls of this shape reuse it)", flush=True)  # fmt: skip
        new = new.cpu()
        results = []
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            stop = next((k for k, t in enumerate(ids) if t in self.stop_ids), None)
            if stop is None:
                results.append((ids, logps[row].tolist(), "length"))
            else:
                results.append((ids[: stop + 1], logps[row, : stop + 1].tolist(), "stop"))
        return results

    def _generate(self, input_ids, attention, sampling: SamplingParams, temp: float):
        """transformers' `generate` (compiled or not): (new tokens [B, S], their log-probs [B, S])."""
        recorder = SampledLogprobs(temp)
        gen = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            do_sample=not sampling.greedy,
            temperature=None if sampling.greedy else sampling.temperature,
            top_p=None if sampling.greedy or sampling.top_p >= 1 else sampling.top_p,
            top_k=None,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
            logits_processor=LogitsProcessorList([recorder]),
            return_dict_in_generate=True,
            use_cache=True,
            **(compile_options(self.device) if self.compiled else {}),
        )
        new = gen.sequences[:, input_ids.shape[1] :]
        return new, recorder.finish(new)  # [B, S] under the temperature-scaled distribution
