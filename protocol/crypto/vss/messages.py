"""The committee vss's messages (the schemas dealers, members and server exchange)
and its errors.

See :mod:`protocol.crypto.vss` for the protocol and its guarantees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Annotated

import msgspec

from ...wire.envelope import RejectedMessage
from ...wire.messages import Strict
from .. import rangeproof

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


class MemberKeys(Strict):
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


class MemberInbox(Strict):
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


class SharePoint(Strict, array_like=True):
    f: list[B32]
    g: list[B32]


def included_digest(included: Iterable[str]) -> bytes:
    return hashlib.sha256(TAG + b"included\0" + msgspec.msgpack.encode(sorted(included))).digest()
