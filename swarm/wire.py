"""What gossip needs from the wire protocol, as one small interface.

`gossip.py` never touches `protocol/` directly: it seals and opens bytes through a `Wire`, and
every refusal reaches it as `Rejected(reason)` with one of `protocol.errors.RejectReason`'s
strings (or one of the swarm-level reasons below).  `swarm/protocol_wire.py` implements it on
helper-1's `protocol/` package; tests may substitute a fake.

"Open" means: decode within the codec's limits, check the envelope (swarm id, timestamp window,
signature, replay), run the validator chain.  A `Wire` also checks the envelope's signer against
the transport-level sender it is given, so a peer cannot push or serve someone else's
envelope as its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from swarm.summaries import Summary

# Swarm-level rejection reasons (protocol/errors.py owns the codec and validator ones).
RATE_LIMITED = "rate_limited"  # over the sender's token bucket
FETCH_FAILED = "fetch_failed"  # a holder did not answer a fetch (not counted as a rejection)
REPLAYED = "replayed"  # the very same bytes pushed again by the same sender (pre-crypto check)
WRONG_GROUP = "bad_group_id"  # a holder answered with groups other than the one requested
NOT_ALLOWED = "not_allowed"  # a group whose origin is outside the private swarm's allowlist
TOO_LARGE = "too_large"  # a push above GossipConfig.max_push_bytes (same reason as the codec's)
BANNED = "banned"  # dropped unread because the sender is banned (no further penalty)
EMPTY_LIMITED = "empty_limited"  # too many fetches of groups we do not hold (swarm/request_budget.py)


class Rejected(Exception):
    """A peer's bytes were refused; `reason` is a stable lower-case string used in metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class AnnounceEntry:
    """One group as summarized in an Announce: what `want()` sees when deciding to fetch."""

    group_id: str  # content id (hex) of the signed group; what a Request asks for
    size: int  # encoded group size in bytes, as claimed (a hint, re-checked on fetch)
    item: Any = field(default=None, compare=False)  # the protocol AnnounceItem: task, G, policy_version
    origin: str = ""  # author's peer id when known (own and admitted groups); "" for hearsay


@dataclass(frozen=True)
class Push:
    """An opened message that arrived on the broadcast topic (or as an inventory exchange)."""

    signer: str  # peer id whose signature verified (always the transport-level sender)
    entries: list[AnnounceEntry]  # for an Announce (empty for a PeerCard)
    addresses: list[str] | None = None  # for a PeerCard: the signer's listen addresses
    summaries: list[Summary] = field(default_factory=list)  # outcome claims in an Announce's items


class Wire(Protocol):
    """Seal our messages, open peers' (raising `Rejected`).  Groups are opaque objects here."""

    @property
    def peer_id(self) -> str: ...

    def seal_group(self, group: Any) -> tuple[AnnounceEntry, Any]:
        """Sign one of our groups as its origin; returns its entry and the signed group."""
        ...

    def seal_announce(self, entries: list[AnnounceEntry]) -> bytes: ...

    def seal_card(self, addresses: list[str]) -> bytes: ...

    def open_push(self, data: bytes, sender: str) -> Push: ...

    def seal_request(self, group_ids: list[str]) -> tuple[bytes, bytes]:
        """Returns (request_id, frame)."""
        ...

    def open_request(self, data: bytes, sender: str) -> tuple[bytes, list[str]]: ...

    def seal_response(self, request_id: bytes, groups: list[Any], missing: list[str]) -> bytes: ...

    def decline_request(self, data: bytes) -> bytes:
        """The answer to a request we will not serve now: every asked id reported missing.  Only
        decoded (its signature is not checked, its nonce not recorded): a decline tells a forger
        nothing.  Raises `Rejected` if the bytes are not a request."""
        ...

    def open_response(self, data: bytes, sender: str, request_id: bytes) -> list[tuple[AnnounceEntry, Any]]:
        """Every carried group is verified (id = content hash, origin signature, validators)."""
        ...
