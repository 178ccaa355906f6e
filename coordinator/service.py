"""The coordinator: a network node with duties, and an AIM server, in one trio loop.

``Coordinator.run`` is the list of what runs concurrently: the libp2p node
(gossip readers, the peers' sessions, submit and pull stream handlers), the
HTTP server (hypercorn's trio worker), the round driver and a mesh logger.
Announcements, phase notices, personal messages and results are pushed to
every peer's session (:mod:`peer.session`) as well as gossiped or served.

Every incoming envelope, by session, stream or gossip, goes through
:meth:`Coordinator.handle`: verify (size, structure, domain, digest,
signature, round window, replay), check admission, decode strictly, offer
to the open round. Any refusal is counted by claimed sender and reason in
SQLite and in the round, and answered with its reason; nothing refused
touches the round's state.

Rounds: wait until ``min_peers`` admitted peers are connected, announce
(signed, gossiped, stored), collect until the round is ready (all connected
admitted peers in, or the deadline), close, publish (signed, gossiped,
stored), pause, repeat. A round left open by a crash is resumed on start
with its stored contributions and a fresh deadline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio

from peer.llm import Embedder, LocalBackend, make_backend
from peer.node import GossipConfig, Limits, NetworkNode, StreamProtocolError
from peer.roundlog import RoundLog
from peer.session import SessionHub
from protocol.crypto import dp
from protocol.learning import incremental
from protocol.learning.workloads import Stats, Workload, get_workload
from protocol.policy.admission import AdmissionConfig, AdmissionPolicy
from protocol.policy.attendance import Attendance
from protocol.policy.ratelimit import LogLimiter
from protocol.prompts import evaluation
from protocol.rounds import secure as secure_round
from protocol.rounds import verified as verified_round
from protocol.rounds.base import Notice, Outcome, Round, RoundClosed, RoundLogic
from protocol.rounds.replication import Reputation
from protocol.wire.canonical import canonical_json, state_digest
from protocol.wire.envelope import (
    Envelope,
    Malformed,
    RejectedMessage,
    Verifier,
    open_envelope,
    peek,
    seal,
)
from protocol.wire.identity import Identity, public_key_from_peer_id
from protocol.wire.messages import (
    ANNOUNCE,
    CONTRIBUTION,
    ENROLL,
    ENROLL_WINDOW,
    NOTICE,
    PERSONAL,
    PROTO_PULL,
    PROTO_SUBMIT,
    RESULT,
    TOPIC_ANNOUNCE,
    TOPIC_REPLICAS,
    TOPIC_RESULT,
    TOPIC_SUBMIT,
    BlobRef,
    Enroll,
    EvaluatorInfo,
    PersonalNotice,
    PhaseNotice,
    PullRequest,
    PullResponse,
    RoundAnnounce,
    RoundResult,
    StatsContribution,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from . import httpserver
from .prompt_jobs import PromptJobs
from .store import Store

log = logging.getLogger("hypergossip.coordinator")

LIVENESS_GRACE = 3.0
BATCH = 8  # prompts per evaluation request
EVAL_TIMEOUT = 600.0
MAX_LEGACY_PER_ROUND = 10_000
LEGACY = "legacy"  # store domain of values posted in the clear over HTTP
MAX_SUBMIT_WIRE = 8 * 1024 * 1024  # by stream; gossip stays under GOSSIP_MAX
# refusals that say the message itself is bad (not late, not a replay): gossip that a peer
# should never have forwarded
FORWARDER_FAULTS = frozenset({"malformed", "oversize", "wrong_domain", "digest_mismatch",
                              "bad_signature", "schema"})
PEER_DOMAINS = frozenset({CONTRIBUTION, *secure_round.DOMAIN.values(),
                          *verified_round.DOMAIN.values(), *incremental.DOMAINS})


class NotAdmitted(RejectedMessage):
    reason = "not_admitted"


@dataclass
class CoordinatorConfig:
    data_dir: Path = Path(".hypergossip/coordinator")
    db: Path | None = None
    key: Path | None = None
    http_host: str = "0.0.0.0"
    port: int = 4000
    listen: list[str] = field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4001"])
    allow: frozenset[str] | None = None  # None: open admission (admission.allow, merged)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    min_peers: int = 2
    start_peers: int = 0  # live peers to wait for before the first round (0: min_peers)
    round_timeout: float = 30.0
    round_pause: float = 1.0
    inline_result_max: int = 256 * 1024  # larger published states go as blobs, by digest
    max_rounds: int = 0  # 0: run until stopped
    retain_rounds: int = 10_000  # rounds (and their messages) kept in the database; 0: all
    linger: float = 0.0  # after max_rounds: seconds the final state stays served over HTTP
    workload: str = "stats"
    workload_options: dict = field(default_factory=dict)  # e.g. incremental: segments=8
    secure: bool = True  # secure aggregation; False: contributions in the clear (--insecure)
    phase_timeout: float = 10.0  # secure rounds: seconds each phase waits at most
    dp_epsilon: float = 0.0  # secure rounds: per-round epsilon of distributed DP noise; 0: off
    dp_delta: float = 1e-5
    secagg_degree: int | None = None  # None: secagg.Config.default's graph
    secagg_threshold: int | None = None
    secagg_agreement: int | None = None  # survivor signatures a peer needs before unmasking
    # secure rounds: "vss" (range-checked inputs; workloads with range_bounds, i.e. stats),
    # "secagg" (SecAgg+, any vector), "auto": vss where the workload allows it
    secure_protocol: str = "auto"
    vss_committee: int = 16  # committee size of vss rounds (threshold survives 30 % of it)
    vss_bits: int = 14  # range-proof bits per coordinate (resolution of the range)
    http_write_timeout: float = httpserver.WRITE_TIMEOUT  # slower HTTP readers are cut off
    llm_backend: str | None = "echo"  # prompt search's own LLM; None: no prompt search
    prompt_search: bool = False  # serve prompt search beside another workload (prompt: always)
    redundancy: int = 2  # peers that evaluate each prompt (1: no verification)
    llm_max_tokens: int = 32
    llm_url: str | None = None
    llm_model: str | None = None
    gossip: GossipConfig = field(default_factory=GossipConfig)
    limits: Limits = field(default_factory=Limits)

    @property
    def db_path(self) -> Path:
        return self.db or self.data_dir / "coordinator.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.key or self.data_dir / "coordinator.key"


class Coordinator:
    def __init__(self, config: CoordinatorConfig, identity: Identity | None = None):
        self.config = config
        if identity is None:
            identity, created = Identity.load_or_create(config.key_path)
            if created:
                log.info("created coordinator key %s", config.key_path)
        self.identity = identity
        self.workload: Workload = get_workload(config.workload, **config.workload_options)
        self.replicated = bool(getattr(self.workload, "replicated", False))
        self.secure_protocol = secure_protocol_for(self.workload, config.secure_protocol)
        self.store = Store(config.db_path)
        self.reputation = Reputation()
        for event in self.store.reputation_events():  # survives restarts
            self.reputation.history.append(event)
            self.reputation.scores[event[1]] = event[2]
        self._rep_saved = len(self.reputation.history)
        self.node = NetworkNode(identity, config.listen, config.gossip, config.limits)
        admission = config.admission if config.allow is None else \
            dataclasses.replace(config.admission, allow=config.allow)
        self.admission = AdmissionPolicy(admission, time.time())
        self._refusal_log = LogLimiter(60.0)
        self.enroll_verifier = Verifier(max_wire=MAX_SUBMIT_WIRE)
        self.round_verifier = Verifier(max_wire=MAX_SUBMIT_WIRE)
        self.roundlog = RoundLog()
        self.prompt_jobs: PromptJobs | None = None
        if config.llm_backend and (config.workload == "prompt" or config.prompt_search):
            backend = make_backend(config.llm_backend, url=config.llm_url,
                                   model=config.llm_model, max_new_tokens=config.llm_max_tokens)
            self.prompt_jobs = PromptJobs(self.store, backend, embedder=Embedder(),
                                          remote=self.evaluate_remotely,
                                          settle=self.settle_evaluations)
        self.evaluators: dict[str, EvaluatorInfo] = {}  # peer -> what it can evaluate
        self._batches = 0
        self.current: RoundLogic | None = None
        self.personal: dict[tuple[int, str, str], bytes] = {}  # (round, phase, peer) -> wire
        self._last_live: dict[str, float] = {}  # peer -> when last seen connected (monotonic)
        self.legacy: dict[int, list[StatsContribution]] = {}  # round -> values sent in the clear
        self.http_urls: list[str] = []
        self.started_at = time.time()
        self.rounds_run = 0
        self.sent_at: dict[tuple[str, int], float] = {}  # (domain, round) -> monotonic time
        self._changed = trio.Event()
        self._stop = trio.Event()
        for kind, domain in (("announce", ANNOUNCE), ("result", RESULT)):
            for r, wire in self.store.wires(kind, since=max(0, self.store.last_round() - 1000)):
                self.roundlog.add(domain, r, wire)  # phase notices of past rounds are moot
        # frames up to twice the cap are read so an oversize message is counted, not just cut
        self.node.serve(PROTO_SUBMIT, self._on_submit_stream, max_request=2 * MAX_SUBMIT_WIRE)
        self.node.serve(PROTO_PULL, self._on_pull, max_request=1024)
        self.sessions = SessionHub(
            self.node, on_open=self._session_head, max_submit=MAX_SUBMIT_WIRE,
            on_submit=lambda wire, peer: self.handle(wire, via="session", transport_peer=peer))
        self._round_peers: list[str] = []  # participants of the open round (notices go there)
        self.attendance = Attendance()  # silent participants sit out the next rounds
        self._asked: list[str] = []  # whom the open round expects a message from
        self._answered: set[str] = set()  # who sent it one it accepted
        latest = self.store.latest_published()
        if latest is not None:  # serve the current state by digest again after a restart
            self.node.blobs.put(canonical_json(json.loads(latest["result"])))
            state = self.store.get_blob(self.store.get_meta("state_blob") or "")
            self.workload.restore(json.loads(latest["result"]), state)
        if (blob := self.workload.state_blob()) is not None:
            self.node.blobs.put(blob)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # --- lifetime ---------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from .api import build_app  # api imports this module's types

        async with self.node.running():
            # a submitted message is handled by the topic's validator, which sees it before
            # gossipsub delivers or forwards it: what it refuses as malformed or forged
            # lowers its forwarder's score (see peer.node.SCORING)
            await self.node.subscribe(TOPIC_SUBMIT, _ignore, validate=self._on_submit_gossip)
            # join the meshes we publish on, so that peers whose only link is to us get
            # announcements and notices pushed at once (not at the next heartbeat or pull)
            for topic in (TOPIC_ANNOUNCE, TOPIC_RESULT):
                await self.node.subscribe(topic, _ignore, validate=self._ours)
            if self.replicated:  # relay replicas' public commitments and reveals (audit)
                await self.node.subscribe(TOPIC_REPLICAS, _ignore,
                                          validate=incremental.valid_replica_gossip)
            async with trio.open_nursery() as nursery:
                hc = httpserver.config(self.config.http_host, self.config.port,
                                       write_timeout=self.config.http_write_timeout)
                self.http_urls = await nursery.start(
                    lambda task_status: httpserver.serve_http(
                        build_app(self), hc, task_status=task_status,
                        shutdown_trigger=self._stop.wait))
                log.info("coordinator %s: HTTP %s, libp2p %s", self.peer_id,
                         ", ".join(self.http_urls), ", ".join(self.node.addrs))
                if self.workload.name != "prompt":  # prompt search runs jobs, not rounds
                    nursery.start_soon(self._round_driver, nursery.cancel_scope)
                nursery.start_soon(self._mesh_log_loop)
                nursery.start_soon(self._expiry_loop)
                if self.prompt_jobs is not None:
                    nursery.start_soon(self.prompt_jobs.run)
                    if isinstance(self.prompt_jobs.backend, LocalBackend):  # load it now, not
                        nursery.start_soon(trio.to_thread.run_sync,  # in a request's budget
                                           self.prompt_jobs.backend.load)
                task_status.started(self)

    def stop(self) -> None:
        self._stop.set()

    @property
    def http_url(self) -> str:
        url = self.http_urls[0] if self.http_urls else ""
        return url.replace("0.0.0.0", "127.0.0.1")

    # --- message intake ---------------------------------------------------------------------
    async def _on_submit_stream(self, request: bytes, remote: str) -> bytes:
        return encode(self.handle(request, via="stream", transport_peer=remote))

    def _on_submit_gossip(self, data: bytes, origin: str) -> bool:
        """Handle a message submitted by gossip; False (an invalid message, for gossipsub's
        score) only when it is malformed or forged, not when it merely came too late."""
        ack = self.handle(data, via="gossip", transport_peer=origin)
        return ack.accepted or ack.reason.split(":", 1)[0] not in FORWARDER_FAULTS

    def _ours(self, data: bytes, origin: str) -> bool:
        """Gossip on the topics only we publish: valid when we signed it."""
        env = peek(data, len(data))
        return env is not None and env.sender == self.identity.public_key

    def handle(self, wire: bytes, *, via: str, transport_peer: str) -> SubmitAck:
        """Verify and apply one envelope; count and explain any refusal.

        ``transport_peer`` is who delivered it, as the transport authenticated them (the
        Noise handshake of a session or stream, the pubsub signature of a gossip message).
        A refusal is counted against that peer, never against the key the message names:
        a forger cannot move an honest peer's counters. Only refusals of admitted peers
        count in the open round's (signed) result, and each (peer, reason) is logged at
        most once a minute.
        """
        try:
            env = self._accept(wire, transport_peer)
        except RejectedMessage as exc:
            self.store.count_rejection(transport_peer, exc.reason)
            if self.current is not None and self.store.is_admitted(transport_peer):
                self.current.count_rejection(exc.reason)
            muted = self._refusal_log.allow((transport_peer, exc.reason), time.monotonic())
            if muted is not None:
                log.warning("rejected %s from %s: %s: %s%s", via, transport_peer, exc.reason,
                            exc, f" ({muted} more like it muted)" if muted else "")
            return SubmitAck(accepted=False, reason=f"{exc.reason}: {exc}"[:500])
        self.store.touch(env.sender_id)
        return SubmitAck(accepted=True)

    def _accept(self, wire: bytes, transport_peer: str) -> Envelope:
        peeked = peek(wire, MAX_SUBMIT_WIRE)
        if peeked is not None and peeked.domain == ENROLL:
            return self._enroll(wire, peeked, transport_peer)
        rnd = self.current
        last = rnd.number if rnd is not None else self.store.last_round()
        env = self.round_verifier.verify(wire, domains=PEER_DOMAINS, min_round=last,
                                         max_round=last, check=self._sender_admitted)
        if rnd is None or rnd.number != env.round:
            raise RoundClosed(f"round {env.round} is not open")
        rnd.offer_message(env.sender_id, env.domain, env.payload)
        self._answered.add(env.sender_id)
        # secure rounds keep only digests: their payloads are masked vectors and ciphertexts
        # nobody may use later, and a restart abandons such a round anyway
        self.store.record_message(env.wire_digest(), env.round, env.sender_id, env.domain,
                                  env.nonce, env.payload if rnd.resumable else b"")
        log.info("round %d: accepted %s from %s", env.round, env.domain, env.sender_id)
        self._changed.set()
        return env

    def _sender_admitted(self, env: Envelope) -> None:
        if not self.store.is_admitted(env.sender_id):
            raise NotAdmitted("sender has not enrolled (or is not allowed)")

    def _enroll(self, wire: bytes, peeked: Envelope, transport_peer: str) -> Envelope:
        """An enrolment: the admission policy's rate and capacity rules on the claimed key
        (before any signature check, see protocol.policy.admission), then the signature, then its
        ticket rule; then the peer is admitted (or its addresses refreshed)."""
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
        if enroll.evaluator is not None:
            self.evaluators[env.sender_id] = enroll.evaluator
            log.info("peer %s evaluates prompts with %s (%s)", env.sender_id,
                     enroll.evaluator.backend, enroll.evaluator.model_digest[:16])
        self._changed.set()
        return env

    async def _expiry_loop(self) -> None:
        """Forget admitted peers unheard of for ``admission.expire_after`` (none of them
        connected now: a connected peer is live, and live_peers() keeps touching it)."""
        while True:
            await trio.sleep(min(600.0, self.admission.config.expire_after / 4))
            gone = self.store.forget_silent(self.admission.expired_before(time.time()),
                                            keep=set(self.node.connected_peers()))
            if gone:
                log.info("forgot %d peers unheard of for %.0f s (they may enrol again)",
                         len(gone), self.admission.config.expire_after)

    # --- the seed's legacy HTTP API (values in the clear) -------------------------------------
    def legacy_epoch(self) -> int:
        """The round legacy posts go to: the open one, else the next to open."""
        return self.current.number if self.current is not None else self.store.last_round() + 1

    def offer_legacy(self, epoch: int, value: StatsContribution, source: str) -> str | None:
        """Take a value posted in the clear for ``epoch``; None if taken, else why not."""
        current = self.legacy_epoch()
        if epoch != current:
            return f"epoch {epoch} is not the current epoch ({current})"
        values = self._legacy_values(epoch)
        if len(values) >= MAX_LEGACY_PER_ROUND:
            return f"this epoch already holds {MAX_LEGACY_PER_ROUND} legacy values"
        values.append(value)
        payload = canonical_json({"height": value.height, "weight": value.weight})
        self.store.record_message(hashlib.sha256(payload + os.urandom(16)).digest(), epoch,
                                  source[:64], LEGACY, b"", payload)
        log.info("epoch %d: unprotected value over HTTP from %s (%d so far)", epoch, source,
                 len(values))
        return None

    def _legacy_values(self, number: int) -> list[StatsContribution]:
        if number not in self.legacy:  # first use since start: reload what was stored
            self.legacy[number] = [decode_json_stats(m["payload"])
                                   for m in self.store.messages(number, LEGACY)]
        return self.legacy[number]

    async def _on_pull(self, request: bytes, remote: str) -> bytes:
        req = decode(request, PullRequest)
        if req.kind == "personal":  # only the authenticated asker's own message
            wire = self.personal.get((req.round, req.tag, remote))
            return encode(PullResponse(envelopes=[wire] if wire else []))
        return self.roundlog.answer(request)

    def _session_head(self, peer: str) -> list[bytes] | None:
        """What a peer's new session gets first: the open round's announcement, the peer's
        own personal messages, the round's notices (each personal message ahead of its
        notice), the latest result. None for a peer that is not admitted."""
        if not self.store.is_admitted(peer):
            return None
        out: list[bytes] = []
        if self.current is not None and (a := self.roundlog.get(ANNOUNCE, self.current.number)):
            number = self.current.number
            out.append(a)
            out += [w for (r, _, p), w in self.personal.items() if r == number and p == peer]
            out += self.roundlog.notices(number)
        if latest := self.roundlog.latest(RESULT):
            out.append(self.roundlog.get(RESULT, latest))
        return out

    # --- rounds --------------------------------------------------------------------------------
    def live_peers(self) -> set[str]:
        """Admitted peers connected to us now or within the last ``LIVENESS_GRACE`` seconds:
        under load py-libp2p connections flap, and a phase must not close on a peer that is
        only reconnecting (its message would then arrive a phase late)."""
        now = time.monotonic()
        for p in set(self.node.connected_peers()) & self.store.admitted():
            self._last_live[p] = now
            self.store.touch(p, every=60.0)  # connected is seen: not forgotten by expiry
        for p in [p for p, t in self._last_live.items() if now - t > LIVENESS_GRACE]:
            del self._last_live[p]
        return set(self._last_live)

    async def _wait_changed(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self._changed.wait()
        self._changed = trio.Event()

    async def _round_driver(self, cancel_scope: trio.CancelScope) -> None:
        resumed = self._resume_open_round()
        while self.config.max_rounds == 0 or self.rounds_run < self.config.max_rounds:
            if resumed is not None:
                rnd, resumed = resumed, None
            else:
                await self._wait_for_peers()
                rnd = self._open_round()
            self.current = rnd
            try:
                step = await self._drive(rnd)
            except Exception as exc:  # a bug in round logic must not take the coordinator down
                log.exception("round %d: internal error; publishing it as failed", rnd.number)
                step = Outcome("failed", 0, {"error": f"internal error: {type(exc).__name__}"})
            self._publish(rnd, step)
            benched = self.attendance.record(rnd.number, self._asked, self._answered)
            if benched:
                log.info("round %d: %d participants sent nothing and sit out the next "
                         "rounds: %s", rnd.number, len(benched), ", ".join(benched[:8]) +
                         (" ..." if len(benched) > 8 else ""))
            self.current = None
            self.personal.clear()
            self.rounds_run += 1
            await trio.sleep(self.config.round_pause)
        log.info("ran %d rounds; stopping%s", self.rounds_run,
                 f" in {self.config.linger:g} s" if self.config.linger else "")
        await trio.sleep(self.config.linger)  # HTTP still answers (the final model, rounds)
        self.stop()
        await trio.sleep(1.5)  # let hypercorn answer in-flight requests, then stop everything
        cancel_scope.cancel()

    async def _drive(self, rnd: RoundLogic) -> Outcome:
        """Run ``rnd``'s phases to its outcome: wait until ready, advance, broadcast notices,
        do the I/O a replicated round asks for."""
        while True:
            while not rnd.ready(time.time(), self._expected()):
                await self._wait_changed(min(0.5, max(0.0, rnd.deadline - time.time())))
            step = rnd.advance(time.time())
            if isinstance(step, Outcome):
                return step
            if isinstance(step, incremental.Work):
                await self._do_work(rnd, step)
                continue
            self._send_notice(rnd.number, step)

    async def _do_work(self, rnd: RoundLogic, work: incremental.Work) -> None:
        """Fetch agreed segment weights from the replicas that revealed them (in parallel,
        hash-checked) and re-execute contested segments in a worker thread."""
        assert isinstance(rnd, incremental.ReplicatedRound)

        async def fetch(digest: bytes, sources: list[str]) -> None:
            with trio.move_on_after(self.config.phase_timeout):
                try:
                    rnd.deliver(digest, await self.node.fetch_blob(digest, sources,
                                                                   max_size=work.max_size))
                except StreamProtocolError as exc:
                    log.warning("round %d: weights %s not fetched: %s", rnd.number,
                                digest.hex()[:12], exc)

        async with trio.open_nursery() as nursery:
            for digest, sources in work.fetch.items():
                nursery.start_soon(fetch, digest, sources)
        if work.recompute:
            log.info("round %d: re-executing contested segments %s", rnd.number,
                     work.recompute)
            start = self.workload.weights.copy()  # type: ignore[attr-defined]
            await trio.to_thread.run_sync(rnd.recompute, start)

    def _expected(self) -> set[str]:
        """The live peers the open round waits for: its participants (a resumed round,
        whose participants were not stored, waits for every live peer)."""
        live = self.live_peers()
        return live & set(self._round_peers) if self._round_peers else live

    def _participants(self, number: int) -> list[str]:
        """Round ``number``'s participants: the live peers, less those sitting out for
        having been silent (:mod:`protocol.policy.attendance`), unless that leaves fewer than the
        round needs: then those whose bench ends first are asked again."""
        live = self.live_peers()
        benched = self.attendance.benched(number) & live
        chosen = live - benched
        short = max(self.config.min_peers, 2 if self.config.secure else 1) - len(chosen)
        if short > 0:
            chosen |= set(sorted(benched, key=lambda p: (self.attendance.until[p], p))[:short])
        if benched - chosen:
            log.info("round %d: %d silent peers sit this one out", number,
                     len(benched - chosen))
        return sorted(chosen)

    async def _wait_for_peers(self) -> None:
        # a secure sum over one input would be that input: secure rounds need two at least
        need = max(self.config.min_peers, 2 if self.config.secure else 1)
        if self.rounds_run == 0:
            need = max(need, self.config.start_peers)
        last_log = 0.0
        while len(live := self.live_peers()) < need:
            if time.time() - last_log > 10:
                log.info("waiting for peers: %d of %d connected and admitted", len(live), need)
                last_log = time.time()
            await self._wait_changed(0.5)

    def _open_round(self) -> RoundLogic:
        number = self.store.last_round() + 1
        now = time.time()
        prev = self.store.latest_published()
        prev_digest = bytes(prev["state_digest"]) if prev else b""
        participants = self._participants(number)
        asked = participants  # whom the round expects a message from (attendance)
        params = b""
        workload_params = b""
        if self.replicated:
            assert isinstance(self.workload, incremental.Incremental)
            eligible = self.reputation.eligible(participants)
            task = self.workload.make_params(number, prev_digest, eligible)
            workload_params = encode(task)
            deadline = now + self.config.phase_timeout
            rnd = incremental.ReplicatedRound(number, self.workload, task, self.reputation,
                                              self.config.phase_timeout, deadline)
            asked = []  # replicas answer for no-shows by reputation, not attendance
            left_out = sorted(set(participants) - set(eligible))
            if left_out:
                log.info("round %d: %d peers below the reputation threshold get no task: %s",
                         number, len(left_out), left_out)
        elif self.config.secure and self.secure_protocol == verified_round.MODE:
            verified = verified_round.make_params(
                self.workload, number, participants, prev_digest,
                min_peers=self.config.min_peers, dp_epsilon=self.config.dp_epsilon,
                dp_delta=self.config.dp_delta, committee_size=self.config.vss_committee,
                bits=self.config.vss_bits)
            if len(verified.participants) < len(participants):
                log.warning("round %d: %d peers; a vss round takes %d (a seeded draw), the "
                            "others sit this one out", number, len(participants),
                            len(verified.participants))
            params, asked = encode(verified), verified.participants
            rnd = verified_round.VerifiedRound(
                number, self.workload, verified, min_peers=self.config.min_peers,
                phase_timeout=self.config.phase_timeout, now=now)
            deadline = now + 5 * self.config.phase_timeout
        elif self.config.secure:
            secure = secure_round.make_params(
                self.workload, number, participants, prev_digest,
                min_peers=self.config.min_peers, dp_epsilon=self.config.dp_epsilon,
                dp_delta=self.config.dp_delta, degree=self.config.secagg_degree,
                threshold=self.config.secagg_threshold,
                agreement=self.config.secagg_agreement)
            params = encode(secure)
            rnd: RoundLogic = secure_round.SecureRound(
                number, self.workload, secure, min_peers=self.config.min_peers,
                phase_timeout=self.config.phase_timeout, now=now)
            deadline = now + 4 * self.config.phase_timeout
        else:
            deadline = now + self.config.round_timeout
            rnd = Round(number, self.workload, deadline, self.config.min_peers)
        mode = "replicated" if self.replicated else \
            self.secure_protocol if self.config.secure else "clear"
        announce = RoundAnnounce(
            round=number, workload=self.workload.name, deadline_ms=int(deadline * 1000),
            min_peers=self.config.min_peers, prev_state_digest=prev_digest, params=params,
            workload_params=workload_params or self.workload.round_params(number), mode=mode)
        wire = seal(self.identity, ANNOUNCE, number, encode(announce))
        self.store.open_round(number, self.workload.name, deadline, self.config.min_peers, wire)
        self.roundlog.add(ANNOUNCE, number, wire)
        self.sent_at[(ANNOUNCE, number)] = time.monotonic()
        self._round_peers, self._asked, self._answered = participants, asked, set()
        self.sessions.broadcast(wire)
        self._gossip(TOPIC_ANNOUNCE, wire)
        log.info("round %d open: %s (%s), %d participants", number, self.workload.name, mode,
                 len(participants))
        return rnd

    def _send_notice(self, number: int, notice: Notice) -> None:
        payload = encode(PhaseNotice(round=number, phase=notice.phase, body=notice.body,
                                     personal=bool(notice.personal)))
        wire = seal(self.identity, NOTICE, number, payload)
        self.roundlog.add(NOTICE, number, wire, tag=notice.phase)
        self.sent_at[(f"{NOTICE}/{notice.phase}", number)] = time.monotonic()
        for peer, body in notice.personal.items():
            personal = seal(self.identity, PERSONAL, number, encode(PersonalNotice(
                round=number, phase=notice.phase, recipient=peer, body=body)))
            self.personal[(number, notice.phase, peer)] = personal
            self.sessions.push(peer, personal)  # ahead of the notice that needs it
        # not gossiped: participants get it on their sessions, or pull it; gossiping it as
        # well cost every peer CPU for nothing
        self.sessions.broadcast(wire, self._round_peers)
        log.info("round %d: phase %s open (%d-byte notice, %d personal)", number, notice.phase,
                 len(wire), len(notice.personal))

    def _resume_open_round(self) -> RoundLogic | None:
        rows = self.store.open_rounds()
        if not rows:
            return None
        row = rows[-1]
        announce = decode(open_envelope(row["announce_wire"]).payload, RoundAnnounce)
        rnd = Round(row["round"], self.workload, time.time() + self.config.round_timeout,
                    row["min_peers"])
        if announce.mode != "clear":  # its server state is gone by design
            mode = "replicated" if announce.mode == "replicated" else "secure"
            log.warning("round %d was a %s round cut by a restart; marking it failed",
                        rnd.number, mode)
            self._publish(rnd, Outcome("failed", 0, {
                "error": f"coordinator restarted during a {mode} round"}))
            return None
        for m in self.store.messages(rnd.number, CONTRIBUTION):
            rnd.contributions[m["sender"]] = decode(m["payload"], self.workload.contribution_schema)
            self.round_verifier.remember(rnd.number, public_key_from_peer_id(m["sender"]),
                                         m["nonce"])
        log.info("resuming round %d after restart with %d stored contributions", rnd.number,
                 len(rnd.contributions))
        self._gossip(TOPIC_ANNOUNCE, row["announce_wire"])
        return rnd

    def _publish(self, rnd: RoundLogic, outcome: Outcome) -> None:
        if isinstance(self.workload, Stats):
            values = self._legacy_values(rnd.number)
            del self.legacy[rnd.number]
            if values and outcome.status == "published":
                outcome.result = self.workload.merge_unprotected(outcome.result, values)
            elif values:  # a failed round must not lose them: they go to the next one
                self._legacy_values(rnd.number + 1)  # loads any already stored for it first
                self.store.move_messages(LEGACY, rnd.number, rnd.number + 1)
                self.legacy[rnd.number + 1].extend(values)
        if "dp" in outcome.result:  # privacy spent over every DP round published so far
            dp_rounds = int(self.store.get_meta("dp_rounds") or 0) + 1
            self.store.set_meta("dp_rounds", str(dp_rounds))
            info = outcome.result["dp"]
            info["rounds_so_far"] = dp_rounds
            info["cumulative_epsilon"] = dp.epsilon(info["noise_multiplier"], info["delta"],
                                                    dp_rounds)
        if outcome.status == "published" and (blob := self.workload.state_blob()) is not None:
            self.node.blobs.put(blob)  # the new model, fetched by digest for the next round
            self.store.set_meta("state_blob", self.store.put_blob(blob))
            self.store.prune_blobs(keep=self.store.get_meta("state_blob") or "")
        self._save_reputation()
        state = canonical_json(outcome.result)
        digest = state_digest(outcome.result)
        inline, blob = state, None
        if len(state) > self.config.inline_result_max:
            # too big for gossip: peers fetch it by digest from us or a neighbour
            self.node.blobs.put(state)
            inline, blob = b"", BlobRef(digest=digest, size=len(state))
        result = RoundResult(round=rnd.number, workload=self.workload.name, status=outcome.status,
                             accepted=outcome.accepted, rejected=dict(rnd.rejected),
                             state_digest=digest, result=inline, blob=blob)
        wire = seal(self.identity, RESULT, rnd.number, encode(result))
        self.store.close_round(rnd.number, outcome.status, outcome.accepted, dict(rnd.rejected),
                               outcome.result, digest, wire)
        self.roundlog.add(RESULT, rnd.number, wire)
        self.roundlog.forget(NOTICE, before=rnd.number + 1)  # a closed round's are moot
        retain = self.config.retain_rounds
        if retain and rnd.number % max(1, min(100, retain // 4)) == 0 and \
                rnd.number > retain:
            gone = self.store.prune_rounds(before=rnd.number - retain + 1)
            log.info("kept the last %d rounds in the database; forgot %d older ones", retain,
                     gone)
        self.sent_at[(RESULT, rnd.number)] = time.monotonic()
        for key in [k for k in self.sent_at if k[1] < rnd.number - 64]:
            del self.sent_at[key]  # a coordinator runs for months
        self.sessions.broadcast(wire)
        self._gossip(TOPIC_RESULT, wire)
        log.info("round %d %s: %d accepted, rejected %s, result %s", rnd.number, outcome.status,
                 outcome.accepted, dict(rnd.rejected) or "none", outcome.result)

    def _save_reputation(self) -> None:
        new_events = self.reputation.history[self._rep_saved:]
        if new_events:
            self.store.add_reputation(new_events)
            self._rep_saved = len(self.reputation.history)

    # --- prompt evaluations on peers -------------------------------------------------------------
    async def evaluate_remotely(self, prompts: list[str], model_digest: str,
                                gen_params: str) -> evaluation.Verification | None:
        """Evaluate ``prompts`` on capable peers, each by ``redundancy`` of them, accepting
        an output only when a majority of at least ``redundancy`` agree (a third peer breaks
        a tie). Returns the verification (``accepted`` outputs; ``undecided`` prompts the
        caller evaluates itself and passes to :meth:`settle_evaluations`), or None when too
        few capable peers are connected."""
        live = self.live_peers()
        capable = sorted(p for p, info in self.evaluators.items()
                         if p in live and info.model_digest == model_digest
                         and info.gen_params == gen_params
                         and self.reputation.score(p) >= self.reputation.threshold)
        need = self.config.redundancy
        if len(capable) < need:
            return None
        ver = evaluation.Verification(redundancy=need)
        for attempt in range(3):
            todo = ver.undecided(prompts)
            if not todo:
                break
            asked = {p: ver.asked(p) for p in todo}
            work = evaluation.plan(todo, capable, need if attempt == 0 else 1, already=asked)
            if not work:
                break
            async with trio.open_nursery() as nursery:
                for peer, items in work.items():
                    for i in range(0, len(items), BATCH):
                        nursery.start_soon(self._eval_batch, peer, items[i:i + BATCH],
                                           model_digest, gen_params, ver)
        return ver

    def settle_evaluations(self, ver: evaluation.Verification, settled: dict[str, str]) -> None:
        """The caller evaluated the undecided prompts itself: decide them, then move the
        evaluators' reputation by who agreed with the accepted outputs."""
        for prompt, output in settled.items():
            ver.settle(prompt, output)
        number = self.store.last_round()
        for peer, prompt in ver.losers:
            tag = hashlib.sha256(prompt.encode()).hexdigest()[:12]
            self.reputation.penalize(number, peer, f"prompt {tag}: its evaluation was outvoted")
        for peer in sorted({p for p, _ in ver.winners}):
            self.reputation.reward_for(number, peer, "prompt evaluations: agreed")
        self._save_reputation()

    async def _eval_batch(self, peer: str, prompts: list[str], model_digest: str,
                          gen_params: str, ver: evaluation.Verification) -> None:
        self._batches += 1
        batch = self._batches
        task = evaluation.EvalTask(batch=batch, model_digest=model_digest,
                                   gen_params=gen_params, prompts=prompts)
        wire = seal(self.identity, evaluation.EVAL_TASK, batch, encode(task))
        try:
            raw = await self.node.request(peer, evaluation.PROTO_EVAL, wire,
                                          max_response=2 * 1024 * 1024, timeout=EVAL_TIMEOUT)
            env = open_envelope(raw, domains={evaluation.EVAL_RESULT},
                                max_wire=2 * 1024 * 1024)
            res = decode(env.payload, evaluation.EvalResult)
            if env.sender_id != peer or res.batch != batch or env.round != batch:
                raise RejectedMessage("result not signed by the peer asked, or another batch")
            if len(res.outputs) != len(prompts):
                raise RejectedMessage(f"{len(res.outputs)} outputs for {len(prompts)} prompts")
        except (StreamProtocolError, RejectedMessage) as exc:
            reason = getattr(exc, "reason", "unreachable")
            self.store.count_rejection(peer, f"eval_{reason}")
            log.warning("evaluation batch %d on %s failed: %s", batch, peer, exc)
            return
        for prompt, output in zip(prompts, res.outputs, strict=True):
            ver.record(peer, prompt, output)

    def _gossip(self, topic: str, wire: bytes) -> None:
        async def send() -> None:
            try:
                await self.node.publish(topic, wire)
            except Exception as exc:
                log.warning("gossip on %s failed (peers will pull): %s", topic, exc)

        self.node.start_soon(send)

    async def _mesh_log_loop(self) -> None:
        while True:
            await trio.sleep(15.0)
            log.info("mesh sizes %s, %d connections", self.node.mesh_sizes(),
                     len(self.node.connected_peers()))


async def _ignore(data: bytes, origin: str) -> None:
    """Our own broadcasts echoed back by the mesh: nothing to do."""


def _claimed_sender(wire: bytes) -> str | None:
    """Who the message says it is from (unverified: used only by the admission policy's rate
    rules, which must run before the signature check that would verify it)."""
    env = peek(wire, 2 * MAX_SUBMIT_WIRE)
    if env is None or len(env.sender) != 32:
        return None
    return env.sender_id


def secure_protocol_for(workload: Workload, choice: str) -> str:
    """The secure-round protocol for ``workload``: ``choice`` ("vss", "secagg"), or for
    "auto" vss where the workload's inputs have ranges to prove, else SecAgg+."""
    ranged = workload.range_bounds() is not None
    if choice == "auto":
        return verified_round.MODE if ranged else "secagg"
    if choice == verified_round.MODE and not ranged:
        raise ValueError(f"workload {workload.name} has no input ranges: use secagg")
    if choice not in ("secagg", verified_round.MODE):
        raise ValueError(f"unknown secure protocol {choice!r} (auto, vss, secagg)")
    return choice


def decode_json_stats(payload: bytes) -> StatsContribution:
    return msgspec.json.decode(payload, type=StatsContribution)
