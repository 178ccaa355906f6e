"""The peer daemon: enrol with the coordinator, take part in its rounds, keep up.

``PeerDaemon.run`` is the list of what a peer does concurrently:

- keep connected to its bootstrap addresses (redial every few seconds);
- enrol once with a signed :class:`Enroll`, retrying until acknowledged;
- once enrolled, keep a session (:mod:`peer.session`) open to the
  coordinator: it pushes announcements, phase notices, this peer's personal
  messages and results, and carries this peer's round messages and acks;
- keep up with the coordinator's signed log, from the session, gossip or pull
  (:mod:`peer.follower`), and take part in each round it is a participant of
  (:mod:`peer.participant`);
- log mesh sizes, loudly when a topic's mesh is empty.

Production settings are one :class:`PeerConfig`; how the peer behaves inside the
protocol (honest, a test's dropouts, an attack) is its
:class:`~peer.behaviour.Behaviour`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from protocol import rounds
from protocol.policy.backoff import Backoff
from protocol.prompts.evaluation import EVAL_RESULT, EVAL_TASK, PROTO_EVAL, EvalResult, EvalTask
from protocol.rounds.base import public_gossip_check
from protocol.wire.envelope import RejectedMessage, open_envelope, peek, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ANNOUNCE,
    ENROLL,
    PEERS_MAX,
    PERSONAL,
    PROTO_PEERS,
    PROTO_PULL,
    PROTO_SUBMIT,
    TOPIC_ANNOUNCE,
    TOPIC_REPLICAS,
    TOPIC_RESULT,
    TOPIC_SUBMIT,
    Enroll,
    EvaluatorInfo,
    PeerList,
    RoundResult,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from . import gcpace
from .behaviour import Behaviour
from .follower import Follower
from .gossip import DEFAULT_GOSSIP, GossipConfig
from .limits import DEFAULT_LIMITS, Limits, run_cpu_bound
from .llm import Backend, gen_params_json
from .node import NetworkNode
from .participant import Participant
from .roundlog import RoundLog
from .session import SessionClient
from .streams import StreamProtocolError

log = logging.getLogger("hypergossip.peer")
EVAL_TIMEOUT = 600.0  # a batch of local-LLM calls takes a while
REDIAL_CHECK = 3.0  # s between looks at the bootstrap connections (jittered)
ENROL_JITTER = 0.5  # s: the most a peer waits before its first enrolment


@lru_cache(maxsize=4096)  # parsing a multiaddr takes ~0.3 ms; redials ask every 3 s
def peer_id_of(addr: str) -> str:
    return info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id.to_base58()


@dataclass
class PeerConfig:
    """A peer's production settings (``hypergossip-peer --help`` explains each)."""

    bootstrap: list[str] = field(default_factory=list)
    coordinator_id: str | None = None  # None: the peer id in the first bootstrap address
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    gossip: GossipConfig = DEFAULT_GOSSIP
    subscribe_gossip: bool = True
    pull_interval: float = 2.0
    session: bool = True
    limits: Limits = DEFAULT_LIMITS
    ticket: bytes = b""  # the operator's admission ticket, for coordinators that want one


