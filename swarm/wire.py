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

# Swarm-level rejection reasons (protocol/errors.py owns the codec and validator ones).
RATE_LIMITED = "rate_limited"  # over the sender's token bucket
FETCH_FAILED = "fetch_failed"  # a holder did not answer a fetch
DUPLICATE = "duplicate"  # the very same bytes pushed again by the same sender
WRONG_ID = "bad_group_id"  # served bytes are not the group that was requested
BANNED = "banned"  # dropped unread because the sender is banned (no further penalty)


class Rejected(Exception):
    """A peer's bytes were refused; `reason` is a stable lower-case string used in metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class AnnounceEntry:
    """One group as summarized in an Announce: enough to decide whether to fetch it."""

    group_id: str  # content id (hex) of the signed group; what a Request asks for
    origin: str  # peer id of the group's author
    size: int = 0  # wire bytes of the group, as claimed (a hint, re-checked on fetch)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # task, policy_version, ...


@dataclass(frozen=True)
class Push:
    """An opened message that arrived on the broadcast topic."""

    signer: str  # peer id whose signature verified
    entries: list[AnnounceEntry]  # for an Announce (empty for a PeerCard)
    addresses: list[str] | None = None  # for a PeerCard: the signer's listen addresses


class Wire(Protocol):
    @property
    def peer_id(self) -> str: ...

    def content_id(self, data: bytes) -> str:
        """The group id of served group bytes (what an Announce and a Request name)."""
        ...

    def seal_group(self, group: Any) -> tuple[AnnounceEntry, bytes]:
        """Sign our own group; returns its entry and the bytes we serve for it."""
        ...

    def open_group(self, data: bytes) -> tuple[AnnounceEntry, Any]:
        """Verify and validate served group bytes; returns the entry and the decoded group."""
        ...

    def seal_announce(self, entries: list[AnnounceEntry]) -> bytes: ...

    def seal_card(self, addresses: list[str]) -> bytes: ...

    def open_push(self, data: bytes, sender: str) -> Push: ...

    def seal_request(self, group_ids: list[str]) -> bytes:
        """Ask for these groups; an empty list asks for the holder's inventory."""
        ...

    def open_request(self, data: bytes, sender: str) -> list[str]: ...

    def seal_response(self, groups: list[bytes], inventory: list[AnnounceEntry]) -> bytes: ...

    def open_response(self, data: bytes, sender: str) -> tuple[list[bytes], list[AnnounceEntry]]:
        """Returns the served groups' bytes (each opened later with `open_group`) and entries."""
        ...
