"""A SecAgg+ client: advertise keys, share them, send the masked input, confirm the
survivors, answer the unmask request.

See :mod:`protocol.crypto.secagg` for the protocol and its guarantees.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import msgspec
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .. import shamir
from ..common import (
    raw_private,
    raw_public,
    round_bytes,
    x25519,
)
from .config import (
    Masker,
    SecAggConfig,
    consistency_message,
    enc_keys,
    mask_sign,
    pairwise_seed,
    seed_commitment,
    valid_signature,
)
from .messages import (
    AdvertiseKeys,
    ConsistencySignature,
    Inbox,
    KeyDirectory,
    MaskedInput,
    SecAggAbort,
    SecAggMisuse,
    SecAggRejected,
    ShareBundle,
    SharePlaintext,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
)


class SecAggClient:
    """One client's side of one round. Phases: advertise -> share_keys -> masked_input ->
    confirm -> unmask; each is called once, in order. ``sign`` signs with the key behind
    ``peer_id`` (the peer's identity)."""

    def __init__(self, peer_id: str, cfg: SecAggConfig, sign: Callable[[bytes], bytes]):
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
        self._received: dict[str, SharePlaintext] = {}  # shares others gave us, by sender
        self._aeads: dict[str, tuple[ChaCha20Poly1305, ChaCha20Poly1305]] = {}  # to, from

    def _advance(self, expect: int) -> None:
        if self._step != expect:
            raise SecAggMisuse(f"client phase {expect} called at step {self._step}")
        self._step += 1

    def advertise(self) -> AdvertiseKeys:
        self._advance(0)
        return AdvertiseKeys(enc_pk=raw_public(self._enc), mask_pk=raw_public(self._mask),
                             self_mask_commit=seed_commitment(self._b))

    def share_keys(self, directory: KeyDirectory,
                   members: Iterable[str] | None = None) -> ShareBundle:
        """Seal our shares to our neighbours. ``directory``: the keys of (at least) this
        client and its neighbours; ``members``: who advertised keys, when the directory
        does not list them all (a re-planning round's graph is drawn over them)."""
        self._advance(1)
        try:  # the members, if it re-plans
            self.cfg = self.cfg.restricted(directory.keys if members is None else members)
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
            plain = SharePlaintext(b_shares[i], s_shares[i])
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
            to, frm = enc_keys(shared, self.cfg.round, self.me, other)
            pair = self._aeads[other] = (ChaCha20Poly1305(to), ChaCha20Poly1305(frm))
        return pair

    def _seal(self, v: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        ad = round_bytes(self.cfg.round) + self.me.encode() + b">" + v.encode()
        return nonce + self._aead(v)[0].encrypt(nonce, plain, ad)

    def _open(self, u: str, blob: bytes) -> SharePlaintext:
        ad = round_bytes(self.cfg.round) + u.encode() + b">" + self.me.encode()
        try:
            plain = self._aead(u)[1].decrypt(blob[:12], blob[12:], ad)
            msg = msgspec.msgpack.decode(plain, type=SharePlaintext)
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
            masks.append((pairwise_seed(shared, self.cfg.round, self.me, v), mask_sign(self.me, v)))
        Masker(self.cfg).apply(y, masks)
        return MaskedInput(vector=y.astype(self.cfg.encoding.wire_dtype, copy=False).tobytes())

    @property
    def confirmed(self) -> list[str]:
        """The sorted survivor list this client signed (empty before it signed one)."""
        return list(self._confirmed or [])

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
            if peer in survivors and valid_signature(peer, message, sig):
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
