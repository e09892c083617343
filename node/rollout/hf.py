"""Rollouts with transformers' `generate`, sharing the policy module with the trainer.

Prompts are left-padded for batched generation (the model derives position ids from the
attention mask); completions are cut at the first end-of-turn token.  The records keep prompt
and completion ids unpadded, so training sequences are contiguous `prompt + completion` with
no pad in between.
"""

from __future__ import annotations

import torch

from node.rollout.base import Completion, Group, SamplingParams
from node.tasks.base import Prompt


def render_prompt(tokenizer, system_prompt: str, question: str, examples: list[tuple[str, str]] = ()) -> list[int]:
    """Chat-templated prompt ids: system message, worked examples as earlier turns, question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for q, a in examples:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer, model) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return {i for i in ids if i is not None}


class HFEngine:
    def __init__(
        self,
        model,
        tokenizer,
        system_prompt: str,
        batch_size: int,
        device: torch.device,
        examples: list[tuple[str, str]] = (),
    ):
        self.examples = list(examples)
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.device = device
        self.version = 0
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id

    def sync_weights(self, version: int) -> None:
        self.version = version  # same module as the trainer: nothing to copy

    def generate(self, prompts: list[Prompt], group_size: int, sampling: SamplingParams) -> list[Group]:
        rendered = [render_prompt(self.tokenizer, self.system_prompt, p.question, self.examples) for p in prompts]
        jobs = [(i, ids) for i, ids in enumerate(rendered) for _ in range(group_size)]
        out: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            for (i, ids), comp in zip(chunk, self._generate_batch([ids for _, ids in chunk], sampling)):
                ids_c, logps, reason = comp
                text = self.tokenizer.decode(ids_c, skip_special_tokens=True)
                out[i].append(Completion(prompts[i], ids, ids_c, logps, text, reason, self.version))
        return [Group(p, cs) for p, cs in zip(prompts, out)]

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
