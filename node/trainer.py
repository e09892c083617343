"""The trainer: recompute logprobs, call the configured loss, step AdamW.

It does not know which algorithm runs: advantages arrive per completion, the loss comes from
`node.algos.api.policy_loss`, and every algorithm-specific input travels in `LossInputs`.
One optimizer step per batch, split into micro-batches whose losses are already divided by
the whole batch's denominators, so accumulation equals the full-batch loss.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from node.algos.api import lr_scale, policy_loss, seq_log_weights
from node.algos.config import AlgorithmConfig
from node.algos.types import LossInputs
from node.batching import first_completion_position, pack, pack_tokens, token_logprobs
from node.config import TrainerConfig
from node.rollout.base import Completion


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainerConfig,
        algo: AlgorithmConfig,
        pad_id: int,
        device: torch.device,
        temperature: float,
        max_new_tokens: int,
        ref_model: torch.nn.Module | None = None,
    ):
        self.model = model
        self.cfg = cfg
        self.algo = algo
        self.pad_id = pad_id
        self.device = device
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.ref_model = ref_model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.version = 0  # optimizer steps taken: the policy version

    def lr_at(self, step: int) -> float:
        if self.cfg.warmup_steps and step < self.cfg.warmup_steps:
            return self.cfg.lr * (step + 1) / self.cfg.warmup_steps
        return self.cfg.lr

    def ref_logprobs(self, completions: list[Completion]) -> list[list[float]]:
        """log pi_ref of each completion token (KL-in-reward, ACE)."""
        return self._logprobs(self.ref_model, completions)

    def policy_logprobs(self, completions: list[Completion]) -> list[list[float]]:
        """log pi_theta of each completion token under the current weights (peers' re-tokenized
        text becomes on-policy data this way, as in SAPO)."""
        return self._logprobs(self.model, completions)

    @torch.no_grad()
    def _logprobs(self, model: torch.nn.Module, completions: list[Completion]) -> list[list[float]]:
        out: list[list[float]] = []
        mb = self.cfg.micro_batch_size
        for start in range(0, len(completions), mb):
            rows = completions[start : start + mb]
            input_ids, attention = pack_tokens(rows, self.pad_id)
            first = first_completion_position(rows)
            logp, _ = token_logprobs(
                model, input_ids.to(self.device), attention.to(self.device),
                self.temperature, False, first,
            )
            for r, c in enumerate(rows):
                p = len(c.prompt_ids)
                out.append(logp[r, p - 1 : p - 1 + len(c.completion_ids)].float().cpu().tolist())
        return out

    def step(self, completions: list[Completion], advantages: Tensor) -> dict[str, float]:
        """One optimizer step on these completions with these [N] advantages."""
        t0 = time.perf_counter()
        self.model.train()
        n_tokens = float(sum(len(c.completion_ids) for c in completions))
        n_seqs = float(len(completions))
        metrics: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        seen_tokens = 0
        log_weights = []
        mb = self.cfg.micro_batch_size
        for start in range(0, len(completions), mb):
            rows = completions[start : start + mb]
            batch = pack(rows, advantages[start : start + mb], self.pad_id)
            first = first_completion_position(rows)
            ids = batch.input_ids.to(self.device)
            attn = batch.attention_mask.to(self.device)
            seen_tokens += int(attn.sum())
            logp, entropy = token_logprobs(
                self.model, ids, attn, self.temperature, True, first, entropy_grad=self.algo.entropy_coef > 0
            )
            ref = None
            if self.ref_model is not None and self.algo.kl_coef > 0:
                with torch.no_grad():
                    ref, _ = token_logprobs(self.ref_model, ids, attn, self.temperature, False, first)
            inputs = LossInputs(
                policy_logprobs=logp,
                old_logprobs=logp.detach(),
                behavior_logprobs=batch.behavior_logprobs.to(self.device),
                advantages=batch.advantages.to(self.device),
                mask=batch.mask.to(self.device),
                global_tokens=n_tokens,
                global_seqs=n_seqs,
                max_len=self.max_new_tokens,
                ref_logprobs=ref,
                entropy=entropy,
                behavior_versions=batch.versions.to(self.device),
                policy_version=self.version,
            )
            log_weights.append(seq_log_weights(inputs.old_logprobs, inputs.behavior_logprobs, inputs.mask))
            out = policy_loss(inputs, self.algo)
            out.loss.backward()
            metrics["loss"] = metrics.get("loss", 0.0) + float(out.loss.detach())
            for k, v in out.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        scale = lr_scale(torch.cat(log_weights), self.algo)
        lr = self.lr_at(self.version) * scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if math.isfinite(float(grad_norm)):
            self.optimizer.step()
        else:
            metrics["skipped_nonfinite_grad"] = 1.0
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        elapsed = time.perf_counter() - t0
        metrics.update(grad_norm=float(grad_norm), lr=lr, lr_scale=scale, train_tokens_per_s=seen_tokens / elapsed, train_s=elapsed)
        return metrics
