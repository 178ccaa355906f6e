"""A vss round's parameters (:class:`VssConfig`: participants, committee, threshold,
ranges) and what both sides derive from them: the committee draw, share encryption, and
the sums and interpolation of shares.

See :mod:`protocol.crypto.vss` for the protocol and its guarantees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec
import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .. import group, rangeproof
from ..common import (
    hkdf_sha256,
    round_bytes,
    stream,
)
from ..group import GroupError, L
from .messages import MAX_DIM, MAX_THRESHOLD, TAG, SharePoint, VssMisuse


# --- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VssConfig:
    round: int
    participants: tuple[str, ...]
    committee: tuple[str, ...]  # member k holds the shares at x = k + 1
    threshold: int
    low: tuple[float, ...]
    high: tuple[float, ...]
    bits: int
    min_included: int = 2
    # 0: the participants are the round's members and only the committee advertises keys.
    # Else every participant advertises one, and the round goes on with those that did,
    # its committee drawn again from them (restricted) for this dropout fraction.
    replan: float = 0.0
    seed: bytes = b""  # the public seed the committee is drawn with (to draw it again)
    committee_size: int = 16

    def __post_init__(self) -> None:
        n, c, d = len(self.participants), len(self.committee), len(self.low)
        if len(set(self.participants)) != n or n < 2:
            raise ValueError("need at least 2 distinct participants")
        if len(set(self.committee)) != c or not set(self.committee) <= set(self.participants):
            raise ValueError("the committee must be distinct participants")
        if not 1 <= self.threshold <= min(c, MAX_THRESHOLD):
            raise ValueError(f"threshold must be in [1, min(committee, {MAX_THRESHOLD})]")
        if not 1 <= d <= MAX_DIM or len(self.high) != d or any(
                not (math.isfinite(lo) and math.isfinite(hi) and lo < hi)
                for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("need 1..8 finite coordinates with low < high")
        if not 2 <= self.bits <= rangeproof.MAX_BITS or n * 2**self.bits >= L // 2:
            raise ValueError("bits out of range")

    @classmethod
    def default(cls, round: int, participants: Iterable[str], seed: bytes,
                low: Iterable[float], high: Iterable[float], *, bits: int = 14,
                committee_size: int = 16, dropout: float = 0.3,
                min_included: int = 2, replan: bool = False) -> VssConfig:
        """A committee of ``min(n, committee_size)`` in a seeded order, with the threshold
        that survives a ``dropout`` fraction of members vanishing."""
        people = tuple(sorted(set(participants)))
        committee = tuple(rank(people, seed)[:max(1, min(len(people), committee_size))])
        threshold = max(1, len(committee) - math.floor(dropout * len(committee)))
        return cls(round, people, committee, threshold, tuple(low), tuple(high), bits,
                   min_included, dropout if replan else 0.0, seed, committee_size)

    def restricted(self, members: Iterable[str]) -> VssConfig:
        """This round over ``members``, the participants that advertised keys, when it
        re-plans (``replan``); itself otherwise, or when everyone advertised.

        No share has been dealt when the keys phase closes, so a participant silent in it
        can be left out at no cost: the committee is drawn again from the members with the
        same seed, and its threshold is the default rule's, on both sides alike (the server
        from the keys it received, each client from the directory it is shown). Without
        it, silent members (free to make: enrol a key and say nothing) held committee seats
        and stopped every round once they outnumbered its dropout tolerance. Raises
        ValueError for members that are not participants, or fewer than two."""
        members = frozenset(members)
        if not self.replan or members == frozenset(self.participants):
            return self
        if not members <= frozenset(self.participants):
            raise ValueError("members must be participants of the round")
        return VssConfig.default(self.round, members, self.seed, self.low, self.high,
                              bits=self.bits, committee_size=self.committee_size,
                              dropout=self.replan, min_included=self.min_included,
                              replan=True)

    @property
    def dim(self) -> int:
        return len(self.low)

    @property
    def scales(self) -> np.ndarray:
        return (2**self.bits - 1) / (np.array(self.high) - np.array(self.low))

    def x_of(self, member: str) -> int:
        return self.committee.index(member) + 1

    def encode(self, x: np.ndarray) -> list[int]:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,) or not np.all(np.isfinite(x)):
            raise VssMisuse(f"input must be {self.dim} finite numbers")
        v = np.rint((np.clip(x, self.low, self.high) - self.low) * self.scales)
        return [int(min(max(q, 0), 2**self.bits - 1)) for q in v]

    def decode_sum(self, totals: list[int], n: int) -> np.ndarray:
        return np.array(totals, dtype=np.float64) / self.scales + n * np.array(self.low)

    def error_bound(self, n: int) -> float:
        """Largest |decoded sum - clipped float sum| over the coordinates, for n inputs."""
        return float(np.max(n / (2 * self.scales)))

    def context(self, dealer: str, j: int) -> bytes:
        """What a range proof is bound to: round, dealer, coordinate and the encoding."""
        return TAG + round_bytes(self.round) + dealer.encode() + b"|" + bytes([j, self.bits])


def rank(people: Iterable[str], seed: bytes) -> list[str]:
    """``people`` in a public order drawn from ``seed`` (AES-CTR words as sort keys)."""
    people = sorted(set(people))
    words = np.frombuffer(stream(hashlib.sha256(TAG + seed).digest(), 8 * len(people)),
                          dtype=">u8")
    return [p for _, p in sorted(zip(words.tolist(), people, strict=True))]


def max_dealers(dim: int, threshold: int, budget: int = 380_000) -> int:
    """How many dealings' commitments fit in ``budget`` bytes (one phase notice)."""
    return budget // (2 * 56 + 34 + dim * (34 * threshold + 3))


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return hkdf_sha256(secret, TAG + info)


