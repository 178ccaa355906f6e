"""Taking part in rounds: a peer's side of every round it is a participant of.

For each announced round: the round's mode (from :mod:`protocol.rounds`, by the
name the announcement carries) says who takes part; a participant fetches what
the workload needs (model weights by digest), builds its peer round through its
:class:`~peer.behaviour.Behaviour` in a worker thread (training must not stall
the event loop), then sends its signed messages phase by phase as the notices
arrive: on the session, else on the submit stream, else on the submit gossip
topic. Nothing here asks which mode a round is.

A message is sent once on the session and its ack awaited there, however late a
busy coordinator answers (acks come in order on a stream that stays up), until the
round's deadline: only a session that goes down makes it go another way, and a
message whose round already has its result is not sent at all. (Re-sending on a
late ack fed a busy coordinator more work: at N=1000 on 2 cores peers re-sent
hundreds of messages it then refused as replays or as late.)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from protocol import rounds
from protocol.audit.log import open_receipt
from protocol.rounds.base import Leave, PeerContext, PeerRound
from protocol.wire.envelope import RejectedMessage, open_envelope, peek
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ANNOUNCE,
    NOTICE,
    PERSONAL,
    PROTO_PULL,
    RESULT,
    TOPIC_REPLICAS,
    WITHDRAW,
    PersonalNotice,
    PhaseNotice,
    PullRequest,
    PullResponse,
    RoundAnnounce,
    SubmitAck,
    Withdraw,
    decode,
    encode,
)

from .behaviour import Behaviour
from .blobs import FETCH_ATTEMPTS
from .gossip import GOSSIP_MAX
from .limits import run_cpu_bound
from .node import NetworkNode
from .roundlog import RoundLog
from .session import SessionClient, SessionDown
from .streams import StreamProtocolError

log = logging.getLogger("hypergossip.peer")
PERSONAL_WAIT = 2.0  # seconds to wait for a personal message pushed behind its notice
ACK_WAIT_MIN = 30.0  # s an ack is awaited on the session at least (past the deadline too)
Submit = Callable[..., Awaitable[SubmitAck | None]]


class Participant:
    def __init__(self, identity: Identity, workload: Any, data: Any, node: NetworkNode,
                 roundlog: RoundLog, coordinator_id: str, behaviour: Behaviour,
                 session: SessionClient | None, submit: Submit):
        self.identity, self.workload, self.data, self.node = identity, workload, data, node
        self.roundlog, self.coordinator_id, self.behaviour = roundlog, coordinator_id, behaviour
        self.session, self.submit = session, submit
        self.rounds: dict[int, PeerRound | None] = {}  # rounds joined (None: preparing)
        self.deadlines: dict[int, float] = {}  # rounds joined -> announced deadline (epoch s)
        self._events: dict[int, trio.Event] = {}
        self._personal: dict[tuple[int, str], bytes] = {}  # (round, phase) -> checked body
        # round -> the coordinator's signed receipts of our accepted messages: with the
        # round's signed record they prove our message was, or was left, out of it
        self.receipts: dict[int, list[bytes]] = {}
        self.receipts_file: str | None = None  # also appended there (hex, one a line)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def wake(self, round: int) -> None:
        """Something arrived for ``round`` (a notice, a result, a personal message)."""
        if round in self._events:
            self._events.pop(round).set()

    def forget_before(self, round: int) -> None:
        for key in [k for k in self._personal if k[0] < round]:
            del self._personal[key]
        for r in [r for r in self.receipts if r < round]:
            del self.receipts[r]

    def acked(self, round: int, domain: str, wire: bytes, ack: SubmitAck) -> None:
        """An answer to our message: logged; an acceptance's receipt checked (the
        coordinator's signature over this exact message) and kept."""
        log_ack(round, domain, ack)
        if not ack.accepted or not ack.receipt:
            return
        try:
            receipt = open_receipt(ack.receipt, self.coordinator_id)
        except RejectedMessage as exc:
            log.warning("round %d: the coordinator's receipt for our %s is invalid: %s", round,
                        domain, exc)
            return
        if receipt.digest != hashlib.sha256(wire).digest() or receipt.round != round:
            log.warning("round %d: the coordinator's receipt is for another message", round)
            return
        self.receipts.setdefault(round, []).append(ack.receipt)
        if self.receipts_file:
            with open(self.receipts_file, "a") as fh:
                fh.write(ack.receipt.hex() + "\n")

    def maybe_join(self, round: int, nursery: trio.Nursery) -> None:
        if round in self.rounds or self.roundlog.has(RESULT, round):
            return
        held = peek(self.roundlog.get(ANNOUNCE, round))  # the round log holds verified ones
        assert held is not None
        announce = decode(held.payload, RoundAnnounce)
        if announce.workload != self.workload.name:
            log.warning("round %d runs workload %s; this peer serves %s", round,
                        announce.workload, self.workload.name)
            return
        try:
            mode = rounds.get(announce.mode)
            participants = mode.participants(announce)
        except RejectedMessage as exc:
            log.warning("round %d: bad round parameters: %s", round, exc)
            return
        if participants is not None and self.peer_id not in participants:
            log.info("round %d: not among its participants (joined later, or not eligible); "
                     "sitting it out", round)
            return
        self.rounds[round] = None
        self.deadlines[round] = announce.deadline_ms / 1000
        nursery.start_soon(self._take_part, round, announce, mode)

    async def _prepare(self, announce: RoundAnnounce, mode: rounds.Mode) -> PeerRound:
        """Fetch what the workload needs by digest, then build our side of the round in a
        worker thread (it may train a model)."""
        blobs = {}
        for digest, size in self.workload.required_blobs(announce):
            blobs[digest] = await self.node.fetch_blob(
                digest, self.node.connected_peers(), max_size=size, seed=self.coordinator_id,
                attempts=FETCH_ATTEMPTS)
        ctx = PeerContext(self.peer_id, self.workload, announce, self.data, blobs,
                          self.identity.sign)
        return await run_cpu_bound(self.behaviour.peer_round, mode, ctx)

    async def _take_part(self, round: int, announce: RoundAnnounce, mode: rounds.Mode) -> None:
        """Send our messages for each phase of ``round`` as its notices arrive, in order."""
        try:
            logic = await self._prepare(announce, mode)
        except (StreamProtocolError, RejectedMessage, ValueError) as exc:
            log.warning("round %d: cannot take part: %s", round, exc)
            await self._withdraw(round, f"cannot take part: {exc}", mode)
            return
        except Exception as exc:  # the workload's own code (a user's) failed: this round only
            log.exception("round %d: the %s workload failed: %s: %s", round,
                          self.workload.name, type(exc).__name__, exc)
            await self._withdraw(round, f"workload failed: {type(exc).__name__}: {exc}", mode)
            return
        self.rounds[round] = logic
        try:
            await self._run_steps(round, logic, announce, mode)
        except (Leave, RejectedMessage) as exc:
            log.warning("round %d: leaving: %s", round, exc)
            await self._withdraw(round, f"leaving: {exc}", mode)
        finally:
            for key in [k for k in self._personal if k[0] == round]:
                del self._personal[key]
            for old in [r for r in self.rounds if r < round - 16]:
                del self.rounds[old]
                self.deadlines.pop(old, None)

    async def _run_steps(self, round: int, logic: PeerRound, announce: RoundAnnounce,
                         mode: rounds.Mode) -> None:
        timeout = max(5.0, announce.deadline_ms / 1000 - time.time() + 30.0)
        with trio.move_on_after(timeout):
            for step in ["start", *logic.phases]:
                await logic.before_step(step)
                if step == "start":
                    out = logic.start()
                else:
                    if not await self._wait_round(
                            round, lambda s=step: self.roundlog.has(NOTICE, round, s)):
                        return  # the round ended without us
                    held = peek(self.roundlog.get(NOTICE, round, step))  # verified on intake
                    assert held is not None
                    notice = decode(held.payload, PhaseNotice)
                    body = await self._notice_body(round, notice) \
                        if logic.needs_body(step) else b""
                    if body is None:
                        raise Leave(f"the {step} notice's body could not be fetched")
                    personal = None
                    wanted = notice.personal and logic.needs_personal(step)
                    if wanted:
                        personal = await self._personal_message(round, step)
                    if wanted and personal is None:
                        raise Leave(f"could not fetch our {step} message")
                    if logic.offload:  # training: keep the event loop free meanwhile
                        out = await run_cpu_bound(logic.on_notice, step, body, personal)
                    else:
                        out = logic.on_notice(step, body, personal)
                for blob in logic.blobs():  # results others fetch from us by digest
                    self.node.blobs.put(blob)
                for domain, payload in out:
                    await self._send(round, domain, payload, mode)

    async def _withdraw(self, round: int, reason: str, mode: rounds.Mode) -> None:
        """Tell the coordinator we cannot go on in ``round`` (it stops waiting for us);
        not once its result is out."""
        if self.roundlog.has(RESULT, round):
            return
        try:
            await self._send(round, WITHDRAW, encode(Withdraw(reason=reason[:200])), mode)
        except Exception as exc:  # best effort: the phase deadline covers us anyway
            log.debug("round %d: withdrawal not sent: %s", round, exc)

    async def _notice_body(self, round: int, notice: PhaseNotice) -> bytes | None:
        """A notice's body: inline, or fetched by the digest the signed notice names (from
        neighbours first; see :mod:`peer.blobs`). None when nobody had it."""
        ref = notice.body_ref
        if ref is None:
            return notice.body
        try:
            return await self.node.fetch_blob(ref.digest, self.node.connected_peers(),
                                              max_size=ref.size, seed=self.coordinator_id,
                                              attempts=FETCH_ATTEMPTS)
        except StreamProtocolError as exc:
            log.warning("round %d: the %s notice's body not fetched: %s", round, notice.phase,
                        exc)
            return None

    async def _wait_round(self, round: int, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()`` or the round's result arrives; True if ``ready()``."""
        while not ready():
            if self.roundlog.has(RESULT, round):
                return False
            await self._events.setdefault(round, trio.Event()).wait()
        return True

    async def _send(self, round: int, domain: str, payload: bytes, mode: rounds.Mode) -> None:
        """Send a round message: on the session when it is up, else by a submit stream (and
        gossip when even that fails); not at all once the round has its result."""
        def wanted() -> bool:
            return not self.roundlog.has(RESULT, round)

        if not wanted():
            log.info("round %d: %s not sent: the round has its result", round, domain)
            return
        wire = self.behaviour.seal(self.identity, domain, round, payload)
        for extra in self.behaviour.extra_wires(round, wire):
            ack = await self.submit(extra, gossip_fallback=False)
            if ack is not None:
                self.acked(round, f"extra {domain}", extra, ack)
        if domain in mode.public_domains:  # public for audit: gossip it too
            self._publish_public(wire)
        if self.session is not None and self.session.up:
            wait = max(ACK_WAIT_MIN, self.deadlines.get(round, 0.0) - time.time())
            try:
                self.acked(round, domain, wire, await self.session.submit(wire, timeout=wait))
                return
            except SessionDown as exc:
                log.info("round %d: %s not sent on the session (%s); submitting", round,
                         domain, exc)
        ack = await self.submit(wire, gossip_fallback=len(wire) <= GOSSIP_MAX,
                                wanted=wanted)
        if ack is not None:
            self.acked(round, domain, wire, ack)

    def _publish_public(self, wire: bytes) -> None:
        async def send() -> None:
            try:
                await self.node.publish(TOPIC_REPLICAS, wire)
            except Exception as exc:  # gossip is best effort; the coordinator got it anyway
                log.debug("public round gossip failed: %s", exc)

        self.node.start_soon(send)

    # --- personal messages ------------------------------------------------------------------
    def on_personal(self, wire: bytes) -> None:
        """A personal message the coordinator pushed on our session."""
        msg = self._check_personal(wire)
        if msg is not None and msg.round in self.rounds:  # a round we take part in
            self._personal[(msg.round, msg.phase)] = msg.body
            self.wake(msg.round)

    async def _personal_message(self, round: int, phase: str) -> bytes | None:
        """Our own message for ``phase``: pushed on the session ahead of the notice (so it is
        here, unless the notice came another way first), else pulled from the coordinator."""
        key = (round, phase)
        if key not in self._personal and self.session is not None and self.session.up:
            with trio.move_on_after(PERSONAL_WAIT):
                await self._wait_round(round, lambda: key in self._personal)
        return self._personal.pop(key, None) or await self._fetch_personal(round, phase)

    def _check_personal(self, wire: bytes, round: int | None = None,
                        phase: str | None = None) -> PersonalNotice | None:
        """A personal message signed by the coordinator for us (and for ``round`` and
        ``phase`` when given); None, logged, otherwise."""
        try:
            env = open_envelope(wire, domains={PERSONAL}, max_wire=8 * 1024 * 1024)
            msg = decode(env.payload, PersonalNotice)
        except RejectedMessage as exc:
            log.warning("bad personal message: %s", exc)
            return None
        if (env.sender_id, msg.recipient, env.round) != (self.coordinator_id, self.peer_id,
                                                           msg.round) or \
                (round is not None and (msg.round, msg.phase) != (round, phase)):
            log.warning("round %d: personal message not for us / not signed right", msg.round)
            return None
        return msg

    async def _fetch_personal(self, round: int, phase: str) -> bytes | None:
        """Our own message for ``phase``: pulled from the coordinator and checked, or the
        pushed copy if the session brings it first (a busy coordinator's session queue can
        lag behind a notice that came by pull, while its pulls time out)."""
        key, pulled = (round, phase), []

        async def push() -> None:
            await self._wait_round(round, lambda: key in self._personal)
            nursery.cancel_scope.cancel()

        async def pull() -> None:
            pulled.append(await self._pull_personal(round, phase))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(push)
            nursery.start_soon(pull)
        return self._personal.pop(key, None) or (pulled[0] if pulled else None)

    async def _pull_personal(self, round: int, phase: str) -> bytes | None:
        request = encode(PullRequest(kind="personal", round=round, tag=phase))
        for attempt in range(6):
            try:
                raw = await self.node.request(self.coordinator_id, PROTO_PULL, request,
                                              max_response=8 * 1024 * 1024, timeout=10.0)
                for wire in decode(raw, PullResponse).envelopes:
                    msg = self._check_personal(wire, round, phase)
                    if msg is not None:
                        return msg.body
            except (StreamProtocolError, RejectedMessage) as exc:
                log.debug("personal %s pull failed: %s", phase, exc)
            await trio.sleep(0.2 * (attempt + 1))
        return None


def log_ack(round: int, domain: str, ack: SubmitAck) -> None:
    if ack.accepted:
        log.info("round %d: %s accepted", round, domain)
    else:
        log.warning("round %d: %s refused: %s", round, domain, ack.reason)
