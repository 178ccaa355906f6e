"""The prime-order group under our commitments: the Ed25519 curve's main subgroup.

Order ``L = 2^252 + 27742317777372353535851937790883648493`` (prime). Points
travel as their 32-byte compressed encoding; scalars are Python ints mod
``L`` (32 bytes little-endian on the wire). Arithmetic is libsodium's
(``crypto_core_ed25519_*`` through PyNaCl, which py-libp2p already needs).

Two generators: ``G``, the standard base point, and ``H``, hashed onto the
curve (Elligator 2 of SHA-512 of a fixed label, cofactor cleared), so that
nobody knows ``log_G H``: Pedersen commitments ``v*H + r*G`` are then
perfectly hiding and, under the discrete-log assumption, binding
(Pedersen, CRYPTO '91).

Every point that arrives from outside must pass :func:`point`: canonical
encoding, on the curve, in the main subgroup, not of small order
(``crypto_core_ed25519_is_valid_point``). The add/sub primitives check only
that their inputs are on the curve, and a point with a torsion component
would let a prover cheat the proofs built on these (its multiples depend on
the scalar mod 8).
"""

from __future__ import annotations

import hashlib
import secrets

from nacl import bindings as _na
from nacl.exceptions import RuntimeError as _NaclRuntimeError

L = 2**252 + 27742317777372353535851937790883648493
POINT_LEN = 32
SCALAR_LEN = 32


class GroupError(ValueError):
    """A byte string is not a valid group element or scalar, or an operation hit the
    identity (which has no valid encoding here)."""


def scalar(data: bytes) -> int:
    """A received scalar: exactly 32 bytes, canonical (below L)."""
    if len(data) != SCALAR_LEN:
        raise GroupError(f"scalar must be {SCALAR_LEN} bytes")
    value = int.from_bytes(data, "little")
    if value >= L:
        raise GroupError("scalar is not reduced mod L")
    return value


def scalar_bytes(value: int) -> bytes:
    return (value % L).to_bytes(SCALAR_LEN, "little")


def random_scalar() -> int:
    return secrets.randbelow(L - 1) + 1


def hash_to_scalar(domain: bytes, *parts: bytes) -> int:
    """SHA-512 over the domain and length-prefixed parts, reduced mod L (Fiat-Shamir)."""
    h = hashlib.sha512(b"hypergossip/group/v1\0" + domain + b"\0")
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return int.from_bytes(h.digest(), "little") % L


def point(data: bytes) -> bytes:
    """A received point, checked (see the module docstring); raises :class:`GroupError`."""
    if not isinstance(data, bytes | bytearray) or len(data) != POINT_LEN or \
            not _na.crypto_core_ed25519_is_valid_point(bytes(data)):
        raise GroupError("not a point of the prime-order subgroup")
    return bytes(data)


def base(s: int) -> bytes:
    """``s * G``."""
    try:
        return _na.crypto_scalarmult_ed25519_base_noclamp(scalar_bytes(s))
    except _NaclRuntimeError as exc:
        raise GroupError("s * G is the identity") from exc


def mul(s: int, p: bytes) -> bytes:
    """``s * p``; refuses (GroupError) a ``p`` that :func:`point` would refuse, as
    libsodium checks the encoding, the order and the subgroup of ``p`` first."""
    try:
        return _na.crypto_scalarmult_ed25519_noclamp(scalar_bytes(s), p)
    except _NaclRuntimeError as exc:
        raise GroupError("s * P is the identity") from exc


def add(p: bytes, q: bytes) -> bytes:
    try:
        return _na.crypto_core_ed25519_add(p, q)
    except _NaclRuntimeError as exc:
        raise GroupError("point addition failed") from exc


def sub(p: bytes, q: bytes) -> bytes:
    try:
        return _na.crypto_core_ed25519_sub(p, q)
    except _NaclRuntimeError as exc:
        raise GroupError("point subtraction failed") from exc


G = base(1)
H = _na.crypto_core_ed25519_from_uniform(
    hashlib.sha512(b"hypergossip/pedersen/v1/H").digest()[:32])


def commit(v: int, r: int) -> bytes:
    """The Pedersen commitment ``v*H + r*G`` (``r`` random and nonzero)."""
    v %= L
    return add(mul(v, H), base(r)) if v else base(r)


def linear(points: list[bytes], x: int) -> bytes:
    """``sum_k x^k * points[k]`` by Horner's rule (a polynomial's commitments at ``x``)."""
    acc = points[-1]
    for p in reversed(points[:-1]):
        acc = add(mul(x, acc), p)
    return acc
