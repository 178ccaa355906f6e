"""Who may join: the coordinator's admission policy, and operator-signed admission tickets.

Theory of operation
-------------------
Keys are free: anyone can make a million. Open admission (the default) must
therefore make joining cost something other than a key, or bound what free
keys can do. This policy does both, and the round modes do the rest (a
silent member is left out of a round at its first phase and benched from
the next ones, see :mod:`protocol.rounds.secure`):

=======================  =====================================  ===========================
rule (setting)           what it stops                          refusal reason
=======================  =====================================  ===========================
new keys per source      one host minting keys (4,453 fresh     ``enroll_rate``
(``per_source_*``)       keys in two minutes from one host)
new keys overall         many hosts minting keys together       ``enroll_rate``
(``total_*``)
admitted peers at most   the peer table (and every per-peer     ``enroll_full``
(``max_peers``)          structure, ``GET /peers``) growing
                         without bound
expiry of the silent     keys admitted once and never seen      (forgotten, re-enrol)
(``expire_after``)       again holding a place for ever
a ticket (``ticket_key``) anybody joining at all: only keys     ``no_ticket``,
                         the operator signed a ticket for       ``bad_ticket``
                         (cost: the operator's decision)
an allow list (``allow``) the same, as a fixed list             ``not_admitted``
=======================  =====================================  ===========================

A *source* is what the transport authenticated and a key cannot fake: the
IP address the enrolment arrived from. Re-enrolment of a key already
admitted spends nothing (peers re-enrol after every restart). The rate
rules are checked, and a new key's tokens spent, before its signature is:
a flood from one source costs a dictionary lookup per enrolment, not an
Ed25519 verification, spends only that source's budget, and cannot spend
the honest enrolments' nonce budget (the verifier remembers a nonce only
for enrolments that passed these rules).

A ticket is an envelope (:mod:`protocol.wire.envelope`) of domain
:data:`TICKET` signed by the operator's key over :class:`Ticket`: the peer
id it admits and until when. It is not secret (it names one key, which
must still sign the enrolment), so peers keep it in a plain file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta

from ..wire.envelope import RejectedMessage, open_envelope, seal
from ..wire.identity import Identity, peer_id_from_public_key
from ..wire.messages import Strict, decode, encode
from .ratelimit import Buckets, TokenBucket

TICKET = "admission-ticket"
MAX_TICKET_WIRE = 1024


class NotAllowed(RejectedMessage):
    reason = "not_admitted"


class EnrollRate(RejectedMessage):
    reason = "enroll_rate"


class EnrollFull(RejectedMessage):
    reason = "enroll_full"


class NoTicket(RejectedMessage):
    reason = "no_ticket"


class BadTicket(RejectedMessage):
    reason = "bad_ticket"


class Ticket(Strict):
    peer_id: Annotated[str, Meta(max_length=64)]
    expires: Annotated[int, Meta(ge=0, le=2**40)]  # unix seconds
    note: Annotated[str, Meta(max_length=128)] = ""


def issue_ticket(operator: Identity, peer_id: str, expires: int, note: str = "") -> bytes:
    """A ticket admitting ``peer_id`` until ``expires`` (unix seconds), signed by
    ``operator``: the bytes a peer passes with ``--ticket``."""
    return seal(operator, TICKET, 0, encode(Ticket(peer_id=peer_id, expires=expires,
                                                    note=note)))


def check_ticket(wire: bytes, operator_key: bytes, peer_id: str, now: float) -> Ticket:
    """The ticket in ``wire`` if ``operator_key`` signed it for ``peer_id`` and it has not
    expired; raises :class:`BadTicket` (or :class:`NoTicket` for none) otherwise."""
    if not wire:
        raise NoTicket("this coordinator admits only peers with an operator-signed ticket")
    try:
        env = open_envelope(wire, domains={TICKET}, max_wire=MAX_TICKET_WIRE)
        ticket = decode(env.payload, Ticket)
    except RejectedMessage as exc:
        raise BadTicket(f"ticket does not verify: {exc}") from exc
    if env.sender != operator_key:
        raise BadTicket(f"ticket signed by {peer_id_from_public_key(env.sender)}, not the "
                        "operator")
    if ticket.peer_id != peer_id:
        raise BadTicket("ticket is for another peer")
    if ticket.expires < now:
        raise BadTicket("ticket has expired")
    return ticket


@dataclass(frozen=True)
class AdmissionConfig:
    """Defaults suit an open network of thousands of peers on their own hosts: a host
    enrols up to ``per_source_burst`` keys at once (a lab, a NAT), then one a minute."""

    allow: frozenset[str] | None = None  # only these peer ids (None: anyone)
    ticket_key: bytes | None = None  # the operator's Ed25519 public key (None: no tickets)
    max_peers: int = 100_000
    per_source_burst: int = 64
    per_source_rate: float = 1 / 60  # new keys a second per source, once the burst is spent
    total_burst: int = 512
    # new keys a second from all sources together: 10 lets a new network of a thousand
    # peers in within a minute (512 at once, the rest in 49 s); 36,000 keys an hour at most
    total_rate: float = 10.0
    expire_after: float = 7 * 86400.0  # seconds unheard before an admitted peer is forgotten


class AdmissionPolicy:
    """The rules above as a small state machine: the caller says what it knows (the
    claimed key, the source, the time, how many peers are admitted), the policy answers
    by raising the refusal, or by returning (the enrolment may proceed)."""

    def __init__(self, config: AdmissionConfig, now: float):
        self.config = config
        self._per_source = Buckets(config.per_source_rate, config.per_source_burst)
        self._total = TokenBucket(config.total_rate, config.total_burst, now)
        self.refused: dict[str, int] = {}

    def before_verify(self, peer_id: str, source: str, *, known: bool, admitted: int,
                      now: float) -> None:
        """Allow-list, capacity and rate rules, on the claimed (not yet verified) key. A new
        key spends one token of its source's budget and one of the overall budget here,
        before its signature is checked, whatever comes of it: a source that floods spends
        its own budget, at the cost of a lookup. A key already admitted spends nothing, so
        re-enrolment always gets through."""
        if known:
            return
        try:
            if self.config.allow is not None and peer_id not in self.config.allow:
                raise NotAllowed("key is not on the coordinator's allow list")
            if admitted >= self.config.max_peers:
                raise EnrollFull(f"{admitted} peers admitted, the most this coordinator "
                                 "takes; try again later")
            # the overall budget is looked at first and spent last: a key refused because
            # everyone together is over it spends nothing of its source's budget (a
            # thousand peers retrying through a full overall budget spent their shared
            # address's, and then were let in one a minute)
            if self._total.wait(now) > 0:
                raise EnrollRate("too many new keys just now; try again in a few seconds")
            bucket = self._per_source.bucket(source, now)
            if not bucket.take(now):
                raise EnrollRate(f"too many new keys from {source}; the next one in "
                                 f"{bucket.wait(now):.0f} s")
            self._total.take(now)
        except RejectedMessage as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            raise

    def check_ticket(self, peer_id: str, ticket: bytes, now: float) -> None:
        """After the enrolment's signature verified: the ticket rule, if there is one."""
        if self.config.ticket_key is None:
            return
        try:
            check_ticket(ticket, self.config.ticket_key, peer_id, now)
        except RejectedMessage as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            raise

    def expired_before(self, now: float) -> float:
        """Admitted peers last seen before this time are to be forgotten."""
        return now - self.config.expire_after


