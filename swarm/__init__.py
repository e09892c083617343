"""swarmrl's swarm layer: peers, transports and rollout gossip.  See docs/swarm.md.

The node uses `SwarmPeer.start(identity, SwarmConfig(...))`, `peer.publish(group)`,
`peer.inbox.drain(n)` / `await peer.inbox.get()`, `peer.metrics()` and `peer.stop()`;
`swarm.bootstrap.run_bootstrap(...)` backs `swarmrl bootstrap`.  Backends are imported lazily.
"""

from swarm.gossip import GossipConfig
from swarm.inbox import InboxItem
from swarm.peer import BACKENDS, DEFAULT_BACKEND, SwarmConfig, SwarmPeer, SwarmStartError, load_allowlist
from swarm.scoring import ScoreParams
from swarm.transport import Transport, TransportError
from swarm.wire import AnnounceEntry

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "AnnounceEntry", "GossipConfig", "InboxItem", "ScoreParams",
    "SwarmConfig", "SwarmPeer", "SwarmStartError", "Transport", "TransportError", "load_allowlist",
]  # fmt: skip
