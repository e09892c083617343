"""Join mode: what a step takes from the swarm and gives back (SAPO).

    sharing = Sharing.open(cfg, run_dir, policy, tasks, trainer)
    external, info = sharing.take(step)      # up to J admitted, re-scored peer groups
    ... generate I + (J - len(external)) local groups, train on all of them ...
    sharing.publish(local_groups)            # announce what we trained on
    sharing.close()

`take` never waits on the network: it drains what the swarm layer admitted since the last step,
passes each group through `Admission` (re-scoring against our own ground truth, staleness,
zero variance, per-peer cap), and gives back what is there, possibly nothing.  Peers' text is
re-tokenized and scored by our policy (`swarm.peer_logprobs=recompute`, as in SAPO), or its
tokens and logprobs are kept when its tokenizer hash equals ours (`reuse`).
"""

from __future__ import annotations

import logging
import random
import time
from functools import partial
from pathlib import Path
from typing import Any

from node.admission import Admission, AdmissionConfig
from node.config import Config
from node.exchange import to_local, to_wire, tokenizer_hash
from node.rollout.base import Group, SamplingParams
from node.rollout.hf import render_prompt
from node.tasks.base import Prompt
from node.trainer import Trainer
from protocol import RolloutGroup, generate_key_file, load_key_file
from swarm.gossip import GossipConfig
from swarm.peer import SwarmConfig

log = logging.getLogger(__name__)


def load_identity(path: str | None, run_dir: Path):
    """The node's key: `swarm.identity`, or RUN_DIR/node.key (created on first use)."""
    key = Path(path).expanduser() if path else run_dir / "node.key"
    if not key.exists():
        if path:
            raise FileNotFoundError(f"swarm.identity: key file not found: {key} (create it with `swarmrl keygen`)")
        key.parent.mkdir(parents=True, exist_ok=True)
        generate_key_file(key)
    return load_key_file(key)


def end_of_turn_id(tokenizer) -> int:
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        return im_end
    return tokenizer.eos_token_id


def wants(task_names: frozenset[str], entry: Any) -> bool:
    """Fetch an announced group only if we can score it: a dataset we have, or a literal
    question (matched against our prompts when it arrives).  No tasks: fetch nothing."""
    if not task_names:
        return False
    task = getattr(entry.item, "task", None)
    return task is None or task in task_names or task == "question"


