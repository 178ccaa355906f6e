"""Identities: libp2p-compatible peer ids, key files, signature checks."""

from __future__ import annotations

import hashlib
import os
import stat

import base58
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from protocol.wire.identity import (
    MAX_KEY_FILE_BYTES,
    BadPeerId,
    Identity,
    KeyFileError,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)

FIXED_SEED = bytes(range(32))


def libp2p_peer_id(seed: bytes) -> str:
    kp = create_new_key_pair(seed)
    return ID.from_pubkey(kp.public_key).to_base58()


# --- peer ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [FIXED_SEED, b"\x00" * 32, b"\xff" * 32, os.urandom(32)])
def test_peer_id_equals_libp2p_derivation(seed: bytes) -> None:
    ident = Identity(seed)
    assert ident.peer_id == libp2p_peer_id(seed)
    assert ident.peer_id.startswith("12D3KooW")


def test_public_key_matches_libp2p_key() -> None:
    ident = Identity(FIXED_SEED)
    kp = create_new_key_pair(FIXED_SEED)
    assert ident.public_key == kp.public_key.to_bytes()


def test_peer_id_round_trip() -> None:
    ident = Identity.generate()
    assert public_key_from_peer_id(ident.peer_id) == ident.public_key
    assert peer_id_from_public_key(ident.public_key) == ident.peer_id


def test_distinct_seeds_give_distinct_ids() -> None:
    assert Identity(b"\x01" * 32).peer_id != Identity(b"\x02" * 32).peer_id


def test_peer_id_from_public_key_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        peer_id_from_public_key(b"\x00" * 31)
    with pytest.raises(ValueError):
        peer_id_from_public_key(b"\x00" * 33)


def test_identity_rejects_wrong_seed_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Identity(b"\x00" * 31)


def _rsa_style_peer_id() -> str:
    # RSA keys are too long to inline, so libp2p uses a sha2-256 multihash ("Qm...").
    return base58.b58encode(bytes([0x12, 0x20]) + hashlib.sha256(b"rsa key").digest()).decode()


def _secp256k1_style_peer_id() -> str:
    # Inlined like Ed25519, but key type 2 and a 33-byte compressed key ("16Uiu2...").
    raw = bytes([0x00, 0x25, 0x08, 0x02, 0x12, 0x21]) + b"\x02" + b"\x11" * 32
    return base58.b58encode(raw).decode()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not a peer id",
        "0OIl",  # characters outside the base58 alphabet
        "12D3KooW\u00e9",  # non-ASCII
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # a real sha256 multihash id
        "1" * 65,  # too long
        "x" * 1000,
    ],
)
def test_public_key_from_peer_id_rejects_garbage(bad: str) -> None:
    with pytest.raises(BadPeerId):
        public_key_from_peer_id(bad)


def test_public_key_from_peer_id_rejects_rsa_style_id() -> None:
    pid = _rsa_style_peer_id()
    assert pid.startswith("Qm")
    with pytest.raises(BadPeerId, match="inlined Ed25519"):
        public_key_from_peer_id(pid)


def test_public_key_from_peer_id_rejects_secp256k1_style_id() -> None:
    with pytest.raises(BadPeerId, match="inlined Ed25519"):
        public_key_from_peer_id(_secp256k1_style_peer_id())


def test_public_key_from_peer_id_rejects_truncated_and_extended() -> None:
    raw = base58.b58decode(Identity(FIXED_SEED).peer_id)
    for variant in (raw[:-1], raw + b"\x00"):
        with pytest.raises(BadPeerId):
            public_key_from_peer_id(base58.b58encode(variant).decode())


@pytest.mark.parametrize("bad", [None, 12, b"12D3KooW"])
def test_public_key_from_peer_id_rejects_non_strings(bad: object) -> None:
    with pytest.raises(BadPeerId):
        public_key_from_peer_id(bad)  # type: ignore[arg-type]


def test_bad_peer_id_is_value_error() -> None:
    assert issubclass(BadPeerId, ValueError)


# --- key files ----------------------------------------------------------------------------------


def test_save_writes_mode_0600_and_load_round_trips(tmp_path) -> None:
    ident = Identity.generate()
    path = tmp_path / "sub" / "key.pem"
    ident.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = Identity.load(path)
    assert loaded.peer_id == ident.peer_id
    assert loaded.seed == ident.seed
    assert not (tmp_path / "sub" / "key.pem.tmp").exists()


def test_save_narrows_an_existing_wide_file(tmp_path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    ident = Identity.generate()
    ident.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path).peer_id == ident.peer_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o610, 0o601])
def test_load_refuses_group_or_other_accessible_file(tmp_path, mode: int) -> None:
    path = tmp_path / "key.pem"
    Identity.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="group/others"):
        Identity.load(path)


