"""The signed envelope around every message, and exactly which bytes are signed.

On the wire a frame is a msgpack array of two bins, a layout frozen across all versions so any
peer can always find the version:

    frame  = [ header: bin, signature: bin(64) ]
    header = msgpack map, keys in this order:
        "v"  [major, minor]   protocol version of the sender
        "t"  int              MessageType
        "sw" str              swarm id
        "s"  str              sender peer id (libp2p, Ed25519)
        "ts" int              sender's unix time in milliseconds
        "n"  bin(16)          random nonce
        "p"  bin              payload: the msgpack map of the message
    signature = Ed25519(sender key, ENVELOPE_TAG || header)

Signing the header *bytes as received* means a receiver never re-encodes anything to verify,
and the payload is only decoded after the signature checks out.  The domain tag keeps an
envelope signature from ever being valid as a group signature (or anything else) and back.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.identity import verify
from protocol.messages import MessageType

ENVELOPE_TAG = b"swarmrl/envelope\x00"  # prefixed to the header bytes before signing
NONCE_BYTES = 16
SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded frame whose payload is still bytes.  Nothing here is trusted until validated."""

    version: tuple[int, int]  # [v] sender's (major, minor); major must equal ours
    type: MessageType  # [t] what the payload holds
    swarm_id: str  # [sw] swarm the sender addresses; 1..max_name_bytes
    sender: str  # [s] sender's peer id; the signature must verify under the key it encodes
    timestamp_ms: int  # [ts] sender's clock when sealing, unix ms; 0..2^63-1
    nonce: bytes  # [n] 16 random bytes; (sender, nonce) is never accepted twice
    payload: bytes  # [p] msgpack map of the message
    signature: bytes  # 64-byte Ed25519 signature of ENVELOPE_TAG || header
    header: bytes  # the exact header bytes the signature covers

    def signature_valid(self) -> bool:
        """True when `signature` verifies under `sender`.  Raises IdentityError for a bad peer id."""
        return verify(self.sender, self.signature, ENVELOPE_TAG + self.header)
