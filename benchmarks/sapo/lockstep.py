"""The sharing experiment (issue 13) as an in-process, synchronous swarm: N toy `Node`s in join
mode, one process, stepping in lock step.

    python benchmarks/sapo/lockstep.py --regime sparse --seeds 0 1 2 3 4 --rounds 150 --jobs 16 --out runs/sharing
    python benchmarks/sapo/sharing_report.py --out runs/sharing

Every agent is the node's own `Node` (admission, outcome summaries, the pool, `swarm.take`,
adaptive J, advantages, the PPO update: node/peers.py, node/node.py) on the T2 toy parts
(`benchmarks/toy/adapter.py`).  Only the network is replaced: `HubLink` speaks the link's
interface (`node/swarm_link.py`) to a `Hub` that signs each published group with the agent's key
(as the swarm layer does), and at the end of each round delivers it, with its outcome summary
(`swarm.summaries.Summary`, what an announce carries), to every other agent.  So in round r an
agent sees what its peers published in rounds < r: the soft barrier of `run.py`, without the
waiting.  The real-process runs over hivemind are `run.py`.

Regimes (`REGIMES`): the toy's graded addition, levels 1-4 in equal shares for every agent;
what differs is where the agents start.
- easy: the cached warm start of the seed (held-out pass@1 about 0.6; most local groups have signal);
- sparse: a warm start stopped at the first check with mean pass >= 0.05 (most groups all-wrong);
- hetero: skill-heterogeneous: even agents warm-started on levels 1-2 only, odd ones on levels
  3-4 mostly, both stopped at mean pass >= 0.15; so one agent's easy prompt is another's hard one.

Arms (`ARMS`): I/J and the swarm switches; robustness arms add a liar or a different model as
agent 0.  Per agent and run the output has its own reward per round (mean correctness of its
local groups), completions generated, the batch reward (every trained group, peers' included:
the paper-style number, labelled as such), and held-out pass@1 every `--eval-every` rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SWARM = {"mode": "join", "backend": "hivemind", "swarm_id": "lockstep", "max_version_lag": 2}
INFO = {"take": "information"}
ARMS: dict[str, dict[str, Any]] = {
    "8/0": {"I": 8, "J": 0},
    "4/0": {"I": 4, "J": 0},
    "4/4 uniform": {"I": 4, "J": 4},
    "4/4 info": {"I": 4, "J": 4, "swarm": INFO},
    "4/4 info adaptive": {"I": 4, "J": 4, "swarm": INFO | {"adaptive_j": True}},
    "8/0 dynamic": {"I": 8, "J": 0, "algorithm": {"dynamic_sampling": True, "max_gen_rounds": 3}},
    "4/4 info liar": {"I": 4, "J": 4, "swarm": INFO, "agent0": "liar"},
    "4/4 info foreign": {"I": 4, "J": 4, "swarm": INFO, "agent0": "small"},
    "4/4 uniform liar": {"I": 4, "J": 4, "agent0": "liar"},
    # diagnostics (run after the headline, docs/sapo.md): the foreign-sample corrections
    "4/4 info gate": {"I": 4, "J": 4, "swarm": INFO, "algorithm": {"foreign_gate": "weight"}},
    "4/4 info reuse": {"I": 4, "J": 4, "swarm": INFO | {"peer_logprobs": "reuse"},
                       "algorithm": {"is_level": "token", "is_cap": 2.0, "foreign_gate": "weight",
                                     "foreign_gate_stat": "ratio"}},
    "4/4 info srcnorm": {"I": 4, "J": 4, "swarm": INFO, "algorithm": {"source_adv_norm": "scale"}},
    # confirmatory (rule fixed after the diagnostics): reuse with adaptive J
    "4/4 info adaptive reuse": {"I": 4, "J": 4, "swarm": INFO | {"peer_logprobs": "reuse", "adaptive_j": True},
                                "algorithm": {"is_level": "token", "is_cap": 2.0, "foreign_gate": "weight",
                                              "foreign_gate_stat": "ratio"}},
}
REUSE = ARMS["4/4 info reuse"]
ARMS |= {"4/4 info reuse liar": REUSE | {"agent0": "liar"}, "4/4 info reuse foreign": REUSE | {"agent0": "small"}}
# the ESS check on top of the corrected setting (rule: docs/sapo.md, "The ESS check")
ARMS["4/4 info reuse ess"] = REUSE | {"algorithm": REUSE["algorithm"] | {"foreign_ess": "scale"}}
HEADLINE, ROBUST, DIAGNOSTIC = list(ARMS)[:6], list(ARMS)[6:9], list(ARMS)[9:]
REGIMES = ("easy", "sparse", "hetero")
SMALL = {"d_model": 32, "n_layer": 1}  # the "different model" of the foreign arm


def warm(regime: str, seed: int, agent: int, cache: Path, small: bool = False):
    """The agent's starting model for the regime (cached, written atomically)."""
    import torch

    from benchmarks.toy.adapter import warm_model
    from benchmarks.toy.seqmodel import GPTConfig, TinyGPT, warm_start

    config = GPTConfig(**SMALL) if small else GPTConfig()
    if regime == "easy":
        return warm_model(seed, config, cache)
    if regime == "sparse":
        name, weights, stop = f"sparse_s{seed}", (0.45, 0.3, 0.15, 0.1), 0.05
    else:
        kind = agent % 2
        name, weights, stop = f"hetero{kind}_s{seed}", [(1.0, 1.0, 0.0, 0.0), (0.1, 0.1, 0.4, 0.4)][kind], 0.15
    path = cache / f"{name}_d{config.d_model}_l{config.n_layer}.pt"
    model = TinyGPT(config)
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model
    model = warm_start(seed, steps=3000, level_weights=weights, stop_at=stop, config=config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return model


class Hub:
    """The swarm of one run: what each agent published this round, delivered at `flush`."""

    def __init__(self) -> None:
        self.links: list[HubLink] = []
        self.round: list[tuple[HubLink, Any]] = []

    def link(self, identity, config, want=None, card_fields=None) -> HubLink:
        link = HubLink(self, identity)
        self.links.append(link)
        return link

    def flush(self) -> None:
        from protocol import sign_group
        from protocol.outcome import claimed_successes, group_prompt_key, task_name
        from swarm.inbox import InboxItem
        from swarm.summaries import Summary

        for sender, wire in self.round:
            signed = sign_group(wire, sender.identity)
            gid = signed.group_id.hex()
            item = InboxItem(gid, sender.peer_id, signed, 0.0, 100)
            summary = Summary(sender.peer_id, task_name(signed.task), group_prompt_key(signed).hex(),
                              len(signed.completions), claimed_successes(signed), signed.policy_version, gid)  # fmt: skip
            for link in self.links:
                if link is not sender:
                    link.inbox.append(item)
                    link.summary_queue.append(summary)
        self.round = []


class HubLink:
    """What `node.swarm_link.SwarmLink` offers the node, backed by a `Hub`."""

    def __init__(self, hub: Hub, identity) -> None:
        self.hub, self.identity = hub, identity
        self.peer_id = identity.peer_id
        self.connected, self.state, self.last_error, self.addresses = True, "connected", "", []
        self.counts: Counter[str] = Counter()
        self.inbox: list = []
        self.summary_queue: list = []
        self.reports: list = []
        self.last_metrics: dict[str, Any] = {"connected_peers": 3}

    def start(self) -> HubLink:
        return self

    def publish(self, groups: list) -> None:
        self.counts["published"] += len(groups)
        self.hub.round += [(self, g) for g in groups]

    def drain(self, n: int) -> list:
        out, self.inbox = self.inbox[:n], self.inbox[n:]
        return out

    def drain_summaries(self, n: int) -> list:
        out, self.summary_queue = self.summary_queue[:n], self.summary_queue[n:]
        return out

    def report(self, origin: str, reason) -> None:
        self.reports.append((origin, getattr(reason, "value", str(reason))))

    def stop(self) -> None:
        self.connected = False


def one_run(regime: str, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import node.swarm_link
    from benchmarks.sapo.agent import liar_groups
    from benchmarks.toy.adapter import ToyAddition, heldout_pass, toy_config, toy_parts
    from node.node import Node

    torch.set_num_threads(1)
    spec = ARMS[arm]
    hub = Hub()
    node.swarm_link.SwarmLink = hub.link  # the node's `Sharing.open` builds its link through this name
    task = ToyAddition(seed, size=args.size)
    agents = []
    scratch = Path(args.scratch) / regime / arm.replace("/", "-").replace(" ", "_") / f"s{seed}"
    for k in range(args.agents):
        odd = k == 0 and spec.get("agent0")
        net = warm(regime, seed, k, Path(args.cache), small=odd == "small")
        stream = 1000 * seed + k
        parts = toy_parts(net, task, stream)
        swarm = SWARM | {"external_groups": spec["J"], "per_peer_cap": 2} | spec.get("swarm", {})
        over = {"rollout": {"prompts_per_step": spec["I"]}, "swarm": swarm, "algorithm": spec.get("algorithm", {}),
                "logging": {"run_dir": str(scratch / f"a{k}")}, "checkpoint": {"every": 10**9}}  # fmt: skip
        if odd == "small":
            over["model"] = {"name": "tinygpt-d32-l1"}
        n = Node(toy_config(stream, over), scratch / f"a{k}", parts)
        if odd == "liar":
            publish, rng = n.sharing.publish, random.Random(stream)
            n.sharing.publish = lambda groups, sampling, p=publish, r=rng: p(liar_groups(groups, r, task), sampling)
        agents.append((n, parts))

    def evaluate(r: int) -> list[dict[str, Any]]:
        return [{"round": r, "generated": p.engine.generated,
                 **heldout_pass(p.engine, p.renderer, task, samples=args.eval_samples, seed=70_000 + seed)}
                for _, p in agents]  # fmt: skip

    t0 = time.perf_counter()
    evals = [evaluate(0)]
    rounds: list[list[dict[str, float]]] = [[] for _ in agents]
    for r in range(args.rounds):
        for k, (n, _) in enumerate(agents):
            m = n.train_step()
            rounds[k].append({key: round(float(m[key]), 4) for key in KEEP if key in m})
        hub.flush()
        if (r + 1) % args.eval_every == 0:
            evals.append(evaluate(r + 1))
    out = {
        "regime": regime, "arm": arm, "seed": seed, "rounds": args.rounds, "spec": spec,
        "seconds": time.perf_counter() - t0,
        "agents": [
            {"index": k, "odd": bool(k == 0 and spec.get("agent0")), "rounds": rounds[k],
             "evals": [e[k] for e in evals], "generated": p.engine.generated,
             "swarm": n.status({}, args.rounds)["swarm"] | {"reports": Counter(x[1] for x in n.sharing.link.reports)}}
            for k, (n, p) in enumerate(agents)
        ],
    }  # fmt: skip
    for n, _ in agents:
        n.close()
    path = Path(args.out) / regime / f"{arm.replace('/', '-').replace(' ', '_')}_s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, default=str))
    return out


KEEP = ("reward_local", "reward_mean", "swarm/external_groups", "swarm/filled_locally", "swarm/replaced_zero_var",
        "swarm/peer_signal_share", "swarm/take_value", "zero_var_groups", "clip_frac", "foreign/gated_rows",
        "foreign/gate_weight", "foreign/likelihood_gap", "foreign/ess")  # fmt: skip


def build_warm(job: tuple[str, int, int, bool], cache: str) -> None:
    import torch

    torch.set_num_threads(1)
    regime, seed, agent, small = job
    warm(regime, seed, agent, Path(cache), small)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/sharing")
    p.add_argument("--scratch", default="/tmp/sharing-scratch", help="node run folders")
    p.add_argument("--cache", default="runs/sapo/cache")
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    p.add_argument("--arms", nargs="+", default=HEADLINE, choices=list(ARMS))
    p.add_argument("--robust", nargs="*", default=[], help="regimes that also run the liar/foreign arms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--size", type=int, default=2048, help="training questions")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-samples", type=int, default=4)
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args()
    robust = ROBUST
    todo = [(reg, arm, s) for s in args.seeds for reg in args.regimes
            for arm in args.arms + (robust if reg in args.robust else [])
            if not (Path(args.out) / reg / f"{arm.replace('/', '-').replace(' ', '_')}_s{s}.json").exists()]  # fmt: skip
    warm_jobs = sorted({(reg, s, k, False) for reg, _, s in todo for k in ((0, 1) if reg == "hetero" else (0,))}
                       | {(reg, s, 0, True) for reg, arm, s in todo if ARMS[arm].get("agent0") == "small"})  # fmt: skip
    print(f"{len(warm_jobs)} warm starts, {len(todo)} runs", flush=True)
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(build_warm, j, args.cache) for j in warm_jobs]:
            f.result()
        print(f"warm starts ready ({time.time() - t0:.0f} s)", flush=True)
        futures = {pool.submit(one_run, reg, arm, s, args): (reg, arm, s) for reg, arm, s in todo}
        for f in futures:
            try:
                r = f.result()
            except Exception as e:  # one failed run is reported, the others still finish
                print(f"FAILED {futures[f]}: {e!r}", flush=True)
                continue
            honest = [a for a in r["agents"] if not a["odd"]]
            end = sum(a["evals"][-1]["all"] for a in honest) / len(honest)
            print(f"{r['regime']:6s} {r['arm']:18s} s{r['seed']} held-out {end:.3f} ({r['seconds']:.0f} s,"
                  f" {time.time() - t0:.0f} s in)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