class PeerDaemon:
    def __init__(self, identity: Identity, workload: Any, data: Any,
                 config: PeerConfig | None = None, *, behaviour: Behaviour | None = None,
                 evaluator: Backend | None = None,
                 on_result: Callable[[RoundResult], None] | None = None, **settings: Any):
        """``settings``: :class:`PeerConfig` fields, overriding ``config``'s."""
        config = dataclasses.replace(config or PeerConfig(), **settings)
        self.config, self.identity, self.workload = config, identity, workload
        if config.coordinator_id is None:
            if not config.bootstrap:
                raise ValueError("need --coordinator or a --bootstrap address with /p2p/<id>")
            config.coordinator_id = peer_id_of(config.bootstrap[0])
        self.coordinator_id: str = config.coordinator_id
        self.behaviour = behaviour or Behaviour()
        self.evaluator = evaluator
        self.evaluations = 0  # prompts evaluated for the coordinator
        self.node = NetworkNode(identity, config.listen, config.gossip, config.limits)
        self.node.discover = self._peers_from_coordinator
        self.session = SessionClient(self.node, self.coordinator_id, self._on_push) \
            if config.session else None
        self.roundlog = RoundLog()
        self.enrolled = trio.Event()
        self._redial = Backoff(first=1.0, cap=30.0)  # per bootstrap peer
        self.participant = Participant(identity, workload, data, self.node, self.roundlog,
                                       self.coordinator_id, self.behaviour, self.session,
                                       self._submit)
        self.follower = Follower(self.node, self.roundlog, self.coordinator_id, workload,
                                 self.session, config.pull_interval,
                                 on_announce=self._maybe_join, on_round=self.participant.wake,
                                 on_forget=self.participant.forget_before,
                                 on_result=self._on_result)
        self._on_result_hook = on_result
        self._nursery: trio.Nursery | None = None
        self.node.serve(PROTO_PULL, self.follower.serve_pull, max_request=1024)
        if evaluator is not None:
            self.node.serve(PROTO_EVAL, self._serve_eval, max_request=256 * 1024,
                            timeout=EVAL_TIMEOUT)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # what a peer keeps (tests and benches read these)
    results = property(lambda self: self.follower.results)
    states = property(lambda self: self.follower.states)
    models = property(lambda self: self.follower.models)
    received_at = property(lambda self: self.follower.received_at)
    received_via = property(lambda self: self.follower.received_via)
    rounds = property(lambda self: self.participant.rounds)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        gcpace.pace()  # the collector sized for a daemon (peer.gcpace)
        async with self.node.running():
            if self.config.subscribe_gossip:  # validators run before delivery and forwarding
                for topic in (TOPIC_ANNOUNCE, TOPIC_RESULT):
                    await self.node.subscribe(topic, self._on_gossip,
                                              validate=self.follower.signed_by_coordinator)
                if public := rounds.public_domains(self.workload):
                    await self.node.subscribe(TOPIC_REPLICAS, self._on_public_gossip,
                                              validate=public_gossip_check(public))
            for blob in await run_cpu_bound(self.workload.starting_blobs):
                self.node.blobs.put(blob)  # a first round's model is fetched from nobody
            async with trio.open_nursery() as nursery:
                self._nursery = self.follower.nursery = nursery
                await self._dial_missing()
                nursery.start_soon(self._keep_connected)
                nursery.start_soon(self._enroll_loop)
                nursery.start_soon(self.follower.pull_loop)
                if self.session is not None:
                    nursery.start_soon(self._session_loop)
                nursery.start_soon(self._mesh_log_loop)
                log.info("peer %s listening on %s", self.peer_id, ", ".join(self.node.addrs))
                task_status.started(self)

    # --- connections and enrolment ---------------------------------------------------------
    async def _dial_missing(self) -> None:
        """Dial every bootstrap peer we are not connected to and whose back-off has run
        out, trying its addresses in order."""
        by_peer: dict[str, list[str]] = {}
        for addr in self.config.bootstrap:
            by_peer.setdefault(peer_id_of(addr), []).append(addr)

        async def dial(peer: str, addrs: list[str]) -> None:
            for addr in addrs:
                if await self.node.connect(addr):
                    self._redial.succeeded(peer)
                    return
            wait = self._redial.failed(peer, trio.current_time())
            log.info("bootstrap peer %s unreachable; next try in %.1f s", peer, wait)

        now = trio.current_time()
        async with trio.open_nursery() as nursery:
            for peer, addrs in by_peer.items():
                if not self.node.is_connected(peer) and self._redial.due(peer, now):
                    nursery.start_soon(dial, peer, addrs)

    async def _keep_connected(self) -> None:
        """Redial lost bootstrap peers, each on its own exponential back-off with jitter
        (1 s after the first failure, doubling to 30 s): a coordinator that restarts is
        not met by all its peers at once, every few seconds."""
        while True:
            await trio.sleep(REDIAL_CHECK * random.uniform(0.5, 1.5))
            try:
                await self._dial_missing()
            except Exception:
                log.exception("redialling bootstrap peers failed")

    async def _enroll_loop(self) -> None:
        # a jittered start, so peers started together do not enrol in one burst; then
        # back-off with jitter. Each attempt is sealed afresh: a resent wire would read
        # as a replay.
        await trio.sleep(random.uniform(0.0, ENROL_JITTER))
        delay = 0.5
        while not self.enrolled.is_set():
            info = None
            if self.evaluator is not None:
                info = EvaluatorInfo(backend=self.evaluator.name,
                                     model_digest=self.evaluator.model_digest,
                                     gen_params=gen_params_json(self.evaluator))
            payload = encode(Enroll(workloads=[self.workload.name], addrs=self.node.addrs[:8],
                                    agent="hypergossip-peer/0.1", evaluator=info,
                                    ticket=self.config.ticket))
            wire = seal(self.identity, ENROLL, enroll_round(time.time()), payload)
            ack = await self._submit(wire, gossip_fallback=False, attempts=1)
            if ack is not None and ack.accepted:
                log.info("enrolled with coordinator %s", self.coordinator_id)
                self.enrolled.set()
                gcpace.settle()  # start-up's objects out of the collector's walks
                if latest := self.roundlog.latest(ANNOUNCE):
                    self._maybe_join(latest)  # older rounds are closed by now
                return
            if ack is not None:
                log.warning("enrolment refused: %s", ack.reason)
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 10.0)

    async def _peers_from_coordinator(self) -> list[tuple[str, list[str]]]:
        """Peers to dial, as the coordinator names them (``PROTO_PEERS``): how a peer that
        knows nobody but its bootstrap finds neighbours. Nothing on any failure."""
        if not self.node.is_connected(self.coordinator_id):
            return []
        try:
            raw = await self.node.request(self.coordinator_id, PROTO_PEERS, b"",
                                          max_response=PEERS_MAX * 1200 + 64)
            listed = decode(raw, PeerList).peers
        except (StreamProtocolError, RejectedMessage) as exc:
            log.debug("no peer list from the coordinator: %s", exc)
            return []
        return [(p.peer_id, [a.split("/p2p/")[0] for a in p.addrs]) for p in listed
                if p.peer_id != self.identity.peer_id]

    async def _submit(self, wire: bytes, *, gossip_fallback: bool, attempts: int = 3,
                      wanted: Callable[[], bool] = lambda: True) -> SubmitAck | None:
        """Send a signed envelope to the coordinator; None when it could not be reached, or
        when ``wanted()`` turned false before an attempt (its round is over: sending it
        anyway only costs the coordinator a refusal)."""
        for attempt in range(attempts):
            if not wanted():
                return None
            try:
                raw = await self.node.request(self.coordinator_id, PROTO_SUBMIT, wire,
                                              max_response=1024)
                return decode(raw, SubmitAck)
            except (StreamProtocolError, RejectedMessage) as exc:
                log.debug("submit attempt %d failed: %s", attempt + 1, exc)
                await trio.sleep(0.3 * (attempt + 1))
        if gossip_fallback and wanted():
            log.info("coordinator unreachable by stream; sending on %s", TOPIC_SUBMIT)
            await self.node.publish(TOPIC_SUBMIT, wire)
        return None

    def _on_result(self, result: RoundResult) -> None:
        gcpace.settle()  # a round ended: a quiet moment (at most once a minute a process)
        if self._on_result_hook is not None:
            self._on_result_hook(result)

    def _maybe_join(self, round: int) -> None:
        if self.enrolled.is_set() and self._nursery is not None:
            self.participant.maybe_join(round, self._nursery)

    async def _on_gossip(self, data: bytes, origin: str) -> None:
        if self.behaviour.keeps_gossip():
            self.follower.ingest(data, source=f"gossip from {origin}", origin=origin)

    async def _on_public_gossip(self, data: bytes, origin: str) -> None:
        """Peers' signed public round messages: anyone can audit them (and a lazy peer
        may try to copy them, which commit-reveal defeats)."""
        self.behaviour.observe(data)

    # --- the session ---------------------------------------------------------------------------
    async def _session_loop(self) -> None:
        assert self.session is not None
        await self.enrolled.wait()  # the coordinator refuses sessions of strangers
        await self.session.run()

    def _on_push(self, wire: bytes) -> None:
        """An envelope the coordinator pushed on our session: checked like any other."""
        env = peek(wire, len(wire))
        if env is None or env.domain != PERSONAL:
            self.follower.ingest(wire, source="session", origin=self.coordinator_id)
        else:
            self.participant.on_personal(wire)

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
            outputs.append(await run_cpu_bound(self.evaluator.generate, prompt))
        outputs = self.behaviour.outputs(task.prompts, outputs)
        self.evaluations += len(outputs)
        log.info("evaluated %d prompts (batch %d)", len(outputs), task.batch)
        return seal(self.identity, EVAL_RESULT, task.batch,
                    encode(EvalResult(batch=task.batch, outputs=outputs)))

    async def _mesh_log_loop(self) -> None:
        while True:
            await trio.sleep(15.0)
            sizes = self.node.mesh_sizes()
            empty = [t for t in (TOPIC_ANNOUNCE, TOPIC_RESULT)
                     if self.config.subscribe_gossip and sizes.get(t, 0) == 0]
            # an empty mesh is a problem only without a session: the coordinator pushes
            # everything on the session, and it joins no mesh of its topics
            session = self.session is not None and self.session.up
            level = logging.WARNING if empty and not session else logging.INFO
            relying = "the coordinator's session" if session else "pull"
            log.log(level, "mesh sizes %s, %d connections%s", sizes,
                    len(self.node.connected_peers()),
                    f"; empty mesh on {empty}, relying on {relying}" if empty else "")
