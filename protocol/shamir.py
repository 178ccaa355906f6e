"""Shamir secret sharing of 32-byte secrets over GF(2^521 - 1).

A degree ``t - 1`` polynomial with the secret as constant term, evaluated at
x = 1..n. Any ``t`` shares determine the secret (Lagrange interpolation at
0); any ``t - 1`` shares are uniformly distributed whatever the secret, so
they carry no information about it (Shamir 1979). The field is the Mersenne
prime 2^521 - 1, so every 256-bit secret is a field element and reduction is
cheap. Coefficients come from ``secrets`` (the OS CSPRNG).

Shares are encoded as 2 bytes of x (big-endian) and 66 bytes of y.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

P = 2**521 - 1
SECRET_LEN = 32
Y_LEN = 66
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
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % P
        shares.append(x.to_bytes(2, "big") + y.to_bytes(Y_LEN, "big"))
    return shares


def parse(share: bytes) -> tuple[int, int]:
    if len(share) != SHARE_LEN:
        raise ShareError(f"share must be {SHARE_LEN} bytes, got {len(share)}")
    x, y = int.from_bytes(share[:2], "big"), int.from_bytes(share[2:], "big")
    if x == 0 or y >= P:
        raise ShareError("share is outside the field")
    return x, y


def combine(shares: Iterable[bytes]) -> bytes:
    """Interpolate at 0. Exactly the polynomial's degree + 1 shares are needed; with fewer,
    the result is a random-looking value (which callers detect by a commitment check)."""
    points = [parse(s) for s in shares]
    xs = [x for x, _ in points]
    if not points:
        raise ShareError("no shares")
    if len(set(xs)) != len(xs):
        raise ShareError("duplicate share index")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % P
                den = den * (xj - xi) % P
        secret = (secret + yi * num * pow(den, -1, P)) % P
    if secret >> (8 * SECRET_LEN):
        raise ShareError("shares do not reconstruct a 32-byte secret")
    return secret.to_bytes(SECRET_LEN, "big")
