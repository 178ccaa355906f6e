"""A vss participant: deal its range-proven input to the committee; as a member,
check its shares, reveal when accused, and send its aggregate share.

See :mod:`protocol.crypto.vss` for the protocol and its guarantees.
"""

from __future__ import annotations

import os

import msgspec
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .. import group, rangeproof
from ..common import (
    raw_private,
    raw_public,
    x25519,
)
from .config import (
    VssConfig,
    decode_share,
    evaluate,
    share_cipher,
    share_ok,
    sum_shares,
    summed,
)
from .messages import (
    Accusations,
    AggregateShare,
    Commitments,
    Dealing,
    Disputes,
    Inclusion,
    MemberInbox,
    MemberKey,
    MemberKeys,
    Reveal,
    SharePoint,
    VssAbort,
    VssMisuse,
    included_digest,
)


# --- client (every participant deals; committee members also hold shares) --------------------
class VssClient:
    """One participant's side of one round. Phases: advertise -> deal -> check -> reveal ->
    aggregate, each called once, in order; members use every step, other participants
    only deal and reveal (the rest return None)."""

    def __init__(self, peer_id: str, cfg: VssConfig):
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
        self._shares: dict[str, SharePoint] = {}  # as a member: verified shares, by dealer
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

    def deal(self, directory: MemberKeys, x: np.ndarray) -> Dealing:
        """Commit to, prove the range of and share the encoding of ``x`` (floats)."""
        return self._deal(directory, self.cfg.encode(x))

    def _prove(self, j: int, v: int, r: int) -> list[rangeproof.BitProof]:
        return rangeproof.prove(v, r, self.cfg.bits, self.cfg.context(self.me, j))

    def _deal(self, directory: MemberKeys, values: list[int]) -> Dealing:
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
            aead, ad = share_cipher(shared, cfg, self.me, m)
            nonce = os.urandom(12)
            ciphertexts[m] = nonce + aead.encrypt(nonce, self._share_for(m), ad)
        return Dealing(commitments=commitments, proofs=proofs,
                       dealer_pk=raw_public(self._dealer), ciphertexts=ciphertexts)

    def _share_for(self, member: str) -> bytes:
        x = self.cfg.x_of(member)
        evals = [(evaluate(f, x), evaluate(g, x)) for f, g in self._polys]
        return msgspec.msgpack.encode(SharePoint(f=[group.scalar_bytes(a) for a, _ in evals],
                                             g=[group.scalar_bytes(b) for _, b in evals]))

    def check(self, commitments: Commitments, inbox: MemberInbox) -> Accusations | None:
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
                    aead, ad = share_cipher(shared, self.cfg, dealer, self.me)
                    share = decode_share(aead.decrypt(blob[:12], blob[12:], ad))
                except (InvalidTag, ValueError, msgspec.DecodeError):
                    share = None
            if share is None or len(share.f) != self.cfg.dim or len(share.g) != self.cfg.dim:
                accused.append(dealer)
            else:
                opened[dealer] = share
        if opened and not share_ok(self.cfg, summed(self.cfg, commitments.dealers, opened),
                                    x, sum_shares(self.cfg, opened.values())):
            bad = [u for u, sh in opened.items()
                   if not share_ok(self.cfg, commitments.dealers[u], x, sh)]
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
                share = decode_share(plain)
            except (ValueError, msgspec.DecodeError):
                continue
            if share_ok(self.cfg, self._commitments[dealer], x, share):
                self._shares[dealer] = share
        missing = [u for u in included if u not in self._shares]
        if missing:
            raise VssAbort(f"no valid share from {len(missing)} included dealers")
        total = sum_shares(self.cfg, (self._shares[u] for u in included))
        return AggregateShare(included_digest=included_digest(included), f=total.f, g=total.g)






