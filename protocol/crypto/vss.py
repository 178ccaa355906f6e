"""Verified secure sums of small vectors: Pedersen VSS to a committee, range-checked inputs.

Theory of operation
-------------------
The server learns the sum of the included clients' vectors and nothing else
about any one of them, as long as fewer than ``threshold`` committee
members collude with it (fewer than ``2 * threshold - c`` if it also names
different included sets to different members, see Guarantees); and every
input it sums was proven, in zero knowledge, to lie in the workload's
range, so a malicious client can move
the sum no more than an honest one with an extreme value could. This is
the committee Shamir scheme for small statistics (Pedersen's verifiable
secret sharing, CRYPTO '91, with the range proofs of
:mod:`protocol.crypto.rangeproof`); SecAgg+ (:mod:`protocol.crypto.secagg`) remains the
protocol for model vectors, where per-coordinate proofs would cost too much.
Both sides are sans-IO state machines: callers pass messages in and send
the messages that come out; signatures were checked before a message
reaches us, so a sender's peer id here is authenticated.

Construction, for ``d`` coordinates and a committee of ``c`` members with
threshold ``tau``:

* Encoding: coordinate ``j`` of a client's vector is clipped to
  ``[low_j, high_j]`` and mapped to ``v_j = round((x_j - low_j) * scale_j)``
  with ``scale_j = (2^bits - 1) / (high_j - low_j)``, so ``v_j`` in
  ``[0, 2^bits)`` is exactly ``x_j`` in the range. Sums stay far below the
  group order, so they decode exactly up to rounding.
* Committee: ``c = min(n, committee_size)`` participants in an order fixed
  by the public ``seed``; member ``k`` (0-based) holds the shares at
  ``x = k + 1``. ``tau = c - floor(dropout * c)``, which is more than ``c/2``.
* Keys: each member advertises a fresh X25519 key for the round. A round
  configured to re-plan (``Config.replan``, the default for rounds the
  coordinator runs) has every participant advertise one, and goes on with
  those that did: its committee is drawn again from them with the same seed
  (``Config.restricted``), so a participant silent from the start holds no
  seat and costs nothing but the wait.
* Deal: each client picks, per coordinate, polynomials ``f_j`` and ``g_j`` of
  degree ``tau - 1`` with ``f_j(0) = v_j``, ``g_j(0) = r_j`` and uniform
  other coefficients, publishes ``E_{j,k} = f_{j,k} H + g_{j,k} G`` (so
  ``E_{j,0}`` is the Pedersen commitment to ``v_j``), a range proof for each
  ``E_{j,0}``, and for each member the ciphertext of its shares
  ``(f_j(x), g_j(x))_j``: ChaCha20-Poly1305 under HKDF(X25519(dealer's
  fresh key, member's key)), bound to round, dealer and member. The server
  checks every point and proof and refuses the dealing otherwise.
* Check: each member decrypts its shares and tests
  ``f_j(x) H + g_j(x) G == sum_k x^k E_{j,k}``; it accuses each dealer whose
  share fails (or does not decrypt).
* Resolve: an accused dealer reveals the disputed shares in the clear and
  the server tests them the same way; a valid one is handed to the member
  (a share is one point of a polynomial of degree ``tau - 1``: revealing it
  costs nothing while fewer than ``tau`` are known), a bad or missing one
  disqualifies the dealer.
* Aggregate: the server names the included dealers ``A``; each member
  answers ``F_j(x) = sum_{u in A} f_{u,j}(x)`` and the same for ``g``. The
  server tests each answer against ``sum_{u in A} E_{u,j,k}`` (a lying
  member is caught and ignored), interpolates ``tau`` valid answers at 0
  and decodes ``sum_{u in A} v_{u,j}``.

Guarantees: fewer than ``tau`` shares of a polynomial of degree ``tau - 1``
are uniformly distributed whatever its constant term, and the commitments
are perfectly hiding, so the server with fewer than ``tau`` members learns
only the sum over ``A``. Members refuse an ``A`` with fewer than
``min_included`` dealers; a server naming different ``A`` to different
members gains nothing, since each honest member answers once and every
sum needs ``tau > c/2`` answers: two sums would need ``2 * tau`` answers
from ``c`` members of whom only colluders answer twice, so against such a
server the bound on colluding members is ``2 * tau - c`` (8 of the default
16 at 30 % dropout), not ``tau``. Commitments bind under discrete log, so an included
input is the range-checked one. The round completes when ``tau`` members
answer; clients need not stay after dealing.

Phases (server)::

    KEYS --close_keys()--> DEAL --close_deal()--> CHECK --close_check()-->
    RESOLVE --close_resolve()--> AGGREGATE --close_aggregate()--> DONE

Each ``receive_*`` accepts a message only in its phase, only from a sender
allowed there, at most once; anything else raises :class:`VssRejected` (a
remote fault, with its reason). A phase ending without enough members
raises :class:`VssAbort`; methods out of order raise :class:`VssMisuse`.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..wire.envelope import RejectedMessage
from ..wire.messages import Strict
from . import group, rangeproof
from .common import (
    admit,
    hkdf_sha256,
    raw_private,
    raw_public,
    round_bytes,
    stream,
    usable_public_key,
    x25519,
)
from .group import GroupError, L

TAG = b"hypergossip/vss/v2/"  # v2: share keys derived under this tag, not SecAgg+'s
B32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
PeerId = Annotated[str, msgspec.Meta(max_length=64)]
MAX_DIM = 8
MAX_THRESHOLD = 64


class VssRejected(RejectedMessage):
    reason = "vss"


class VssAbort(Exception):
    """The round cannot continue safely (too few members or dealers left)."""


class VssMisuse(Exception):
    """A method was called out of phase (a bug in the caller)."""


# --- messages ----------------------------------------------------------------------------------
class MemberKey(Strict):
    enc_pk: B32


class KeyDirectory(Strict):
    keys: Annotated[dict[PeerId, B32], msgspec.Meta(max_length=1_000)]


Points = Annotated[list[B32], msgspec.Meta(max_length=MAX_THRESHOLD)]


class Dealing(Strict):
    """Client -> server: per coordinate the polynomial commitments and the range proof of
    the value's commitment, one ciphertext per member, and the key they are sealed for."""

    commitments: Annotated[list[Points], msgspec.Meta(max_length=MAX_DIM)]
    proofs: Annotated[list[rangeproof.RangeProof], msgspec.Meta(max_length=MAX_DIM)]
    dealer_pk: B32
    ciphertexts: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]


