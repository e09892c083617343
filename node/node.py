"""`Node`: builds the parts of one peer and drives the loop.

One step, top to bottom (`train_step`):

1. [join] admit what the swarm delivered: judge each group on the wire (node/admission.py),
   localize it for our policy (node/exchange.py), re-score it with our verifier, judge again,
   pool the survivors (node/replay/buffer.py); report proven liars to the swarm;
2. [join] take up to J pooled peer groups (`swarm.take`: uniform as SAPO, or by what they teach us)
   and give re-tokenized ones our behaviour log-probs; with `swarm.adaptive_j` this happens after
   step 4 instead, and the peer groups replace local groups that carry no gradient;
3. [replay] take up to `replay.replay_fraction` of I from recent local groups (node/replay/);
4. generate the rest of the local groups (I, plus any of J the swarm could not supply) on the
   prompts and with the G the replay layer plans, score them, and show them to the layer;
5. advantages over local, replayed and peer groups together; drop rows the algorithm refuses;
6. the PPO update (node/trainer.py); sync the engine's weights; keep the fresh groups for replay;
7. [join] publish the fresh local groups; log; checkpoint (in `run`).

This is the one place that knows that order; components (engine, trainer, replay layer,
admission, pool, the swarm link) never hold a reference to the node or to each other.  In solo mode nothing of the
swarm layer is imported and no socket is opened.

Guarantees: a Ctrl-C finishes the current step, saves a checkpoint and exits (a second Ctrl-C
aborts at once, leaving the last checkpoint); `resume()` restores weights, optimizer, RNG states,
step and every component's state (sampler, admission counters, the pool of peer groups), so the
next batch is the one an uninterrupted run would have drawn.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from node import checkpoint, distributed
from node.algos.api import advantages_with_keep, requirements
from node.collect import advantage_inputs, baseline_rewards, collect, filter_signal
from node.config import Config, dump_config
from node.exchange import to_local
from node.records import Group, Prompt, SamplingParams
from node.replay.layer import ReplayLayer
from node.replay.peer_stats import mean_token_nll
from node.rollout import Renderer, RolloutEngine, build_engine
from node.sampler import PromptSampler
from node.step_metrics import step_metrics
from node.tasks import build_tasks
from node.tasks.base import Task
from node.trainer import Trainer

log = logging.getLogger(__name__)


@functools.cache
def software_version() -> str:
    try:
        return importlib.metadata.version("swarmrl")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


@dataclass
class Parts:
    """What a node is made of.  `from_config` loads the real policy, tasks, renderer and engine;
    experiments pass toy ones that speak the same protocols (benchmarks/toy)."""

    policy: Any  # .model (nn.Module), .tokenizer (pad_token_id; callable for peers' text), .device
    tasks: list[Task]
    renderer: Renderer  # or anything with .ids(question), .requests(prompts), .end_of_turn
    engine: RolloutEngine
    reference: torch.nn.Module | None = None  # frozen reference policy (KL, ACE)

    @classmethod
    def from_config(cls, cfg: Config) -> Parts:
        from node.policy import load_policy, load_reference

        tasks = build_tasks(cfg.tasks)
        policy = load_policy(cfg.model)
        renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
        ref = load_reference(policy) if requirements(cfg.algorithm).reference_model else None
        return cls(policy, tasks, renderer, build_engine(cfg.rollout, policy, renderer), ref)


class Node:
    def __init__(self, cfg: Config, run_dir: Path | None = None, parts: Parts | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.logging.run_dir)
        torch.manual_seed(cfg.seed)
        parts = parts or Parts.from_config(cfg)
        self.policy, self.renderer, self.engine = parts.policy, parts.renderer, parts.engine
        self.tasks = {t.name: t for t in parts.tasks}
        self.sampler = PromptSampler(parts.tasks, [s.weight for s in cfg.tasks.sources], cfg.seed)
        self.replay = ReplayLayer(cfg.replay, self.sampler, cfg.rollout.group_size, cfg.seed, cfg.model.name,
                                  filter_signal(cfg))  # fmt: skip
        self.req = requirements(cfg.algorithm)
        self.trainer = Trainer(
            self.policy.model, cfg.trainer, cfg.algorithm, self.req, self.policy.tokenizer.pad_token_id,
            self.policy.device, cfg.rollout.temperature, cfg.rollout.max_new_tokens, parts.reference, cfg.seed,
        )  # fmt: skip
        if distributed.world() > 1:  # one node on several GPUs: node/distributed.py
            self.engine = distributed.attach(self.engine, self.trainer, cfg)
        self.sampling = SamplingParams(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)
        self.step = 0
        self._stop = False
        self.sharing = None
        self.checkpoints_skipped: list[str] = []  # corrupt checkpoints resume fell back past
        self.last_groups: list[Group] = []  # the last step's groups (the CLI's sample table reads them)
        if cfg.swarm.mode == "join":  # solo mode imports nothing of the swarm layer
            from node.peers import Peers
            from node.sharing import Sharing

            self.sharing = Sharing.open(cfg, self.run_dir, self.policy, self.tasks)
            self.peers = Peers(cfg, self.tasks, self.sharing, filter_signal(cfg))
            self.admission, self.pool = self.peers.admission, self.peers.pool
            self._by_key: dict[str, Prompt] | None = None  # prompt key -> our training prompt

    # -- state -------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def components(self) -> dict[str, dict]:
        """Every stateful component's `state_dict()`, by the name it is checkpointed under."""
        out = {"sampler": self.sampler.state_dict(), "replay": self.replay.state_dict()}
        if self.sharing is not None:
            out |= self.peers.state_dict()
        return out

    def _load_components(self, state: dict[str, dict]) -> None:
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        if "replay" in state:  # checkpoints from before the replay layer start with empty estimates
            self.replay.load_state_dict(state["replay"], self._find_prompt)
        if self.sharing is not None and "pool" in state:  # a solo checkpoint joining a swarm starts empty
            self.peers.load_state_dict(state, self._find_prompt)

    def _find_prompt(self, task: str, question: str):
        return self.tasks[task].lookup(question) if task in self.tasks else None

    def _find_by_key(self, task: str, key: str) -> Prompt | None:
        """Our training prompt with this outcome-summary key (the key already names the task); an
        index built on first use over the tasks that can list their prompts (others never match)."""
        if self._by_key is None:
            from node.exchange import prompt_key_of

            self._by_key = {}
            for t in self.tasks.values():
                if hasattr(t, "__len__") and hasattr(t, "prompt"):
                    for i in range(len(t)):
                        p = t.prompt(i)
                        self._by_key.setdefault(prompt_key_of(p), p)
        return self._by_key.get(key)

    def save(self) -> Path:
        model, optimizer = distributed.whole(self.policy.model, self.trainer.optimizer)  # FSDP2: gathered
        return checkpoint.save(
            self.ckpt_dir, self.step, self.trainer.version, model, optimizer,
            dump_config(self.cfg), self.cfg.model.name, self.cfg.checkpoint.keep, components=self.components(),
        )  # fmt: skip

    def resume(self, path: Path | None = None) -> bool:
        """Restore the given checkpoint, or the newest good one (falling back past corrupt ones
        with a warning); False if there is none."""
        (model, opt), name = distributed.loadable(self.policy.model, self.trainer.optimizer), self.cfg.model.name
        if path is not None:
            restored = checkpoint.load(path, model, opt, name)
        else:
            restored = checkpoint.load_latest(self.ckpt_dir, model, opt, name)
        if restored is None:
            return False
        self.step = restored.step
        self.trainer.version = restored.policy_version
        self.checkpoints_skipped = [str(p) for p, _ in restored.skipped]
        self._load_components(restored.components)
        self.engine.sync_weights(restored.policy_version)
        return True

    # -- one step ------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        adaptive = self.sharing is not None and cfg.swarm.adaptive_j
        peer, swarm_info = self.peer_groups() if self.sharing and not adaptive else ([], {})
        now_ms = int(time.time() * 1000)
        replayed = self.replay.replay(self.replay.replay_count(cfg.rollout.prompts_per_step), self.step,
                                      self.trainer.version, now_ms)  # fmt: skip
        n_local = (
            cfg.rollout.prompts_per_step
            - len(replayed)
            + (cfg.swarm.external_groups - len(peer) if self.sharing and not adaptive else 0)
        )
        collected = collect(
            self.engine,
            self.renderer,
            self.replay,
            self.tasks,
            cfg,
            self.req,
            self.step,
            self.sampling,
            n_local,
        )
        local, baselines = collected.groups, dict(collected.baselines)
        trained_local = local
        if adaptive:  # peer groups take the places of our groups that carry no gradient
            empty = [i for i, g in enumerate(local) if not g.has_signal(self.replay.signal)]
            peer, swarm_info = self.peer_groups(min(cfg.swarm.external_groups, len(empty)))
            replaced = set(empty[: len(peer)])
            trained_local = [g for i, g in enumerate(local) if i not in replaced]
            swarm_info["swarm/replaced_zero_var"] = len(replaced)
        if (replayed or peer) and self.req.baseline_rewards:  # ReMax: greedy baselines for those prompts too
            baselines |= baseline_rewards(self.engine, self.renderer, replayed + peer, self.tasks, cfg)
        groups = trained_local + replayed + peer
        self.last_groups = groups
        ref = (
            self.trainer.ref_logprobs([c for g in groups for c in g.completions])
            if self.req.ref_logprobs
            else None
        )
        completions, inputs, keep = advantage_inputs(groups, baselines, cfg, self.req, ref)
        out = advantages_with_keep(inputs, cfg.algorithm)
        rows = out.keep if keep is None else out.keep & keep
        train_rows = [c for c, k in zip(completions, rows.tolist()) if k]
        if peer:  # drift and usefulness per origin, from this step's rows
            adv = dict(zip(map(id, completions), out.advantages.tolist()))
            adv = {i: a for (i, a), k in zip(adv.items(), rows.tolist()) if k}
            own_nll = mean_token_nll(c.behavior_logprobs for g in local for c in g.completions)
            swarm_info |= self.peers.record(peer, self._ours, own_nll, adv)
        newest = self.admission.newest if self.sharing else None  # the origins' clocks (staleness_clock)
        metrics = self.trainer.update(train_rows, out.advantages[rows], newest)
        self.engine.sync_weights(self.trainer.version)
        self.replay.keep(local, self.step, now_ms, self.sharing.tok_hash if self.sharing else "")
        if self.sharing:
            self.sharing.publish(local, self.sampling)
            metrics.update(swarm_info, local_groups=len(local))
        self.step += 1
        metrics.update(step_metrics(cfg, groups, local, completions, out.advantages[rows], collected))
        metrics.update(self.replay.metrics(groups))
        engine_metrics = getattr(self.engine, "metrics", None)  # e.g. rollout/compile_s, once
        metrics.update(engine_metrics() if engine_metrics else {})
        metrics.update(policy_version=self.trainer.version, step_s=time.perf_counter() - t0)
        return metrics

    # -- peer groups (join mode) -----------------------------------------------------------
    def peer_groups(self, want: int | None = None) -> tuple[list[Group], dict[str, Any]]:
        """Admit what arrived, then up to `want` pooled groups with behaviour log-probs; never blocks.
        `want=None`: J, and local groups make up any shortfall (`swarm/filled_locally`); a number
        (`swarm.adaptive_j`): nothing is made up, the zero-variance local groups stay."""
        fill = want is None
        want = self.cfg.swarm.external_groups if want is None else want
        now_ms = int(time.time() * 1000)
        peers = self.peers
        for prompt, won, n in peers.summaries(self._find_by_key):  # evidence before any fetch
            self.replay.observe_counts(prompt, won, n, self.step)
        for item in self.sharing.drain():
            group = peers.admit(item, now_ms, self.trainer.version, self._localize)
            if group is not None:
                self.replay.observe([group], self.step, local=False)  # discounted evidence of difficulty
        for origin, why in peers.reports():
            self.sharing.report(origin, why)
        rng = random.Random(self.cfg.seed * 1_000_003 + self.step)
        chosen, values = peers.take(want, rng, now_ms, self.replay.means)
        groups = self._with_behavior([e.group for e in chosen])
        short = want - len(groups) if fill else 0
        peers.totals.update(used=len(groups), filled_locally=short)
        info = {
            "swarm/external_groups": len(groups),
            "swarm/filled_locally": short,
            "swarm/external_peers": len({e.origin for e in chosen}),
            "swarm/pool": len(self.pool),
            "swarm/connected": float(self.sharing.link.connected),
        }
        if values and chosen:
            info["swarm/take_value"] = sum(values[e.group_id] for e in chosen) / len(chosen)
        return groups, info

    def _localize(self, wire, prompt, origin: str) -> Group:
        reuse = self.cfg.swarm.peer_logprobs == "reuse" and wire.tokenizer_hash == self.sharing.tok_hash
        return to_local(wire, prompt, self.renderer.ids(prompt.question), self.policy.tokenizer,
                        self.renderer.end_of_turn, self.cfg.rollout.max_new_tokens, self.trainer.version,
                        origin, reuse)  # fmt: skip

    def _with_behavior(self, groups: list[Group]) -> list[Group]:
        """Re-tokenized peer text gets our current policy's log-probs as its behaviour (SAPO).
        Keeps our log-probs of every peer completion in `self._ours` (by id) for the drift measure."""
        todo = [c for g in groups for c in g.completions if not c.behavior_logprobs and c.completion_ids]
        filled = dict(zip(map(id, todo), self.trainer.policy_logprobs(todo) if todo else []))
        v = self.trainer.version
        self._ours = {}
        out = []
        for g in groups:
            comps = []
            for c in g.completions:
                if id(c) in filled:
                    c = c.with_behavior(filled[id(c)], v)
                    self._ours[id(c)] = c.behavior_logprobs
                comps.append(c)
            out.append(g.replace_completions(comps))
        return out

    # -- status and the loop -----------------------------------------------------------------
    def status(self, metrics: dict[str, Any], steps: int) -> dict[str, Any]:
        """The record `swarmrl status` and the metrics endpoint show (see node/status.py)."""
        swarm = None
        if self.sharing:
            swarm = self.sharing.status() | self.peers.status()
            swarm["peer_signal_share"] = metrics.get("swarm/peer_signal_share")
        return {
            "version": software_version(),
            "pid": os.getpid(),
            "updated_at": time.time(),
            "run_dir": str(self.run_dir),
            "mode": self.cfg.swarm.mode,
            "model": self.cfg.model.name,
            "ranks": distributed.world(),  # > 1: one node on several GPUs (rank 0 writes this)
            "step": self.step,
            "steps": steps,
            "policy_version": self.trainer.version,
            "reward": metrics.get("reward_mean"),
            "reward_local": metrics.get("reward_local"),
            "correctness": metrics.get("reward/correctness"),
            "step_s": metrics.get("step_s"),
            "checkpoints_skipped": len(self.checkpoints_skipped),
            "replay": self.replay.status(),
            "swarm": swarm,
        }

    def close(self) -> None:
        """Leave the swarm (join mode); idempotent."""
        if self.sharing is not None:
            self.sharing.close()
            self.sharing = None

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
