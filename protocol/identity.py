"""Peer identity: an Ed25519 keypair, its key file, and its libp2p peer id.

A peer id is the libp2p peer-id format (libp2p/specs, peer-ids/peer-ids.md), so the same key
can drive the P2P transports and a receiver can verify a signature from the sender id alone:

    PublicKey protobuf  = 0x08 0x01 (Type = Ed25519) 0x12 0x20 (Data, 32 bytes) <raw public key>
    multihash           = 0x00 (identity) 0x24 (length 36) <the 36 protobuf bytes>
    peer id             = base58btc(multihash)          -> always 52 chars starting "12D3KooW"

The key file is PEM PKCS#8 (readable by OpenSSL and every Ed25519 library), written with mode
0600.  Loading refuses a file that grants any permission to group or others, as OpenSSH does
for private keys (stricter than "not group/other-readable": a group-writable key is as bad).
`to_libp2p_private_key()` gives the protobuf-marshalled private key in the libp2p spec's form
(Data = seed || public key, 64 bytes), which go-libp2p daemons read (hivemind's p2pd `-id`
file).  py-libp2p 0.8 instead wants the bare 32-byte seed: use `private_seed()` for it.

Verification is RFC 8032 strict (section 5.1.7 decoding rules, plus what "Taming the many
EdDSAs", Chalkias et al. 2020, calls strong unforgeability).  Before `cryptography` sees a key or
signature, a pure check on the encodings refuses: a point whose y is not below p (non-canonical);
one of the eight points of order dividing 8, as a public key or as R; and S >= L.  Without it
the peer id whose key is the identity point accepts the signature `01 00..00` on any message,
since [0]B = R + [k]A holds when R and A are both the identity.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_PUBKEY_PROTO_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])  # Type=Ed25519(1), Data=bytes(32)
_PRIVKEY_PROTO_PREFIX = bytes([0x08, 0x01, 0x12, 0x40])  # Type=Ed25519(1), Data=bytes(64): seed||public
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, 0x24])  # identity hash code, digest length 36
PEER_ID_LENGTH = 52  # base58 length of every Ed25519 peer id

# edwards25519 (RFC 8032 section 5.1): field prime p and prime group order L.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
# y of the eight points of order dividing 8: identity (1), order 2 (p - 1), order 4 (0, both
# signs of x), order 8 (Y8 and p - Y8, both signs of x).  Checking y, sign bit ignored, also
# catches the non-canonical "x = 0 with the sign bit set" encodings of the first two.
_Y8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
_SMALL_ORDER_Y = frozenset({1, _P - 1, 0, _Y8, _P - _Y8})
_Y_MASK = (1 << 255) - 1  # the top bit of an encoded point is the sign of x


class IdentityError(Exception):
    """A key file that is missing, malformed, not Ed25519, or readable by others; or a bad peer id."""


def b58encode(data: bytes) -> str:
    """Base58btc (Bitcoin alphabet); each leading zero byte becomes a leading '1'."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    value = int.from_bytes(data, "big")
    digits: list[str] = []
    while value:
        value, rem = divmod(value, 58)
        digits.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Inverse of `b58encode`; raises IdentityError on a character outside the alphabet."""
    value = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise IdentityError(f"not base58: {char!r}")
        value = value * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return b"\x00" * zeros + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """libp2p peer id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    return b58encode(_IDENTITY_MULTIHASH_PREFIX + _PUBKEY_PROTO_PREFIX + public_key)


def strict_point(encoding: bytes) -> bool:
    """True for a canonical encoding (y < p) of a point that is not of small order."""
    y = int.from_bytes(encoding, "little") & _Y_MASK
    return len(encoding) == 32 and y < _P and y not in _SMALL_ORDER_Y


def strict_signature(signature: bytes) -> bool:
    """True when R is a strict point and S < L (the encodings only; not the equation)."""
    return (
        len(signature) == 64
        and strict_point(signature[:32])
        and int.from_bytes(signature[32:], "little") < _L
    )


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Raw 32-byte Ed25519 public key inside a peer id; IdentityError for anything else.

    Only inline (identity-multihash) Ed25519 ids are accepted: an RSA or sha256-multihash id does
    not carry its key, so a receiver could not verify the sender from the id alone.  A key that
    is non-canonical or of small order is refused (see the module docstring).
    """
    if len(peer_id) != PEER_ID_LENGTH:
        raise IdentityError(f"peer id must be {PEER_ID_LENGTH} base58 chars, got {len(peer_id)}")
    raw = b58decode(peer_id)
    prefix = _IDENTITY_MULTIHASH_PREFIX + _PUBKEY_PROTO_PREFIX
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise IdentityError("peer id is not an identity-multihash Ed25519 key")
    key = raw[len(prefix) :]
    if not strict_point(key):
        raise IdentityError("peer id holds a small-order or non-canonical Ed25519 key")
    return key


@functools.lru_cache(maxsize=4096)
def _verifier(peer_id: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key_from_peer_id(peer_id))


def verify(peer_id: str, signature: bytes, data: bytes) -> bool:
    """True when `signature` is `peer_id`'s Ed25519 signature of `data`.

    Raises IdentityError when `peer_id` is not a valid Ed25519 peer id.  Parsed keys are cached
    (4096 peers) because every frame from a peer needs the same key.  A signature with a
    non-canonical or small-order R, or S >= L, is False before any curve arithmetic.
    """
    try:
        verifier = _verifier(peer_id)
        if not strict_signature(signature):
            return False
        verifier.verify(signature, data)
    except InvalidSignature:
        return False
    except ValueError as exc:  # not a valid curve point
        raise IdentityError(f"peer id holds an invalid Ed25519 key: {exc}") from exc
    return True


class Identity:
    """This peer's Ed25519 keypair.  Signs; never leaves the process except via its key file."""

    __slots__ = ("_private", "public_key", "peer_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        # Raw 32-byte public key.
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        # libp2p peer id ("12D3KooW...") derived from `public_key`.
        self.peer_id: str = peer_id_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte RFC 8032 private key (tests, golden vectors)."""
        if len(seed) != 32:
            raise IdentityError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature (deterministic, RFC 8032)."""
        return self._private.sign(data)

    def private_seed(self) -> bytes:
        """The 32-byte RFC 8032 private key, for transports that build their own key object."""
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def to_libp2p_private_key(self) -> bytes:
        """libp2p protobuf PrivateKey: Type=Ed25519, Data = seed || public key (64 bytes)."""
        return _PRIVKEY_PROTO_PREFIX + self.private_seed() + self.public_key

    def to_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"Identity({self.peer_id})"


def save_key_file(identity: Identity, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write `identity` as PEM with mode 0600, created that way (never briefly world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise IdentityError(f"{path} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # O_CREAT's mode is masked by umask and ignored for old files
        handle.write(identity.to_pem())


def load_key_file(path: str | os.PathLike[str]) -> Identity:
    """Read a key file written by `save_key_file`; refuse it if group or others have any access."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except FileNotFoundError as exc:
        raise IdentityError(f"no key file at {file}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"{file} has mode {stat.S_IMODE(mode):04o}; run `chmod 600 {file}`")
    try:
        key = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{file} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{file} holds a {type(key).__name__}, not an Ed25519 key")
    return Identity(key)


def generate_key_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """`swarmrl keygen`: create a new key file at `path` (mode 0600) and return its peer id."""
    identity = Identity.generate()
    save_key_file(identity, path, overwrite=overwrite)
    return identity.peer_id
