"""Identity: base58, libp2p peer ids, key files."""

from __future__ import annotations

import os
import stat

import pytest

from protocol.identity import (
    Identity,
    IdentityError,
    b58decode,
    b58encode,
    generate_key_file,
    load_key_file,
    peer_id_from_public_key,
    public_key_from_peer_id,
    save_key_file,
    verify,
)

# RFC 8032 section 7.1, TEST 1.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
# Expected peer id: base58btc(00 24 08 01 12 20 || RFC_PUBLIC).  Derived from the libp2p peer-id
# spec by hand (bytes below) and cross-checked once against py-libp2p's ID.from_pubkey (outside
# the test suite, since protocol/ must not import libp2p).
RFC_PEER_ID = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV"


def test_base58_known_vectors() -> None:
    # From the base58 IETF draft (draft-msporny-base58) examples.
    assert b58encode(b"Hello World!") == "2NEpo7TZRRrLZSi2U"
    assert b58encode(b"The quick brown fox jumps over the lazy dog.") == (
        "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z"
    )
    assert b58encode(bytes.fromhex("0000287fb4cd")) == "11233QC4"
    assert b58decode("11233QC4") == bytes.fromhex("0000287fb4cd")
    assert b58encode(b"") == "" and b58decode("") == b""
    with pytest.raises(IdentityError):
        b58decode("0OIl")  # not in the alphabet


def test_rfc8032_key_gives_expected_public_key_and_peer_id() -> None:
    ident = Identity.from_seed(RFC_SEED)
    assert ident.public_key == RFC_PUBLIC
    assert ident.peer_id == RFC_PEER_ID
    multihash = b58decode(RFC_PEER_ID)
    assert multihash == bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + RFC_PUBLIC
    assert public_key_from_peer_id(RFC_PEER_ID) == RFC_PUBLIC


def test_rfc8032_signature_vector() -> None:
    # TEST 1 signs the empty message; the expected signature is from the RFC.
    expected = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    ident = Identity.from_seed(RFC_SEED)
    assert ident.sign(b"") == expected
    assert verify(RFC_PEER_ID, expected, b"")
    assert not verify(RFC_PEER_ID, expected, b"x")


def test_generated_ids_round_trip_and_have_libp2p_shape() -> None:
    for _ in range(20):
        ident = Identity.generate()
        assert ident.peer_id.startswith("12D3KooW") and len(ident.peer_id) == 52
        assert public_key_from_peer_id(ident.peer_id) == ident.public_key
        assert peer_id_from_public_key(ident.public_key) == ident.peer_id


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12D3KooW",
        "Qm" + "a" * 44,  # sha256 multihash (RSA-style) ids do not carry the key
        RFC_PEER_ID[:-1] + "0",  # '0' is not base58
        b58encode(bytes([0x00, 0x24, 0x08, 0x02, 0x12, 0x20]) + RFC_PUBLIC),  # secp256k1 key type
    ],
)
def test_bad_peer_ids_refused(bad: str) -> None:
    with pytest.raises(IdentityError):
        public_key_from_peer_id(bad)


def test_libp2p_private_key_layout() -> None:
    raw = Identity.from_seed(RFC_SEED).to_libp2p_private_key()
    assert raw == bytes([0x08, 0x01, 0x12, 0x40]) + RFC_SEED + RFC_PUBLIC


def test_key_file_written_0600_and_reloads(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "swarm.key")
    old_umask = os.umask(0)  # even with a permissive umask the file must come out 0600
    try:
        peer_id = generate_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key_file(path).peer_id == peer_id
    with pytest.raises(IdentityError, match="exists"):
        generate_key_file(path)
    new_id = generate_key_file(path, overwrite=True)
    assert new_id != peer_id and load_key_file(path).peer_id == new_id


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o700 | 0o001])
def test_key_file_with_group_or_other_access_refused(tmp_path: os.PathLike[str], mode: int) -> None:
    path = os.path.join(tmp_path, "swarm.key")
    save_key_file(Identity.from_seed(RFC_SEED), path)
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_key_file(path)
    os.chmod(path, 0o400)  # owner-only read is fine
    assert load_key_file(path).peer_id == RFC_PEER_ID


