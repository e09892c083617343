"""Rollouts with transformers' `generate`, sharing the policy module with the trainer.

Prompts are left-padded for batched generation (the model derives position ids from the
attention mask); completions are cut at the first end-of-turn token.  The records keep prompt
and completion ids unpadded, so training sequences are contiguous `prompt + completion` with
no pad in between.
"""

from __future__ import annotations

import torch

from node.records import Completion, Group, Request, SamplingParams


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
                output_logits=True,
                return_dict_in_generate=True,
                use_cache=True,
            )
        finally:
            self.model.train(was_training)
        new = gen.sequences[:, width:].cpu()
        temp = 1.0 if sampling.greedy else sampling.temperature
        # [B, S] logprob of each generated token under the temperature-scaled distribution
        logps = torch.stack(
            [
                torch.log_softmax(step_logits.float() / temp, dim=-1).gather(-1, new[:, s : s + 1].to(step_logits.device)).squeeze(-1).cpu()
                for s, step_logits in enumerate(gen.logits)
            ],
            dim=1,
        )
        results = []
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            stop = next((k for k, t in enumerate(ids) if t in self.stop_ids), None)
            if stop is None:
                results.append((ids, logps[row].tolist(), "length"))
            else:
                results.append((ids[: stop + 1], logps[row, : stop + 1].tolist(), "stop"))
        return results