def test_load_accepts_owner_read_only(tmp_path) -> None:
    path = tmp_path / "key.pem"
    ident = Identity.generate()
    ident.save(path)
    os.chmod(path, 0o400)
    assert Identity.load(path).peer_id == ident.peer_id


def test_load_refuses_missing_file(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        Identity.load(tmp_path / "nope.pem")


def _write_private(path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def test_load_refuses_non_pem_file(tmp_path) -> None:
    path = tmp_path / "key.pem"
    _write_private(path, b"this is not a key\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        Identity.load(path)


def test_load_refuses_binary_garbage(tmp_path) -> None:
    path = tmp_path / "key.pem"
    _write_private(path, os.urandom(200))
    with pytest.raises(KeyFileError):
        Identity.load(path)


def test_load_refuses_oversize_file(tmp_path) -> None:
    good = tmp_path / "good.pem"
    Identity.generate().save(good)
    path = tmp_path / "key.pem"
    # a valid PEM padded past the cap is still refused, by size
    _write_private(path, good.read_bytes() + b"\n" * (MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(KeyFileError, match="not a key"):
        Identity.load(path)


def test_load_refuses_non_ed25519_key(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "key.pem"
    _write_private(path, pem)
    with pytest.raises(KeyFileError, match="Ed25519"):
        Identity.load(path)


def test_key_file_error_is_not_a_value_error() -> None:
    # callers catch KeyFileError specifically; it must not be swallowed as a ValueError
    assert not issubclass(KeyFileError, ValueError)


def test_load_or_create_creates_then_loads(tmp_path) -> None:
    path = tmp_path / "dir" / "key.pem"
    first, created = Identity.load_or_create(path)
    assert created is True
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second, created_again = Identity.load_or_create(path)
    assert created_again is False
    assert second.peer_id == first.peer_id


def test_load_or_create_refuses_existing_wide_file(tmp_path) -> None:
    path = tmp_path / "key.pem"
    Identity.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError):
        Identity.load_or_create(path)


def test_repr_does_not_leak_seed() -> None:
    ident = Identity(FIXED_SEED)
    assert FIXED_SEED.hex() not in repr(ident)
    assert repr(FIXED_SEED) not in repr(ident)


# --- signatures ---------------------------------------------------------------------------------


def test_verify_signature_true_for_genuine() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"message")
    assert len(sig) == 64
    assert verify_signature(ident.public_key, sig, b"message") is True


def test_verify_signature_matches_libp2p_verification() -> None:
    ident = Identity(FIXED_SEED)
    kp = create_new_key_pair(FIXED_SEED)
    assert kp.public_key.verify(b"hello", ident.sign(b"hello"))


def test_verify_signature_false_cases() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"message")
    assert verify_signature(a.public_key, sig, b"messagE") is False
    assert verify_signature(b.public_key, sig, b"message") is False
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert verify_signature(a.public_key, flipped, b"message") is False
    assert verify_signature(a.public_key, sig[:-1], b"message") is False
    assert verify_signature(a.public_key, sig + b"\x00", b"message") is False
    assert verify_signature(a.public_key[:-1], sig, b"message") is False
    assert verify_signature(b"", b"", b"message") is False
    assert verify_signature(a.public_key, b"\x00" * 64, b"message") is False


def test_verify_signature_rejects_invalid_point_without_raising() -> None:
    # not every 32-byte string is a curve point; verify must return False, not raise
    for pk in (b"\xff" * 32, b"\x02" + b"\xff" * 31, b"\x00" * 32, b"\x01" + b"\x00" * 31):
        assert verify_signature(pk, b"\x00" * 64, b"m") is False


def test_verify_signature_refuses_the_small_order_key_forgery() -> None:
    # The identity point as a public key, R = identity, S = 0: a cofactorless check
    # ([S]B == R + [h]A) holds for every message, so anybody could "sign" as the peer id of
    # this key. OpenSSL's Ed25519 accepts it; our verifier must not.
    identity_point = b"\x01" + b"\x00" * 31
    forged = identity_point + b"\x00" * 32
    for message in (b"m", b"any message at all", b"\x00" * 1000):
        assert verify_signature(identity_point, forged, message) is False


def test_verify_signature_takes_memoryviews_and_bytearrays() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"message")
    assert verify_signature(memoryview(ident.public_key), bytearray(sig),
                            memoryview(b"message")) is True


@pytest.mark.parametrize("size", [0, 1, 120, 5000])
def test_signatures_are_the_rfc_8032_bytes_openssl_gives_and_verify(size: int) -> None:
    """Signing runs on libsodium; Ed25519 is deterministic, so the bytes must equal
    OpenSSL's (through ``cryptography``) for the same key and message."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ident = Identity.generate()
    message = os.urandom(size)
    sig = ident.sign(message)
    assert sig == Ed25519PrivateKey.from_private_bytes(ident.seed).sign(message)
    assert verify_signature(ident.public_key, sig, message)
    assert not verify_signature(ident.public_key, sig, message + b"x")
