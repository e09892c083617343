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
"""

from __future__ import annotations

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


class HFEngine:
    def __init__(self, model, tokenizer, stop_ids: set[int], batch_size: int, device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = device
        self.version = 0
        self.stop_ids = set(stop_ids)
        self.pad_id = tokenizer.pad_token_id

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

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], sampling: SamplingParams):
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        temp = 1.0 if sampling.greedy else sampling.temperature
        recorder = SampledLogprobs(temp)
        was_training = self.model.training
        self.model.eval()
        try:
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
            )
        finally:
            self.model.train(was_training)
        new = gen.sequences[:, width:]
        logps = recorder.finish(new)  # [B, S] under the temperature-scaled distribution
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