def test_key_file_garbage_and_missing(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "k")
    with pytest.raises(IdentityError, match="no key file"):
        load_key_file(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(IdentityError, match="not an unencrypted PEM"):
        load_key_file(path)


# -- RFC 8032 strict verification ------------------------------------------------------------
# The eight points of order dividing 8 on edwards25519 (the 8-torsion), canonical encodings.
# These are the well-known small-order encodings (libsodium's small-order blocklist, and
# "Taming the many EdDSAs", Chalkias et al. 2020, section 4); `_times_8` below re-derives them.
SMALL_ORDER_POINTS = {
    "identity (order 1)": "0100000000000000000000000000000000000000000000000000000000000000",
    "order 2": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "order 4, +x": "0000000000000000000000000000000000000000000000000000000000000000",
    "order 4, -x": "0000000000000000000000000000000000000000000000000000000000000080",
    "order 8 (a)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 (b)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order 8 (c)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 (d)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}
NON_CANONICAL_POINTS = {
    "y = p (encodes 0)": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p + 1 (encodes 1)": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "identity with x sign set": "0100000000000000000000000000000000000000000000000000000000000080",
    "order 2 with x sign set": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
}
ED_P = 2**255 - 19
ED_L = 2**252 + 27742317777372353535851937790883648493
ED_D = -121665 * pow(121666, -1, ED_P) % ED_P


def _times_8(encoding: bytes) -> tuple[int, int]:
    """8 * P in affine coordinates, by decompressing (RFC 8032 5.1.3) and doubling three times."""
    y = int.from_bytes(encoding, "little") & ((1 << 255) - 1)
    u = (y * y - 1) * pow(ED_D * y * y + 1, -1, ED_P) % ED_P
    x = pow(u, (ED_P + 3) // 8, ED_P)
    if x * x % ED_P != u:
        x = x * pow(2, (ED_P - 1) // 4, ED_P) % ED_P
    assert x * x % ED_P == u, "not on the curve"
    if x & 1 != encoding[31] >> 7:
        x = ED_P - x
    for _ in range(3):
        t = ED_D * x * x * y * y
        x, y = (2 * x * y * pow(1 + t, -1, ED_P) % ED_P, (y * y + x * x) * pow(1 - t, -1, ED_P) % ED_P)
    return x, y


def test_the_eight_vectors_are_exactly_the_8_torsion() -> None:
    points = {bytes.fromhex(h) for h in SMALL_ORDER_POINTS.values()}
    assert len(points) == 8
    for p in points:
        assert _times_8(p) == (0, 1)  # 8P is the identity: order divides 8


@pytest.mark.parametrize("name", [*SMALL_ORDER_POINTS, *NON_CANONICAL_POINTS])
def test_small_order_and_non_canonical_keys_refused(name: str) -> None:
    key = bytes.fromhex({**SMALL_ORDER_POINTS, **NON_CANONICAL_POINTS}[name])
    peer_id = peer_id_from_public_key(key)
    with pytest.raises(IdentityError, match="small-order or non-canonical"):
        public_key_from_peer_id(peer_id)
    with pytest.raises(IdentityError):
        verify(peer_id, bytes.fromhex(SMALL_ORDER_POINTS["identity (order 1)"]) + bytes(32), b"any message")


def test_identity_key_forgery_refused() -> None:
    # With A = R = identity and S = 0, [S]B = R + [k]A holds for every message: a universal forgery.
    peer_id = peer_id_from_public_key(bytes.fromhex(SMALL_ORDER_POINTS["identity (order 1)"]))
    forged = bytes.fromhex("01" + "00" * 63)
    for message in [b"", b"swarmrl/envelope\x00anything", os.urandom(100)]:
        with pytest.raises(IdentityError):
            verify(peer_id, forged, message)


@pytest.mark.parametrize("name", [*SMALL_ORDER_POINTS, *NON_CANONICAL_POINTS])
def test_small_order_or_non_canonical_r_refused(name: str) -> None:
    r = bytes.fromhex({**SMALL_ORDER_POINTS, **NON_CANONICAL_POINTS}[name])
    for s in [0, 1, ED_L - 1]:
        assert not verify(RFC_PEER_ID, r + s.to_bytes(32, "little"), b"")


def test_signature_with_s_not_below_l_refused() -> None:
    good = Identity.from_seed(RFC_SEED).sign(b"m")
    s = int.from_bytes(good[32:], "little")
    assert verify(RFC_PEER_ID, good, b"m")
    malleated = good[:32] + (s + ED_L).to_bytes(32, "little")  # the same point equation, S >= L
    assert not verify(RFC_PEER_ID, malleated, b"m")