def share_cipher(shared: bytes, cfg: VssConfig, dealer: str,
                 member: str) -> tuple[ChaCha20Poly1305, bytes]:
    ad = round_bytes(cfg.round) + dealer.encode() + b">" + member.encode()
    return ChaCha20Poly1305(_hkdf(shared, b"vss-share" + ad)), ad


def share_ok(cfg: VssConfig, commitments: list[list[bytes]], x: int, share: SharePoint) -> bool:
    """Whether ``share`` is the evaluation at ``x`` of the committed polynomials."""
    try:
        if len(share.f) != cfg.dim or len(share.g) != cfg.dim:
            return False
        for j in range(cfg.dim):
            f, g = group.scalar(share.f[j]), group.scalar(share.g[j])
            if group.commit(f, g) != group.linear(commitments[j], x):
                return False
        return True
    except GroupError:
        return False


def decode_share(plain: bytes) -> SharePoint:
    return msgspec.msgpack.decode(plain, type=SharePoint)


def sum_shares(cfg: VssConfig, shares: Iterable[SharePoint]) -> SharePoint:
    f, g = [0] * cfg.dim, [0] * cfg.dim
    for share in shares:
        for j in range(cfg.dim):
            f[j] += group.scalar(share.f[j])
            g[j] += group.scalar(share.g[j])
    return SharePoint(f=[group.scalar_bytes(a) for a in f], g=[group.scalar_bytes(b) for b in g])


def summed(cfg: VssConfig, commitments: Mapping[str, list[list[bytes]]],
            dealers: Iterable[str]) -> list[list[bytes]]:
    """Per coordinate and coefficient, the sum of ``dealers``' commitments."""
    chosen = list(dealers)
    return [[sum_points(commitments[u][j][k] for u in chosen) for k in range(cfg.threshold)]
            for j in range(cfg.dim)]


def evaluate(coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % L
    return acc


def sum_points(points: Iterable[bytes]) -> bytes:
    it = iter(points)
    acc = next(it)
    for p in it:
        acc = group.add(acc, p)
    return acc


def lagrange_at_zero(xs: list[int]) -> list[int]:
    out = []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % L
                den = den * (xj - xi) % L
        out.append(num * pow(den, -1, L) % L)
    return out
