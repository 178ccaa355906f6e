"""Ed25519 identities whose ids are libp2p peer ids.

A libp2p peer id for an Ed25519 key is the base58btc encoding of an
*identity* multihash over the protobuf-encoded public key
(``KeyType = Ed25519 (1)``, ``Data = 32 bytes``). The protobuf is short
enough (36 bytes) that libp2p inlines it rather than hashing it, so the peer
id *contains* the public key: anybody holding a peer id can check a
signature without a key directory. We compute this ourselves (no libp2p
import in the sans-IO core); a test checks it equals libp2p's ``ID``.

Key files hold the 32-byte private seed as PKCS#8 PEM, are written with
mode 0600, and loading refuses files that group or others can read (as ssh
does), because a leaked key lets anybody sign as that peer.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import base58
import nacl.bindings as _sodium
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
# multihash "identity" (0x00), length 36, protobuf: field 1 varint 1 (Ed25519), field 2 len 32
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
MAX_KEY_FILE_BYTES = 4096


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or too widely readable."""


class BadPeerId(ValueError):
    """A string is not an Ed25519 libp2p peer id."""


@lru_cache(maxsize=65536)  # base58 in pure Python is slow; the same ids recur all round
def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise ValueError(f"Ed25519 public key must be {PUBLIC_KEY_LEN} bytes")
    return base58.b58encode(_PEER_ID_PREFIX + public_key).decode("ascii")


@lru_cache(maxsize=65536)
def public_key_from_peer_id(peer_id: str) -> bytes:
    """Inverse of :func:`peer_id_from_public_key`; raises :class:`BadPeerId`."""
    if not isinstance(peer_id, str) or len(peer_id) > 64:
        raise BadPeerId("peer id must be a short string")
    try:
        raw = base58.b58decode(peer_id)
    except ValueError as exc:
        raise BadPeerId(f"peer id is not base58: {exc}") from exc
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_LEN or not raw.startswith(_PEER_ID_PREFIX):
        raise BadPeerId("peer id is not an inlined Ed25519 key")
    return raw[len(_PEER_ID_PREFIX):]


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message``.

    libsodium's verifier (via PyNaCl), not OpenSSL's: about half the CPU here (97 vs
    179 us), and it is the strict one (it also refuses non-canonical and small-order
    keys and R points, which no honest key produces). Everything that checks signatures
    goes through this one function, so every verifier in the network agrees."""
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        _sodium.crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, eq=False)
class Identity:
    """A signing key. ``peer_id`` is the same string libp2p derives for it."""

    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    peer_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")
        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        object.__setattr__(self, "_key", key)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "peer_id", peer_id_from_public_key(public))
        # libsodium's expanded secret key (seed + public key) for signing
        object.__setattr__(self, "_secret", _sodium.crypto_sign_seed_keypair(self.seed)[1])

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    def sign(self, message: bytes) -> bytes:
        """Ed25519 (RFC 8032, deterministic: the same bytes as any other implementation
        gives) by libsodium: 27 us here against OpenSSL's 48 (the coordinator signs a
        receipt for every accepted message, and every notice and result)."""
        signed = _sodium.crypto_sign(bytes(message), self._secret)  # type: ignore[attr-defined]
        return signed[:SIGNATURE_LEN]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as PKCS#8 PEM, created with mode 0600 (never wider)."""
        pem = self._key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        path = Path(path)
        try:
            st = path.stat()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {path} is accessible by group/others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
            )
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"key file {path} is {st.st_size} bytes; not a key")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"key file {path} is not a PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"key file {path} does not hold an Ed25519 key")
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(seed)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> tuple[Identity, bool]:
        """Load ``path``; create it (0600) when it does not exist. Returns (identity, created)."""
        if Path(path).exists():
            return cls.load(path), False
        ident = cls.generate()
        ident.save(path)
        return ident, True
