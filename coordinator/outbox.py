"""What the coordinator sends: announcements, phase notices, personal messages, results.

Everything it sends is signed here, kept in the round log (so peers can pull it),
pushed on every participant's session (:mod:`peer.session`) and, for announcements
and results, gossiped. The outbox also answers what peers ask for again: pulls, and
the head of a new session.
"""

from __future__ import annotations

import logging
import time

from peer.node import NetworkNode
from peer.roundlog import RoundLog
from peer.session import SessionHub
from protocol.audit.log import HEAD, RECEIPT, Receipt
from protocol.rounds.base import Notice
from protocol.wire.envelope import seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ANNOUNCE,
    NOTICE,
    NOTICE_INLINE_MAX,
    PERSONAL,
    RESULT,
    TOPIC_ANNOUNCE,
    TOPIC_RESULT,
    BlobRef,
    PersonalNotice,
    PhaseNotice,
    PullRequest,
    PullResponse,
    decode,
    encode,
)

from .meter import Meter

log = logging.getLogger("hypergossip.coordinator")
KEEP_TIMES = 64  # rounds of send times kept (a coordinator runs for months)


class Outbox:
    def __init__(self, identity: Identity, node: NetworkNode, sessions: SessionHub,
                 roundlog: RoundLog, meter: Meter):
        self.identity, self.node, self.sessions, self.roundlog = identity, node, sessions, roundlog
        self.meter = meter
        self.sent_at: dict[tuple[str, int], float] = {}  # (domain, round) -> monotonic time
        self.personal: dict[tuple[int, str, str], bytes] = {}  # (round, phase, peer) -> wire

    def seal(self, domain: str, round: int, payload: bytes) -> bytes:
        return seal(self.identity, domain, round, payload)

    def receipt(self, number: int, digest: bytes, sender: str) -> bytes:
        """A signed receipt for round ``number``'s accepted message ``digest``."""
        return self.seal(RECEIPT, number, encode(Receipt(number, digest, sender)))

    def announce(self, number: int, wire: bytes) -> None:
        self.roundlog.add(ANNOUNCE, number, wire)
        self.sent_at[(ANNOUNCE, number)] = time.monotonic()
        self.sessions.broadcast(wire)
        self.gossip(TOPIC_ANNOUNCE, wire)

    def notice(self, number: int, notice: Notice, participants: list[str]) -> None:
        """Open a phase: each personal message ahead of the notice that needs it. Not
        gossiped: participants get it on their sessions, or pull it (gossiping it as well
        cost every peer CPU for nothing)."""
        with self.meter.timed("notice", number):
            body, ref = notice.body, None
            if len(body) > NOTICE_INLINE_MAX:  # fetched by digest, mostly from other peers
                ref, body = BlobRef(digest=self.node.blobs.put(body), size=len(body)), b""
            payload = encode(PhaseNotice(round=number, phase=notice.phase, body=body,
                                         personal=bool(notice.personal), body_ref=ref))
            wire = self.seal(NOTICE, number, payload)
            self.roundlog.add(NOTICE, number, wire, tag=notice.phase)
            self.sent_at[(f"{NOTICE}/{notice.phase}", number)] = time.monotonic()
            for peer, body in notice.personal.items():
                personal = self.seal(PERSONAL, number, encode(PersonalNotice(
                    round=number, phase=notice.phase, recipient=peer, body=body)))
                self.personal[(number, notice.phase, peer)] = personal
                self.sessions.push(peer, personal)
            self.sessions.broadcast(wire, participants)
        log.info("round %d: phase %s open (%d-byte notice, %d personal)", number, notice.phase,
                 len(wire), len(notice.personal))

    def result(self, number: int, wire: bytes) -> None:
        self.roundlog.add(RESULT, number, wire)
        self.roundlog.forget(NOTICE, before=number + 1)  # a closed round's are moot
        self.personal.clear()
        self.sent_at[(RESULT, number)] = time.monotonic()
        for key in [k for k in self.sent_at if k[1] < number - KEEP_TIMES]:
            del self.sent_at[key]
        self.sessions.broadcast(wire)
        self.gossip(TOPIC_RESULT, wire)

    def head(self, number: int, wire: bytes, forged: bytes | None = None) -> None:
        """Send round ``number``'s signed round-log head: on every session and by gossip,
        so that peers comparing heads catch two histories. ``forged``: a lying
        coordinator's second head (``--lie equivocate``), pushed on the sessions instead,
        while gossip carries the true one."""
        self.roundlog.add(HEAD, number, wire)
        self.sessions.broadcast(forged or wire)
        self.gossip(TOPIC_RESULT, wire)

    def gossip(self, topic: str, wire: bytes) -> None:
        async def send() -> None:
            try:
                await self.node.publish(topic, wire)
            except Exception as exc:
                log.warning("gossip on %s failed (peers will pull): %s", topic, exc)

        self.node.start_soon(send)

    # --- asked again ---------------------------------------------------------------------
    async def on_pull(self, request: bytes, remote: str) -> bytes:
        with self.meter.timed("pull"):
            req = decode(request, PullRequest)
            if req.kind == "personal":  # only the authenticated asker's own message
                wire = self.personal.get((req.round, req.tag, remote))
                return encode(PullResponse(envelopes=[wire] if wire else []))
            return self.roundlog.answer(request)

    def session_head(self, peer: str, open_round: int | None) -> list[bytes]:
        """What a peer's new session gets first: the open round's announcement, the peer's
        own personal messages, the round's notices (each personal message ahead of its
        notice), the latest result."""
        out: list[bytes] = []
        if open_round is not None and (a := self.roundlog.get(ANNOUNCE, open_round)):
            out.append(a)
            out += [w for (r, _, p), w in self.personal.items() if r == open_round and p == peer]
            out += self.roundlog.notices(open_round)
        if latest := self.roundlog.latest(RESULT):
            out.append(self.roundlog.get(RESULT, latest))
        if latest := self.roundlog.latest(HEAD):
            out.append(self.roundlog.get(HEAD, latest))
        return out
