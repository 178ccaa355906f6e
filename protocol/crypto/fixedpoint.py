"""Fixed-point encoding of float vectors into the ring Z_{2^bits}, for masked sums.

Each value is clipped to ``[-clip, clip]``, scaled by ``scale`` (a power of
two), rounded to the nearest integer and stored in two's complement modulo
``2^bits``. Sums of up to ``max_summands`` encoded values are taken modulo
``2^bits`` and decoded back to signed integers; ``scale`` is chosen as the
largest power of two such that ``max_summands * (clip * scale + 1/2)``
stays below ``2^(bits-1) - 1``, so a sum never wraps.

Error contract: ``decode_sum(sum of encode(x_i))`` equals ``sum(clip(x_i))``
to within ``n / (2 * scale)`` for n summands (each rounding is off by at most
half a unit), plus the float64 rounding of the final division (negligible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_DTYPES = {32: np.uint32, 64: np.uint64}


@dataclass(frozen=True)
class FixedPoint:
    clip: float
    max_summands: int
    bits: int = 32

    def __post_init__(self) -> None:
        if self.bits not in _DTYPES:
            raise ValueError("bits must be 32 or 64")
        if not (self.clip > 0 and math.isfinite(self.clip)) or self.max_summands < 1:
            raise ValueError("clip must be positive and finite, max_summands >= 1")
        if self.scale < 1:
            raise ValueError("clip * max_summands is too large for this ring; use bits=64")

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return _DTYPES[self.bits]

    @property
    def wire_dtype(self) -> np.dtype:
        """Little-endian ring elements, whatever this machine's byte order."""
        return np.dtype(f"<u{self.bits // 8}")

    @property
    def scale(self) -> float:
        headroom = (2 ** (self.bits - 1) - 1) / self.max_summands - 0.5
        return 2.0 ** math.floor(math.log2(headroom / self.clip)) if headroom > 0 else 0.0

    def error_bound(self, n: int) -> float:
        """Largest |decoded sum - clipped float sum| for n summands."""
        return n / (2 * self.scale)

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"cannot encode an array of {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot encode NaN or infinity")
        q = np.empty(x.shape, dtype=np.float64)  # one float buffer, every step in place:
        np.clip(x, -self.clip, self.clip, out=q)  # encoding runs over every coordinate
        q *= self.scale
        np.rint(q, out=q)
        # |q| <= clip * scale < 2^(bits-1): the signed cast is exact, and viewing it
        # unsigned is the two's-complement ring element
        signed = np.int32 if self.bits == 32 else np.int64
        return q.astype(signed).view(self.dtype)

    def decode_sum(self, total: np.ndarray, n: int) -> np.ndarray:
        """Decode a ring sum of ``n`` encoded vectors into floats."""
        if n > self.max_summands:
            raise ValueError(f"{n} summands exceed the encoding's {self.max_summands}")
        signed = np.asarray(total, dtype=self.dtype).view(np.int32 if self.bits == 32 else np.int64)
        return signed.astype(np.float64) / self.scale
