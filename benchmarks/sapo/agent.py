"""One toy SAPO agent process: a warm-started `TinyGPT` sharing rollout groups over hivemind.

SAPO (Amico et al. 2025, "Sharing is Caring: Efficient LM Post-Training with Collective RL
Experience Sharing"): each round a node trains on I of its own rollout groups plus J groups
taken from the swarm.  One round here (`Agent.round`):

1. sample I groups of G completions on problems from this agent's own seeded stream;
2. publish each as a `RolloutGroup` (question text, completion texts, claimed correctness);
3. drain the inbox into a pool through `sharing.admit` (re-scored here; zero-variance and
   stale groups dropped), until J groups are usable or every other agent's I groups of this
   round have arrived (a soft barrier that keeps agents in step), at most `--wait-s`;
4. take J with `sharing.select_external`; a shortfall is filled with extra local groups, counted;
5. train on the I + J groups with GRPO (`Trainer.train_on`, the T2 settings of `exp_t2`), with
   external log-probs recomputed under the local policy, and append a JSON line to
   ``OUT/agentK.jsonl``: ``reward`` is the mean correctness of the round's I local groups.

Options for the experiments of `run.py`: `--liar` (publishes `sharing.liar_rewrite` groups),
`--trust-claims` (ablation: train on the peers' claims), `--d-model/--n-layer` (mixed sizes),
and three diagnostics of why sharing hurt on this harness: `--peer-logprobs reuse` (train
against the peer's own sampler log-probs with token-level truncated IS), `--own-as-external`
(the J groups are our own extra samples sent through the same path) and `--lr`.  Every agent
sends its sampler log-probs with its groups, so each round also logs the drift between the
local policy and the peers' samplers on the completions it trains on (`sharing.drift`).

Process protocol with `run.py` (files in OUT, polled, never a fixed sleep): the agent writes
``agentK.ready`` once its peer is up and sees the other agents, starts on ``go``, writes
``agentK.json`` (held-out pass rates, counters, swarm metrics) when done, and keeps serving its
groups to slower peers until ``stop`` appears.  Torch work runs in a worker thread so the event
loop keeps answering fetches while the agent trains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from benchmarks.sapo.sharing import (
    Candidate,
    admit,
    drift,
    external_rollouts,
    fresh,
    groups_of,
    liar_rewrite,
    select_external,
    to_wire,
    usable,
    warm_model,
)
from benchmarks.toy.exp_t2 import LR, MINIBATCHES, G, advantage_inputs, eval_set, level_pass, select_rollouts
from benchmarks.toy.seqmodel import LEVELS, PROMPT_LEN, GPTConfig, Rollouts, Trainer, make_problems, sample
from node.algos import api
from node.algos.config import AlgorithmConfig
from protocol import Identity
from swarm.gossip import GossipConfig
from swarm.peer import SwarmConfig, SwarmPeer
from swarm.testing import wait_for

EVAL_PER_LEVEL, EVAL_SAMPLES = 64, 4  # held-out set: 256 problems, 4 samples each


class Agent:
    """The model, trainer, random streams and external pool of one agent; `round` is one SAPO round."""

    def __init__(self, args: argparse.Namespace, peer: SwarmPeer) -> None:
        self.args, self.peer = args, peer
        config = GPTConfig(d_model=args.d_model, n_layer=args.n_layer)
        self.model = warm_model(args.seed, config, Path(args.cache))
        self.model_id = f"tinygpt-d{args.d_model}-l{args.n_layer}"
        # reuse: token-level truncated IS against the peer's sampler (exp_t2's "tis" arm)
        tis = (
            {"is_level": "token", "is_cap": 2.0, "is_mode": "truncate"}
            if args.peer_logprobs == "reuse"
            else {}
        )
        self.algo = AlgorithmConfig(advantage="grpo", **tis)
        self.trainer = Trainer(self.model, self.algo, lr=args.lr)
        stream = 1000 * args.seed + args.index  # each agent its own problems and samples
        self.gen = torch.Generator().manual_seed(stream)
        self.rng = random.Random(stream)
        self.cap = args.per_peer_cap or max(1, math.ceil(args.J / 2))
        self.pool: list[Candidate] = []
        self.counts: Counter[str] = Counter()
        self.lies_by_origin: Counter[str] = Counter()
        self.received_this_round = 0

    def sample_groups(self, n: int) -> Rollouts:
        levels = torch.tensor(LEVELS)[torch.randint(0, len(LEVELS), (n,), generator=self.gen)]
        return sample(self.model, make_problems(levels, self.gen), G, self.gen, version=self.trainer.version)

    async def publish(self, roll: Rollouts) -> None:
        comp, claims = roll.tokens[:, PROMPT_LEN:], roll.correct.float()
        if self.args.liar:
            comp, claims = liar_rewrite(roll.problems, comp, self.gen)
        for _, rows in groups_of(roll):
            a, b = int(roll.problems.a[rows][0]), int(roll.problems.b[rows][0])
            blp = None if self.args.liar else roll.behavior_logprobs[rows]
            args = (self.args.swarm_id, self.model_id, self.trainer.version, blp)
            group = to_wire(a, b, comp[rows], claims[rows], *args)
            await self.peer.publish(group)
            self.counts["published"] += 1

    def refill(self, round_: int) -> int:
        """Move admitted groups from the inbox into the pool; how many are usable now."""
        for item in self.peer.inbox.drain():
            c = admit(item.group, item.origin, round_, self.args.trust_claims)
            if c is None:
                self.counts["malformed"] += 1
                continue
            self.counts["received"] += 1
            self.received_this_round += 1
            self.lies_by_origin[c.origin[-8:]] += c.lies
            if c.informative:
                self.pool.append(c)
            else:
                self.counts["zero_variance"] += 1
        kept = fresh(self.pool, round_)
        self.counts["stale"] += len(self.pool) - len(kept)
        self.pool = kept
        return usable(self.pool, self.cap)

    def external(self, chosen: list[Candidate]) -> tuple[Rollouts, dict[str, float]]:
        """The chosen groups with recomputed log-probs (or, with reuse, the peers'), and the drift
        between the local policy and the peers' samplers where the peers sent their log-probs."""
        ext = external_rollouts(self.model, chosen, self.trainer.version)
        peer = [c.behavior for c in chosen if c.behavior is not None]
        if len(peer) < len(chosen):
            return ext, {}
        mu = torch.cat(peer) * ext.mask
        stats = drift(ext.behavior_logprobs, mu, ext.mask)
        if self.args.peer_logprobs == "reuse":
            ext.behavior_logprobs = mu
        return ext, stats

    def own_pool(self, r: int) -> None:
        """Control for `--own-as-external`: the "peers" are this agent's own extra groups, sent
        through the same wire, re-scoring and log-prob path (3 origins of I groups each)."""
        extra = self.sample_groups(3 * self.args.I)
        comp = extra.tokens[:, PROMPT_LEN:]
        for g, (_, rows) in enumerate(groups_of(extra)):
            a, b = int(extra.problems.a[rows][0]), int(extra.problems.b[rows][0])
            blp = extra.behavior_logprobs[rows]
            wire = to_wire(a, b, comp[rows], extra.correct[rows].float(), "own", self.model_id, 0, blp)
            c = admit(wire, f"own{g % 3}", r)
            if c is not None and c.informative:
                self.pool.append(c)

    def train(self, parts: list[tuple[Rollouts, torch.Tensor]]) -> dict[str, float]:
        self.rng.shuffle(parts)  # local and external groups mixed across the mini-batches
        batch = select_rollouts(parts, len(parts))
        out = api.advantages_with_keep(advantage_inputs(batch, with_format=False), self.algo)
        return self.trainer.train_on(batch, out.advantages, out.keep, MINIBATCHES)

    async def round(self, r: int) -> dict[str, Any]:
        t0 = time.monotonic()
        a = self.args
        local = await asyncio.to_thread(self.sample_groups, a.I)
        await self.publish(local)
        chosen: list[Candidate] = []
        waited, stats = 0.0, {}
        if a.J and a.own_as_external:
            self.pool = []
            await asyncio.to_thread(self.own_pool, r)
        elif a.J:  # until J are usable or every peer's groups of this round are in (all share I)
            self.received_this_round = 0
            expected = (a.n_agents - 1) * a.I
            done = lambda: self.refill(r) >= a.J or self.received_this_round >= expected  # noqa: E731
            waited = time.monotonic()
            await wait_for(done, a.wait_s, interval=0.02)
            waited = time.monotonic() - waited
        if a.J:
            chosen = select_external(self.pool, a.J, self.cap, self.rng)
            self.pool = [c for c in self.pool if all(c is not x for x in chosen)]
        n_fill = a.J - len(chosen)
        parts = groups_of(local)
        if n_fill:
            fill = await asyncio.to_thread(self.sample_groups, n_fill)
            parts += groups_of(fill)
        if chosen:
            ext, stats = await asyncio.to_thread(self.external, chosen)
            parts += groups_of(ext)
        m = await asyncio.to_thread(self.train, parts)
        return {
            "round": r,
            "reward": float(local.correct.float().mean()),
            "external": len(chosen),
            "filled": n_fill,
            "ext_truth": float(torch.cat([c.truth for c in chosen]).mean()) if chosen else None,
            "ext_origins": len({c.origin for c in chosen}),
            "pool": len(self.pool),
            "entropy": m.get("entropy_all"),
            **stats,
            "waited": waited,
            "seconds": time.monotonic() - t0,
        }

    def evaluate(self) -> dict[str, float]:
        gen = torch.Generator().manual_seed(70_000 + self.args.seed)
        return level_pass(self.model, eval_set(self.args.seed, EVAL_PER_LEVEL), EVAL_SAMPLES, gen)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)  # the runner never reads half a file


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out, k = Path(args.out), args.index
    gossip = GossipConfig(sync_interval=1.0, card_interval=2.0, card_ttl=30.0)
    config = SwarmConfig(backend="hivemind", swarm_id=args.swarm_id, host="127.0.0.1",
                         bootstrap=tuple(args.bootstrap), gossip=gossip)  # fmt: skip
    fetch = args.J > 0 and not args.own_as_external
    want = (lambda entry: True) if fetch else (lambda entry: False)  # 8/0 never fetches
    peer = await SwarmPeer.start(Identity.generate(), config, want=want)
    try:
        agent = Agent(args, peer)
        boot_ids = {a.rsplit("/p2p/", 1)[-1] for a in args.bootstrap}
        seen = lambda: len({m.peer_id for m in peer.gossip.members.alive()} - boot_ids)  # noqa: E731
        await wait_for(lambda: seen() >= args.n_agents - 1, args.start_timeout, interval=0.1)
        write_json(out / f"agent{k}.ready", {"peer_id": peer.peer_id, "members_seen": seen()})
        if not await wait_for(lambda: (out / "go").exists(), args.start_timeout * 4, interval=0.1):
            raise TimeoutError("no go file from the runner")
        eval_start = agent.evaluate()
        t0 = time.monotonic()
        with open(out / f"agent{k}.jsonl", "w") as f:
            for r in range(args.rounds):
                f.write(json.dumps(await agent.round(r)) + "\n")
                f.flush()
        seconds = time.monotonic() - t0
        metrics = {k2: v for k2, v in peer.metrics().items() if isinstance(v, int | float)}
        summary = {"args": vars(args), "peer_id": peer.peer_id, "seconds": seconds, "eval_start": eval_start,
                   "eval_end": agent.evaluate(), "counts": dict(agent.counts),
                   "lies_by_origin": dict(agent.lies_by_origin), "swarm": metrics}  # fmt: skip
        write_json(out / f"agent{k}.json", summary)
        await wait_for(lambda: (out / "stop").exists(), args.start_timeout * 30, interval=0.2)
    finally:
        await peer.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sapo.agent", description=__doc__.split("\n")[0])
    p.add_argument("--index", type=int, required=True, help="agent number in the run (seeds its streams)")
    p.add_argument("--seed", type=int, required=True, help="run seed: warm start and held-out set")
    p.add_argument("--I", type=int, default=4, help="local groups per round")
    p.add_argument("--J", type=int, default=4, help="external groups per round")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--out", required=True, help="run folder shared with run.py")
    p.add_argument("--cache", required=True, help="folder of cached warm starts")
    p.add_argument("--bootstrap", nargs="*", default=[], help="bootstrap multiaddrs")
    p.add_argument("--swarm-id", default="sapo-toy")
    p.add_argument("--n-agents", type=int, default=4, help="agents to see before reporting ready")
    p.add_argument("--wait-s", type=float, default=2.0, help="longest wait for J usable external groups")
    p.add_argument("--per-peer-cap", type=int, default=0, help="0: ceil(J / 2)")
    p.add_argument("--liar", action="store_true", help="publish wrong answers with inverted claims")
    p.add_argument("--trust-claims", action="store_true", help="ablation: train on peers' claimed rewards")
    p.add_argument("--peer-logprobs", choices=["recompute", "reuse"], default="recompute",
                   help="recompute: the local policy scores peer text (SAPO); reuse: the peer's sampler "
                   "log-probs, with token-level truncated IS (cap 2) against them")  # fmt: skip
    p.add_argument("--own-as-external", action="store_true",
                   help="control: the J groups are our own extra samples sent through the same path")  # fmt: skip
    p.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: exp_t2's)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--start-timeout", type=float, default=60.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
