"""swarmrl's wire contract: message types, codec, signing, identity and validators.

Everything a peer sends is hostile until proven otherwise.  This package turns bytes from the
network into typed, authenticated, bounded messages, or into a counted `RejectReason`; it
imports no torch and no network library (stdlib, msgpack and cryptography only), so other
implementations can be checked against it and `docs/protocol.md` (the spec).

Sending::

    identity = load_key_file("swarm.key")             # or Identity.generate()
    group = sign_group(RolloutGroup(...), identity)   # fills origin, created_ms, group_id, signature
    frame = encode(group, identity, swarm_id="demo")

Receiving (one chain per swarm; it owns the replay cache and the rejection counts)::

    chain = default_chain("demo")
    result = chain.check(frame, from_peer=transport_peer_id)
    if isinstance(result, Accepted): use(result.message)
    chain.counter.for_peer(peer)                      # -> Counter[RejectReason], for peer scores
"""

from protocol.codec import (
    compute_group_id,
    decode,
    decode_envelope,
    decode_message,
    encode,
    encode_payload,
    group_signature_valid,
    sign_group,
)
from protocol.envelope import Envelope
from protocol.errors import ProtocolError, RejectReason
from protocol.identity import (
    Identity,
    IdentityError,
    generate_key_file,
    load_key_file,
    peer_id_from_public_key,
    public_key_from_peer_id,
    save_key_file,
)
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.messages import (
    PROTOCOL_VERSION,
    Announce,
    AnnounceItem,
    Completion,
    Message,
    MessageType,
    PeerCard,
    Request,
    Response,
    RolloutGroup,
    SamplingParams,
    TaskRef,
    logprob_array,
    token_array,
)
from protocol.outcome import claimed_successes, group_prompt_key, prompt_key, task_name
from protocol.validators import (
    ACCEPT,
    Accept,
    Accepted,
    Reject,
    Rejected,
    RejectionCounter,
    ValidatorChain,
    Verdict,
    default_chain,
)

__all__ = [
    "ACCEPT", "DEFAULT_LIMITS", "PROTOCOL_VERSION",
    "Accept", "Accepted", "Announce", "AnnounceItem", "Completion", "Envelope", "Identity",
    "IdentityError", "Limits", "Message", "MessageType", "PeerCard", "ProtocolError", "Reject",
    "RejectReason", "Rejected", "RejectionCounter", "Request", "Response", "RolloutGroup",
    "SamplingParams", "TaskRef", "ValidatorChain", "Verdict",
    "claimed_successes", "compute_group_id", "decode", "decode_envelope", "decode_message", "default_chain", "encode",
    "encode_payload", "generate_key_file", "group_prompt_key", "group_signature_valid", "load_key_file", "logprob_array",
    "peer_id_from_public_key", "prompt_key", "public_key_from_peer_id", "save_key_file", "sign_group",
    "task_name", "token_array",
]  # fmt: skip
