"""`FakeLink`: what `node.swarm_link.SwarmLink` offers the node, in memory, for unit tests.

Tests fill `inbox` with `InboxItem`s; `publish` keeps the wire groups (`published`) and, signed
with the node's key as the swarm layer would deliver them to a peer, as `sent` InboxItems, so
one node's output can be another's input.  `reports` records the misconduct the node reported;
tests put `swarm.summaries.Summary` records in `summaries` for `drain_summaries`.
"""

from __future__ import annotations

from collections import Counter

from protocol import RolloutGroup, sign_group
from swarm.inbox import InboxItem


class FakeLink:
    def __init__(self, identity, config, want=None, card_fields=None):
        self.identity, self.want = identity, want
        self.connected, self.state, self.last_error, self.addresses = (
            True,
            "connected",
            "",
            ["/ip4/127.0.0.1/tcp/1"],
        )
        self.counts: Counter[str] = Counter()
        self.inbox: list[InboxItem] = []
        self.published: list[RolloutGroup] = []
        self.sent: list[InboxItem] = []
        self.reports: list[tuple[str, object]] = []
        self.summaries: list = []
        self.last_metrics = {"connected_peers": 1, "admitted_groups": 0}

    peer_id = property(lambda self: self.identity.peer_id)

    def start(self):
        return self

    def publish(self, groups):
        self.published += groups
        self.counts["published"] += len(groups)
        for g in groups:
            signed = sign_group(g, self.identity)
            self.sent.append(InboxItem(signed.group_id.hex(), self.peer_id, signed, 0.0, 100))

    def drain(self, n):
        out, self.inbox = self.inbox[:n], self.inbox[n:]
        return out

    def drain_summaries(self, n):
        out, self.summaries = self.summaries[:n], self.summaries[n:]
        return out

    def report(self, origin, reason):
        self.reports.append((origin, reason))

    def stop(self):
        self.connected = False