class Commitments(Strict):
    """Server -> members: the commitments of every dealing it accepted, by dealer."""

    dealers: Annotated[dict[PeerId, list[Points]], msgspec.Meta(max_length=10_000)]
    dealer_pks: Annotated[dict[PeerId, B32], msgspec.Meta(max_length=10_000)]


class Inbox(Strict):
    """Server -> one member: the ciphertexts addressed to it, by dealer."""

    ciphertexts: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=10_000)]


class Accusations(Strict):
    dealers: Annotated[list[PeerId], msgspec.Meta(max_length=10_000)]


class Disputes(Strict):
    """Server -> all: each accused dealer and the members whose shares it must reveal."""

    accused: Annotated[dict[PeerId, list[PeerId]], msgspec.Meta(max_length=10_000)]


class Reveal(Strict):
    """An accused dealer -> server: the disputed shares in the clear, by member."""

    shares: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]


class Inclusion(Strict):
    """Server -> members: whose dealings the sum includes, and the revealed shares that
    replace the ones members accused (by dealer, then member)."""

    included: Annotated[list[PeerId], msgspec.Meta(max_length=10_000)]
    revealed: Annotated[dict[PeerId, dict[PeerId, bytes]], msgspec.Meta(max_length=10_000)]


class AggregateShare(Strict):
    included_digest: B32  # of the sorted included list the member summed over
    f: Annotated[list[B32], msgspec.Meta(max_length=MAX_DIM)]
    g: Annotated[list[B32], msgspec.Meta(max_length=MAX_DIM)]


