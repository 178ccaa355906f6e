"""The SecAgg+ server: collect each phase's messages, close it, and unmask the sum.

See :mod:`protocol.crypto.secagg` for the protocol and its guarantees.
"""

from __future__ import annotations

import enum
import itertools
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import nacl.bindings as _sodium
import numpy as np

from .. import shamir
from ..common import (
    admit,
    usable_public_key,
    x25519,
)
from .config import (
    Masker,
    SecAggConfig,
    consistency_message,
    mask_sign,
    pairwise_seed,
    seed_commitment,
    valid_signature,
)
from .messages import (
    MAX_COMBINATIONS,
    AdvertiseKeys,
    ConsistencySignature,
    Inbox,
    KeyDirectory,
    MaskedInput,
    SecAggAbort,
    SecAggMisuse,
    SecAggRejected,
    ShareBundle,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
)


# --- server ---------------------------------------------------------------------------------
class SecAggPhase(enum.Enum):
    KEYS = 0
    SHARES = 1
    MASKED = 2
    CONSISTENCY = 3
    UNMASK = 4
    DONE = 5


@dataclass
class SecAggOutcome:
    total: np.ndarray  # decoded float64 sum over ``survivors``
    survivors: list[str]
    dropped: list[str]  # shared keys, then sent no masked input
    rejected: dict[str, str] = field(default_factory=dict)  # peer -> reason
    bad_shares: dict[str, int] = field(default_factory=dict)  # peer -> shares that did not fit


