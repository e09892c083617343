"""The trainer: a PPO update over one step's batch with the configured loss, AdamW.

It does not know which algorithm runs: advantages arrive per completion, the loss comes from
`node.algos.api.policy_loss`, every algorithm-specific input travels in `LossInputs`, and what
to compute (reference model, entropy gradient, the proximal pass) comes from `Requirements`.

One `update` = one training step (one policy version):
1. the proximal ("old") log-probs of every row are recorded once, before any weight moves
   (skipped with `prox_logprobs=loglinear`, which approximates them from the behaviour ones, and
   when the update is one optimizer step, where the training forward's own detached log-probs
   are the same anchor);
2. `trainer.ppo_epochs` passes over the batch; each pass shuffles the rows and splits them into
   mini-batches of `trainer.mini_batch_size`, one AdamW step each.  From the second optimizer step
   on, pi_theta differs from pi_old, so ratios leave 1 and clipping and the off-policy
   corrections act (TRL `num_iterations`, verl `ppo_epochs`/`ppo_mini_batch_size`);
3. each mini-batch runs in micro-batches of `trainer.micro_batch_size` whose losses are already
   divided by the mini-batch's denominators, so accumulation equals the mini-batch loss.

Before step 2, `node.algos.foreign.plan_rows` decides per row from the proximal pass (all off by
default): the foreign gate may drop peer rows or give them a loss weight, the ESS check may drop
them or shrink this step's learning rate, and advantages may be normalised per source.

The shuffle is drawn from a generator seeded by (seed, policy version), so a resumed run draws
the same mini-batches as an uninterrupted one.  With the defaults (one epoch, one mini-batch)
rows keep their order and the update is the single on-policy step of GRPO.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping

import torch
from torch import Tensor

from node.algos.api import lr_scale, plan_rows, policy_loss, row_means, seq_log_weights
from node.algos.config import AlgorithmConfig
from node.algos.types import LossInputs, Requirements
from node.batching import (
    first_completion_position,
    pack,
    pack_tokens,
    sampler_lags,
    source_ids,
    token_logprobs,
)
from node.config import TrainerConfig
from node.distributed import collective, micro_batches
from node.records import Completion


def minibatch_orders(n: int, size: int | None, epochs: int, generator: torch.Generator) -> list[list[int]]:
    """Row indices of each optimizer step: `epochs` passes, each a fresh permutation cut into
    chunks of `size` (None = all rows).  One pass over one mini-batch keeps the rows in order."""
    size = size or n
    if epochs == 1 and size >= n:
        return [list(range(n))]
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).tolist()
        out += [order[s : s + size] for s in range(0, n, size)]
    return out


def adamw_kernel(device: torch.device) -> dict[str, bool]:
    """The fastest AdamW implementation for `device`: the fused kernel (one launch for all
    parameters) on CUDA, the multi-tensor `foreach` one elsewhere.  Both compute the same update as
    the per-parameter loop, up to float rounding."""
    return {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}


def build_adamw(
    params: list[torch.nn.Parameter], cfg: TrainerConfig, device: torch.device
) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **adamw_kernel(device)
    )


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainerConfig,
        algo: AlgorithmConfig,
        req: Requirements,
        pad_id: int,
        device: torch.device,
        temperature: float,
        max_new_tokens: int,
        ref_model: torch.nn.Module | None = None,
        seed: int = 0,
    ):
        self.model = model
        self.cfg = cfg
        self.algo = algo
        self.req = req
        self.pad_id = pad_id
        self.device = device
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.ref_model = ref_model
        self.seed = seed
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_adamw(self.params, cfg, device)
        self.version = 0  # training steps taken: the policy version
        self.dp = None  # node/distributed.py's DataParallel when the node spans several ranks

    def lr_at(self, step: int) -> float:
        if self.cfg.warmup_steps and step < self.cfg.warmup_steps:
            return self.cfg.lr * (step + 1) / self.cfg.warmup_steps
        return self.cfg.lr

    @collective
    def ref_logprobs(self, completions: list[Completion]) -> list[list[float]]:
        """log pi_ref of each completion token (KL-in-reward, ACE)."""
        return self._logprobs(self.ref_model, completions)

    @collective
    def policy_logprobs(self, completions: list[Completion]) -> list[list[float]]:
        """log pi_theta of each completion token under the current weights (peers' re-tokenized
        text becomes on-policy data this way, as in SAPO; and the proximal pass)."""
        return self._logprobs(self.model, completions)

    @torch.no_grad()
    def _logprobs(self, model: torch.nn.Module, completions: list[Completion]) -> list[list[float]]:
        out: list[list[float]] = []
        for part in micro_batches(len(completions), self.cfg.micro_batch_size, self.dp):
            rows = completions[part.rows]
            input_ids, attention = pack_tokens(rows, self.pad_id)
            first = first_completion_position(rows)
            logp, _ = self._forward(model)(
                input_ids.to(self.device), attention.to(self.device),
                self.temperature, False, first, chunk=self.cfg.logprob_chunk,
            )  # fmt: skip
            for r, c in enumerate(rows if part.real else []):
                p = len(c.prompt_ids)
                out.append(logp[r, p - 1 : p - 1 + len(c.completion_ids)].float().cpu().tolist())
        return out if self.dp is None else self.dp.gather(out)

    def _forward(self, model):
        """`token_logprobs` of `model`; for the policy on several ranks, through the data-parallel
        wrapper, whose backward reduces gradients over the ranks (node/distributed.py)."""
        if self.dp is not None and model is self.model:
            return self.dp.module
        return functools.partial(token_logprobs, model)

    @collective
    def update(
        self,
        completions: list[Completion],
        advantages: Tensor,
        origin_newest: Mapping[str, int] | None = None,
    ) -> dict[str, float]:
        """One training step on these completions with these [N] advantages (see the docstring).

        `origin_newest`: the newest version seen from each peer origin (`Admission.newest`), the
        origin's clock for `algorithm.staleness_clock=origin`; without it, the batch's own newest."""
        if not completions:  # every row was dropped (e.g. all truncated under mask_truncated)
            return {"skipped_empty_batch": 1.0}
        t0 = time.perf_counter()
        self.model.train()
        old = self.policy_logprobs(completions) if self._needs_old_pass(len(completions)) else None
        sources = source_ids(completions)
        lags = sampler_lags(completions, self.version, origin_newest)
        plan = plan_rows(
            advantages,
            torch.tensor(sources, dtype=torch.long),
            row_means(old) if old is not None else None,
            row_means([c.behavior_logprobs for c in completions]) if old is not None else None,
            self.algo,
        )
        kept = plan.keep.nonzero().flatten().tolist()
        if len(kept) < len(completions):  # the foreign gate or the ESS check dropped peer rows
            completions, sources, lags = (
                [completions[i] for i in kept],
                [sources[i] for i in kept],
                [lags[i] for i in kept],
            )
            old = [old[i] for i in kept] if old is not None else None
            if not completions:
                return plan.metrics | {"skipped_empty_batch": 1.0}
        advantages, weights = plan.advantages[kept], plan.weight[kept].tolist()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.version)
        orders = minibatch_orders(len(completions), self.cfg.mini_batch_size, self.cfg.ppo_epochs, gen)
        sums: dict[str, float] = {}
        seen_tokens = 0
        for idx in orders:
            m = self._optimizer_step(
                [completions[i] for i in idx],
                advantages[idx],
                [old[i] for i in idx] if old is not None else None,
                [sources[i] for i in idx],
                [weights[i] for i in idx],
                [lags[i] for i in idx],
                plan.lr_scale,
            )
            seen_tokens += int(m.pop("_tokens"))
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        metrics = {k: v / len(orders) for k, v in sums.items()} | plan.metrics  # mean over optimizer steps
        self.version += 1
        elapsed = time.perf_counter() - t0
        metrics.update(
            optimizer_steps=float(len(orders)), train_tokens_per_s=seen_tokens / elapsed, train_s=elapsed
        )
        return metrics

    def _needs_old_pass(self, n_rows: int) -> bool:
        """Whether to record pi_old in a separate no-grad pass.  With one optimizer step (one epoch,
        one mini-batch) pi_theta is pi_old at the only step, so `logp.detach()` of the training
        forward is the same anchor for free (about a quarter of the step at 0.5B on the H200,
        docs/benchmarks.md); the pass stays when the foreign gate or ESS check must see it first."""
        if not self.req.old_logprobs:
            return False
        single = self.cfg.ppo_epochs == 1 and (self.cfg.mini_batch_size or n_rows) >= n_rows
        plans = self.algo.foreign_gate != "off" or self.algo.foreign_ess != "off"
        return not single or plans

    def _optimizer_step(
        self,
        rows: list[Completion],
        advantages: Tensor,
        old: list[list[float]] | None,
        sources: list[int],
        row_weights: list[float],
        lags: list[int],
        step_scale: float,
    ) -> dict[str, float]:
        n_tokens = float(sum(len(c.completion_ids) for c in rows))
        metrics: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        seen_tokens = 0
        log_weights = []
        passes = micro_batches(len(rows), self.cfg.micro_batch_size, self.dp)
        for i, step in enumerate(passes):
            part = step.rows
            batch = pack(
                rows[part],
                advantages[part],
                self.pad_id,
                old[part] if old is not None else None,
                sources[part],
                row_weights[part],
                lags[part],
            )
            first = first_completion_position(rows[part])
            ids = batch.input_ids.to(self.device)
            attn = batch.attention_mask.to(self.device)
            seen_tokens += int(attn.sum()) if step.real else 0
            if self.dp is not None:
                self.dp.grad_sync(last=i == len(passes) - 1)
            logp, entropy = self._forward(self.model)(
                ids,
                attn,
                self.temperature,
                True,
                first,
                entropy_grad=self.req.entropy_grad,
                chunk=self.cfg.logprob_chunk,
            )
            ref = None
            if self.ref_model is not None and self.req.ref_in_loss:
                with torch.no_grad():
                    ref, _ = token_logprobs(
                        self.ref_model,
                        ids,
                        attn,
                        self.temperature,
                        False,
                        first,
                        chunk=self.cfg.logprob_chunk,
                    )
            inputs = LossInputs(
                policy_logprobs=logp,
                old_logprobs=batch.old_logprobs.to(self.device)
                if batch.old_logprobs is not None
                else logp.detach(),
                behavior_logprobs=batch.behavior_logprobs.to(self.device),
                advantages=batch.advantages.to(self.device),
                mask=batch.mask.to(self.device),
                global_tokens=n_tokens,
                global_seqs=float(len(rows)),
                max_len=self.max_new_tokens,
                ref_logprobs=ref,
                entropy=entropy,
                behavior_versions=batch.versions.to(self.device),
                policy_version=self.version,
                sources=batch.sources.to(self.device),
                row_weights=batch.row_weights.to(self.device),
                sampler_lags=batch.sampler_lags.to(self.device),
            )
            out = policy_loss(inputs, self.algo)
            if self.dp is not None:  # this rank's share of the mini-batch loss (see node/distributed.py)
                (out.loss * self.dp.loss_scale(step.real)).backward()
                if not step.real:
                    continue
            else:
                out.loss.backward()
            log_weights.append(seq_log_weights(inputs.old_logprobs, inputs.behavior_logprobs, inputs.mask))
            metrics["loss"] = metrics.get("loss", 0.0) + float(out.loss.detach())
            for k, v in out.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v
        if self.dp is not None:
            metrics = self.dp.sum_metrics(metrics | {"_tokens": float(seen_tokens)})
            seen_tokens, log_weights = int(metrics.pop("_tokens")), self.dp.gather(log_weights)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        grad_norm = self.dp.total_norm(grad_norm) if self.dp is not None else grad_norm
        scale = lr_scale(torch.cat(log_weights), self.algo)
        lr = self.lr_at(self.version) * scale * step_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if math.isfinite(float(grad_norm)):
            self.optimizer.step()
        else:
            metrics["skipped_nonfinite_grad"] = 1.0
        self.optimizer.zero_grad(set_to_none=True)
        metrics.update(grad_norm=float(grad_norm), lr=lr, lr_scale=scale, _tokens=float(seen_tokens))
        return metrics
