"""Message schemas: the payloads that travel inside signed envelopes.

Every schema is a msgspec struct with ``forbid_unknown_fields`` and typed,
range-limited fields, decoded strictly: an unknown field, a wrong type or an
out-of-range number raises :class:`SchemaError` (reason ``"schema"``) with
msgspec's path to the bad field. Schemas are encoded as msgpack *maps* (field
names on the wire) so old peers can tell a new field from garbage.

Domains (what a signature is for) are listed in :data:`DOMAINS`; a payload
is only decoded as the schema its domain names.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from .envelope import RejectedMessage


class SchemaError(RejectedMessage):
    reason = "schema"


# --- domains --------------------------------------------------------------------------------
ENROLL = "enroll"  # peer -> coordinator: please admit me
ANNOUNCE = "announce"  # coordinator -> all: round n is open
CONTRIBUTION = "contribution"  # peer -> coordinator: my input to round n
RESULT = "result"  # coordinator -> all: round n's published outcome
NOTICE = "notice"  # coordinator -> all: a phase of round n opened (multi-phase rounds)
PERSONAL = "personal"  # coordinator -> one peer: its own message for a phase (session, pull)
WITHDRAW = "withdraw"  # participant -> coordinator: I cannot go on in round n (Withdraw)

ENROLL_WINDOW = 10  # minutes either side of the coordinator's clock


def enroll_round(now: float) -> int:
    """The "round" an enrolment is signed for: the current minute (unix time // 60). Peers
    enrol outside any round, so their replay window is a clock window instead: the
    coordinator accepts minutes within ``ENROLL_WINDOW`` of its own and forgets nonces
    older than that, which keeps its memory of enrolments bounded."""
    return int(now // 60)


# --- gossip topics --------------------------------------------------------------------------
TOPIC_ANNOUNCE = "hg/v1/announce"
TOPIC_RESULT = "hg/v1/result"
TOPIC_SUBMIT = "hg/v1/submit"  # peers' signed enrolments and contributions, for the coordinator
TOPIC_REPLICAS = "hg/v1/replicas"  # replicas' signed commitments and reveals (public audit)

# --- stream protocols -----------------------------------------------------------------------
PROTO_SUBMIT = "/hypergossip/submit/1.0.0"  # envelope -> SubmitAck (coordinator only)
PROTO_PULL = "/hypergossip/pull/1.0.0"  # PullRequest -> PullResponse (everyone)
PROTO_BLOB = "/hypergossip/blob/1.0.0"  # 32-byte digest -> blob bytes (everyone)
PROTO_SESSION = "/hypergossip/session/1.0.0"  # one long-lived stream per peer (peer.session)
PROTO_PEERS = "/hypergossip/peers/1.0.0"  # b"" -> PeerList (coordinator only)
PEERS_MAX = 16  # peers in one PeerList

Short = Annotated[str, Meta(max_length=64)]
Addr = Annotated[str, Meta(max_length=256)]
RoundNo = Annotated[int, Meta(ge=0, le=2**53)]
Count = Annotated[int, Meta(ge=0, le=2**31)]
Digest = Annotated[bytes, Meta(min_length=32, max_length=32)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class EvaluatorInfo(Strict):
    """An LLM backend a peer offers for prompt-search evaluations (protocol.prompts.evaluation)."""

    backend: Short
    model_digest: Annotated[str, Meta(max_length=160)]
    gen_params: Annotated[str, Meta(max_length=1024)]  # canonical JSON


class Enroll(Strict):
    workloads: Annotated[list[Short], Meta(max_length=8)]
    addrs: Annotated[list[Addr], Meta(max_length=8)] = []
    agent: Short = ""
    evaluator: EvaluatorInfo | None = None
    ticket: Annotated[bytes, Meta(max_length=1024)] = b""  # protocol.policy.admission: operator's


class PeerAddrs(Strict):
    peer_id: Annotated[str, Meta(max_length=64)]
    addrs: Annotated[list[Addr], Meta(max_length=4)]


class PeerList(Strict):
    """Peers to dial, from the coordinator (``PROTO_PEERS``): a peer that knows nobody but
    its bootstrap finds neighbours here, and fetches blobs from them instead of from the
    coordinator. Only connected peers, each with the addresses it enrolled with that are
    on the IP it is connected from (so that no one can have the coordinator send peers to
    dial somebody else)."""

    peers: Annotated[list[PeerAddrs], Meta(max_length=PEERS_MAX)]


MODES = ("clear", "secagg", "vss", "replicated")  # how a round is run (RoundAnnounce.mode)


class RoundAnnounce(Strict):
    round: RoundNo
    workload: Short
    deadline_ms: Annotated[int, Meta(ge=0)]
    min_peers: Count
    prev_state_digest: Annotated[bytes, Meta(max_length=32)] = b""
    params: Annotated[bytes, Meta(max_length=400 * 1024)] = b""  # the round mode's parameters
    # the workload's parameters for the round (a replicated round's task: its eligible
    # peers and assignment, 330 KB at 3,000 peers and 1,000 segments of 3 replicas)
    workload_params: Annotated[bytes, Meta(max_length=384 * 1024)] = b""
    mode: Short = "clear"  # one of MODES; ``params`` decodes by it


class StatsContribution(Strict):
    """The seed's challenge 1 input. Bounds cover adult humans with margin."""

    height: Annotated[float, Meta(ge=50.0, le=250.0)]  # cm
    weight: Annotated[float, Meta(ge=20.0, le=300.0)]  # kg


class BlobRef(Strict):
    """Stands in for a payload over the gossip limit; fetch it by digest."""

    digest: Digest
    size: Annotated[int, Meta(ge=0, le=2**32)]


class RoundResult(Strict):
    round: RoundNo
    workload: Short
    status: Short
    accepted: Count
    rejected: Annotated[dict[Short, Count], Meta(max_length=64)]
    state_digest: Digest
    result: Annotated[bytes, Meta(max_length=400 * 1024)] = b""  # canonical JSON of the result
    blob: BlobRef | None = None  # set when the state is too large for gossip


NOTICE_INLINE_MAX = 64 * 1024  # larger phase-notice bodies travel by digest (PhaseNotice)


class PhaseNotice(Strict):
    """A phase of a multi-phase round opened; ``body`` is the phase's broadcast message.
    ``personal`` says each participant also gets its own :class:`PersonalNotice` (pushed
    on its session before the notice, else pulled)."""

    round: RoundNo
    phase: Short
    body: Annotated[bytes, Meta(max_length=400 * 1024)] = b""
    personal: bool = False
    # a body over NOTICE_INLINE_MAX goes by digest instead (``body`` empty): every member
    # needs the same bytes, so they fetch them from each other, not all from the coordinator
    body_ref: BlobRef | None = None


class PersonalNotice(Strict):
    round: RoundNo
    phase: Short
    recipient: Short
    body: Annotated[bytes, Meta(max_length=4 * 1024 * 1024)] = b""


class PlainVector(Strict):
    """A contribution in the clear as little-endian float32 (insecure mode)."""

    vector: Annotated[bytes, Meta(max_length=64 * 1024 * 1024)]


class Withdraw(Strict):
    """A participant's word that it cannot go on in the round it is signed for (it could
    not fetch the model, its data does not fit, it left a phase): the coordinator stops
    waiting for it, as for a peer whose connection closed. A peer can only withdraw
    itself, and a withdrawal changes nothing a silent peer could not."""

    reason: Annotated[str, Meta(max_length=200)] = ""


class SubmitAck(Strict):
    accepted: bool
    reason: Annotated[str, Meta(max_length=512)] = ""
    # an accepted round message: the coordinator's signed receipt (protocol.audit.log)
    receipt: Annotated[bytes, Meta(max_length=1024)] = b""


class PullRequest(Strict):
    """``kind``: ``head`` (latest announcement, its phase notices, latest result), or a
    domain (``announce``, ``result``, ``notice``, ``personal``) with ``round`` and, for
    notices, the phase name in ``tag``. ``personal`` is answered only by the coordinator
    and only with the asking peer's own message."""

    kind: Short
    round: RoundNo = 0
    tag: Short = ""


class PullResponse(Strict):
    envelopes: Annotated[list[bytes], Meta(max_length=16)] = []


T = TypeVar("T", bound=msgspec.Struct)
_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {}


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes, schema: type[T]) -> T:
    """Strictly decode ``data`` as ``schema``; raise :class:`SchemaError` with the reason."""
    dec = _decoders.get(schema)
    if dec is None:
        dec = _decoders[schema] = msgspec.msgpack.Decoder(schema)
    try:
        return dec.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:  # bad UTF-8
        raise SchemaError(f"{schema.__name__}: {exc}") from exc
