"""`Node`: builds the parts of one peer and drives the loop.

One step, in order: [join mode: take up to J admitted peer groups] -> select prompts ->
generate the local groups (I, plus any of the J the swarm could not supply) -> score locally ->
advantages over local and peer groups -> train -> [publish the local groups] -> log ->
checkpoint.  This is the one place that knows that order; the components (engine, trainer,
tasks, checkpoints, the swarm link) never hold a reference to the node.  In solo mode nothing
of the swarm layer is imported and no socket is opened.

Guarantees: a Ctrl-C finishes the current step, saves a checkpoint and exits (a second Ctrl-C
aborts at once, leaving the last checkpoint); `resume()` restores weights, optimizer, RNG
states and step, so the next batch is the one an uninterrupted run would have drawn.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from node import checkpoint
from node.algos.api import advantages_with_keep, requirements
from node.collect import advantage_inputs, baseline_rewards, collect
from node.config import Config, dump_config
from node.policy import load_policy, load_reference
from node.rollout import SamplingParams, build_engine
from node.sampler import PromptSampler
from node.tasks import build_tasks
from node.trainer import Trainer


@functools.cache
def software_version() -> str:
    try:
        return importlib.metadata.version("swarmrl")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


class Node:
    def __init__(self, cfg: Config, run_dir: Path | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.logging.run_dir)
        torch.manual_seed(cfg.seed)
        task_list = build_tasks(cfg.tasks)
        self.tasks = {t.name: t for t in task_list}
        self.sampler = PromptSampler(task_list, [s.weight for s in cfg.tasks.sources], cfg.seed)
        self.policy = load_policy(cfg.model)
        self.req = requirements(cfg.algorithm)
        ref = load_reference(self.policy) if self.req.ref_logprobs else None
        self.engine = build_engine(cfg.rollout, self.policy, cfg.tasks)
        self.trainer = Trainer(
            self.policy.model,
            cfg.trainer,
            cfg.algorithm,
            self.policy.tokenizer.pad_token_id,
            self.policy.device,
            cfg.rollout.temperature,
            cfg.rollout.max_new_tokens,
            ref_model=ref,
        )
        self.sampling = SamplingParams(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)
        self.step = 0
        self._stop = False
        self.sharing = None
        if cfg.swarm.mode == "join":
            from node.sharing import Sharing

            self.sharing = Sharing.open(cfg, self.run_dir, self.policy, self.tasks, self.trainer)

    # -- state -------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self) -> Path:
        return checkpoint.save(
            self.ckpt_dir,
            self.step,
            self.trainer.version,
            self.policy.model,
            self.trainer.optimizer,
            dump_config(self.cfg),
            self.cfg.model.name,
            self.cfg.checkpoint.keep,
        )

    def resume(self, path: Path | None = None) -> bool:
        """Restore the given or latest checkpoint; False if there is none."""
        path = path or checkpoint.latest(self.ckpt_dir)
        if path is None:
            return False
        restored = checkpoint.load(path, self.policy.model, self.trainer.optimizer, self.cfg.model.name)
        self.step = restored.step
        self.trainer.version = restored.policy_version
        self.engine.sync_weights(restored.policy_version)
        return True

    # -- one step ------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        external, swarm_info = self.sharing.take(self.step) if self.sharing else ([], {})
        n_local = cfg.rollout.prompts_per_step + (cfg.swarm.external_groups - len(external) if self.sharing else 0)
        collected = collect(self.engine, self.sampler, self.tasks, cfg, self.req, self.step, self.sampling, n_local)
        local = collected.groups
        if external:
            collected.groups = local + external
            if self.req.baseline_rewards:  # ReMax: greedy baselines for the peers' prompts too
                collected.baselines.update(baseline_rewards(self.engine, external, self.tasks, cfg))
        groups = collected.groups
        raw = [c for g in groups for c in g.completions]
        ref = self.trainer.ref_logprobs(raw) if self.req.ref_logprobs else None
        completions, inputs, keep = advantage_inputs(collected, cfg, self.req, ref)
        out = advantages_with_keep(inputs, cfg.algorithm)
        rows = out.keep if keep is None else out.keep & keep
        if not bool(rows.any()):
            rows = torch.ones_like(rows)  # nothing left: train on zero advantages rather than skip the step
        train_rows = [c for c, k in zip(completions, rows.tolist()) if k]
        advantages = out.advantages[rows]
        metrics = self.trainer.step(train_rows, advantages)
        self.engine.sync_weights(self.trainer.version)
        if self.sharing:
            self.sharing.publish(local, self.sampling)
            metrics.update(swarm_info, local_groups=len(local))
        self.step += 1
        rewards = [c.reward for c in completions]
        local_rewards = [c.reward for g in local for c in g.completions]
        metrics.update(
            reward_mean=statistics.fmean(rewards),
            reward_local=statistics.fmean(local_rewards),
            reward_std=statistics.pstdev(rewards),
            adv_mean=float(advantages.mean()),
            adv_std=float(advantages.std()) if advantages.numel() > 1 else 0.0,
            adv_abs_max=float(advantages.abs().max()),
            completion_len=statistics.fmean(len(c.completion_ids) for c in completions),
            truncated_frac=sum(c.truncated for c in completions) / len(completions),
            zero_var_groups=sum(len(set(g.rewards)) == 1 for g in groups) / len(groups),
            rows_dropped=len(completions) - len(train_rows),
            gen_rounds=collected.rounds,
            gen_dropped_groups=collected.dropped_groups,
            gen_tokens_per_s=collected.gen_tokens / collected.gen_seconds,
            gen_s=collected.gen_seconds,
            policy_version=self.trainer.version,
        )
        for n in cfg.tasks.rewards:
            metrics[f"reward/{n}"] = statistics.fmean(c.reward_components[n] for c in completions)
        metrics["step_s"] = time.perf_counter() - t0
        return metrics

    def status(self, metrics: dict[str, Any], steps: int) -> dict[str, Any]:
        """The record `swarmrl status` and the metrics endpoint show (see node/status.py)."""
        return {
            "version": software_version(),
            "pid": os.getpid(),
            "updated_at": time.time(),
            "run_dir": str(self.run_dir),
            "mode": self.cfg.swarm.mode,
            "model": self.cfg.model.name,
            "step": self.step,
            "steps": steps,
            "policy_version": self.trainer.version,
            "reward": metrics.get("reward_mean"),
            "reward_local": metrics.get("reward_local"),
            "correctness": metrics.get("reward/correctness"),
            "step_s": metrics.get("step_s"),
            "swarm": self.sharing.status() if self.sharing else None,
        }

    def close(self) -> None:
        """Leave the swarm (join mode); idempotent."""
        if self.sharing is not None:
            self.sharing.close()
            self.sharing = None

    # -- the loop ------------------------------------------------------------------------
    def _on_sigint(self, signum, frame) -> None:
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True
        print("\n[node] stopping after this step and saving (Ctrl-C again to abort)", flush=True)

    def run(self, steps: int, on_step: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        """Train until `steps` total steps (counting restored ones) or a stop request."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        previous_term = signal.signal(signal.SIGTERM, self._on_sigint)  # `lab down`, `docker stop`
        saved_at = self.step
        try:
            while self.step < steps and not self._stop:
                metrics = self.train_step()
                if on_step is not None:
                    on_step(self.step, metrics)
                if self.step % self.cfg.checkpoint.every == 0:
                    self.save()
                    saved_at = self.step
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
        # Only after a completed step: an exception mid-step may leave weights and step apart,
        # so then the last checkpoint stands.
        if self.step != saved_at:
            self.save()

    def request_stop(self) -> None:
        self._stop = True
