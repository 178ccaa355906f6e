"""The peer daemon: enrol with the coordinator, contribute to each round, keep up.

``PeerDaemon.run`` is the list of what a peer does concurrently:

- keep connected to its bootstrap addresses (redial every few seconds);
- enrol once with a signed :class:`Enroll`, retrying until acknowledged;
- once enrolled, keep a session (:mod:`peer.session`) open to the
  coordinator: it pushes announcements, phase notices, this peer's personal
  messages and results, and carries this peer's round messages and acks;
- react to each round announcement (from the session, gossip or pull) by
  sending its signed messages, phase by phase: on the session, else on the
  submit stream protocol, else on the submit gossip topic;
- pull: every ``pull_interval`` ask a neighbour (most ticks) or the
  coordinator (every third tick, or when alone) for the latest round heads,
  then fill gaps by round, so a peer outside the mesh and without a session
  still sees everything (while its session is up a peer does not pull: the
  coordinator pushes it everything, and its head again on every reconnect);
- log mesh sizes, loudly when a topic's mesh is empty.

Every coordinator envelope is checked (signature, domain, signer = the
coordinator's key, round in payload = round in envelope) before it is kept
or acted on; a bad one is logged and dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from protocol.crypto.secagg import SecAggAbort
from protocol.crypto.vss import VssAbort
from protocol.learning import incremental
from protocol.learning.workloads import Workload
from protocol.prompts.evaluation import EVAL_RESULT, EVAL_TASK, PROTO_EVAL, EvalResult, EvalTask
from protocol.rounds.base import ClearPeerRound, PeerRound
from protocol.rounds.secure import SecureParams, SecurePeerRound
from protocol.rounds.verified import VerifiedParams, VerifiedPeerRound
from protocol.wire.envelope import RejectedMessage, open_envelope, peek, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ANNOUNCE,
    ENROLL,
    NOTICE,
    PERSONAL,
    PROTO_PULL,
    PROTO_SUBMIT,
    RESULT,
    TOPIC_ANNOUNCE,
    TOPIC_REPLICAS,
    TOPIC_RESULT,
    TOPIC_SUBMIT,
    Enroll,
    EvaluatorInfo,
    PersonalNotice,
    PhaseNotice,
    PullRequest,
    PullResponse,
    RoundAnnounce,
    RoundResult,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from .attacks import SECURE_ATTACKS, Attack
from .llm import Backend, gen_params_json
from .node import (
    DEFAULT_GOSSIP,
    DEFAULT_LIMITS,
    GOSSIP_MAX,
    GossipConfig,
    Limits,
    NetworkNode,
    StreamProtocolError,
)
from .roundlog import RoundLog
from .session import SessionClient, SessionDown

log = logging.getLogger("hypergossip.peer")

PULL_MAX_RESPONSE = 2 * 1024 * 1024
PARAMS = {"secagg": SecureParams, "vss": VerifiedParams}  # secure round modes' parameters
KEEP_ROUNDS = 64  # per-round bookkeeping kept in memory
GAP_FILL_PER_TICK = 8
PERSONAL_WAIT = 2.0  # seconds to wait for a personal message pushed behind its notice
EVAL_TIMEOUT = 600.0  # a batch of local-LLM calls takes a while


@lru_cache(maxsize=4096)  # parsing a multiaddr takes ~0.3 ms; redials ask every 3 s
def peer_id_of(addr: str) -> str:
    return info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id.to_base58()


class PeerDaemon:
    def __init__(
        self,
        identity: Identity,
        workload: Workload,
        data: Any,
        *,
        bootstrap: Iterable[str],
        coordinator_id: str | None = None,
        listen: Iterable[str] = ("/ip4/127.0.0.1/tcp/0",),
        gossip: GossipConfig = DEFAULT_GOSSIP,
        subscribe_gossip: bool = True,
        gossip_drop: float = 0.0,
        pull_interval: float = 2.0,
        session: bool = True,
        dropout: float = 0.0,
        dropout_slot: tuple[int, int] | None = None,
        on_result: Callable[[RoundResult], None] | None = None,
        attack: Attack | None = None,
        evaluator: Backend | None = None,
        limits: Limits = DEFAULT_LIMITS,
        ticket: bytes = b"",
    ):
        self.identity = identity
        self.workload = workload
        self.data = data
        self.bootstrap = list(bootstrap)
        if coordinator_id is None:
            if not self.bootstrap:
                raise ValueError("need --coordinator or a --bootstrap address with /p2p/<id>")
            coordinator_id = peer_id_of(self.bootstrap[0])
        self.coordinator_id = coordinator_id
        self.node = NetworkNode(identity, listen, gossip, limits)
        self.ticket = ticket  # the operator's admission ticket, for coordinators that want one
        self.subscribe_gossip = subscribe_gossip
        self.gossip_drop = gossip_drop
        self.pull_interval = pull_interval
        self.session = SessionClient(self.node, coordinator_id, self._on_push) if session \
            else None
        self.on_result = on_result
        self.roundlog = RoundLog()
        self.results: dict[int, RoundResult] = {}
        self.states: dict[int, bytes] = {}  # round -> published state (canonical JSON), verified
        self.received_at: dict[tuple[str, int], float] = {}  # (domain, round) -> monotonic time
        self.received_via: dict[tuple[str, int], str] = {}  # (domain, round) -> how it came
        self.first_round = 0  # first round this peer saw; it does not chase older ones
        self.rounds: dict[int, PeerRound | None] = {}  # rounds joined (None: preparing)
        self.dropout = dropout
        self.dropout_slot = dropout_slot
        self._round_events: dict[int, trio.Event] = {}
        self._personal: dict[tuple[int, str], bytes] = {}  # (round, phase) -> checked body
        self.enrolled = trio.Event()
        self.attack = attack
        self.evaluator = evaluator
        self.evaluations = 0  # prompts evaluated for the coordinator
        self.models: dict[int, bytes] = {}  # round -> digest of the published model we hold
        self._nursery: trio.Nursery | None = None
        self.node.serve(PROTO_PULL, self._serve_pull, max_request=1024)
        if evaluator is not None:
            self.node.serve(PROTO_EVAL, self._serve_eval, max_request=256 * 1024,
                            timeout=EVAL_TIMEOUT)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with self.node.running():
            if self.subscribe_gossip:  # validators run before delivery and forwarding
                for topic in (TOPIC_ANNOUNCE, TOPIC_RESULT):
                    await self.node.subscribe(topic, self._on_gossip,
                                              validate=self._signed_by_coordinator)
                if getattr(self.workload, "replicated", False):
                    await self.node.subscribe(TOPIC_REPLICAS, self._on_replica_gossip,
                                              validate=incremental.valid_replica_gossip)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._dial_missing()
                nursery.start_soon(self._keep_connected)
                nursery.start_soon(self._enroll_loop)
                nursery.start_soon(self._pull_loop)
                if self.session is not None:
                    nursery.start_soon(self._session_loop)
                nursery.start_soon(self._mesh_log_loop)
                log.info("peer %s listening on %s", self.peer_id, ", ".join(self.node.addrs))
                task_status.started(self)

    # --- connections and enrolment ---------------------------------------------------------
    async def _dial_missing(self) -> None:
        """Dial every bootstrap peer we are not connected to, trying its addresses in order."""
        by_peer: dict[str, list[str]] = {}
        for addr in self.bootstrap:
            by_peer.setdefault(peer_id_of(addr), []).append(addr)

        async def dial(addrs: list[str]) -> None:
            for addr in addrs:
                if await self.node.connect(addr):
                    return

        async with trio.open_nursery() as nursery:
            for peer, addrs in by_peer.items():
                if not self.node.is_connected(peer):
                    nursery.start_soon(dial, addrs)

    async def _keep_connected(self) -> None:
        while True:
            await trio.sleep(3.0)
            try:
                await self._dial_missing()
            except Exception:
                log.exception("redialling bootstrap peers failed")

    async def _enroll_loop(self) -> None:
        delay = 0.5  # each attempt is sealed afresh: a resent wire would read as a replay
        while not self.enrolled.is_set():
            info = None
            if self.evaluator is not None:
                info = EvaluatorInfo(backend=self.evaluator.name,
                                     model_digest=self.evaluator.model_digest,
                                     gen_params=gen_params_json(self.evaluator))
            payload = encode(Enroll(workloads=[self.workload.name], addrs=self.node.addrs[:8],
                                    agent="hypergossip-peer/0.1", evaluator=info,
                                    ticket=self.ticket))
            wire = seal(self.identity, ENROLL, enroll_round(time.time()), payload)
            ack = await self._submit(wire, gossip_fallback=False, attempts=1)
            if ack is not None and ack.accepted:
                log.info("enrolled with coordinator %s", self.coordinator_id)
                self.enrolled.set()
                if latest := self.roundlog.latest(ANNOUNCE):
                    self._maybe_join(latest)  # older rounds are closed by now
                return
            if ack is not None:
                log.warning("enrolment refused: %s", ack.reason)
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 10.0)

    async def _submit(self, wire: bytes, *, gossip_fallback: bool,
                      attempts: int = 3) -> SubmitAck | None:
        """Send a signed envelope to the coordinator; None when it could not be reached."""
        for attempt in range(attempts):
            try:
                raw = await self.node.request(self.coordinator_id, PROTO_SUBMIT, wire,
                                              max_response=1024)
                return decode(raw, SubmitAck)
            except (StreamProtocolError, RejectedMessage) as exc:
                log.debug("submit attempt %d failed: %s", attempt + 1, exc)
                await trio.sleep(0.3 * (attempt + 1))
        if gossip_fallback:
            log.info("coordinator unreachable by stream; sending on %s", TOPIC_SUBMIT)
            await self.node.publish(TOPIC_SUBMIT, wire)
        return None

    # --- coordinator envelopes (gossip or pull) ------------------------------------------
    def _signed_by_coordinator(self, data: bytes, origin: str) -> bool:
        """Gossip on the coordinator's topics: valid when the coordinator signed it (a peer
        forwarding anything else is lowered in our gossip scores)."""
        try:
            env = open_envelope(data, domains={ANNOUNCE, RESULT, NOTICE})
        except RejectedMessage:
            return False
        return env.sender_id == self.coordinator_id

    async def _on_gossip(self, data: bytes, origin: str) -> None:
        if self.gossip_drop and random.random() < self.gossip_drop:
            return
        self._ingest(data, source=f"gossip from {origin}", origin=origin)

    def _ingest(self, wire: bytes, *, source: str, origin: str | None = None) -> None:
        try:
            env = open_envelope(wire, domains={ANNOUNCE, RESULT, NOTICE})
            if env.sender_id != self.coordinator_id:
                raise RejectedMessage(f"signed by {env.sender_id}, not the coordinator")
            schema = {ANNOUNCE: RoundAnnounce, RESULT: RoundResult, NOTICE: PhaseNotice}
            msg = decode(env.payload, schema[env.domain])
            if msg.round != env.round:
                raise RejectedMessage("payload round differs from the signed round")
        except RejectedMessage as exc:
            log.warning("rejected %s: %s (%s)", source, exc.reason, exc)
            return
        tag = msg.phase if isinstance(msg, PhaseNotice) else ""
        if not self.roundlog.add(env.domain, env.round, wire, tag=tag):
            return
        key = (env.domain if not tag else f"{NOTICE}/{tag}", env.round)
        self.received_at[key] = time.monotonic()
        self.received_via[key] = source
        if not self.first_round:
            self.first_round = env.round
        if env.round in self._round_events:
            self._round_events.pop(env.round).set()
        if isinstance(msg, RoundAnnounce):
            log.info("round %d announced (%s, via %s)", msg.round, msg.workload, source)
            self._maybe_join(msg.round)
        elif isinstance(msg, PhaseNotice):
            log.debug("round %d: phase %s notice (via %s)", msg.round, msg.phase, source)
        else:
            self.results[msg.round] = msg
            self._forget_before(msg.round - KEEP_ROUNDS)
            log.info("round %d %s: %d accepted, state %s (via %s)", msg.round, msg.status,
                     msg.accepted, msg.state_digest.hex()[:16], source)
            if msg.blob is None:
                self._keep_state(msg, msg.result)
            elif self._nursery is not None:
                self._nursery.start_soon(self._fetch_state, msg, origin)
            if self.on_result is not None:
                self.on_result(msg)

    def _forget_before(self, round: int) -> None:
        """A daemon runs for months: per-round bookkeeping keeps the last rounds only (the
        round log and blob store bound themselves)."""
        for table in (self.results, self.states):
            for r in [r for r in table if r < round]:
                del table[r]
        for table in (self.received_at, self.received_via):
            for key in [k for k in table if k[1] < round]:
                del table[key]
        for key in [k for k in self._personal if k[0] < round]:
            del self._personal[key]
        self.roundlog.forget(NOTICE, before=round)

    def _keep_state(self, msg: RoundResult, state: bytes) -> None:
        if hashlib.sha256(state).digest() != msg.state_digest:
            log.warning("round %d: published state does not match its signed digest", msg.round)
            return
        self.states[msg.round] = state
        self.node.blobs.put(state)  # so neighbours can fetch it from us
        result_blobs = getattr(self.workload, "result_blobs", None)
        if result_blobs is not None and msg.status == "published" and self._nursery is not None:
            try:
                wanted = result_blobs(json.loads(state))
            except ValueError:
                wanted = []
            for digest, size in wanted:
                self._nursery.start_soon(self._fetch_model, msg.round, digest, size)

    async def _fetch_retrying(self, what: str, round: int, digest: bytes, size: int,
                              first: str | None = None) -> bytes | None:
        """A blob by digest (hash-checked) from ``first``, the coordinator or a neighbour,
        retried a few times with backoff; None if nobody had it."""
        sources = [p for p in (first, self.coordinator_id) if p] + self.node.connected_peers()
        for attempt in range(5):
            try:
                return await self.node.fetch_blob(digest, sources, max_size=size)
            except StreamProtocolError as exc:
                log.info("round %d: %s not fetched yet (%s)", round, what, exc)
                await trio.sleep(0.5 * (attempt + 1))
        return None

    async def _fetch_model(self, round: int, digest: bytes, size: int) -> None:
        """Fetch the model a result published and keep serving it: every peer holds the
        coordinator's exact bytes."""
        if await self._fetch_retrying("model", round, digest, size) is None:
            return
        self.models[round] = digest
        for r in [r for r in self.models if r < round - KEEP_ROUNDS]:
            del self.models[r]
        log.info("round %d: holds the published model %s", round, digest.hex())

    async def _fetch_state(self, msg: RoundResult, origin: str | None) -> None:
        """Fetch a state published by digest: from whoever sent it, the coordinator, neighbours."""
        assert msg.blob is not None
        data = await self._fetch_retrying("state blob", msg.round, msg.blob.digest,
                                          msg.blob.size, first=origin)
        if data is not None:
            self._keep_state(msg, data)
            log.info("round %d: fetched %d-byte state by digest", msg.round, len(data))

    def _maybe_join(self, round: int) -> None:
        if (round in self.rounds or not self.enrolled.is_set() or self._nursery is None
                or self.roundlog.has(RESULT, round)):
            return
        held = peek(self.roundlog.get(ANNOUNCE, round))  # the round log holds verified ones
        assert held is not None
        announce = decode(held.payload, RoundAnnounce)
        if announce.workload != self.workload.name:
            log.warning("round %d runs workload %s; this peer serves %s", round,
                        announce.workload, self.workload.name)
            return
        try:
            if announce.mode == "replicated":
                participants = decode(announce.workload_params,
                                      incremental.IncrementalParams).eligible
            elif announce.mode in PARAMS:
                participants = decode(announce.params, PARAMS[announce.mode]).participants
            elif announce.mode == "clear":
                participants = [self.peer_id]
            else:
                raise RejectedMessage(f"unknown round mode {announce.mode!r}")
        except RejectedMessage as exc:
            log.warning("round %d: bad secure-round parameters: %s", round, exc)
            return
        if self.peer_id not in participants:
            log.info("round %d: not among its participants (joined later, or not eligible); "
                     "sitting it out", round)
            return
        self.rounds[round] = None
        self._nursery.start_soon(self._take_part, round, announce)

    async def _prepare(self, round: int, announce: RoundAnnounce) -> PeerRound:
        """Fetch what the workload needs (model weights by digest), compute this peer's input
        in a worker thread (training must not stall the event loop), build the round."""
        blobs = {}
        sources = [self.coordinator_id] + self.node.connected_peers()
        for digest, size in self.workload.required_blobs(announce):
            blobs[digest] = await self.node.fetch_blob(digest, sources, max_size=size)
        if announce.mode == "replicated":
            if self.attack is not None:
                return await trio.to_thread.run_sync(self.attack.peer_round, self.peer_id,
                                                     announce, self.data, blobs)
            return await trio.to_thread.run_sync(
                lambda: incremental.ReplicaPeerRound(self.peer_id, announce, self.data, blobs))
        if announce.mode in PARAMS:
            x = await trio.to_thread.run_sync(self.workload.vector, announce, self.data, blobs)
            if self.attack is not None and self.attack.name in SECURE_ATTACKS:
                return self.attack.secure_round(self.peer_id, self.workload, announce, x,
                                                self.identity.sign)
            if announce.mode == "vss":
                return VerifiedPeerRound(self.peer_id, self.workload, announce, x)
            return SecurePeerRound(self.peer_id, self.workload, announce, x, self.identity.sign)
        c = await trio.to_thread.run_sync(self.workload.contribute, announce, self.data, blobs)
        return ClearPeerRound(c)

    async def _wait_notice(self, round: int, phase: str) -> bool:
        """Wait for a phase notice (pushed on the session, else pulled); False if the round
        ended first."""
        return await self._wait_round(round, lambda: self.roundlog.has(NOTICE, round, phase))

    async def _personal_message(self, round: int, phase: str) -> bytes | None:
        """Our own message for ``phase``: pushed on the session ahead of the notice (so it is
        here, unless the notice came another way first), else pulled from the coordinator."""
        key = (round, phase)
        if key not in self._personal and self.session is not None and self.session.up:
            with trio.move_on_after(PERSONAL_WAIT):
                await self._wait_round(round, lambda: key in self._personal)
        return self._personal.pop(key, None) or await self._fetch_personal(round, phase)

    async def _wait_round(self, round: int, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()`` or the round's result arrives; True if ``ready()``."""
        while not ready():
            if self.roundlog.has(RESULT, round):
                return False
            await self._round_events.setdefault(round, trio.Event()).wait()
        return True

    async def _take_part(self, round: int, announce: RoundAnnounce) -> None:
        """Send our messages for each phase of ``round`` as its notices arrive, in order."""
        try:
            logic = await self._prepare(round, announce)
        except (StreamProtocolError, RejectedMessage, ValueError) as exc:
            log.warning("round %d: cannot take part: %s", round, exc)
            return
        self.rounds[round] = logic
        try:
            await self._run_steps(round, logic, announce)
        finally:
            for key in [k for k in self._personal if k[0] == round]:
                del self._personal[key]
            for old in [r for r in self.rounds if r < round - 16]:
                del self.rounds[old]

    async def _run_steps(self, round: int, logic: PeerRound, announce: RoundAnnounce) -> None:
        steps = ["start", *logic.phases]
        silent_at = random.randrange(len(steps)) if self._drops_in(round) else None
        timeout = max(5.0, announce.deadline_ms / 1000 - time.time() + 30.0)
        with trio.move_on_after(timeout):
            for i, step in enumerate(steps):
                if i == silent_at:
                    log.warning("round %d: simulated dropout before %s", round, step)
                    return
                before = getattr(logic, "before_step", None)
                if before is not None:
                    await before(step)
                if step == "start":
                    out = logic.start()
                else:
                    if not await self._wait_notice(round, step):
                        return  # the round ended without us
                    held = peek(self.roundlog.get(NOTICE, round, step))  # verified on intake
                    assert held is not None
                    notice = decode(held.payload, PhaseNotice)
                    personal = None
                    wanted = notice.personal and logic.needs_personal(step)
                    if wanted:
                        personal = await self._personal_message(round, step)
                    if wanted and personal is None:
                        log.warning("round %d: could not fetch our %s message", round, step)
                        return
                    try:
                        if logic.offload:  # training: keep the event loop free meanwhile
                            out = await trio.to_thread.run_sync(logic.on_notice, step,
                                                                notice.body, personal)
                        else:
                            out = logic.on_notice(step, notice.body, personal)
                    except (SecAggAbort, VssAbort, RejectedMessage) as exc:
                        log.warning("round %d: leaving at phase %s: %s", round, step, exc)
                        return
                for blob in logic.blobs():  # results others fetch from us by digest
                    self.node.blobs.put(blob)
                for domain, payload in out:
                    await self._send(round, domain, payload)

    def _drops_in(self, round: int) -> bool:
        """Testing aid: whether to vanish from ``round``. With a slot ``(i, n)`` exactly
        ``floor(dropout * n)`` of the n slots drop each round (a window rotating by round);
        without one, each round is a coin flip."""
        if self.dropout_slot is None:
            return random.random() < self.dropout
        i, n = self.dropout_slot
        k = int(self.dropout * n)
        return (i + round * k) % n < k

    async def _send(self, round: int, domain: str, payload: bytes) -> None:
        """Send a round message: on the session when it is up, else by a submit stream (and
        gossip when even that fails)."""
        if self.attack is not None:
            wire = self.attack.seal(self.identity, domain, round, payload)
            for old in self.attack.extra_wires(round, wire):
                ack = await self._submit(old, gossip_fallback=False)
                if ack is not None:
                    self._log_ack(round, f"replayed {domain}", ack)
        else:
            wire = seal(self.identity, domain, round, payload)
        if domain in incremental.DOMAINS:  # commitments and reveals are public: gossip them
            self._publish_replica(wire)
        if self.session is not None and self.session.up:
            try:
                self._log_ack(round, domain, await self.session.submit(wire))
                return
            except SessionDown as exc:
                log.info("round %d: %s not sent on the session (%s); submitting", round,
                         domain, exc)
        ack = await self._submit(wire, gossip_fallback=len(wire) <= GOSSIP_MAX)
        if ack is not None:
            self._log_ack(round, domain, ack)

    def _publish_replica(self, wire: bytes) -> None:
        async def send() -> None:
            try:
                await self.node.publish(TOPIC_REPLICAS, wire)
            except Exception as exc:  # gossip is best effort; the coordinator got it by stream
                log.debug("replica gossip failed: %s", exc)

        self.node.start_soon(send)

    async def _on_replica_gossip(self, data: bytes, origin: str) -> None:
        """Peers' signed commitments and reveals: anyone can audit them (and a lazy peer
        may try to copy them, which commit-reveal defeats)."""
        if self.attack is not None:
            self.attack.observe(data)

    @staticmethod
    def _log_ack(round: int, domain: str, ack: SubmitAck) -> None:
        if ack.accepted:
            log.info("round %d: %s accepted", round, domain)
        else:
            log.warning("round %d: %s refused: %s", round, domain, ack.reason)

    # --- the session ---------------------------------------------------------------------------
    async def _session_loop(self) -> None:
        assert self.session is not None
        await self.enrolled.wait()  # the coordinator refuses sessions of strangers
        await self.session.run()

    def _on_push(self, wire: bytes) -> None:
        """An envelope the coordinator pushed on our session: checked like any other."""
        env = peek(wire, len(wire))
        if env is None or env.domain != PERSONAL:
            self._ingest(wire, source="session", origin=self.coordinator_id)
            return
        msg = self._check_personal(wire)
        if msg is not None and msg.round in self.rounds:  # a round we take part in
            self._personal[(msg.round, msg.phase)] = msg.body
            if msg.round in self._round_events:
                self._round_events.pop(msg.round).set()

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
        """Our own message for ``phase``, pulled from the coordinator and checked."""
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

    # --- prompt evaluations -------------------------------------------------------------------
    async def _serve_eval(self, request: bytes, remote: str) -> bytes:
        """Evaluate a batch of prompts the coordinator signed for us; answer signed outputs."""
        assert self.evaluator is not None
        try:
            env = open_envelope(request, domains={EVAL_TASK}, max_wire=512 * 1024)
            task = decode(env.payload, EvalTask)
        except RejectedMessage as exc:
            raise StreamProtocolError(f"bad evaluation task: {exc}") from exc
        if env.sender_id != self.coordinator_id or remote != self.coordinator_id:
            raise StreamProtocolError("evaluation tasks come from the coordinator only")
        if (task.model_digest, task.gen_params) != (self.evaluator.model_digest,
                                                    gen_params_json(self.evaluator)):
            raise StreamProtocolError("task is for another model or other parameters")
        outputs = []
        for prompt in task.prompts:
            outputs.append(await trio.to_thread.run_sync(self.evaluator.generate, prompt))
        if self.attack is not None:
            outputs = self.attack.fake_outputs(task.prompts, outputs)
        self.evaluations += len(outputs)
        log.info("evaluated %d prompts (batch %d)", len(outputs), task.batch)
        return seal(self.identity, EVAL_RESULT, task.batch,
                    encode(EvalResult(batch=task.batch, outputs=outputs)))

    # --- pull --------------------------------------------------------------------------------
    async def _serve_pull(self, request: bytes, remote: str) -> bytes:
        return self.roundlog.answer(request)

    async def _pull_from(self, target: str) -> None:
        raw = await self.node.request(target, PROTO_PULL, encode(PullRequest(kind="head")),
                                      max_response=PULL_MAX_RESPONSE, timeout=3.0)
        for wire in decode(raw, PullResponse).envelopes:
            self._ingest(wire, source=f"pull from {target}", origin=target)
        # announcements up to the newest round we know of; results up to the newest result
        newest_result = self.roundlog.latest(RESULT)
        newest = max(self.roundlog.latest(ANNOUNCE), newest_result)
        wanted = [
            (kind, r)
            for kind, domain, top in (("announce", ANNOUNCE, newest),
                                      ("result", RESULT, newest_result))
            for r in range(max(self.first_round, 1), top + 1)
            if not self.roundlog.has(domain, r)
        ]
        for kind, r in wanted[:GAP_FILL_PER_TICK]:
            raw = await self.node.request(target, PROTO_PULL,
                                          encode(PullRequest(kind=kind, round=r)),
                                          max_response=PULL_MAX_RESPONSE, timeout=3.0)
            for wire in decode(raw, PullResponse).envelopes:
                self._ingest(wire, source=f"pull from {target}", origin=target)

    async def _pull_loop(self) -> None:
        tick = 0
        while True:
            await trio.sleep(self.pull_interval * random.uniform(0.8, 1.2))
            tick += 1
            if self.session is not None and self.session.up:
                continue  # the coordinator pushes us everything (and the head on reconnect)
            neighbours = [p for p in self.node.connected_peers() if p != self.coordinator_id]
            if neighbours and tick % 3:
                target = random.choice(neighbours)
            else:
                target = self.coordinator_id
            try:
                await self._pull_from(target)
            except (StreamProtocolError, RejectedMessage) as exc:
                log.debug("pull from %s failed: %s", target, exc)
            except Exception:  # one bad exchange must not stop the daemon keeping up
                log.exception("pull from %s failed unexpectedly", target)

    async def _mesh_log_loop(self) -> None:
        while True:
            await trio.sleep(15.0)
            sizes = self.node.mesh_sizes()
            empty = [t for t in (TOPIC_ANNOUNCE, TOPIC_RESULT)
                     if self.subscribe_gossip and sizes.get(t, 0) == 0]
            level = logging.WARNING if empty else logging.INFO
            log.log(level, "mesh sizes %s, %d connections%s", sizes,
                    len(self.node.connected_peers()),
                    f"; empty mesh on {empty}, relying on pull" if empty else "")
