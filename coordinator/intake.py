"""Message intake and admission: every envelope a peer sends goes through :meth:`Intake.handle`.

Verify (size, structure, domain, digest, signature, round window, replay),
check admission, decode strictly, offer to the open round. Any refusal is
counted against the peer the transport authenticated and by reason, in SQLite
and (for admitted peers) in the open round, and answered with its reason;
nothing refused touches the round's state. Enrolments go through the admission
policy (:mod:`protocol.policy.admission`) before their signature is checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from peer.node import NetworkNode
from protocol.policy.admission import AdmissionPolicy
from protocol.policy.ratelimit import LogLimiter
from protocol.rounds.base import NotParticipant, RoundClosed
from protocol.wire.envelope import (
    Envelope,
    Malformed,
    RejectedMessage,
    Replay,
    Verifier,
    peek,
)
from protocol.wire.messages import (
    ENROLL,
    ENROLL_WINDOW,
    WITHDRAW,
    Enroll,
    EvaluatorInfo,
    SubmitAck,
    Withdraw,
    decode,
    encode,
    enroll_round,
)

from .meter import Meter
from .metrics import CoordinatorMetrics
from .rounds import OpenRound
from .store import Store

log = logging.getLogger("hypergossip.coordinator")

MAX_SUBMIT_WIRE = 8 * 1024 * 1024  # by stream; gossip stays under GOSSIP_MAX
# refusals that say the message itself is bad (not late, not a replay): gossip that a peer
# should never have forwarded
FORWARDER_FAULTS = frozenset({"malformed", "oversize", "wrong_domain", "digest_mismatch",
                              "bad_signature", "schema"})


class NotAdmitted(RejectedMessage):
    reason = "not_admitted"


class Intake:
    def __init__(self, store: Store, node: NetworkNode, admission: AdmissionPolicy,
                 open_round: OpenRound, domains: Callable[[], frozenset[str]],
                 meter: Meter, metrics: CoordinatorMetrics):
        """``domains()``: what peers may sign round messages for (every registered mode's)."""
        self.store, self.node, self.admission, self.open = store, node, admission, open_round
        self.domains, self.meter = domains, meter
        self.metrics = metrics
        self.enroll_verifier = Verifier(max_wire=MAX_SUBMIT_WIRE)
        self.round_verifier = Verifier(max_wire=MAX_SUBMIT_WIRE)
        self.evaluators: dict[str, EvaluatorInfo] = {}  # peer -> what it can evaluate
        self.addrs: dict[str, list[str]] = {}  # peer -> the addresses it enrolled with
        self._refusal_log = LogLimiter(60.0)
        # seals a Receipt (protocol.audit.log) for each accepted round message: set by
        # the coordinator once its outbox (its signing key) exists
        self.receipt: Callable[[int, bytes, str], bytes] | None = None

    # --- by transport ----------------------------------------------------------------------
    async def on_submit_stream(self, request: bytes, remote: str) -> bytes:
        return encode(self.handle(request, via="stream", transport_peer=remote))

    def on_submit_gossip(self, data: bytes, origin: str) -> bool:
        """Handle a message submitted by gossip; False (an invalid message, for gossipsub's
        score) only when it is malformed or forged, not when it merely came too late."""
        ack = self.handle(data, via="gossip", transport_peer=origin)
        return ack.accepted or ack.reason.split(":", 1)[0] not in FORWARDER_FAULTS

    # --- one envelope ----------------------------------------------------------------------
    def handle(self, wire: bytes, *, via: str, transport_peer: str) -> SubmitAck:
        """Verify and apply one envelope; count and explain any refusal.

        ``transport_peer`` is who delivered it, as the transport authenticated them (the
        Noise handshake of a session or stream, the pubsub signature of a gossip message).
        A refusal is counted against that peer, never against the key the message names:
        a forger cannot move an honest peer's counters. Only refusals of admitted peers
        count in the open round's (signed) result, and each (peer, reason) is logged at
        most once a minute.
        """
        with self.meter.timed("intake"):
            try:
                env, digest = self._accept(wire, transport_peer)
            except Replay as exc:
                if (again := self._accepted_before(wire)) is not None:
                    return again
                return self._refuse(exc, wire, via, transport_peer)
            except RejectedMessage as exc:
                return self._refuse(exc, wire, via, transport_peer)
            self.store.touch(env.sender_id)
            self.metrics.accepted.labels(env.domain).inc()
            return self._ack(env, digest)

    def _refuse(self, exc: RejectedMessage, wire: bytes, via: str,
                transport_peer: str) -> SubmitAck:
        self.store.count_rejection(transport_peer, exc.reason)
        self.metrics.rejected.labels(exc.reason).inc()
        if self.open.round is not None and self.store.is_admitted(transport_peer):
            self.open.round.count_rejection(exc.reason)
            self.open.refused(transport_peer, exc.reason, wire)
        muted = self._refusal_log.allow((transport_peer, exc.reason), time.monotonic())
        if muted is not None:
            log.warning("rejected %s from %s: %s: %s%s", via, transport_peer,
                        exc.reason, exc, f" ({muted} more like it muted)" if muted else "")
        return SubmitAck(accepted=False, reason=f"{exc.reason}: {exc}"[:500])

    def _ack(self, env: Envelope, digest: bytes | None) -> SubmitAck:
        if self.receipt is None or digest is None:  # no round log, or an enrolment
            return SubmitAck(accepted=True)
        return SubmitAck(accepted=True, receipt=self.receipt(env.round, digest, env.sender_id))

    def _accepted_before(self, wire: bytes) -> SubmitAck | None:
        """The same answer again for the exact envelope the open round already accepted
        (its sender did not get the ack, say its session broke, and sent it again): sent
        twice, accepted once. None for anything else under a seen nonce (a real replay),
        and once its round has closed."""
        env = peek(wire, MAX_SUBMIT_WIRE)
        if env is None or env.round != self.open.number or \
                (digest := env.wire_digest()) not in self.open.accepted:
            return None
        log.debug("round %d: %s from %s again; acked again", env.round, env.domain,
                  env.sender_id)
        return self._ack(env, digest)

    def _accept(self, wire: bytes, transport_peer: str) -> tuple[Envelope, bytes | None]:
        """The verified, applied envelope and its wire digest (None for an enrolment;
        computed once: a masked vector of 100,000 values is 400 KB to hash)."""
        peeked = peek(wire, MAX_SUBMIT_WIRE)
        if peeked is not None and peeked.domain == ENROLL:
            return self._enroll(wire, peeked, transport_peer), None
        rnd = self.open.round
        last = rnd.number if rnd is not None else self.store.last_round()
        env = self.round_verifier.verify(wire, domains=self.domains(), min_round=last,
                                         max_round=last, check=self._sender_admitted)
        if rnd is None or rnd.number != env.round:
            raise RoundClosed(f"round {env.round} is not open")
        digest = env.wire_digest()
        if env.domain == WITHDRAW:
            return self._withdraw(env, wire, digest), digest
        rnd.offer_message(env.sender_id, env.domain, env.payload)
        self.open.answered.add(env.sender_id)
        self.open.accepted.add(digest)
        # only a resumable mode's payloads are kept: the others' are masked vectors and
        # ciphertexts nobody may use later, and a restart abandons such a round anyway
        keep = self.open.mode is not None and self.open.mode.resumable
        self._record(env, wire, digest, env.payload if keep else b"")
        log.info("round %d: accepted %s from %s", env.round, env.domain, env.sender_id)
        self.open.changed(env.sender_id)
        return env, digest

    def _record(self, env: Envelope, wire: bytes, digest: bytes, payload: bytes) -> None:
        """Store an accepted message and its envelope (served to the round log's auditors
        for the last ``--log-keep`` rounds: coordinator.roundlog; without a round log
        nobody is served it, and it is not kept)."""
        kept = wire if self.receipt is not None else b""
        self.store.record_message(digest, env.round, env.sender_id, env.domain,
                                  env.nonce, payload, kept, len(wire))

    def _withdraw(self, env: Envelope, wire: bytes, digest: bytes) -> Envelope:
        """A participant that cannot go on: the round stops waiting for it."""
        why = decode(env.payload, Withdraw).reason
        if self.open.participants and env.sender_id not in self.open.participants:
            raise NotParticipant(f"{env.sender_id} is not a participant of round {env.round}")
        self.open.withdrawn.add(env.sender_id)
        self.open.accepted.add(digest)
        self._record(env, wire, digest, b"")
        log.info("round %d: %s withdrew: %s", env.round, env.sender_id, why or "no reason")
        self.open.changed(env.sender_id)
        return env

    def _sender_admitted(self, env: Envelope) -> None:
        if not self.store.is_admitted(env.sender_id):
            raise NotAdmitted("sender has not enrolled (or is not allowed)")

    def _enroll(self, wire: bytes, peeked: Envelope, transport_peer: str) -> Envelope:
        """An enrolment: the admission policy's rate and capacity rules on the claimed key
        (before any signature check, see protocol.policy.admission), then the signature, then
        its ticket rule; then the peer is admitted (or its addresses refreshed)."""
        claimed = _claimed_sender(wire)
        if claimed is None:
            raise Malformed("enrolment names no key")
        now = time.time()
        source = self.node.remote_ip(transport_peer) or "unknown"
        self.admission.before_verify(claimed, source, known=self.store.is_admitted(claimed),
                                     admitted=self.store.count_admitted(), now=now)
        minute = enroll_round(now)
        env = self.enroll_verifier.verify(wire, domains={ENROLL},
                                          min_round=minute - ENROLL_WINDOW,
                                          max_round=minute + ENROLL_WINDOW)
        enroll = decode(env.payload, Enroll)
        self.admission.check_ticket(env.sender_id, enroll.ticket, now)
        if self.store.admit(env.sender_id, list(enroll.addrs), enroll.agent):
            log.info("admitted peer %s (%s) from %s", env.sender_id, enroll.agent, source)
        self.addrs[env.sender_id] = list(enroll.addrs)
        if enroll.evaluator is not None:
            self.evaluators[env.sender_id] = enroll.evaluator
            log.info("peer %s evaluates prompts with %s (%s)", env.sender_id,
                     enroll.evaluator.backend, enroll.evaluator.model_digest[:16])
        self.open.changed()
        return env

    async def expiry_loop(self) -> None:
        """Forget admitted peers unheard of for ``admission.expire_after`` (none of them
        connected now: a connected peer is live, and live_peers() keeps touching it)."""
        while True:
            await trio.sleep(min(600.0, self.admission.config.expire_after / 4))
            gone = self.store.forget_silent(self.admission.expired_before(time.time()),
                                            keep=set(self.node.connected_peers()))
            for peer in gone:
                self.addrs.pop(peer, None)
            if gone:
                log.info("forgot %d peers unheard of for %.0f s (they may enrol again)",
                         len(gone), self.admission.config.expire_after)


def _claimed_sender(wire: bytes) -> str | None:
    """Who the message says it is from (unverified: used only by the admission policy's rate
    rules, which must run before the signature check that would verify it)."""
    env = peek(wire, 2 * MAX_SUBMIT_WIRE)
    if env is None or len(env.sender) != 32:
        return None
    return env.sender_id