class Sharing:
    def __init__(self, cfg: Config, link: Any, policy: Any, tasks: dict, trainer: Trainer, tok_hash: str) -> None:
        self.cfg = cfg
        self.link = link  # a SwarmLink (tests: an object with the same attributes)
        self.tokenizer = policy.tokenizer
        self.model_id = cfg.model.name
        self.tok_hash = tok_hash
        self.trainer = trainer
        self.stop_id = end_of_turn_id(policy.tokenizer)
        self.examples = [(e.question, e.answer) for e in cfg.tasks.examples]
        sw = cfg.swarm
        self.admission = Admission(
            AdmissionConfig(sw.per_peer_cap, sw.max_age_s, sw.max_version_lag, sw.pool_size),
            tasks, cfg.tasks.rewards, cfg.rollout.max_new_tokens, self._localize, link.peer_id,
        )  # fmt: skip
        self.totals = {"external_used": 0, "external_filled": 0}

    @classmethod
    def open(cls, cfg: Config, run_dir: Path, policy: Any, tasks: dict, trainer: Trainer) -> Sharing:
        from node.swarm_link import SwarmLink

        sw = cfg.swarm
        identity = load_identity(sw.identity, run_dir)
        swarm_cfg = SwarmConfig(
            backend=sw.backend, swarm_id=sw.swarm_id, host=sw.host, port=sw.port,
            bootstrap=tuple(sw.bootstrap), allowlist_file=sw.allowlist, start_timeout=sw.start_timeout,
            gossip=GossipConfig(inbox_capacity=max(64, sw.pool_size)),
        )  # fmt: skip
        tok_hash = tokenizer_hash(policy.tokenizer)
        card = {"model_id": cfg.model.name, "tokenizer_hash": tok_hash, "hardware_class": policy.device.type,
                "tasks": tuple(sorted(tasks))}  # fmt: skip
        scorable = frozenset(tasks) if sw.external_groups > 0 else frozenset()  # J = 0: only give, never download
        link = SwarmLink(identity, swarm_cfg, want=partial(wants, scorable), card_fields=card).start()
        return cls(cfg, link, policy, tasks, trainer, tok_hash)

    # -- incoming ----------------------------------------------------------------------------
    def _localize(self, wire: RolloutGroup, prompt: Prompt, origin: str) -> Group:
        prompt_ids = render_prompt(self.tokenizer, self.cfg.tasks.system_prompt, prompt.question, self.examples)
        reuse = self.cfg.swarm.peer_logprobs == "reuse" and wire.tokenizer_hash == self.tok_hash
        return to_local(wire, prompt, prompt_ids, self.tokenizer, self.stop_id, self.cfg.rollout.max_new_tokens,
                        self.trainer.version, origin, reuse)  # fmt: skip

    def take(self, step: int) -> tuple[list[Group], dict[str, Any]]:
        """Up to J peer groups for this step, scored and with behaviour logprobs; never blocks."""
        want = self.cfg.swarm.external_groups
        now_ms = int(time.time() * 1000)
        for item in self.link.drain(max(64, 4 * want)):
            try:
                self.admission.offer(item.group_id, item.origin, item.group, now_ms)
            except Exception as e:  # a group that breaks our tokenizer or scorer is refused, not fatal
                self.admission.counts["error"] += 1
                log.warning("refused group %s from %s: %s", item.group_id[:12], item.origin[:16], e)
        for origin, reason in self.admission.pop_reports():
            self.link.report(origin, reason)
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        chosen = self.admission.take(want, rng, now_ms)
        groups = [c.group for c in chosen]
        fresh = [c for g in groups for c in g.completions if not c.behavior_logprobs]
        if fresh:
            for c, logps in zip(fresh, self.trainer.policy_logprobs(fresh)):
                c.behavior_logprobs = logps
        self.totals["external_used"] += len(groups)
        self.totals["external_filled"] += want - len(groups)
        info = {
            "swarm/external_groups": len(groups),
            "swarm/filled_locally": want - len(groups),
            "swarm/external_peers": len({c.origin for c in chosen}),
            "swarm/pool": len(self.admission.pool),
            "swarm/connected": float(self.link.connected),
        }
        return groups, info

    # -- outgoing ----------------------------------------------------------------------------
    def publish(self, groups: list[Group], sampling: SamplingParams) -> None:
        if not self.cfg.swarm.share or not groups:
            return
        wire = [to_wire(g, self.cfg.swarm.swarm_id, self.model_id, self.tok_hash, sampling) for g in groups]
        self.link.publish(wire)

    def status(self) -> dict[str, Any]:
        """Swarm part of the node's status: link state, peers, counters, admission verdicts."""
        link = self.link
        m = dict(link.last_metrics)
        scores = m.pop("peer_scores", {})
        return {
            "peer_id": link.peer_id,
            "addresses": link.addresses,
            "state": link.state,
            "last_error": link.last_error,
            "peers": int(m.get("connected_peers", 0)),
            "published": link.counts["published"],
            "received": int(m.get("admitted_groups", 0)),
            "admitted": self.admission.counts["admitted"],
            "used": self.totals["external_used"],
            "filled_locally": self.totals["external_filled"],
            "verdicts": dict(self.admission.counts),
            "rejections": {k[len("rejected."):]: v for k, v in m.items() if k.startswith("rejected.")},
            "peer_scores": scores,
            "link": dict(link.counts),  # publish_dropped, call_timeouts, start_failures, ...
        }

    def close(self) -> None:
        self.link.stop()