class SecAggServer:
    def __init__(self, cfg: SecAggConfig):
        self.cfg = cfg
        self.phase = SecAggPhase.KEYS
        self.keys: dict[str, AdvertiseKeys] = {}
        self.bundles: dict[str, ShareBundle] = {}
        self.masked: dict[str, np.ndarray] = {}
        self.signatures: dict[str, bytes] = {}
        self.unmask_replies: dict[str, UnmaskShares] = {}
        self.rejected: dict[str, str] = {}
        self._weights: dict[tuple, tuple[list[int], list[int]]] = {}  # see _all_on
        # fixed once their phase closes, and read per message of the later phases (so a
        # message costs O(its size), not O(N)): who shared with whom, the survivor set and
        # the survivor list's signed message
        self._senders: dict[str, frozenset[str]] = {}
        self._survivors: frozenset[str] = frozenset()
        self._survivor_message = b""

    # each receive_* validates; a failure names the fault and changes nothing
    def _check(self, phase: SecAggPhase, peer: str, seen: Mapping[str, object],
               allowed: Iterable[str]) -> None:
        admit(self.phase, phase, peer, seen, allowed, SecAggRejected)

    def _reject(self, peer: str, exc: SecAggRejected) -> SecAggRejected:
        self.rejected[peer] = str(exc)
        return exc

    def receive_keys(self, peer: str, msg: AdvertiseKeys) -> None:
        self._check(SecAggPhase.KEYS, peer, self.keys, self.cfg.participants)
        if len({msg.enc_pk, msg.mask_pk}) != 2:
            raise self._reject(peer, SecAggRejected("enc and mask keys must differ"))
        if not (usable_public_key(msg.enc_pk) and usable_public_key(msg.mask_pk)):
            raise self._reject(peer, SecAggRejected("an X25519 key of small order"))
        self.keys[peer] = msg

    def close_keys(self) -> KeyDirectory:
        """Close the keys phase: the directory of who advertised. A re-planning round goes
        on with them as its members (two at least); a fixed one needs ``threshold``."""
        if self.cfg.replan:
            self._close(SecAggPhase.KEYS, len(self.keys), 2)
            self.cfg = self.cfg.restricted(self.keys)
        else:
            self._close(SecAggPhase.KEYS, len(self.keys))
        return KeyDirectory(keys=dict(self.keys))

    def directories(self) -> dict[str, KeyDirectory]:
        """After :meth:`close_keys`: each member's own and its neighbours' keys, all that
        its ``share_keys`` reads (O(degree) a member, where the directory is O(N))."""
        return {m: KeyDirectory(keys={v: self.keys[v] for v in (m, *self.cfg.neighbours(m))
                                      if v in self.keys})
                for m in self.keys}

    def receive_shares(self, peer: str, msg: ShareBundle) -> None:
        self._check(SecAggPhase.SHARES, peer, self.bundles, self.keys)
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
        self._close(SecAggPhase.SHARES, len(self.bundles))
        inboxes: dict[str, dict[str, bytes]] = {p: {} for p in self.bundles}
        for u, bundle in self.bundles.items():
            for v, blob in bundle.ciphertexts.items():
                if v in inboxes:
                    inboxes[v][u] = blob
        self._senders = {v: frozenset(c) for v, c in inboxes.items()}
        return {v: Inbox(ciphertexts=c) for v, c in inboxes.items()}

    def receive_masked(self, peer: str, msg: MaskedInput) -> None:
        self._check(SecAggPhase.MASKED, peer, self.masked, self.bundles)
        if len(msg.vector) != self.cfg.byte_len:
            raise self._reject(peer, SecAggRejected(
                f"masked input is {len(msg.vector)} bytes, expected {self.cfg.byte_len}"))
        enc = self.cfg.encoding
        self.masked[peer] = np.frombuffer(msg.vector, dtype=enc.wire_dtype).astype(enc.dtype)

    def close_masked(self) -> SurvivorList:
        self._close(SecAggPhase.MASKED, len(self.masked), self.cfg.agreement)  # or nobody unmasks
        self._survivors = frozenset(self.masked)
        self._survivor_message = consistency_message(self.cfg.round, self.masked)
        return SurvivorList(survivors=sorted(self.masked))

    def receive_consistency(self, peer: str, msg: ConsistencySignature) -> None:
        self._check(SecAggPhase.CONSISTENCY, peer, self.signatures, self.masked)
        if not valid_signature(peer, self._survivor_message, msg.signature):
            raise self._reject(peer, SecAggRejected("survivor-list signature does not verify"))
        self.signatures[peer] = msg.signature

    def close_consistency(self) -> UnmaskRequest:
        self._close(SecAggPhase.CONSISTENCY, len(self.signatures), self.cfg.agreement)
        return UnmaskRequest(survivors=sorted(self.masked), signatures=dict(self.signatures))

    def receive_unmask(self, peer: str, msg: UnmaskShares) -> None:
        self._check(SecAggPhase.UNMASK, peer, self.unmask_replies, self.signatures)
        shared_with = self._senders.get(peer, frozenset())
        b, s = set(msg.self_mask_shares), set(msg.mask_key_shares)
        if b & s:
            raise self._reject(peer, SecAggRejected("revealed both shares for one client"))
        if not b <= shared_with & self._survivors or not s <= shared_with - self._survivors:
            raise self._reject(peer, SecAggRejected(
                "shares for clients that are not its neighbours, or of the wrong kind"))
        if any(len(x) != shamir.SHARE_LEN for x in (*msg.self_mask_shares.values(),
                                                    *msg.mask_key_shares.values())):
            raise self._reject(peer, SecAggRejected("malformed share"))
        self.unmask_replies[peer] = msg

    def close_unmask(self) -> SecAggOutcome:
        """Rebuild the secrets, remove every mask, decode the sum."""
        self._close(SecAggPhase.UNMASK, len(self.unmask_replies))
        survivors = sorted(self.masked)
        dropped = sorted(set(self.bundles) - set(self.masked))
        bad: dict[str, int] = {}
        dtype = self.cfg.encoding.dtype
        total = np.zeros(self.cfg.vector_len, dtype=dtype)
        for y in self.masked.values():
            total += y
        # each secret's shares, by holder: one pass over the replies (O(N * degree)),
        # not one pass per secret (O(N^2): 0.4 s of a 2.5-s round at N=1,000)
        self_shares: dict[str, dict[str, bytes]] = {}
        key_shares: dict[str, dict[str, bytes]] = {}
        for v, r in self.unmask_replies.items():
            for u, share in r.self_mask_shares.items():
                self_shares.setdefault(u, {})[v] = share
            for u, share in r.mask_key_shares.items():
                key_shares.setdefault(u, {})[v] = share
        masks = []  # every mask to take off, then one pass over the sum
        for u in survivors:
            b = self._rebuild(u, self_shares.get(u, {}), lambda sec, u=u: seed_commitment(sec)
                              == self.keys[u].self_mask_commit, bad)
            masks.append((b, -1))
        for u in dropped:
            sk = self._rebuild(u, key_shares.get(u, {}),
                               lambda sec, u=u: _sodium.crypto_scalarmult_base(sec)
                               == self.keys[u].mask_pk, bad)
            for v in survivors:
                if u in self.bundles.get(v, ShareBundle(ciphertexts={})).ciphertexts:
                    shared = x25519(sk, self.keys[v].mask_pk)
                    masks.append((pairwise_seed(shared, self.cfg.round, v, u), -mask_sign(v, u)))
        Masker(self.cfg).apply(total, masks)
        return SecAggOutcome(self.cfg.encoding.decode_sum(total, len(survivors)), survivors,
                             dropped,
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
        # by share index: the first subset tried is then the same index set for every
        # owner whose neighbours all answered, so its Lagrange weights (and _all_on's)
        # are computed once per round, not once per owner (O(t^2) and O(e t^2) each)
        holders = sorted(points, key=lambda v: points[v])
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

    def _close(self, phase: SecAggPhase, count: int, need: int | None = None) -> None:
        if self.phase is not phase:
            raise SecAggMisuse(f"closing {phase.name} while in {self.phase.name}")
        need = self.cfg.threshold if need is None else need
        if count < need:
            self.phase = SecAggPhase.DONE
            raise SecAggAbort(f"phase {phase.name.lower()} ended with {count} clients; "
                              f"it needs {need}")
        self.phase = SecAggPhase(phase.value + 1)
