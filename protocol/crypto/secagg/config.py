"""A SecAgg+ round's parameters (:class:`SecAggConfig`: the graph, threshold and
agreement) and what client and server derive from them: pairwise and self masks, share
keys, the consistency message.

See :mod:`protocol.crypto.secagg` for the protocol and its guarantees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ...wire.identity import BadPeerId, public_key_from_peer_id, verify_signature
from ..common import (
    hkdf_sha256,
    round_bytes,
    stream,
)
from ..fixedpoint import FixedPoint
from .messages import TAG


@dataclass(frozen=True)
class SecAggConfig:
    round: int
    participants: tuple[str, ...]
    degree: int
    threshold: int
    graph_seed: bytes
    vector_len: int
    encoding: FixedPoint
    agreement: int = 0  # survivor signatures a client needs before unmasking; 0: threshold
    # 0: the participants are the round's members. Else the round is re-planned over the
    # participants that advertise keys (see restricted), for this dropout fraction.
    replan: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.participants)
        if len(set(self.participants)) != n or n < 2:
            raise ValueError("need at least 2 distinct participants")
        if not 1 <= self.threshold <= min(self.degree, n - 1):
            raise ValueError("threshold must be in [1, min(degree, n - 1)]")
        if self.agreement == 0:
            object.__setattr__(self, "agreement", self.threshold)
        if not self.threshold <= self.agreement <= n:
            raise ValueError("agreement must be in [threshold, n]")
        if self.degree < n - 1 and self.degree % 2:
            raise ValueError("degree must be even (Harary graph) unless the graph is complete")
        if len(self.graph_seed) != 32 or self.vector_len < 1:
            raise ValueError("graph_seed must be 32 bytes and vector_len >= 1")
        object.__setattr__(self, "_order", _cycle_order(self))
        object.__setattr__(self, "_neighbours", {})

    @classmethod
    def default(cls, round: int, participants: Iterable[str], graph_seed: bytes, vector_len: int,
                encoding: FixedPoint, *, degree: int | None = None, threshold: int | None = None,
                agreement: int | None = None, dropout: float = 0.3,
                replan: bool = False) -> SecAggConfig:
        """Defaults that survive a ``dropout`` fraction of clients vanishing.

        Up to 101 clients the graph is complete (classic SecAgg) and the threshold is
        ``(n - 1) - floor(dropout * n)``: even if every dropout is somebody's neighbour, that
        many of its neighbours remain. Larger rounds use a degree-100 Harary graph and the
        largest threshold for which random dropout leaves some client short of shares with
        probability at most 1e-6 per round (binomial tail, union bound over clients).
        ``agreement`` is ``(n - 1) - floor(dropout * n)`` on every graph (at least the
        threshold): a sparse graph's small threshold must not also be the number of
        signatures that convinces a client, or a server could show each half of the clients
        its own survivor list and collect both kinds of share for a client between them.
        """
        people = tuple(sorted(set(participants)))
        n = len(people)
        all_but_dropouts = (n - 1) - math.floor(dropout * n)
        if degree is None:
            degree = n - 1 if n <= 101 else 100
        if threshold is None:
            if degree >= n - 1:
                threshold = all_but_dropouts
            else:
                threshold = _largest_safe_threshold(degree, 1 - dropout, n)
            threshold = max(1, threshold)
        if agreement is None:
            agreement = max(threshold, all_but_dropouts)
        return cls(round, people, degree, threshold, graph_seed, vector_len, encoding, agreement,
                   dropout if replan else 0.0)

    def restricted(self, members: Iterable[str]) -> SecAggConfig:
        """This round over ``members``, the participants that advertised keys, when it
        re-plans (``replan``); itself otherwise, or when everyone advertised.

        Nothing secret has been sent when the keys phase closes, so a participant that
        stayed silent in it can be left out at no cost: graph, threshold and agreement are
        then those of :meth:`default` over the members, by the same rule both sides apply
        (the server to the keys it received, each client to the key directory it is
        shown). Without it a silent participant is a dropout from the start, and enough of
        them (free to make: enrol a key and say nothing) stopped every round. A server that
        names fewer members than answered gains nothing it could not have by announcing
        fewer participants in the first place. Raises ValueError for members that are not
        participants, or fewer than two."""
        members = frozenset(members)
        if not self.replan or members == frozenset(self.participants):
            return self
        if not members <= frozenset(self.participants):
            raise ValueError("members must be participants of the round")
        return SecAggConfig.default(self.round, members, self.graph_seed, self.vector_len,
                              self.encoding, dropout=self.replan, replan=True)

    def neighbours(self, peer: str) -> tuple[str, ...]:
        """``peer``'s neighbours, sorted (computed on first use: a client needs only its
        own, the server everyone's)."""
        cache: dict[str, tuple[str, ...]] = self._neighbours  # type: ignore[attr-defined]
        if peer not in cache:
            cache[peer] = _neighbours_of(self, peer)
        return cache[peer]

    @property
    def byte_len(self) -> int:
        return self.vector_len * self.encoding.bits // 8


