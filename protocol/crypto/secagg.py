"""Secure aggregation after SecAgg+ (Bell, Bonawitz, Gascon, Lepoint, Raykova, CCS 2020).

Theory of operation
-------------------
The server learns the sum of the surviving clients' vectors and nothing
else about any one of them, as long as fewer than ``threshold`` of a
client's neighbours collude with it and the server follows the protocol;
up to ``degree - threshold`` of a client's neighbours may drop out at any
phase and the sum still decodes. A server that lies about who survived
(to collect both kinds of share for one client) is stopped by the
consistency check as long as fewer than ``2 * agreement - n`` of the ``n``
participants collude with it (Bonawitz et al. 2017, section 6): each honest
client signs one survivor list and reveals shares only when ``agreement``
participants signed that same list, so two lists would need
``2 * agreement`` signatures from ``n`` participants of whom only the
colluders sign both. The defaults make ``agreement`` all but the tolerated
dropouts (``(n - 1) - floor(0.3 n)``), so that against a lying server about
``0.4 n`` colluders are tolerated on every graph; checking it costs each
client ``agreement`` signature verifications.
This file holds both sides as sans-IO state machines: callers pass messages
in and send the messages that come out; nothing here knows about sockets,
clocks or which transport carried a message (signatures are checked before
a message reaches us, so the sender's peer id here is authenticated).

Construction (Bell et al. 2020, building on Bonawitz et al. 2017, with the
consistency-check round of the actively secure variant):

* Graph: participants are placed on a cycle in an order fixed by a public
  ``graph_seed`` (AES-CTR Fisher-Yates); each client's neighbours are the
  ``degree/2`` before and after it (a Harary graph). ``degree >= n-1`` gives
  the complete graph, i.e. the original SecAgg of Bonawitz et al. 2017.
* Keys: each client makes two X25519 key pairs, ``enc`` (to encrypt shares)
  and ``mask`` (pairwise mask agreement), and a 256-bit self-mask seed ``b``;
  it advertises the public keys and ``SHA-256(b)``. A round configured to
  re-plan (``Config.replan``, the default for rounds the coordinator runs)
  then goes on with the participants that advertised as its members: the
  graph, threshold and agreement become those of the default rule over them
  (``Config.restricted``), so a participant silent from the start costs
  nothing but the wait.
* Shares: ``b`` and the ``mask`` private key are Shamir-shared among the
  neighbours with threshold ``threshold`` and sent through the server
  encrypted with ChaCha20-Poly1305 under HKDF(X25519(enc keys)) keys bound to
  round, sender and recipient: the server only sees ciphertext.
* Masked input: ``y_u = encode(x_u) + PRG(b_u) + sum_v sign(u, v) PRG(s_uv)``
  in Z_{2^bits}, over neighbours v that shared keys, with
  ``s_uv = HKDF(X25519(mask_sk_u, mask_pk_v))``, sign +1 if u < v else -1.
  The PRG is AES-256-CTR keyed by the full 256-bit seed.
* Consistency check: the server names the survivors (those that sent masked
  inputs); each survivor signs ``(round, survivors)`` with its peer key (its
  peer id is its Ed25519 public key) and reveals nothing until it holds at
  least ``agreement`` valid survivor signatures over the very list it signed,
  so a server cannot tell two clients different survivor sets and collect
  both kinds of shares for one client.
* Unmasking: for each neighbour u, a survivor reveals its share of ``b_u``
  if u survived, or of ``mask_sk_u`` if u dropped after sharing -- never both
  (an honest client refuses). The server rebuilds each secret from any
  ``threshold`` consistent shares (checked against ``SHA-256(b)`` or the
  advertised public key, so a lying share is detected and its sender named),
  removes self masks of survivors and pairwise masks towards dropped
  clients, and decodes the fixed-point sum.

Phases (server)::

    KEYS    --close_keys()--> SHARES --close_shares()--> MASKED
    MASKED  --close_masked()--> CONSISTENCY --close_consistency()--> UNMASK
    UNMASK  --close_unmask()--> DONE

Each ``receive_*`` accepts a message only in its phase, only from a sender
allowed there, at most once; anything else raises :class:`SecAggRejected`
(a remote fault, with ``reason``). A phase closing with fewer than
``threshold`` senders raises :class:`SecAggAbort`. Calling methods out of
order is :class:`SecAggMisuse` (a local bug).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import nacl.bindings as _sodium
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..wire.envelope import RejectedMessage
from ..wire.identity import BadPeerId, public_key_from_peer_id, verify_signature
from ..wire.messages import Strict
from . import shamir
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
from .fixedpoint import FixedPoint

TAG = b"hypergossip/secagg+/v1/"
MAX_COMBINATIONS = 2000  # robust reconstruction: subsets of shares tried at most

Key32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
PeerId = Annotated[str, msgspec.Meta(max_length=64)]


class SecAggRejected(RejectedMessage):
    reason = "secagg"


class SecAggAbort(Exception):
    """The round cannot continue safely (too few participants left)."""


class SecAggMisuse(Exception):
    """A method was called out of phase (a bug in the caller)."""


# --- messages ----------------------------------------------------------------------------------
class AdvertiseKeys(Strict):
    enc_pk: Key32
    mask_pk: Key32
    self_mask_commit: Key32


class KeyDirectory(Strict):
    keys: Annotated[dict[PeerId, AdvertiseKeys], msgspec.Meta(max_length=10_000)]


class ShareBundle(Strict):
    """Client -> server: one ciphertext per neighbour (recipient peer id)."""

    ciphertexts: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]


class Inbox(Strict):
    """Server -> client: the ciphertexts addressed to it, by sender."""

    ciphertexts: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]


class MaskedInput(Strict):
    vector: bytes


class SurvivorList(Strict):
    """Server -> survivors: who sent masked inputs; each survivor signs it."""

    survivors: Annotated[list[PeerId], msgspec.Meta(max_length=10_000)]


class ConsistencySignature(Strict):
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class UnmaskRequest(Strict):
    """Server -> survivors: the survivor list with at least ``agreement`` signatures on it."""

    survivors: Annotated[list[PeerId], msgspec.Meta(max_length=10_000)]
    signatures: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=10_000)]


class UnmaskShares(Strict):
    self_mask_shares: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]
    mask_key_shares: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]


class _SharePlaintext(Strict, array_like=True):
    """Sender, recipient and round are bound by the AEAD's associated data, not repeated."""

    self_mask_share: bytes
    mask_key_share: bytes


