"""The round log: one record per closed round, hash-chained and signed by the coordinator.

Theory of operation
-------------------
Everyone has to trust a coordinator that alone decides what was accepted and what the
result is, unless what it decided is public and bound by its own signature. After each
round it writes a :class:`RoundRecord`: the signed announcement, the signed phase
notices and the signed result exactly as it sent them, every accepted message (its
wire digest, sender, domain and size), the Merkle root over those digests
(:mod:`.merkle`, so a peer can prove its message is in or out), every refusal with its
reason, and ``prev``, the hash of the previous record. The record's hash
(:func:`record_hash`, over its exact bytes under its own prefix) goes into a
:class:`LogHead` that the coordinator signs as an envelope of domain :data:`HEAD`.

What follows:

* a record cannot be changed after its head is out: the head signs its hash, and the
  next record's ``prev`` chains it;
* two different histories shown to two parties are two heads for one round with
  different hashes, both signed: :func:`equivocation` checks such a pair, which is a
  proof anyone can verify with the coordinator's public key alone;
* the accepted messages are the senders' own signed envelopes (served by digest), so an
  auditor re-derives the result from them (:mod:`.derive`) without trusting the
  coordinator's arithmetic, and a message the coordinator claims but cannot show fails
  the audit.

Caps: a record holds at most :data:`MAX_ACCEPTED` accepted digests and
:data:`MAX_REFUSALS` refusals (beyond, refusals are only counted), and at most
:data:`MAX_RECORD` bytes in all: a reader refuses anything larger before decoding.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, TypeVar

import msgspec
from msgspec import Meta

from ..wire.envelope import DEFAULT_MAX_WIRE, Envelope, RejectedMessage, open_envelope
from ..wire.messages import ANNOUNCE, NOTICE, RESULT, Count, Digest, RoundNo, Short, Strict
from ..wire.messages import decode as decode_schema
from . import merkle

HEAD = "log/head"  # envelope domain of a coordinator's signed LogHead
RECEIPT = "log/receipt"  # envelope domain of a coordinator's signed Receipt
RECORD_PREFIX = b"hypergossip/v1/round-record\x00"
GENESIS = bytes(32)  # ``prev`` of the first record
MAX_ACCEPTED = 50_000  # 1,000 peers x 5 messages a SecAgg+ round is 5,000
MAX_REFUSALS = 1_000
MAX_NOTICES = 16
MAX_RECORD = 16 * 1024 * 1024

PeerId = Annotated[str, Meta(max_length=64)]
Wire = Annotated[bytes, Meta(max_length=DEFAULT_MAX_WIRE)]


class BadRecord(RejectedMessage):
    """A record, head or proof that does not hold together (the coordinator's fault)."""

    reason = "bad_record"


class Accepted(Strict, array_like=True):
    digest: Digest  # SHA-256 of the envelope's wire bytes (Envelope.wire_digest)
    sender: PeerId
    domain: Short
    size: Count  # wire bytes; the envelope itself is served by digest while it is kept


class Refusal(Strict, array_like=True):
    sender: PeerId  # who delivered it, as the transport authenticated them
    reason: Short
    digest: Digest  # SHA-256 of the refused bytes


class RoundRecord(Strict):
    round: RoundNo
    prev: Digest
    announce: Wire  # b"" for an epoch of values posted over HTTP alone (no announcement)
    notices: Annotated[list[Wire], Meta(max_length=MAX_NOTICES)]
    result: Wire
    accepted_root: Digest
    accepted: Annotated[list[Accepted], Meta(max_length=MAX_ACCEPTED)]
    refusals: Annotated[list[Refusal], Meta(max_length=MAX_REFUSALS)]
    refusals_uncounted: Count = 0  # refusals beyond MAX_REFUSALS: counted, not listed


class LogHead(Strict):
    """What the coordinator signs after each round (envelope domain :data:`HEAD`)."""

    round: RoundNo
    record: Digest  # record_hash of the round's record
    prev: Digest
    root: Digest  # the record's accepted_root: proofs check against the signed head alone
    accepted: Count  # leaves of the record's Merkle tree


class Receipt(Strict):
    """What the coordinator signs when it accepts a round message (in the ack): the
    sender holds proof that ``digest`` was accepted in round ``round``, and so that the
    round's record must list it."""

    round: RoundNo
    digest: Digest  # the accepted envelope's wire digest
    sender: PeerId


S = TypeVar("S", bound=Strict)


def open_signed(wire: bytes, domain: str, schema: type[S], coordinator: str,
                number: str = "round") -> tuple[Envelope, S]:
    """An envelope of ``domain`` signed by ``coordinator``, its payload decoded as
    ``schema`` and numbered (field ``number``) as the envelope's round; raises
    :class:`RejectedMessage` (:class:`BadRecord`) otherwise."""
    env = open_envelope(wire, domains=(domain,))
    if env.sender_id != coordinator:
        raise BadRecord(f"{domain} signed by {env.sender_id}, not the coordinator "
                        f"{coordinator}")
    value = decode_schema(env.payload, schema)
    if getattr(value, number) != env.round:
        raise BadRecord(f"{domain} for {number} {getattr(value, number)} signed as "
                        f"round {env.round}")
    return env, value


def open_receipt(wire: bytes, coordinator: str) -> Receipt:
    """A receipt signed by ``coordinator`` (raises :class:`RejectedMessage` otherwise)."""
    return open_signed(wire, RECEIPT, Receipt, coordinator)[1]


class InclusionProof(Strict):
    """That message ``digest`` is leaf ``index`` of round ``round``'s accepted tree."""

    round: RoundNo
    digest: Digest
    index: Count
    size: Count
    path: Annotated[list[Digest], Meta(max_length=64)]


def record_hash(record_bytes: bytes) -> bytes:
    return hashlib.sha256(RECORD_PREFIX + record_bytes).digest()


def build(number: int, prev: bytes, announce: bytes, notices: list[bytes], result: bytes,
          accepted: list[Accepted], refusals: list[Refusal], uncounted: int = 0
          ) -> tuple[bytes, LogHead]:
    """The record's bytes and the head to sign for them (refusals past
    :data:`MAX_REFUSALS` only counted, with the ``uncounted`` the caller did not list)."""
    if len(accepted) > MAX_ACCEPTED:
        raise ValueError(f"{len(accepted)} accepted messages, the record holds "
                         f"{MAX_ACCEPTED}")
    rec = RoundRecord(round=number, prev=prev, announce=announce, notices=notices[-MAX_NOTICES:],
                      result=result, accepted_root=merkle.root([a.digest for a in accepted]),
                      accepted=accepted, refusals=refusals[:MAX_REFUSALS],
                      refusals_uncounted=max(0, len(refusals) - MAX_REFUSALS) + uncounted)
    data = msgspec.msgpack.encode(rec)
    if len(data) > MAX_RECORD:
        raise ValueError(f"round {number}'s record is {len(data)} bytes, over {MAX_RECORD}")
    return data, LogHead(round=number, record=record_hash(data), prev=prev,
                         root=rec.accepted_root, accepted=len(accepted))


def decode_record(data: bytes) -> RoundRecord:
    if len(data) > MAX_RECORD:
        raise BadRecord(f"record of {len(data)} bytes, over {MAX_RECORD}")
    try:
        return decode_schema(data, RoundRecord)
    except RejectedMessage as exc:
        raise BadRecord(f"not a round record: {exc}") from exc


def open_head(wire: bytes, coordinator: str) -> tuple[Envelope, LogHead]:
    """A signed head: the envelope checked (signature, domain) and signed by
    ``coordinator``; the head decoded and for the envelope's round."""
    return open_signed(wire, HEAD, LogHead, coordinator)


def equivocation(first: bytes, second: bytes, coordinator: str) -> int | None:
    """The round for which ``first`` and ``second`` are two different signed heads of
    ``coordinator`` (proof that it showed two histories), else None."""
    try:
        _, a = open_head(first, coordinator)
        _, b = open_head(second, coordinator)
    except RejectedMessage:
        return None
    return a.round if a.round == b.round and a.record != b.record else None


def check_record(record_bytes: bytes, head: LogHead, coordinator: str,
                 prev: bytes | None) -> RoundRecord:
    """``record_bytes`` against its signed ``head``: hash, chain (``prev``: the hash of the
    record before it, None when the auditor has none), the Merkle root and the round's own
    envelopes (each signed by ``coordinator`` for this round). Raises :class:`BadRecord`
    naming what does not hold."""
    rec = decode_record(record_bytes)
    if record_hash(record_bytes) != head.record:
        raise BadRecord(f"round {head.round}: the record does not hash to its signed head")
    if rec.round != head.round or rec.prev != head.prev:
        raise BadRecord(f"round {head.round}: the record's round or prev differ from its head")
    if prev is not None and rec.prev != prev:
        raise BadRecord(f"round {rec.round}: prev does not chain to the previous record")
    if merkle.root([a.digest for a in rec.accepted]) != rec.accepted_root or \
            head.root != rec.accepted_root or head.accepted != len(rec.accepted):
        raise BadRecord(f"round {rec.round}: the accepted digests do not give its root")
    digests = [a.digest for a in rec.accepted]
    if len(set(digests)) != len(digests):
        raise BadRecord(f"round {rec.round}: a message is listed twice among the accepted")
    wires = [(rec.result, RESULT), *((n, NOTICE) for n in rec.notices)]
    if rec.announce:
        wires.append((rec.announce, ANNOUNCE))
    for wire, domain in wires:
        env = open_envelope(wire, domains=(domain,))
        if env.sender_id != coordinator or env.round != rec.round:
            raise BadRecord(f"round {rec.round}: its {domain} is not the coordinator's "
                            "for this round")
    return rec


def prove(record: RoundRecord, digest: bytes) -> InclusionProof | None:
    """The inclusion proof of ``digest`` in ``record``, or None when it is not there."""
    digests = [a.digest for a in record.accepted]
    if digest not in digests:
        return None
    i = digests.index(digest)
    return InclusionProof(round=record.round, digest=digest, index=i, size=len(digests),
                          path=merkle.prove(digests, i))


def verify_proof(proof: InclusionProof, head: LogHead) -> bool:
    """Whether ``proof`` shows its digest among the accepted of the round whose signed head
    is ``head``."""
    return proof.round == head.round and proof.size == head.accepted and \
        merkle.verify_inclusion(proof.digest, proof.index, proof.size, proof.path, head.root)


class HeadWatch:
    """A peer's memory of the coordinator's signed heads, wherever they came from (its
    session, gossip, a neighbour's pull): the first head of each of the last ``keep``
    rounds. A second valid head for a round with another record hash is a proof of
    equivocation (:func:`equivocation` checks it with the coordinator's key alone)."""

    def __init__(self, coordinator: str, keep: int = 64):
        self.coordinator, self.keep = coordinator, keep
        self.heads: dict[int, tuple[bytes, bytes]] = {}  # round -> (record hash, wire)
        self.proofs: dict[int, tuple[bytes, bytes]] = {}  # round -> the two heads

    def observe(self, wire: bytes) -> tuple[LogHead, tuple[bytes, bytes] | None]:
        """Take a head (raises :class:`RejectedMessage` when it is not the coordinator's):
        the head, and both heads when it contradicts the one held for its round (the first
        time only)."""
        _, head = open_head(wire, self.coordinator)
        held = self.heads.get(head.round)
        if held is None:
            if len(self.heads) >= self.keep and head.round < min(self.heads):
                return head, None  # older than anything we keep: nothing to compare with
            self.heads[head.round] = (head.record, wire)
            for r in sorted(self.heads)[:-self.keep]:
                del self.heads[r]
            return head, None
        if held[0] == head.record or head.round in self.proofs:
            return head, None
        self.proofs[head.round] = (held[1], wire)
        for r in sorted(self.proofs)[:-self.keep]:  # a coordinator lying every round
            del self.proofs[r]
        return head, self.proofs[head.round]

    def latest(self) -> bytes | None:
        return self.heads[max(self.heads)][1] if self.heads else None