class _Share(Strict, array_like=True):
    f: list[B32]
    g: list[B32]


def included_digest(included: Iterable[str]) -> bytes:
    return hashlib.sha256(TAG + b"included\0" + msgspec.msgpack.encode(sorted(included))).digest()


# --- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
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
                min_included: int = 2, replan: bool = False) -> Config:
        """A committee of ``min(n, committee_size)`` in a seeded order, with the threshold
        that survives a ``dropout`` fraction of members vanishing."""
        people = tuple(sorted(set(participants)))
        committee = tuple(rank(people, seed)[:max(1, min(len(people), committee_size))])
        threshold = max(1, len(committee) - math.floor(dropout * len(committee)))
        return cls(round, people, committee, threshold, tuple(low), tuple(high), bits,
                   min_included, dropout if replan else 0.0, seed, committee_size)

    def restricted(self, members: Iterable[str]) -> Config:
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
        return Config.default(self.round, members, self.seed, self.low, self.high,
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


def _aead(shared: bytes, cfg: Config, dealer: str, member: str) -> tuple[ChaCha20Poly1305, bytes]:
    ad = round_bytes(cfg.round) + dealer.encode() + b">" + member.encode()
    return ChaCha20Poly1305(_hkdf(shared, b"vss-share" + ad)), ad


def _share_ok(cfg: Config, commitments: list[list[bytes]], x: int, share: _Share) -> bool:
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


def _decode_share(plain: bytes) -> _Share:
    return msgspec.msgpack.decode(plain, type=_Share)


# --- client (every participant deals; committee members also hold shares) --------------------
class VssClient:
    """One participant's side of one round. Phases: advertise -> deal -> check -> reveal ->
    aggregate, each called once, in order; members use every step, other participants
    only deal and reveal (the rest return None)."""

    def __init__(self, peer_id: str, cfg: Config):
        if peer_id not in cfg.participants:
            raise VssMisuse("client is not a participant of this round")
        self.me, self.cfg = peer_id, cfg
        self.member = peer_id in cfg.committee
        self._enc = X25519PrivateKey.generate()  # as a member: shares are sealed to it
        self._enc_sk = raw_private(self._enc)
        self._dealer = X25519PrivateKey.generate()  # as a dealer: shares are sealed with it
        self._step = 0
        self._polys: list[tuple[list[int], list[int]]] = []  # per coordinate: f, g coeffs
        self._directory: dict[str, bytes] = {}
        self._shares: dict[str, _Share] = {}  # as a member: verified shares, by dealer
        self._commitments: dict[str, list[list[bytes]]] = {}

    def _advance(self, expect: int) -> None:
        if self._step != expect:
            raise VssMisuse(f"client phase {expect} called at step {self._step}")
        self._step += 1

    def advertise(self) -> MemberKey | None:
        """The key shares are sealed to, as a member: every participant sends one when the
        round re-plans (the committee is drawn from those that do), else members only."""
        self._advance(0)
        return MemberKey(enc_pk=raw_public(self._enc)) if self.member or self.cfg.replan \
            else None

    def deal(self, directory: KeyDirectory, x: np.ndarray) -> Dealing:
        """Commit to, prove the range of and share the encoding of ``x`` (floats)."""
        return self._deal(directory, self.cfg.encode(x))

    def _prove(self, j: int, v: int, r: int) -> list[rangeproof.BitProof]:
        return rangeproof.prove(v, r, self.cfg.bits, self.cfg.context(self.me, j))

    def _deal(self, directory: KeyDirectory, values: list[int]) -> Dealing:
        self._advance(1)
        try:
            self.cfg = self.cfg.restricted(directory.keys)  # the members, if it re-plans
        except ValueError as exc:
            raise VssAbort(f"the key directory cannot be this round's: {exc}") from exc
        if self.me not in self.cfg.participants:
            raise VssAbort("the directory leaves this client out")
        self.member = self.me in self.cfg.committee
        cfg, t = self.cfg, self.cfg.threshold
        members = [m for m in cfg.committee if m in directory.keys]
        if len(members) < t:
            raise VssAbort(f"only {len(members)} members advertised keys; threshold is {t}")
        if self.member and directory.keys.get(self.me) != raw_public(self._enc):
            raise VssAbort("the directory does not hold this member's key")
        self._directory = dict(directory.keys)
        commitments, proofs = [], []
        for j, v in enumerate(values):
            f = [v] + [group.random_scalar() for _ in range(t - 1)]
            g = [group.random_scalar() for _ in range(t)]
            self._polys.append((f, g))
            commitments.append([group.commit(a, b) for a, b in zip(f, g, strict=True)])
            proofs.append(self._prove(j, v, g[0]))
        ciphertexts, sk = {}, raw_private(self._dealer)
        for m in members:
            try:
                shared = x25519(sk, self._directory[m])
            except ValueError as exc:  # the server should have refused that key
                raise VssAbort(f"member {m}'s key is unusable: {exc}") from exc
            aead, ad = _aead(shared, cfg, self.me, m)
            nonce = os.urandom(12)
            ciphertexts[m] = nonce + aead.encrypt(nonce, self._share_for(m), ad)
        return Dealing(commitments=commitments, proofs=proofs,
                       dealer_pk=raw_public(self._dealer), ciphertexts=ciphertexts)

    def _share_for(self, member: str) -> bytes:
        x = self.cfg.x_of(member)
        evals = [(_eval(f, x), _eval(g, x)) for f, g in self._polys]
        return msgspec.msgpack.encode(_Share(f=[group.scalar_bytes(a) for a, _ in evals],
                                             g=[group.scalar_bytes(b) for _, b in evals]))

    def check(self, commitments: Commitments, inbox: Inbox) -> Accusations | None:
        """As a member: decrypt every dealer's share and test them; accuse those that fail.

        Optimistically first in one test of their sum against the summed commitments
        (point additions, a few multiplications), one by one only when that fails: the sum
        is all this member will ever vouch for, and shares whose errors cancel in it do no
        harm to it."""
        self._advance(2)
        if not self.member:
            return None
        x = self.cfg.x_of(self.me)
        self._commitments = dict(commitments.dealers)
        accused, opened = [], {}
        for dealer in commitments.dealers:
            share = None
            blob, pk = inbox.ciphertexts.get(dealer), commitments.dealer_pks.get(dealer)
            if blob is not None and pk is not None and len(blob) > 12:
                try:
                    shared = x25519(self._enc_sk, pk)
                    aead, ad = _aead(shared, self.cfg, dealer, self.me)
                    share = _decode_share(aead.decrypt(blob[:12], blob[12:], ad))
                except (InvalidTag, ValueError, msgspec.DecodeError):
                    share = None
            if share is None or len(share.f) != self.cfg.dim or len(share.g) != self.cfg.dim:
                accused.append(dealer)
            else:
                opened[dealer] = share
        if opened and not _share_ok(self.cfg, _summed(self.cfg, commitments.dealers, opened),
                                    x, _sum_shares(self.cfg, opened.values())):
            bad = [u for u, sh in opened.items()
                   if not _share_ok(self.cfg, commitments.dealers[u], x, sh)]
            for u in bad:
                del opened[u]
            accused += bad
        self._shares.update(opened)
        return Accusations(dealers=sorted(accused))

    def reveal(self, disputes: Disputes) -> Reveal | None:
        """As an accused dealer: the disputed shares in the clear."""
        self._advance(3)
        members = disputes.accused.get(self.me)
        if not members:
            return None
        return Reveal(shares={m: self._share_for(m) for m in members if m in self.cfg.committee})

    def aggregate(self, inclusion: Inclusion) -> AggregateShare | None:
        """As a member: the sums of our shares over the included dealers."""
        self._advance(4)
        if not self.member:
            return None
        included = sorted(set(inclusion.included))
        if len(included) < self.cfg.min_included:
            raise VssAbort(f"the server includes {len(included)} dealers; at least "
                           f"{self.cfg.min_included} are needed to hide each input")
        x = self.cfg.x_of(self.me)
        for dealer, by_member in inclusion.revealed.items():  # replace what we accused
            plain = by_member.get(self.me)
            if plain is None or dealer not in self._commitments:
                continue
            try:
                share = _decode_share(plain)
            except (ValueError, msgspec.DecodeError):
                continue
            if _share_ok(self.cfg, self._commitments[dealer], x, share):
                self._shares[dealer] = share
        missing = [u for u in included if u not in self._shares]
        if missing:
            raise VssAbort(f"no valid share from {len(missing)} included dealers")
        total = _sum_shares(self.cfg, (self._shares[u] for u in included))
        return AggregateShare(included_digest=included_digest(included), f=total.f, g=total.g)


def _sum_shares(cfg: Config, shares: Iterable[_Share]) -> _Share:
    f, g = [0] * cfg.dim, [0] * cfg.dim
    for share in shares:
        for j in range(cfg.dim):
            f[j] += group.scalar(share.f[j])
            g[j] += group.scalar(share.g[j])
    return _Share(f=[group.scalar_bytes(a) for a in f], g=[group.scalar_bytes(b) for b in g])


def _summed(cfg: Config, commitments: Mapping[str, list[list[bytes]]],
            dealers: Iterable[str]) -> list[list[bytes]]:
    """Per coordinate and coefficient, the sum of ``dealers``' commitments."""
    chosen = list(dealers)
    return [[_sum_points(commitments[u][j][k] for u in chosen) for k in range(cfg.threshold)]
            for j in range(cfg.dim)]


def _eval(coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % L
    return acc


# --- server ---------------------------------------------------------------------------------
class Phase(enum.Enum):
    KEYS = 0
    DEAL = 1
    CHECK = 2
    RESOLVE = 3
    AGGREGATE = 4
    DONE = 5


@dataclass
class Outcome:
    total: np.ndarray  # decoded float64 sum over ``included``
    included: list[str]
    rejected: dict[str, str] = field(default_factory=dict)  # peer -> why its message was refused
    disqualified: dict[str, str] = field(default_factory=dict)  # dealer -> why it was excluded
    members: int = 0  # valid aggregate shares received


class VssServer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.phase = Phase.KEYS
        self.keys: dict[str, bytes] = {}  # everyone who advertised (members only, if fixed)
        self.members: dict[str, bytes] = {}  # the committee members with keys, once closed
        self.dealings: dict[str, Dealing] = {}
        self.accusations: dict[str, list[str]] = {}  # member -> dealers it accused
        self.disputes: dict[str, list[str]] = {}  # dealer -> members it must answer
        self.reveals: dict[str, Reveal] = {}
        self.revealed: dict[str, dict[str, bytes]] = {}  # dealer -> member -> valid share
        self.disqualified: dict[str, str] = {}
        self.included: list[str] = []
        self.aggregates: dict[str, AggregateShare] = {}
        self.rejected: dict[str, str] = {}  # peer -> why its last refused message was
        self.refused: dict[Phase, set[str]] = {p: set() for p in Phase}  # by phase
        self._summed: list[list[bytes]] = []  # per coordinate and coefficient, over included

    def _check(self, phase: Phase, peer: str, seen: Mapping[str, object],
               allowed: Iterable[str]) -> None:
        admit(self.phase, phase, peer, seen, allowed, VssRejected)

    def _reject(self, peer: str, why: str) -> VssRejected:
        self.rejected[peer] = why
        self.refused[self.phase].add(peer)
        return VssRejected(why)

    def _close(self, phase: Phase, count: int = 0, need: int = 0, what: str = "") -> None:
        if self.phase is not phase:
            raise VssMisuse(f"closing {phase.name} while in {self.phase.name}")
        if count < need:
            self.phase = Phase.DONE
            raise VssAbort(f"phase {phase.name.lower()} ended with {count} {what}; "
                           f"{need} needed")
        self.phase = Phase(phase.value + 1)

    # keys
    def receive_key(self, peer: str, msg: MemberKey) -> None:
        self._check(Phase.KEYS, peer, self.keys,
                    self.cfg.participants if self.cfg.replan else self.cfg.committee)
        if not usable_public_key(msg.enc_pk):
            raise self._reject(peer, "an X25519 key of small order")
        self.keys[peer] = msg.enc_pk

    def close_keys(self) -> KeyDirectory:
        """Close the keys phase. A re-planning round goes on with the participants that
        advertised (at least ``min_included``), its committee drawn again from them, and
        the directory holds every member's key; a fixed one needs ``threshold`` of its
        committee."""
        if not self.cfg.replan:
            self._close(Phase.KEYS, len(self.keys), self.cfg.threshold, "members")
        else:
            self._close(Phase.KEYS, len(self.keys), max(2, self.cfg.min_included), "members")
            self.cfg = self.cfg.restricted(self.keys)
        self.members = {m: self.keys[m] for m in self.cfg.committee if m in self.keys}
        return KeyDirectory(keys=dict(self.keys))

    # deal
    def receive_dealing(self, peer: str, msg: Dealing) -> None:
        """Accept a dealing whose every point and range proof verifies (the expensive step:
        about 4 scalar multiplications per proven bit)."""
        self._check(Phase.DEAL, peer, self.dealings, self.cfg.participants)
        cfg = self.cfg
        if len(msg.commitments) != cfg.dim or len(msg.proofs) != cfg.dim or any(
                len(c) != cfg.threshold for c in msg.commitments):
            raise self._reject(peer, f"dealing must hold {cfg.dim} x {cfg.threshold} "
                                     "commitments and a range proof per coordinate")
        if set(msg.ciphertexts) != set(self.members):
            raise self._reject(peer, "ciphertexts must go to exactly the members with keys")
        if any(len(c) > 12 + 16 + 72 * cfg.dim + 16 for c in msg.ciphertexts.values()):
            raise self._reject(peer, "oversized share ciphertext")
        if not usable_public_key(msg.dealer_pk):
            raise self._reject(peer, "an X25519 dealer key of small order")
        try:
            for points in msg.commitments:
                for p in points:
                    group.point(p)
        except (GroupError, ValueError) as exc:
            raise self._reject(peer, f"bad point in the dealing: {exc}") from exc
        for j in range(cfg.dim):
            if not rangeproof.verify(msg.commitments[j][0], msg.proofs[j], cfg.bits,
                                     cfg.context(peer, j)):
                raise self._reject(peer, f"range proof of coordinate {j} does not verify: "
                                         f"the value is outside [{cfg.low[j]}, {cfg.high[j]}]"
                                         " or the proof is forged")
        self.dealings[peer] = msg

    def close_deal(self) -> tuple[Commitments, dict[str, Inbox]]:
        self._close(Phase.DEAL, len(self.dealings), self.cfg.min_included, "dealers")
        body = Commitments(dealers={u: d.commitments for u, d in self.dealings.items()},
                           dealer_pks={u: d.dealer_pk for u, d in self.dealings.items()})
        inboxes = {m: Inbox(ciphertexts={u: d.ciphertexts[m] for u, d in self.dealings.items()})
                   for m in self.members}
        return body, inboxes

    # check
    def receive_accusations(self, peer: str, msg: Accusations) -> None:
        self._check(Phase.CHECK, peer, self.accusations, self.members)
        if not set(msg.dealers) <= set(self.dealings):
            raise self._reject(peer, "accuses dealers that did not deal")
        self.accusations[peer] = sorted(set(msg.dealers))

    def close_check(self) -> Disputes:
        self._close(Phase.CHECK)  # members that stay silent accuse nobody
        for member, dealers in self.accusations.items():
            for u in dealers:
                self.disputes.setdefault(u, []).append(member)
        return Disputes(accused={u: sorted(ms) for u, ms in self.disputes.items()})

    # resolve
    def receive_reveal(self, peer: str, msg: Reveal) -> None:
        self._check(Phase.RESOLVE, peer, self.reveals, self.disputes)
        if set(msg.shares) != set(self.disputes[peer]):
            raise self._reject(peer, "must reveal exactly the disputed shares")
        self.reveals[peer] = msg
        for member, plain in msg.shares.items():
            try:
                share = _decode_share(plain)
            except (ValueError, msgspec.DecodeError):
                share = None
            if share is None or not _share_ok(self.cfg, self.dealings[peer].commitments,
                                              self.cfg.x_of(member), share):
                self.disqualified[peer] = f"its share for {member} does not match its " \
                                          "commitments"
                return
        self.revealed[peer] = dict(msg.shares)

    def close_resolve(self) -> Inclusion:
        self._close(Phase.RESOLVE)
        for u in self.disputes:
            if u not in self.reveals and u not in self.disqualified:
                self.disqualified[u] = "accused and did not reveal its shares"
        self.included = sorted(u for u in self.dealings if u not in self.disqualified)
        if len(self.included) < self.cfg.min_included:
            self.phase = Phase.DONE
            raise VssAbort(f"only {len(self.included)} dealers left to include")
        self._summed = _summed(self.cfg, {u: d.commitments for u, d in self.dealings.items()},
                               self.included)
        return Inclusion(included=self.included,
                         revealed={u: s for u, s in self.revealed.items()
                                   if u in self.included})

    # aggregate
    def receive_aggregate(self, peer: str, msg: AggregateShare) -> None:
        self._check(Phase.AGGREGATE, peer, self.aggregates, self.members)
        if msg.included_digest != included_digest(self.included):
            raise self._reject(peer, "aggregate share over another set of dealers")
        share = _Share(f=msg.f, g=msg.g)
        if not _share_ok(self.cfg, self._summed, self.cfg.x_of(peer), share):
            raise self._reject(peer, "aggregate share does not match the commitments")
        self.aggregates[peer] = msg

    def close_aggregate(self) -> Outcome:
        self._close(Phase.AGGREGATE, len(self.aggregates), self.cfg.threshold,
                    "valid aggregate shares")
        holders = sorted(self.aggregates, key=self.cfg.x_of)[:self.cfg.threshold]
        xs = [self.cfg.x_of(m) for m in holders]
        basis = _lagrange_at_zero(xs)
        totals = []
        for j in range(self.cfg.dim):
            total = sum(b * group.scalar(self.aggregates[m].f[j])
                        for b, m in zip(basis, holders, strict=True)) % L
            if total >= len(self.included) * 2**self.cfg.bits:
                raise VssAbort("the interpolated sum is out of range (inconsistent shares)")
            totals.append(total)
        return Outcome(self.cfg.decode_sum(totals, len(self.included)), list(self.included),
                       dict(self.rejected), dict(self.disqualified), len(self.aggregates))


def _sum_points(points: Iterable[bytes]) -> bytes:
    it = iter(points)
    acc = next(it)
    for p in it:
        acc = group.add(acc, p)
    return acc


def _lagrange_at_zero(xs: list[int]) -> list[int]:
    out = []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % L
                den = den * (xj - xi) % L
        out.append(num * pow(den, -1, L) % L)
    return out
