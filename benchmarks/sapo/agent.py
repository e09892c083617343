"""One toy SAPO agent process: the node's own `Node` in join mode, built from toy parts.

SAPO (Amico et al. 2025, "Sharing is Caring: Efficient LM Post-Training with Collective RL
Experience Sharing"): each round a node trains on I of its own rollout groups plus J groups taken
from the swarm.  Here a round is one `Node.train_step()` of a node whose policy, task, renderer
and engine are the T2 toy (`benchmarks/toy/adapter.py`), with `rollout.prompts_per_step = I` and
`swarm.external_groups = J`, over a real hivemind link (`node/sharing.py` `Sharing.open`).  So
admission (`node/admission.py`: re-scoring with our verifier, claimed-reward mismatch, zero
variance on correctness), the pool and its choice (`node/replay/buffer.py`: staleness, per-peer cap,
uniform draw), advantages and the PPO update (`node/trainer.py`) are the node's; this file only
wires processes, waits, measures and, for two experiments, wraps the link:

- the soft barrier: before step r, the agent drains the link until every other agent has
  published at least r steps of I groups, at most `--wait-s` (the node itself never waits); what
  it drained is handed to the node's own `drain` at the step's start, unchanged;
- `--liar` wraps the node's publish path: half the completions of each published group are
  replaced by well-formed wrong answers and every claimed correctness is the opposite of ours
  (`liar_groups`); the liar's own training is untouched;
- `--own-as-external` (a control) hands the node, instead of the peers' groups, 3 x I extra
  groups of its own, sampled by its engine and sent through the wire format under three made-up
  origins, so they take exactly the peers' path (localize, re-score, judge, pool, log-probs).

Each round appends a JSON line to ``OUT/agentK.jsonl``: ``reward`` is the mean correctness of the
round's local groups (I, plus any of J the swarm could not fill), ``generated`` the completions
sampled, and, where the chosen peer groups carried their sampler's log-probs, their drift from
our policy (`drift`).  Process protocol with `run.py` (files in OUT, polled, never a fixed
sleep): ``agentK.ready`` once the link sees the other agents, start on ``go``, ``agentK.json``
(held-out pass rates, admission verdicts, swarm counters) when done, keep serving until ``stop``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.toy.adapter import (
    ToyAddition,
    ToyTokenizer,
    heldout_pass,
    parse_question,
    toy_config,
    toy_parts,
    warm_model,
)
from benchmarks.toy.seqmodel import EOS, MAX_NEW, GPTConfig
from node.exchange import to_wire
from node.node import Node
from node.records import Group
from node.scoring import score_group, score_groups
from swarm.inbox import InboxItem
from swarm.testing import wait_for_sync as wait_for

OWN_ORIGINS = 3  # --own-as-external: the extra groups come from this many made-up origins


def liar_groups(groups: list[Group], rng: random.Random, task: ToyAddition) -> list[Group]:
    """What a liar publishes: each completion replaced with probability 1/2 by a well-formed wrong
    answer (``>`` and the digits of the sum + d, d in 1..9, least significant first), and claims
    that are the opposite of the truth.  Claiming 1.0 everywhere would only make zero-variance
    groups, which a GRPO receiver drops anyway."""
    tok, out = ToyTokenizer(), []
    for g in groups:
        a, b = parse_question(g.prompt.question)
        comps = []
        for c in g.completions:
            if rng.random() < 0.5:
                text = ">" + str(a + b + rng.randint(1, 9))[::-1]
                ids = tok(text)["input_ids"] + [EOS]
                c = replace(c, completion_ids=ids, behavior_logprobs=[0.0] * len(ids), text=text,
                            finish_reason="stop")  # fmt: skip
            comps.append(c)
        truth = score_group(g.replace_completions(comps), task, {"correctness": 1.0}, MAX_NEW)
        out.append(truth.replace_completions(
            [c.scored(1.0 - c.reward, {"correctness": 1.0 - c.reward}) for c in truth.completions]
        ))  # fmt: skip
    return out


def drift(ours: list[list[float]], theirs: list[list[float]]) -> dict[str, float]:
    """How far our policy is from the samplers of the peer completions we train on: the mean
    sequence log-ratio log pi_ours(y) - log mu_peer(y), and the share of tokens whose ratio is off
    1 by more than 0.2."""
    seq = [sum(o) - sum(t) for o, t in zip(ours, theirs, strict=True)]
    tok = [abs(math.exp(a - b) - 1) > 0.2 for o, t in zip(ours, theirs) for a, b in zip(o, t, strict=True)]
    return {"ext_seq_logratio": sum(seq) / len(seq), "ext_far_tokens": sum(tok) / max(len(tok), 1)}


class Agent:
    """A toy `Node` in join mode, plus the wrappers of the experiments (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        config = GPTConfig(d_model=args.d_model, n_layer=args.n_layer)
        if args.regime == "easy":
            net = warm_model(args.seed, config, args.cache)
        else:  # the sharing experiment's starts (benchmarks/sapo/lockstep.py)
            from benchmarks.sapo.lockstep import warm

            net = warm(args.regime, args.seed, args.index, Path(args.cache), small=args.d_model != 64)
        self.task = ToyAddition(args.seed, size=args.size)  # every agent of a run has the same questions
        stream = 1000 * args.seed + args.index  # its own prompts, samples and mini-batch order
        tis = (
            {"is_level": "token", "is_cap": 2.0, "is_mode": "truncate"}
            if args.peer_logprobs == "reuse"
            else {}
        )
        if args.gate:  # the foreign-sample gate on the per-token log-ratio against the peer's sampler
            tis |= {"foreign_gate": "weight", "foreign_gate_stat": "ratio"}
        swarm = {
            "mode": "join", "backend": "hivemind", "swarm_id": args.swarm_id, "host": "127.0.0.1",
            "bootstrap": list(args.bootstrap), "external_groups": args.J,
            "per_peer_cap": args.per_peer_cap or max(1, math.ceil(args.J / 2)),
            "max_version_lag": args.max_version_lag, "peer_logprobs": args.peer_logprobs,
            "start_timeout": args.start_timeout, "take": args.take, "adaptive_j": args.adaptive_j,
        }  # fmt: skip
        cfg = toy_config(stream, {
            "model": {"name": f"tinygpt-d{args.d_model}-l{args.n_layer}"}, "rollout": {"prompts_per_step": args.I},
            "trainer": {"lr": args.lr}, "algorithm": tis, "swarm": swarm,
        })  # fmt: skip
        self.parts = toy_parts(net, self.task, stream)
        self.node = Node(cfg, Path(args.out) / f"agent{args.index}", self.parts)
        self.rng = random.Random(stream)
        sharing = self.node.sharing
        self._drain_link = sharing.drain
        self.buffer: list[InboxItem] = []
        self.received = 0  # peer groups the link delivered so far
        self.wire_logprobs: dict[str, list[list[float]]] = {}  # group id -> the sampler's log-probs
        self.round_drift: dict[str, float] = {}
        sharing.drain = self._drain_for_node
        if args.liar:
            publish = sharing.publish
            sharing.publish = lambda groups, sampling: publish(
                liar_groups(groups, self.rng, self.task), sampling
            )
        take = self.node.pool.take
        self.node.pool.take = lambda *a, **k: self._measure(take(*a, **k))

    # -- the link, as the node sees it -------------------------------------------------------------
    def _pull(self) -> None:
        got = self._drain_link()
        self.received += len(got)
        self.buffer += got

    def _drain_for_node(self) -> list[InboxItem]:
        if self.args.own_as_external:
            self._drain_link()  # peers' groups are fetched by the link; the control ignores them
            items = self._own_items()
        else:
            self._pull()
            items, self.buffer = self.buffer, []
        for it in items:
            lps = [c.behavior_logprobs for c in it.group.completions]
            if all(lp is not None for lp in lps):
                self.wire_logprobs[it.group_id] = [list(lp) for lp in lps]
        return items

    def _own_items(self) -> list[InboxItem]:
        """--own-as-external: 3 x I extra groups of our own, in the wire format."""
        node, n = self.node, OWN_ORIGINS * self.args.I
        prompts = [self.task.prompt(self.rng.randrange(len(self.task))) for _ in range(n)]
        groups = node.engine.generate(
            node.renderer.requests(prompts), node.cfg.rollout.group_size, node.sampling
        )
        groups = score_groups(groups, node.tasks, node.cfg.tasks.rewards, node.cfg.rollout.max_new_tokens)
        now = int(time.time() * 1000)
        items = []
        for i, g in enumerate(groups):
            wire = to_wire(
                g, node.cfg.swarm.swarm_id, node.cfg.model.name, node.sharing.tok_hash, node.sampling
            )
            gid = f"own{node.step}-{i}"
            wire = replace(wire, origin=f"own{i % OWN_ORIGINS}", created_ms=now)
            items.append(InboxItem(gid, wire.origin, wire, 0.0, 0))
        return items

    def _measure(self, chosen: list) -> list:
        """Drift of the chosen peer groups from our policy, where their sampler's log-probs came
        with them and their tokens are ours (the toy vocabulary is shared, so they always are)."""
        ours_rows, theirs_rows = [], []
        for e in chosen:
            lps = self.wire_logprobs.pop(e.group_id, None)
            if lps is None or any(
                len(lp) != len(c.completion_ids) for lp, c in zip(lps, e.group.completions)
            ):
                continue
            ours_rows += list(e.group.completions)
            theirs_rows += lps
        self.round_drift = {}
        if ours_rows:
            self.round_drift = drift(self.node.trainer.policy_logprobs(ours_rows), theirs_rows)
        if len(self.wire_logprobs) > 4096:  # groups never chosen
            self.wire_logprobs.clear()
        return chosen

    # -- one round -------------------------------------------------------------------------------
    def round(self, r: int) -> dict[str, Any]:
        a = self.args
        t0 = time.monotonic()
        waited = 0.0
        if a.J and not a.own_as_external and r > 0:
            expected = (a.n_agents - 1) * a.I * r  # every peer has published its first r steps

            def arrived() -> bool:
                self._pull()
                return self.received >= expected

            wait_for(arrived, a.wait_s, interval=0.02)
            waited = time.monotonic() - t0
        before = self.parts.engine.generated
        m = self.node.train_step()
        keep = ("reward_local", "swarm/external_groups", "swarm/filled_locally", "swarm/pool", "clip_frac",
                "local_groups", "zero_var_groups", "rows_dropped")  # fmt: skip
        row = {"round": r, "reward": m["reward_local"], "generated": self.parts.engine.generated - before}
        row |= {k.split("/")[-1]: m[k] for k in keep[1:] if k in m}
        return row | self.round_drift | {"waited": waited, "seconds": time.monotonic() - t0}

    def evaluate(self) -> dict[str, float]:
        return heldout_pass(self.parts.engine, self.parts.renderer, self.task, seed=70_000 + self.args.seed)

    def members_seen(self) -> int:
        """Members of the swarm the link knows (from its last metrics; pulling refreshes them)."""
        self._pull()
        return int(self.node.sharing.link.last_metrics.get("members", 0))


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)  # the runner never reads half a file


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out, k = Path(args.out), args.index
    agent = Agent(args)
    try:
        if not wait_for(lambda: agent.members_seen() >= args.n_agents - 1, args.start_timeout, 0.1):
            raise TimeoutError(f"saw {agent.members_seen()} of {args.n_agents - 1} peers")
        write_json(out / f"agent{k}.ready", {"peer_id": agent.node.sharing.peer_id})
        if not wait_for(lambda: (out / "go").exists(), args.start_timeout * 4, 0.1):
            raise TimeoutError("no go file from the runner")
        eval_start = agent.evaluate()
        t0 = time.monotonic()
        with open(out / f"agent{k}.jsonl", "w") as f:
            for r in range(args.rounds):
                f.write(json.dumps(agent.round(r)) + "\n")
                f.flush()
        seconds = time.monotonic() - t0
        node = agent.node
        summary = {"args": vars(args), "peer_id": node.sharing.peer_id, "seconds": seconds,
                   "eval_start": eval_start, "eval_end": agent.evaluate(), "generated": agent.parts.engine.generated,
                   "verdicts": dict(node.admission.counts) | dict(node.pool.counts),
                   "swarm": {k2: v for k2, v in node.sharing.status().items() if k2 in ("published", "received", "rejections", "link")},
                   }  # fmt: skip
        write_json(out / f"agent{k}.json", summary)
        wait_for(lambda: (out / "stop").exists(), args.start_timeout * 30, 0.2)
    finally:
        agent.node.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sapo.agent", description=__doc__.split("\n")[0])
    p.add_argument("--index", type=int, required=True, help="agent number in the run (seeds its streams)")
    p.add_argument("--seed", type=int, required=True, help="run seed: warm start, task and held-out set")
    p.add_argument("--I", type=int, default=4, help="local groups per round (rollout.prompts_per_step)")
    p.add_argument("--J", type=int, default=4, help="external groups per round (swarm.external_groups)")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--out", required=True, help="run folder shared with run.py")
    p.add_argument("--cache", required=True, help="folder of cached warm starts")
    p.add_argument("--bootstrap", nargs="*", default=[], help="bootstrap multiaddrs")
    p.add_argument("--swarm-id", default="sapo-toy")
    p.add_argument("--n-agents", type=int, default=4, help="agents to see before reporting ready")
    p.add_argument("--wait-s", type=float, default=2.0, help="longest wait for the peers' groups of a round")
    p.add_argument("--per-peer-cap", type=int, default=0, help="swarm.per_peer_cap; 0: ceil(J / 2)")
    p.add_argument("--max-version-lag", type=int, default=2, help="swarm.max_version_lag (rounds)")
    p.add_argument("--liar", action="store_true", help="publish wrong answers with inverted claims")
    p.add_argument("--peer-logprobs", choices=["recompute", "reuse"], default="recompute",
                   help="swarm.peer_logprobs; reuse also sets token-level truncated IS (cap 2)")  # fmt: skip
    p.add_argument("--own-as-external", action="store_true",
                   help="control: the J groups are our own extra samples sent through the same path")  # fmt: skip
    p.add_argument("--lr", type=float, default=3e-4, help="trainer.lr")
    p.add_argument("--take", choices=["uniform", "information"], default="uniform", help="swarm.take")
    p.add_argument("--adaptive-j", action="store_true", help="swarm.adaptive_j")
    p.add_argument("--gate", action="store_true",
                   help="algorithm.foreign_gate=weight on the ratio statistic (with --peer-logprobs reuse)")  # fmt: skip
    p.add_argument("--regime", choices=["easy", "sparse", "hetero"], default="easy",
                   help="starting models: the cached warm start (easy) or lockstep.py's sparse / hetero ones")  # fmt: skip
    p.add_argument("--size", type=int, default=20_000, help="training questions")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--start-timeout", type=float, default=60.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse())
