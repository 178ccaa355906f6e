"""Signed envelopes: every message on the network is one.

Wire format: one msgpack array (msgspec ``array_like`` struct, so the
encoding of given field values is fixed)::

    [version, domain, sender, round, nonce, payload_digest, payload, signature]

The signature covers the *header*, never a re-encoding of decoded values::

    b"hypergossip/v1\\0" + domain + b"\\0" + msgpack([version, domain, sender,
                                                   round, nonce, payload_digest])

so a signature made for one message kind (domain) can never be valid for
another, and the payload is bound through its SHA-256 digest.

Rules of :class:`Verifier` (the receiving side's small state machine):

1. Size first: wire bytes over the cap are refused before decoding.
2. Structure: exact field count and types, 32-byte key, 16-byte nonce.
3. Domain must be one the caller expects here.
4. The payload must hash to ``payload_digest`` (a flipped payload byte).
5. The signature must verify under ``sender`` (forgery, flipped header byte).
6. The round must lie in the caller's window (stale or future).
7. The (sender, nonce) pair must be unseen; it is remembered only after 1-6
   pass, so a forger cannot burn an honest nonce, and keyed by sender, so a
   valid key copying somebody else's nonce cannot either.

Each failure is its own exception type carrying a stable ``reason`` string,
which is what counters and HTTP errors show.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable

import msgspec

from .identity import PUBLIC_KEY_LEN, SIGNATURE_LEN, Identity, peer_id_from_public_key
from .identity import verify_signature as _verify_signature

VERSION = 1
SIGNING_PREFIX = b"hypergossip/v1\x00"
NONCE_LEN = 16
DIGEST_LEN = 32
MAX_ROUND = 2**53
DEFAULT_MAX_WIRE = 512 * 1024  # gossip carries at most this; larger payloads go by blob


class Envelope(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    domain: str
    sender: bytes
    round: int
    nonce: bytes
    payload_digest: bytes
    payload: bytes
    signature: bytes

    @property
    def sender_id(self) -> str:
        return peer_id_from_public_key(self.sender)

    def signing_bytes(self) -> bytes:
        return signing_bytes(
            self.version, self.domain, self.sender, self.round, self.nonce, self.payload_digest
        )

    def wire_digest(self) -> bytes:
        """Digest identifying this exact message (what the store records)."""
        return hashlib.sha256(_encoder.encode(self)).digest()


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


class RejectedMessage(Exception):
    """Base of every reason a received message is refused. ``reason`` is stable."""

    reason = "rejected"


class Malformed(RejectedMessage):
    reason = "malformed"


class Oversize(RejectedMessage):
    reason = "oversize"


class WrongDomain(RejectedMessage):
    reason = "wrong_domain"


class DigestMismatch(RejectedMessage):
    reason = "digest_mismatch"


class BadSignature(RejectedMessage):
    reason = "bad_signature"


class StaleRound(RejectedMessage):
    reason = "stale_round"


class FutureRound(RejectedMessage):
    reason = "future_round"


class Replay(RejectedMessage):
    reason = "replay"


def signing_bytes(
    version: int, domain: str, sender: bytes, round: int, nonce: bytes, payload_digest: bytes
) -> bytes:
    header = _encoder.encode([version, domain, sender, round, nonce, payload_digest])
    return SIGNING_PREFIX + domain.encode() + b"\x00" + header


def seal(identity: Identity, domain: str, round: int, payload: bytes) -> bytes:
    """Sign ``payload`` as a message of kind ``domain`` for ``round``; return wire bytes."""
    if not 0 <= round <= MAX_ROUND:
        raise ValueError("round out of range")
    if not domain or "\x00" in domain:
        raise ValueError("bad domain")
    nonce = os.urandom(NONCE_LEN)
    digest = hashlib.sha256(payload).digest()
    sig = identity.sign(
        signing_bytes(VERSION, domain, identity.public_key, round, nonce, digest)
    )
    env = Envelope(VERSION, domain, identity.public_key, round, nonce, digest, payload, sig)
    return _encoder.encode(env)


def peek(wire: bytes, max_wire: int = DEFAULT_MAX_WIRE) -> Envelope | None:
    """Decode without verifying (to route or to file a counter); None when undecodable."""
    if len(wire) > max_wire:
        return None
    try:
        return _decoder.decode(wire)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):  # ValueError: bad UTF-8
        return None


def open_envelope(
    wire: bytes, *, domains: Iterable[str] | None = None, max_wire: int = DEFAULT_MAX_WIRE
) -> Envelope:
    """Stateless checks 1-5: size, structure, domain, digest, signature.

    Use this where replay and rounds do not matter (a peer reading a
    coordinator's signed result it pulled); use :class:`Verifier` otherwise.
    """
    if len(wire) > max_wire:
        raise Oversize(f"message is {len(wire)} bytes, limit {max_wire}")
    try:
        env = _decoder.decode(wire)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise Malformed(f"not an envelope: {exc}") from exc
    if env.version != VERSION:
        raise Malformed(f"unsupported version {env.version}")
    if (
        len(env.sender) != PUBLIC_KEY_LEN
        or len(env.nonce) != NONCE_LEN
        or len(env.payload_digest) != DIGEST_LEN
        or len(env.signature) != SIGNATURE_LEN
        or not 0 <= env.round <= MAX_ROUND
        or len(env.domain) > 64
    ):
        raise Malformed("envelope field has the wrong length or range")
    if domains is not None and env.domain not in domains:
        raise WrongDomain(f"domain {env.domain!r} not accepted here")
    if hashlib.sha256(env.payload).digest() != env.payload_digest:
        raise DigestMismatch("payload does not match its signed digest")
    if not _verify_signature(env.sender, env.signature, env.signing_bytes()):
        raise BadSignature("signature does not verify under the sender's key")
    return env


class Verifier:
    """Stateful verification: the stateless checks plus round window and replay.

    Nonces are kept per round and forgotten once their round falls below the
    oldest round the caller still accepts (older messages are stale anyway),
    so memory stays bounded by the window.
    """

    def __init__(self, *, max_wire: int = DEFAULT_MAX_WIRE, max_nonces_per_round: int = 200_000):
        self.max_wire = max_wire
        self.max_nonces_per_round = max_nonces_per_round
        self._seen: dict[int, set[tuple[bytes, bytes]]] = {}

    def verify(
        self, wire: bytes, *, domains: Iterable[str], min_round: int, max_round: int,
        check: Callable[[Envelope], None] | None = None,
    ) -> Envelope:
        """Checks 1-7; ``check(env)``, when given, runs after 1-6 and before the nonce is
        remembered, and refuses by raising: a rule such as "the sender is admitted" then
        keeps strangers' messages out of the nonce memory (and its per-round cap)."""
        env = open_envelope(wire, domains=domains, max_wire=self.max_wire)
        if env.round < min_round:
            raise StaleRound(f"round {env.round} is older than {min_round}")
        if env.round > max_round:
            raise FutureRound(f"round {env.round} is newer than {max_round}")
        if check is not None:
            check(env)
        self.forget_before(min_round)
        seen = self._seen.setdefault(env.round, set())
        key = (env.sender, env.nonce)
        if key in seen:
            raise Replay(f"nonce already seen in round {env.round}")
        if len(seen) >= self.max_nonces_per_round:
            raise Oversize(f"round {env.round} has too many messages")
        seen.add(key)
        return env

    def remember(self, round: int, sender: bytes, nonce: bytes) -> None:
        """Mark a nonce seen (used to reload accepted messages after a restart)."""
        self._seen.setdefault(round, set()).add((sender, nonce))

    def forget_before(self, round: int) -> None:
        for r in [r for r in self._seen if r < round]:
            del self._seen[r]
