"""`GossipConfig`: the knobs of the gossip engine (swarm/gossip.py re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.scoring import ScoreParams
from swarm.summaries import SummaryConfig


@dataclass(frozen=True)
class GossipConfig:
    """Knobs of the gossip protocol.  Times in seconds (loop time)."""

    swarm_id: str = "public"  # scopes every topic and protocol name
    inbox_capacity: int = 1024  # admitted groups waiting for the node
    outbox_capacity: int = 1024  # groups held for serving
    outbox_max_bytes: int = 512 * 1024 * 1024
    serve_ttl: float = 600.0  # how long a group stays fetchable from us
    seen_capacity: int = 200_000  # group ids and message digests remembered
    seen_ttl: float = 1800.0
    fetch_timeout: float = 5.0  # per attempt
    fetch_attempts: int = 4  # distinct holders tried per fetch task (a follow-up task tries more)
    max_concurrent_fetches: int = 16
    max_pending: int = 10_000  # announced-but-unfetched group ids tracked at once
    relay: bool | None = None  # re-announce admitted groups; None: iff transport doesn't propagate
    announce_delay: float = 0.02  # batch entries admitted within this window into one Announce
    max_announce_entries: int = 64
    max_push_bytes: int = 64 * 1024  # pushes are Announces and PeerCards: small; refuse bigger unread
    sync_interval: float = 5.0  # anti-entropy inventory pull from one random neighbour
    inventory_size: int = 256  # newest entries returned in an inventory answer
    card_interval: float = 10.0  # PeerCard re-publish period
    card_ttl: float = 35.0  # a member not refreshed within this is dropped
    score: ScoreParams = field(default_factory=ScoreParams)
    allowlist: frozenset[str] | None = None  # private swarm: only these peer ids (None: open)
    summaries: SummaryConfig = field(default_factory=SummaryConfig)  # outcome-summary queue bounds

    @property
    def topic(self) -> str:
        return f"/swarmrl/{self.swarm_id}/announce/1"

    @property
    def fetch_protocol(self) -> str:
        return f"/swarmrl/{self.swarm_id}/fetch/1"

    @property
    def inventory_protocol(self) -> str:
        return f"/swarmrl/{self.swarm_id}/inventory/1"
