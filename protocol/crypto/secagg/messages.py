"""SecAgg+'s messages (the schemas peers and server exchange) and its errors.

See :mod:`protocol.crypto.secagg` for the protocol and its guarantees.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ...wire.envelope import RejectedMessage
from ...wire.messages import Strict

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


class Advertised(Strict):
    """Server -> clients, the shares phase's notice: the participants that advertised no
    keys (a re-planning round leaves them out). Each client's own and its neighbours' keys
    come in a personal :class:`KeyDirectory`: the whole directory is O(N) bytes
    (~180 B a member) that every client would fetch, while a client uses its degree's."""

    missing: Annotated[list[PeerId], msgspec.Meta(max_length=10_000)]


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


class SurvivorBits(Strict):
    """Server -> survivors, the consistency phase's notice on the wire: the
    :class:`SurvivorList` as one bit per announced participant (in the announcement's
    order; bit i of byte i // 8, most significant first). Every participant holds that
    list, so at N=1,000 the notice is 125 bytes instead of 53 KB sent to each."""

    bits: Annotated[bytes, msgspec.Meta(max_length=1_250)]


class ConsistencySignature(Strict):
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class UnmaskRequest(Strict):
    """Server -> survivors: the survivor list with at least ``agreement`` signatures on it."""

    survivors: Annotated[list[PeerId], msgspec.Meta(max_length=10_000)]
    signatures: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=10_000)]


class SurvivorSignatures(Strict):
    """Server -> survivors, the unmask phase's notice on the wire: an
    :class:`UnmaskRequest` without its survivor list (each survivor holds the list it
    signed), its signatures by the signer's index in that sorted list, and only
    ``agreement`` of them (the server checked each; a client needs that many): at N=1,000
    about 48 KB instead of 170 KB, so it stays inline instead of being fetched by all."""

    signers: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]],
                       msgspec.Meta(max_length=10_000)]
    signatures: Annotated[list[Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]],
                          msgspec.Meta(max_length=10_000)]


class UnmaskShares(Strict):
    self_mask_shares: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]
    mask_key_shares: Annotated[dict[PeerId, bytes], msgspec.Meta(max_length=1_000)]


class SharePlaintext(Strict, array_like=True):
    """Sender, recipient and round are bound by the AEAD's associated data, not repeated."""

    self_mask_share: bytes
    mask_key_share: bytes


# --- round configuration and the public graph ------------------------------------------------