# --- round configuration and the public graph ------------------------------------------------
@dataclass(frozen=True)
class Config:
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
                replan: bool = False) -> Config:
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

    def restricted(self, members: Iterable[str]) -> Config:
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
        return Config.default(self.round, members, self.graph_seed, self.vector_len,
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


def _cycle_order(cfg: Config) -> tuple[dict[str, int], list[str]]:
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


def _neighbours_of(cfg: Config, peer: str) -> tuple[str, ...]:
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


def prg(seed: bytes, cfg: Config) -> np.ndarray:
    """The mask expanded from a 256-bit seed: AES-256-CTR keystream as ring elements."""
    return np.frombuffer(stream(seed, cfg.byte_len), dtype=cfg.encoding.dtype)


class _Masker:
    """Adds ``sign * prg(seed)`` for many masks to a ring vector in place, a slice at a
    time: every mask's AES-CTR keystream continues from slice to slice, and the slice of
    ``y``, the keystream buffer and the zeros it encrypts stay in the core's cache (a
    whole-vector pass per mask streams three vectors through memory each time)."""

    CHUNK = 32768  # ring elements per slice (128 KiB of a 32-bit ring)

    def __init__(self, cfg: Config):
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


def _pairwise_seed(shared: bytes, r: int, u: str, v: str) -> bytes:
    a, b = sorted((u, v))
    return _hkdf(shared, b"mask" + round_bytes(r) + a.encode() + b"|" + b.encode())


def _enc_keys(shared: bytes, r: int, me: str, other: str) -> tuple[bytes, bytes]:
    """The share-encryption keys ``me -> other`` and ``other -> me`` (one HKDF call)."""
    a, b = sorted((me, other))
    okm = hkdf_sha256(shared, TAG + b"enc" + round_bytes(r) + a.encode() + b"|" + b.encode(),
                      64)
    a_to_b, b_to_a = okm[:32], okm[32:]
    return (a_to_b, b_to_a) if me == a else (b_to_a, a_to_b)


def _commit(seed: bytes) -> bytes:
    return hashlib.sha256(TAG + b"commit" + seed).digest()


def _sign(u: str, v: str) -> int:
    return 1 if u < v else -1


def consistency_message(round: int, survivors: Iterable[str]) -> bytes:
    """What each survivor signs in the consistency check (domain-separated)."""
    return TAG + b"consistency\0" + round_bytes(round) + msgspec.msgpack.encode(
        sorted(survivors))


def _valid_signature(peer: str, message: bytes, signature: bytes) -> bool:
    try:
        return verify_signature(public_key_from_peer_id(peer), signature, message)
    except BadPeerId:
        return False


# --- client ---------------------------------------------------------------------------------
class SecAggClient:
    """One client's side of one round. Phases: advertise -> share_keys -> masked_input ->
    confirm -> unmask; each is called once, in order. ``sign`` signs with the key behind
    ``peer_id`` (the peer's identity)."""

    def __init__(self, peer_id: str, cfg: Config, sign: Callable[[bytes], bytes]):
        if peer_id not in cfg.participants:
            raise SecAggMisuse("client is not a participant of this round")
        self.me, self.cfg, self._sign_with = peer_id, cfg, sign
        self._confirmed: list[str] | None = None
        self._enc = X25519PrivateKey.generate()
        self._mask = X25519PrivateKey.generate()
        self._enc_sk, self._mask_sk = raw_private(self._enc), raw_private(self._mask)
        self._b = os.urandom(32)
        self._step = 0
        self._directory: dict[str, AdvertiseKeys] = {}
        self._received: dict[str, _SharePlaintext] = {}  # shares others gave us, by sender
        self._aeads: dict[str, tuple[ChaCha20Poly1305, ChaCha20Poly1305]] = {}  # to, from

    def _advance(self, expect: int) -> None:
        if self._step != expect:
            raise SecAggMisuse(f"client phase {expect} called at step {self._step}")
        self._step += 1

    def advertise(self) -> AdvertiseKeys:
        self._advance(0)
        return AdvertiseKeys(enc_pk=raw_public(self._enc), mask_pk=raw_public(self._mask),
                             self_mask_commit=_commit(self._b))

    def share_keys(self, directory: KeyDirectory) -> ShareBundle:
        self._advance(1)
        try:
            self.cfg = self.cfg.restricted(directory.keys)  # the members, if it re-plans
        except ValueError as exc:
            raise SecAggAbort(f"the key directory cannot be this round's: {exc}") from exc
        mine = directory.keys.get(self.me)
        if mine is None or mine.enc_pk != raw_public(self._enc) or \
                mine.mask_pk != raw_public(self._mask):
            raise SecAggAbort("the directory does not hold this client's keys")
        self._directory = dict(directory.keys)
        live = [v for v in self.cfg.neighbours(self.me) if v in self._directory]
        if len(live) < self.cfg.threshold:
            raise SecAggAbort(f"only {len(live)} neighbours advertised keys; "
                              f"threshold is {self.cfg.threshold}")
        n = len(self.cfg.neighbours(self.me))
        b_shares = shamir.split(self._b, self.cfg.threshold, n)
        s_shares = shamir.split(self._mask_sk, self.cfg.threshold, n)
        out = {}
        for i, v in enumerate(self.cfg.neighbours(self.me)):
            if v not in self._directory:
                continue
            plain = _SharePlaintext(b_shares[i], s_shares[i])
            out[v] = self._seal(v, msgspec.msgpack.encode(plain))
        return ShareBundle(ciphertexts=out)

    def _aead(self, other: str) -> tuple[ChaCha20Poly1305, ChaCha20Poly1305]:
        """The AEADs towards ``other`` and from it: one agreement per neighbour serves both."""
        pair = self._aeads.get(other)
        if pair is None:
            try:
                shared = x25519(self._enc_sk, self._directory[other].enc_pk)
            except ValueError as exc:  # the server should have refused that key
                raise SecAggAbort(f"{other}'s encryption key is unusable: {exc}") from exc
            to, frm = _enc_keys(shared, self.cfg.round, self.me, other)
            pair = self._aeads[other] = (ChaCha20Poly1305(to), ChaCha20Poly1305(frm))
        return pair

    def _seal(self, v: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        ad = round_bytes(self.cfg.round) + self.me.encode() + b">" + v.encode()
        return nonce + self._aead(v)[0].encrypt(nonce, plain, ad)

    def _open(self, u: str, blob: bytes) -> _SharePlaintext:
        ad = round_bytes(self.cfg.round) + u.encode() + b">" + self.me.encode()
        try:
            plain = self._aead(u)[1].decrypt(blob[:12], blob[12:], ad)
            msg = msgspec.msgpack.decode(plain, type=_SharePlaintext)
        except (InvalidTag, ValueError, msgspec.DecodeError) as exc:
            raise SecAggRejected(f"share from {u} does not decrypt (not ours, or tampered): "
                                 f"{exc!r}") from exc
        return msg

    def masked_input(self, inbox: Inbox, x: np.ndarray) -> MaskedInput:
        """Mask ``x`` (float vector) with the self mask and pairwise masks towards every
        neighbour whose encrypted shares reached us (they are the ones the server kept)."""
        self._advance(2)
        nbrs = set(self.cfg.neighbours(self.me))
        for u, blob in inbox.ciphertexts.items():
            if u in nbrs and u in self._directory:
                try:
                    self._received[u] = self._open(u, blob)
                except SecAggRejected:
                    continue  # a corrupted ciphertext: treat that neighbour as dropped
        if len(self._received) < self.cfg.threshold:
            raise SecAggAbort(f"only {len(self._received)} neighbours shared keys")
        if np.shape(x) != (self.cfg.vector_len,):
            raise SecAggMisuse(f"input must have shape ({self.cfg.vector_len},)")
        y = self.cfg.encoding.encode(x)
        masks = [(self._b, +1)]
        for v in sorted(self._received):
            try:
                shared = x25519(self._mask_sk, self._directory[v].mask_pk)
            except ValueError as exc:
                raise SecAggAbort(f"{v}'s mask key is unusable: {exc}") from exc
            masks.append((_pairwise_seed(shared, self.cfg.round, self.me, v), _sign(self.me, v)))
        _Masker(self.cfg).apply(y, masks)
        return MaskedInput(vector=y.astype(self.cfg.encoding.wire_dtype, copy=False).tobytes())

    def confirm(self, request: SurvivorList) -> ConsistencySignature:
        """Sign the survivor list (after sanity checks); only this list can be unmasked."""
        self._advance(3)
        survivors = sorted(set(request.survivors))
        if not set(survivors) <= set(self.cfg.participants) or self.me not in survivors:
            raise SecAggAbort("survivor set names strangers or leaves this client out")
        if len(survivors) < self.cfg.agreement:
            raise SecAggAbort(f"{len(survivors)} survivors; unmasking needs {self.cfg.agreement}"
                              " to have signed the list")
        self._confirmed = survivors
        return ConsistencySignature(
            signature=self._sign_with(consistency_message(self.cfg.round, survivors)))

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Reveal, for each neighbour that shared with us, the self-mask share if it survived
        or the mask-key share if it dropped -- never both for one neighbour, and only when
        at least ``agreement`` survivors signed the same survivor list we signed."""
        self._advance(4)
        survivors = sorted(set(request.survivors))
        if survivors != self._confirmed:
            raise SecAggAbort("the server shows a different survivor list than it had us sign")
        message = consistency_message(self.cfg.round, survivors)
        valid = 0
        for peer, sig in request.signatures.items():  # agreement valid ones suffice
            if peer in survivors and _valid_signature(peer, message, sig):
                valid += 1
                if valid >= self.cfg.agreement:
                    break
        if valid < self.cfg.agreement:
            raise SecAggAbort(f"only {valid} valid survivor signatures; "
                              f"need {self.cfg.agreement}")
        b, s = {}, {}
        for u, share in self._received.items():
            if u in survivors:
                b[u] = share.self_mask_share
            else:
                s[u] = share.mask_key_share
        return UnmaskShares(self_mask_shares=b, mask_key_shares=s)


# --- server ---------------------------------------------------------------------------------
class Phase(enum.Enum):
    KEYS = 0
    SHARES = 1
    MASKED = 2
    CONSISTENCY = 3
    UNMASK = 4
    DONE = 5


@dataclass
class Outcome:
    total: np.ndarray  # decoded float64 sum over ``survivors``
    survivors: list[str]
    dropped: list[str]  # shared keys, then sent no masked input
    rejected: dict[str, str] = field(default_factory=dict)  # peer -> reason
    bad_shares: dict[str, int] = field(default_factory=dict)  # peer -> shares that did not fit


class SecAggServer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.phase = Phase.KEYS
        self.keys: dict[str, AdvertiseKeys] = {}
        self.bundles: dict[str, ShareBundle] = {}
        self.masked: dict[str, np.ndarray] = {}
        self.signatures: dict[str, bytes] = {}
        self.unmask_replies: dict[str, UnmaskShares] = {}
        self.rejected: dict[str, str] = {}
        self._weights: dict[tuple, tuple[list[int], list[int]]] = {}  # see _all_on

    # each receive_* validates; a failure names the fault and changes nothing
    def _check(self, phase: Phase, peer: str, seen: Mapping[str, object],
               allowed: Iterable[str]) -> None:
        admit(self.phase, phase, peer, seen, allowed, SecAggRejected)

    def _reject(self, peer: str, exc: SecAggRejected) -> SecAggRejected:
        self.rejected[peer] = str(exc)
        return exc

    def receive_keys(self, peer: str, msg: AdvertiseKeys) -> None:
        self._check(Phase.KEYS, peer, self.keys, self.cfg.participants)
        if len({msg.enc_pk, msg.mask_pk}) != 2:
            raise self._reject(peer, SecAggRejected("enc and mask keys must differ"))
        if not (usable_public_key(msg.enc_pk) and usable_public_key(msg.mask_pk)):
            raise self._reject(peer, SecAggRejected("an X25519 key of small order"))
        self.keys[peer] = msg

    def close_keys(self) -> KeyDirectory:
        """Close the keys phase: the directory of who advertised. A re-planning round goes
        on with them as its members (two at least); a fixed one needs ``threshold``."""
        if self.cfg.replan:
            self._close(Phase.KEYS, len(self.keys), 2)
            self.cfg = self.cfg.restricted(self.keys)
        else:
            self._close(Phase.KEYS, len(self.keys))
        return KeyDirectory(keys=dict(self.keys))

    def receive_shares(self, peer: str, msg: ShareBundle) -> None:
        self._check(Phase.SHARES, peer, self.bundles, self.keys)
        expected = {v for v in self.cfg.neighbours(peer) if v in self.keys}
        if set(msg.ciphertexts) != expected:
            raise self._reject(peer, SecAggRejected(
                "ciphertexts must go to exactly the neighbours that advertised keys"))
        limit = 12 + 16 + 2 * shamir.SHARE_LEN + 256
        if any(len(c) > limit for c in msg.ciphertexts.values()):
            raise self._reject(peer, SecAggRejected("oversized share ciphertext"))
        self.bundles[peer] = msg

    def close_shares(self) -> dict[str, Inbox]:
        """Close the share phase; the inbox each client that shared must now receive."""
        self._close(Phase.SHARES, len(self.bundles))
        inboxes: dict[str, dict[str, bytes]] = {p: {} for p in self.bundles}
        for u, bundle in self.bundles.items():
            for v, blob in bundle.ciphertexts.items():
                if v in inboxes:
                    inboxes[v][u] = blob
        return {v: Inbox(ciphertexts=c) for v, c in inboxes.items()}

    def receive_masked(self, peer: str, msg: MaskedInput) -> None:
        self._check(Phase.MASKED, peer, self.masked, self.bundles)
        if len(msg.vector) != self.cfg.byte_len:
            raise self._reject(peer, SecAggRejected(
                f"masked input is {len(msg.vector)} bytes, expected {self.cfg.byte_len}"))
        enc = self.cfg.encoding
        self.masked[peer] = np.frombuffer(msg.vector, dtype=enc.wire_dtype).astype(enc.dtype)

    def close_masked(self) -> SurvivorList:
        self._close(Phase.MASKED, len(self.masked), self.cfg.agreement)  # or nobody unmasks
        return SurvivorList(survivors=sorted(self.masked))

    def receive_consistency(self, peer: str, msg: ConsistencySignature) -> None:
        self._check(Phase.CONSISTENCY, peer, self.signatures, self.masked)
        if not _valid_signature(peer, consistency_message(self.cfg.round, self.masked),
                                msg.signature):
            raise self._reject(peer, SecAggRejected("survivor-list signature does not verify"))
        self.signatures[peer] = msg.signature

    def close_consistency(self) -> UnmaskRequest:
        self._close(Phase.CONSISTENCY, len(self.signatures), self.cfg.agreement)
        return UnmaskRequest(survivors=sorted(self.masked), signatures=dict(self.signatures))

    def receive_unmask(self, peer: str, msg: UnmaskShares) -> None:
        self._check(Phase.UNMASK, peer, self.unmask_replies, self.signatures)
        shared_with = {u for u in self.bundles if peer in self.bundles[u].ciphertexts}
        b, s = set(msg.self_mask_shares), set(msg.mask_key_shares)
        if b & s:
            raise self._reject(peer, SecAggRejected("revealed both shares for one client"))
        if not b <= shared_with & set(self.masked) or not s <= shared_with - set(self.masked):
            raise self._reject(peer, SecAggRejected(
                "shares for clients that are not its neighbours, or of the wrong kind"))
        if any(len(x) != shamir.SHARE_LEN for x in (*msg.self_mask_shares.values(),
                                                    *msg.mask_key_shares.values())):
            raise self._reject(peer, SecAggRejected("malformed share"))
        self.unmask_replies[peer] = msg

    def close_unmask(self) -> Outcome:
        """Rebuild the secrets, remove every mask, decode the sum."""
        self._close(Phase.UNMASK, len(self.unmask_replies))
        survivors = sorted(self.masked)
        dropped = sorted(set(self.bundles) - set(self.masked))
        bad: dict[str, int] = {}
        dtype = self.cfg.encoding.dtype
        total = np.zeros(self.cfg.vector_len, dtype=dtype)
        for y in self.masked.values():
            total += y
        masks = []  # every mask to take off, then one pass over the sum
        for u in survivors:
            shares = {v: r.self_mask_shares[u] for v, r in self.unmask_replies.items()
                      if u in r.self_mask_shares}
            b = self._rebuild(u, shares, lambda sec, u=u: _commit(sec) ==
                              self.keys[u].self_mask_commit, bad)
            masks.append((b, -1))
        for u in dropped:
            shares = {v: r.mask_key_shares[u] for v, r in self.unmask_replies.items()
                      if u in r.mask_key_shares}
            sk = self._rebuild(u, shares, lambda sec, u=u: _sodium.crypto_scalarmult_base(sec)
                               == self.keys[u].mask_pk, bad)
            for v in survivors:
                if u in self.bundles.get(v, ShareBundle(ciphertexts={})).ciphertexts:
                    shared = x25519(sk, self.keys[v].mask_pk)
                    masks.append((_pairwise_seed(shared, self.cfg.round, v, u), -_sign(v, u)))
        _Masker(self.cfg).apply(total, masks)
        return Outcome(self.cfg.encoding.decode_sum(total, len(survivors)), survivors, dropped,
                       dict(self.rejected), bad)

    def _rebuild(self, owner: str, shares: Mapping[str, bytes], valid, bad: dict[str, int]
                 ) -> bytes:
        """The secret from ``threshold`` consistent shares; names holders of shares that
        do not fit the secret's commitment."""
        t = self.cfg.threshold
        points = {}
        for v, share in shares.items():
            try:
                points[v] = shamir.parse(share)
            except shamir.ShareError:
                bad[v] = bad.get(v, 0) + 1
        if len(points) < t:
            raise SecAggAbort(f"{len(points)} usable shares for {owner}, need {t}")
        holders = sorted(points)
        for count, subset in enumerate(itertools.combinations(holders, t)):
            if count >= MAX_COMBINATIONS:
                break
            basis = [points[v] for v in subset]
            if len({x for x, _ in basis}) < t:
                continue  # two holders claim one index: not a polynomial
            value = shamir.interpolate(basis, 0)
            if value >> (8 * shamir.SECRET_LEN):
                continue
            secret = value.to_bytes(shamir.SECRET_LEN, "big")
            if not valid(secret):
                continue
            extra = [points[v] for v in holders if v not in subset]
            if extra and not self._all_on(basis, extra):  # then: who is off the polynomial?
                for v in holders:
                    x, y = points[v]
                    if v not in subset and shamir.interpolate(basis, x) != y:
                        bad[v] = bad.get(v, 0) + 1
            return secret
        raise SecAggAbort(f"no {t} consistent shares rebuild {owner}'s secret")

    def _all_on(self, basis: list[tuple[int, int]], extra: list[tuple[int, int]]) -> bool:
        """Whether every ``extra`` point lies on the polynomial through ``basis``, tested at
        once: sum_v r_v y_v == sum_j y_j c_j with random r (fixed per server, drawn after
        every share was in) and c_j = sum_v r_v L_j(x_v), which depends only on the share
        indices and so is computed once for all the secrets that share them. A point off
        the polynomial passes with probability 1/P."""
        key = (tuple(x for x, _ in basis), tuple(x for x, _ in extra))
        if key not in self._weights:
            rs = [secrets.randbelow(shamir.P) for _ in extra]
            cs = [0] * len(basis)
            for r, x in zip(rs, key[1], strict=True):
                for j, lj in enumerate(shamir.lagrange(key[0], x)):
                    cs[j] = (cs[j] + r * lj) % shamir.P
            self._weights[key] = (rs, cs)
        rs, cs = self._weights[key]
        lhs = sum(r * y for r, (_, y) in zip(rs, extra, strict=True)) % shamir.P
        return lhs == sum(c * y for c, (_, y) in zip(cs, basis, strict=True)) % shamir.P

    def _close(self, phase: Phase, count: int, need: int | None = None) -> None:
        if self.phase is not phase:
            raise SecAggMisuse(f"closing {phase.name} while in {self.phase.name}")
        need = self.cfg.threshold if need is None else need
        if count < need:
            self.phase = Phase.DONE
            raise SecAggAbort(f"phase {phase.name.lower()} ended with {count} clients; "
                              f"it needs {need}")
        self.phase = Phase(phase.value + 1)
