"""Join mode: the node's side of the swarm link (SAPO's sharing), and nothing else.

    sharing = Sharing.open(cfg, run_dir, policy, tasks)
    items = sharing.drain()                  # peer groups the swarm layer validated, as InboxItems
    news = sharing.summaries()               # outcome summaries announced since the last call
    s = sharing.summary_for(item.group_id)   # the summary announced for a fetched group, or None
    sharing.report(origin, Misconduct...)    # a verdict of our admission that proves a lie
    sharing.publish(local_groups, sampling)  # announce what we trained on
    sharing.close()

Judging, localizing, scoring and pooling arriving groups are the node's (node/admission.py,
node/replay/buffer.py, `Node._admit`); this module holds no trainer and calls nothing back.  `drain`
never waits on the network.

Outcome summaries: every `drain` also takes the summaries the link heard, so that by the time a
fetched group is drained, the summary announced before it is in `summary_for` (an announce always
precedes the fetch it causes).  `summaries()` returns each summary once; `summary_for` keeps the
last `SUMMARY_MEMORY` by group id.  Both are bounded whatever peers send.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

from node.config import Config
from node.exchange import to_wire, tokenizer_hash
from node.records import Group, SamplingParams
from protocol import generate_key_file, load_key_file
from swarm.gossip import GossipConfig
from swarm.inbox import InboxItem
from swarm.misconduct import Misconduct
from swarm.peer import SwarmConfig
from swarm.summaries import Summary

SUMMARY_BATCH = 1024  # summaries taken from the link per call (its queue holds at most 1024 by default)
SUMMARY_MEMORY = 4096  # summaries kept by group id for `summary_for`, and waiting for `summaries()`


def load_identity(path: str | None, run_dir: Path):
    """The node's key: `swarm.identity`, or RUN_DIR/node.key (created on first use)."""
    key = Path(path).expanduser() if path else run_dir / "node.key"
    if not key.exists():
        if path:
            raise FileNotFoundError(
                f"swarm.identity: key file not found: {key} (create it with `swarmrl keygen`)"
            )
        key.parent.mkdir(parents=True, exist_ok=True)
        generate_key_file(key)
    return load_key_file(key)


def wants(task_names: frozenset[str], entry: Any) -> bool:
    """Fetch an announced group only if we can score it: a dataset we have, or a literal
    question (matched against our prompts when it arrives).  No tasks: fetch nothing."""
    if not task_names:
        return False
    task = getattr(entry.item, "task", None)
    return task is None or task in task_names or task == "question"


class Sharing:
    def __init__(self, cfg: Config, link: Any, tok_hash: str) -> None:
        self.cfg = cfg
        self.link = link  # a SwarmLink (tests: an object with the same attributes)
        self.tok_hash = tok_hash
        self._new_summaries: OrderedDict[str, Summary] = OrderedDict()  # not yet returned by summaries()
        self._by_group: OrderedDict[str, Summary] = OrderedDict()  # the newest SUMMARY_MEMORY
        self.summary_counts = {"taken": 0, "dropped": 0}  # dropped: waited past SUMMARY_MEMORY newer ones

    @classmethod
    def open(cls, cfg: Config, run_dir: Path, policy: Any, tasks: dict) -> Sharing:
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
        scorable = (
            frozenset(tasks) if sw.external_groups > 0 else frozenset()
        )  # J = 0: only give, never download
        link = SwarmLink(identity, swarm_cfg, want=partial(wants, scorable), card_fields=card).start()
        return cls(cfg, link, tok_hash)

    @property
    def peer_id(self) -> str:
        return self.link.peer_id

    def drain(self) -> list[InboxItem]:
        """What the swarm layer admitted since the last call (bounded; never blocks)."""
        items = self.link.drain(max(64, 4 * self.cfg.swarm.external_groups))
        self._take_summaries()
        return items

    def _take_summaries(self) -> None:
        for s in self.link.drain_summaries(SUMMARY_BATCH):
            self.summary_counts["taken"] += 1
            for held in (self._new_summaries, self._by_group):
                held[s.group_id] = s
                if len(held) > SUMMARY_MEMORY:
                    held.popitem(last=False)
                    if held is self._new_summaries:
                        self.summary_counts["dropped"] += 1

    def summaries(self) -> list[Summary]:
        """Outcome summaries peers announced since the last call, oldest first (at most
        SUMMARY_MEMORY; never blocks; banned peers' are dropped by the swarm layer)."""
        self._take_summaries()
        out = list(self._new_summaries.values())
        self._new_summaries.clear()
        return out

    def summary_for(self, group_id: str) -> Summary | None:
        """The summary announced for group `group_id` (hex, as `InboxItem.group_id`), if one of the
        last SUMMARY_MEMORY; its `origin` is the peer to report when it proves false."""
        return self._by_group.get(group_id)

    def report(self, origin: str, reason: Misconduct) -> None:
        self.link.report(origin, reason)

    def publish(self, groups: list[Group], sampling: SamplingParams) -> None:
        if not self.cfg.swarm.share or not groups:
            return
        wire = [
            to_wire(g, self.cfg.swarm.swarm_id, self.cfg.model.name, self.tok_hash, sampling) for g in groups
        ]
        self.link.publish(wire)

    def status(self) -> dict[str, Any]:
        """The link's part of the node's swarm status: state, peers, counters, rejections."""
        link = self.link
        m = dict(link.last_metrics)
        scores = m.pop("peer_scores", {})
        banned = m.pop("banned", [])
        return {
            "peer_id": link.peer_id,
            "addresses": link.addresses,
            "state": link.state,
            "last_error": link.last_error,
            "peers": int(m.get("connected_peers", 0)),
            "published": link.counts["published"],
            "received": int(m.get("admitted_groups", 0)),
            "rejections": {k[len("rejected.") :]: v for k, v in m.items() if k.startswith("rejected.")},
            "peer_scores": scores,
            "banned": banned,  # peer ids this node refuses now
            "link": dict(link.counts),  # publish_dropped, call_timeouts, start_failures, ...
            "summaries": {k[len("summaries_") :]: v for k, v in m.items() if k.startswith("summaries_")}
            | self.summary_counts,  # received, accepted, duplicate, origin_capped, evicted, banned, ...
        }

    def close(self) -> None:
        self.link.stop()