def _largest_safe_threshold(k: int, keep: float, n: int, risk: float = 1e-6) -> int:
    """Largest t with n * P[Binomial(k, keep) < t] <= risk."""
    tail, t = 0.0, 0
    while t <= k:
        p_t = math.comb(k, t) * keep**t * (1 - keep) ** (k - t)
        if n * (tail + p_t) > risk:
            return t
        tail += p_t
        t += 1
    return k


def _cycle_order(cfg: SecAggConfig) -> tuple[dict[str, int], list[str]]:
    """The participants' places on the Harary graph's cycle (positions, and the cycle)."""
    people = sorted(cfg.participants)
    n = len(people)
    words = np.frombuffer(stream(cfg.graph_seed, 8 * 4 * n), dtype=">u8").tolist()
    order, w = list(people), 0
    for i in range(n - 1, 0, -1):  # Fisher-Yates with rejection sampling: unbiased
        bound = (2**64 // (i + 1)) * (i + 1)
        while words[w] >= bound:
            w += 1
        j = words[w] % (i + 1)
        w += 1
        order[i], order[j] = order[j], order[i]
    return {p: k for k, p in enumerate(order)}, order


def _neighbours_of(cfg: SecAggConfig, peer: str) -> tuple[str, ...]:
    """The ``degree/2`` places either side of ``peer`` on the cycle (everyone else, for the
    complete graph)."""
    pos, order = cfg._order  # type: ignore[attr-defined]
    n = len(order)
    if peer not in pos:
        raise KeyError(peer)
    if cfg.degree >= n - 1:
        return tuple(sorted(q for q in order if q != peer))
    half, k = cfg.degree // 2, pos[peer]
    return tuple(sorted({order[(k + d) % n] for d in range(-half, half + 1) if d}))


def prg(seed: bytes, cfg: SecAggConfig) -> np.ndarray:
    """The mask expanded from a 256-bit seed: AES-256-CTR keystream as ring elements."""
    return np.frombuffer(stream(seed, cfg.byte_len), dtype=cfg.encoding.dtype)


class Masker:
    """Adds ``sign * prg(seed)`` for many masks to a ring vector in place, a slice at a
    time: every mask's AES-CTR keystream continues from slice to slice, and the slice of
    ``y``, the keystream buffer and the zeros it encrypts stay in the core's cache (a
    whole-vector pass per mask streams three vectors through memory each time)."""

    CHUNK = 32768  # ring elements per slice (128 KiB of a 32-bit ring)

    def __init__(self, cfg: SecAggConfig):
        self._n = cfg.vector_len
        self._item = np.dtype(cfg.encoding.dtype).itemsize
        chunk = min(self._n, self.CHUNK)
        self._zeros = bytes(chunk * self._item)
        self._buf = bytearray(chunk * self._item)
        self._mask = np.frombuffer(self._buf, dtype=cfg.encoding.dtype)

    def apply(self, y: np.ndarray, masks: Iterable[tuple[bytes, int]]) -> None:
        streams = [(Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor(),
                    np.add if sign > 0 else np.subtract) for seed, sign in masks]
        zeros, buf = memoryview(self._zeros), memoryview(self._buf)
        for lo in range(0, self._n, self.CHUNK):
            k = min(self.CHUNK, self._n - lo)
            part, mask, nbytes = y[lo:lo + k], self._mask[:k], k * self._item
            for enc, op in streams:
                enc.update_into(zeros[:nbytes], buf[:nbytes])  # CTR: nothing held back
                op(part, mask, out=part)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return hkdf_sha256(secret, TAG + info)


def pairwise_seed(shared: bytes, r: int, u: str, v: str) -> bytes:
    a, b = sorted((u, v))
    return _hkdf(shared, b"mask" + round_bytes(r) + a.encode() + b"|" + b.encode())


def enc_keys(shared: bytes, r: int, me: str, other: str) -> tuple[bytes, bytes]:
    """The share-encryption keys ``me -> other`` and ``other -> me`` (one HKDF call)."""
    a, b = sorted((me, other))
    okm = hkdf_sha256(shared, TAG + b"enc" + round_bytes(r) + a.encode() + b"|" + b.encode(),
                      64)
    a_to_b, b_to_a = okm[:32], okm[32:]
    return (a_to_b, b_to_a) if me == a else (b_to_a, a_to_b)


def seed_commitment(seed: bytes) -> bytes:
    return hashlib.sha256(TAG + b"commit" + seed).digest()


def mask_sign(u: str, v: str) -> int:
    return 1 if u < v else -1


def consistency_message(round: int, survivors: Iterable[str]) -> bytes:
    """What each survivor signs in the consistency check (domain-separated): the round and
    the SHA-256 of the sorted survivor list. A digest, not the list: a client checks about
    0.7 N signatures over it, and Ed25519 hashes the whole message in every check, so the
    list itself (55 bytes a survivor) made each check O(N) and a client's unmask O(N^2):
    at N = 1,000, 149 us a check instead of 60, at N = 5,000 about 0.5 ms."""
    listed = hashlib.sha256(msgspec.msgpack.encode(sorted(survivors))).digest()
    return TAG + b"consistency\0" + round_bytes(round) + listed


def valid_signature(peer: str, message: bytes, signature: bytes) -> bool:
    try:
        return verify_signature(public_key_from_peer_id(peer), signature, message)
    except BadPeerId:
        return False


# --- client ---------------------------------------------------------------------------------
