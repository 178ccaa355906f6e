"""Shamir secret sharing of 32-byte secrets over GF(2^256 + 297).

A degree ``t - 1`` polynomial with the secret as constant term, evaluated at
x = 1..n. Any ``t`` shares determine the secret (Lagrange interpolation at
0); any ``t - 1`` shares are uniformly distributed whatever the secret, so
they carry no information about it (Shamir 1979). The field's prime is the
smallest above 2^256, so every 256-bit secret is a field element and a
share's y fits in 33 bytes. Coefficients come from ``secrets`` (the OS
CSPRNG).

Shares are encoded as 2 bytes of x (big-endian) and 33 bytes of y.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from functools import lru_cache

P = 2**256 + 297  # prime (the smallest above 2^256)
SECRET_LEN = 32
Y_LEN = 33
SHARE_LEN = 2 + Y_LEN
MAX_SHARES = 65535


class ShareError(ValueError):
    """Shares are malformed, duplicated, too few, or do not reconstruct a valid secret."""


def split(secret: bytes, threshold: int, n: int) -> list[bytes]:
    """``n`` shares of ``secret``, any ``threshold`` of which reconstruct it."""
    if len(secret) != SECRET_LEN:
        raise ValueError(f"secret must be {SECRET_LEN} bytes")
    if not 1 <= threshold <= n <= MAX_SHARES:
        raise ValueError(f"need 1 <= threshold ({threshold}) <= n ({n}) <= {MAX_SHARES}")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(P) for _ in range(threshold - 1)]
    coeffs.reverse()
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in coeffs:  # Horner over the integers (x < 2^16), one reduction at the end:
            y = y * x + c  # half the time of reducing at every step
        shares.append(x.to_bytes(2, "big") + (y % P).to_bytes(Y_LEN, "big"))
    return shares


def parse(share: bytes) -> tuple[int, int]:
    if len(share) != SHARE_LEN:
        raise ShareError(f"share must be {SHARE_LEN} bytes, got {len(share)}")
    x, y = int.from_bytes(share[:2], "big"), int.from_bytes(share[2:], "big")
    if x == 0 or y >= P:
        raise ShareError("share is outside the field")
    return x, y


@lru_cache(maxsize=8192)
def _basis(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Lagrange basis polynomials of the nodes ``xs`` evaluated at ``at`` (mod P).

    They depend only on the share indices, which repeat from secret to secret (every
    owner's first t holders), so they are cached; one batched inversion each."""
    nums, dens = [], []
    for j, xj in enumerate(xs):
        num = den = 1
        for k, xk in enumerate(xs):
            if k != j:
                num = num * (at - xk) % P
                den = den * (xj - xk) % P
        nums.append(num)
        dens.append(den)
    prefix = [1]  # Montgomery's trick: invert all denominators with one pow()
    for d in dens:
        prefix.append(prefix[-1] * d % P)
    inv = pow(prefix[-1], -1, P)
    inverses = [0] * len(dens)
    for j in range(len(dens) - 1, -1, -1):
        inverses[j] = inv * prefix[j] % P
        inv = inv * dens[j] % P
    return tuple(n * i % P for n, i in zip(nums, inverses, strict=True))


def lagrange(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """The Lagrange basis of the nodes ``xs`` at ``at``: the value there of any polynomial
    of degree < len(xs) is ``sum_j basis[j] * y_j``."""
    return _basis(xs, at % P)


def _points(shares: Iterable[bytes]) -> list[tuple[int, int]]:
    points = [parse(s) for s in shares]
    if not points:
        raise ShareError("no shares")
    if len({x for x, _ in points}) != len(points):
        raise ShareError("duplicate share index")
    return points


def evaluate(shares: Iterable[bytes], at: int) -> int:
    """The value at ``at`` of the lowest-degree polynomial through ``shares``."""
    return interpolate(_points(shares), at)


def interpolate(points: list[tuple[int, int]], at: int) -> int:
    """The same for already parsed, distinct points (:func:`parse`): callers that test many
    shares against one polynomial parse each share once."""
    basis = _basis(tuple(x for x, _ in points), at % P)
    return sum(b * y for b, (_, y) in zip(basis, points, strict=True)) % P


def combine(shares: Iterable[bytes]) -> bytes:
    """Interpolate at 0. Exactly the polynomial's degree + 1 shares are needed; with fewer,
    the result is a random-looking value (which callers detect by a commitment check)."""
    secret = evaluate(shares, 0)
    if secret >> (8 * SECRET_LEN):
        raise ShareError("shares do not reconstruct a 32-byte secret")
    return secret.to_bytes(SECRET_LEN, "big")


def consistent(basis_shares: list[bytes], share: bytes) -> bool:
    """Whether ``share`` lies on the polynomial through ``basis_shares``."""
    x, y = parse(share)
    return evaluate(basis_shares, x) == y
