"""`Wire` on helper-1's `protocol/` package: the only swarm module that knows message types.

* Pushes on the topic are `Announce` and `PeerCard` envelopes.
* A fetch is `Request(request_id, group_ids)` answered by `Response(request_id, groups)`; a
  request declined unread (over the node's request budget) by a Response with no group and
  every asked id in `missing`, the same answer as for ids we do not hold.
* An inventory pull sends our `PeerCard` (which also authenticates us and refreshes our
  membership at the holder) and is answered by an `Announce` of the holder's newest groups,
  or by empty bytes when it holds none (an Announce needs at least one item).
* Outcome summaries (protocol 1.2, protocol/outcome.py): items carry `prompt_key` and
  `successes` derived from the signed group itself (its question and the correctness its origin
  claims), for our own groups and for groups we admitted and re-announce alike.  A relay vouches
  only for what anyone who fetches the group can check, that the count is the origin's signed
  claim, never for the origin's scoring; without it a summary would reach only the origin's
  direct neighbours.  Opening an Announce turns each summarised item into a
  `swarm.summaries.Summary` signed by the announcer, the peer charged if it contradicts the group.

Every frame from a peer goes through one `protocol.ValidatorChain` per gossip engine (it owns
the replay cache), and must be signed by the transport-authenticated peer that handed it to
us (`sender_mismatch` otherwise): a peer cannot push or serve another peer's envelope as its
own.  Groups keep their origin's signature, so any holder may serve them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Accepted,
    Announce,
    AnnounceItem,
    Identity,
    Limits,
    PeerCard,
    ProtocolError,
    RejectReason,
    Request,
    Response,
    RolloutGroup,
    decode,
    default_chain,
    encode,
    encode_payload,
    sign_group,
)
from protocol.outcome import claimed_successes, group_prompt_key, task_name
from swarm.summaries import Summary
from swarm.wire import AnnounceEntry, Push, Rejected


def entry_for(group: RolloutGroup, size: int | None = None, *, summarize: bool = False) -> AnnounceEntry:
    """The announce entry of a signed group; with `summarize` its outcome summary too (derived from
    the group, so any holder may send it), when the group has a question and claims a correctness
    for every completion."""
    if size is None:
        size = len(encode_payload(group)[1])
    key = successes = None
    if summarize:
        key, successes = group_prompt_key(group), claimed_successes(group)
        if key is None or successes is None:
            key = successes = None
    item = AnnounceItem(
        group_id=group.group_id,
        task=task_name(group.task),
        num_completions=len(group.completions),
        size_bytes=size,
        policy_version=group.policy_version,
        prompt_key=key,
        successes=successes,
    )
    return AnnounceEntry(group.group_id.hex(), size, item, group.origin)


def summaries_of(items: tuple[AnnounceItem, ...], signer: str) -> list[Summary]:
    """The outcome summaries among an Announce's items (validated: pk and ns together, ns <= n)."""
    return [
        Summary(origin=signer, task=i.task, prompt_key=i.prompt_key.hex(), n=i.num_completions,
                successes=i.successes, policy_version=i.policy_version, group_id=i.group_id.hex())
        for i in items
        if i.prompt_key is not None and i.successes is not None
    ]  # fmt: skip


class ProtocolWire:
    """Seals with our identity for one swarm id; opens through one validator chain."""

    def __init__(
        self,
        identity: Identity,
        swarm_id: str,
        allowlist: Iterable[str] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        card_fields: dict[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        self.swarm_id = swarm_id
        self.limits = limits
        self.chain = default_chain(swarm_id, limits=limits, allowlist=allowlist)
        self.card_fields = {
            "model_id": "unknown",
            "tokenizer_hash": "",
            "policy_version": 0,
            "hardware_class": "cpu",
            "software_version": "swarmrl",
            "tasks": (),
            **(card_fields or {}),
        }

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # -- sealing ---------------------------------------------------------------------------------
    def _seal(self, message: Any) -> bytes:
        try:
            return encode(message, self.identity, self.swarm_id, limits=self.limits)
        except ProtocolError as e:
            raise Rejected(e.reason.value, e.detail) from e

    def seal_group(self, group: RolloutGroup) -> tuple[AnnounceEntry, RolloutGroup]:
        if group.origin != self.identity.peer_id or not group.origin_signature:
            group = sign_group(group, self.identity)
        return entry_for(group, summarize=True), group

    def seal_announce(self, entries: list[AnnounceEntry]) -> bytes:
        return self._seal(Announce(items=tuple(e.item for e in entries)))

    def seal_card(self, addresses: list[str]) -> bytes:
        return self._seal(
            PeerCard(
                peer_id=self.identity.peer_id,
                addresses=tuple(addresses[: self.limits.max_addresses]),
                protocol_version=PROTOCOL_VERSION,
                **self.card_fields,
            )
        )

    def seal_request(self, group_ids: list[str]) -> tuple[bytes, bytes]:
        """Returns (request_id, frame)."""
        rid = os.urandom(16)
        return rid, self._seal(Request(request_id=rid, group_ids=tuple(bytes.fromhex(g) for g in group_ids)))

    def seal_response(self, request_id: bytes, groups: list[RolloutGroup], missing: list[str]) -> bytes:
        return self._seal(
            Response(
                request_id=request_id, groups=tuple(groups), missing=tuple(bytes.fromhex(m) for m in missing)
            )
        )

    def decline_request(self, data: bytes) -> bytes:
        try:
            _, message = decode(data, self.limits)
        except ProtocolError as e:
            raise Rejected(e.reason.value, e.detail) from e
        if not isinstance(message, Request):
            raise Rejected(RejectReason.UNKNOWN_TYPE.value, f"{type(message).__name__} sent as a request")
        return self.seal_response(message.request_id, [], [g.hex() for g in message.group_ids])

    # -- opening -----------------------------------------------------------------------------
    def _open(self, data: bytes, sender: str) -> Any:
        # bind_sender: a neighbour's copy of someone else's frame is refused before its nonce is
        # recorded, so it cannot get the real sender's own copy refused as a replay.
        result = self.chain.check(data, from_peer=sender, bind_sender=True)
        if not isinstance(result, Accepted):
            raise Rejected(result.reason.value, result.detail)
        return result.message

    def open_push(self, data: bytes, sender: str) -> Push:
        message = self._open(data, sender)
        if isinstance(message, Announce):
            entries = [AnnounceEntry(i.group_id.hex(), i.size_bytes, i) for i in message.items]
            return Push(sender, entries, summaries=summaries_of(message.items, sender))
        if isinstance(message, PeerCard):
            return Push(sender, [], list(message.addresses))
        raise Rejected(RejectReason.UNKNOWN_TYPE.value, f"{type(message).__name__} on the broadcast topic")

    def open_request(self, data: bytes, sender: str) -> tuple[bytes, list[str]]:
        message = self._open(data, sender)
        if not isinstance(message, Request):
            raise Rejected(RejectReason.UNKNOWN_TYPE.value, f"{type(message).__name__} sent as a request")
        return message.request_id, [g.hex() for g in message.group_ids]

    def open_response(
        self, data: bytes, sender: str, request_id: bytes
    ) -> list[tuple[AnnounceEntry, RolloutGroup]]:
        message = self._open(data, sender)
        if not isinstance(message, Response):
            raise Rejected(RejectReason.UNKNOWN_TYPE.value, f"{type(message).__name__} sent as a response")
        if message.request_id != request_id:
            raise Rejected(RejectReason.INCONSISTENT.value, "response to another request")
        return [(entry_for(g, summarize=True), g) for g in message.groups]  # relays re-announce these
