"""The coordinator: a network node with duties, and an AIM server, in one trio loop.

This module only wires the coordinator's collaborators together, each one duty:

===================  ==========================================================
collaborator         duty
===================  ==========================================================
``intake``           every envelope peers send: verify, admit, offer to the round
                     (:mod:`.intake`)
``driver``           open rounds in the configured mode and run them to their
                     outcome (:mod:`.rounds`)
``outbox``           sign and send announcements, notices, personal messages and
                     results; answer pulls and new sessions (:mod:`.outbox`)
``publisher``        a round's outcome: the result, the new state, DP accounting,
                     retention (:mod:`.publisher`)
``legacy``           values posted in the clear over the seed's HTTP API
                     (:mod:`.legacy`)
``evaluations``      prompt evaluations on peers, verified by redundancy
                     (:mod:`.evaluations`)
===================  ==========================================================

``Coordinator.run`` is the list of what runs concurrently: the libp2p node
(gossip readers, the peers' sessions, submit and pull stream handlers), the
HTTP server (hypercorn's trio worker), the round driver, a mesh logger and the
admission expiry. Benchmarks measure through the ``meter`` seam
(:mod:`.meter`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from peer import gcpace, httpserver
from peer.gossip import GossipConfig
from peer.limits import COORDINATOR_LIMITS, Limits
from peer.llm import Embedder, LocalBackend, make_backend
from peer.node import NetworkNode
from peer.roundlog import RoundLog
from peer.session import SessionHub
from protocol import rounds
from protocol.learning.registry import get_workload
from protocol.learning.workloads import Workload
from protocol.policy.admission import AdmissionConfig, AdmissionPolicy
from protocol.policy.replication import Reputation
from protocol.rounds.base import Settings
from protocol.wire.canonical import canonical_json
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ANNOUNCE,
    PEERS_MAX,
    PROTO_PEERS,
    PROTO_PULL,
    PROTO_SUBMIT,
    RESULT,
    TOPIC_REPLICAS,
    TOPIC_SUBMIT,
    PeerAddrs,
    PeerList,
    SubmitAck,
    encode,
)

from .api import build_app
from .evaluations import RemoteEvaluations
from .intake import MAX_SUBMIT_WIRE, Intake
from .joblog import JobLog
from .legacy import Legacy
from .lies import lying
from .meter import Meter
from .metrics import CoordinatorMetrics
from .outbox import Outbox
from .prompt_jobs import PromptJobs
from .publisher import Publisher
from .rounds import DriverConfig, OpenRound, RoundDriver
from .store import Store
from .views import View

SEED_COPIES = 4  # copies of a model the coordinator serves before pointing at peers
log = logging.getLogger("hypergossip.coordinator")


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
    # values posted over the seed's HTTP API while too few peers are connected for a
    # round: an epoch of those values alone closes this many seconds after the first
    legacy_epoch: float = 10.0
    inline_result_max: int = 256 * 1024  # larger published states go as blobs, by digest
    max_rounds: int = 0  # 0: run until stopped
    retain_rounds: int = 10_000  # rounds (and their messages) kept in the database; 0: all
    log_retain: int = 0  # round-log records kept (protocol.audit.log); 0: all
    log_keep: int = 32  # rounds whose accepted envelopes stay served to auditors
    lie: str = ""  # tests of the audit only: coordinator.lies
    round_log: bool = True  # False only to measure what the log costs (scripts/bench)
    linger: float = 0.0  # after max_rounds: seconds the final state stays served over HTTP
    workload: str = "stats"
    workload_options: dict = field(default_factory=dict)  # e.g. incremental: segments=8
    secure: bool = True  # secure aggregation; False: contributions in the clear (--insecure)
    phase_timeout: float = 10.0  # secure rounds: seconds each phase waits at most
    dp_epsilon: float = 0.0  # secure rounds: per-round epsilon of distributed DP noise; 0: off
    dp_delta: float = 1e-5
    secagg_degree: int | None = None  # None: secagg.SecAggConfig.default's graph
    secagg_threshold: int | None = None
    secagg_agreement: int | None = None  # survivor signatures a peer needs before unmasking
    # secure rounds: "vss" (range-checked inputs; workloads with range_bounds, i.e. stats),
    # "secagg" (SecAgg+, any vector), "auto": vss where the workload allows it
    secure_protocol: str = "auto"
    mode: str = ""  # a round mode by name (protocol.rounds.MODES); "": chosen by the above
    vss_committee: int = 16  # committee size of vss rounds (threshold survives 30 % of it)
    robust_tolerance: float = 0.2  # robust rounds: fraction of liars withstood (sets k, f)
    group_size: int | None = None  # robust rounds' k; None: from robust_tolerance
    robust_aggregator: str = "nnm+centered_clipping"  # robust rounds: over the groups
    vss_bits: int = 14  # range-proof bits per coordinate (resolution of the range)
    http_write_timeout: float = httpserver.WRITE_TIMEOUT  # slower HTTP readers are cut off
    llm_backend: str | None = "echo"  # prompt search's own LLM; None: no prompt search
    prompt_search: bool = False  # serve prompt search beside another workload (prompt: always)
    redundancy: int = 2  # peers that evaluate each prompt (1: no verification)
    llm_max_tokens: int = 32
    llm_url: str | None = None
    llm_model: str | None = None
    # IHAVEs to 6 peers a heartbeat, not a quarter of all: every participant gets our
    # messages on its session (see peer.gossip.GossipConfig.gossip_max)
    gossip: GossipConfig = field(default_factory=lambda: GossipConfig(gossip_max=6))
    limits: Limits = COORDINATOR_LIMITS

    @property
    def db_path(self) -> Path:
        return self.db or self.data_dir / "coordinator.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.key or self.data_dir / "coordinator.key"


class Coordinator:
    def __init__(self, config: CoordinatorConfig, identity: Identity | None = None, *,
                 workload: Workload | None = None, meter: Meter | None = None):
        """``workload``: an instance to run instead of ``config.workload`` by name;
        ``meter``: where a benchmark measures the coordinator's own work."""
        self.config = config
        if identity is None:
            identity, created = Identity.load_or_create(config.key_path)
            if created:
                log.info("created coordinator key %s", config.key_path)
        self.identity = identity
        self.workload = lying(workload or get_workload(config.workload,
                                                       **config.workload_options), config.lie)
        self.mode = rounds.select(self.workload, secure=config.secure,
                                  protocol=config.secure_protocol, mode=config.mode)
        self.meter = meter or Meter()
        self.store = Store(config.db_path)
        self.reputation = Reputation()
        for event in self.store.reputation_events():  # survives restarts
            self.reputation.history.append(event)
            self.reputation.scores[event[1]] = event[2]
        self.node = NetworkNode(identity, config.listen, config.gossip, config.limits)
        self.node.blobs.seed_copies = SEED_COPIES  # large blobs spread from peer to peer
        self.metrics = CoordinatorMetrics(self.node)
        admission = config.admission if config.allow is None else \
            dataclasses.replace(config.admission, allow=config.allow)
        self.admission = AdmissionPolicy(admission, time.time())
        self.roundlog = RoundLog()
        for kind, domain in (("announce", ANNOUNCE), ("result", RESULT)):
            for r, wire in self.store.wires(kind, since=max(0, self.store.last_round() - 1000)):
                self.roundlog.add(domain, r, wire)  # phase notices of past rounds are moot
        self.open = OpenRound()
        self.intake = Intake(self.store, self.node, self.admission, self.open,
                             rounds.peer_domains, self.meter, self.metrics)
        self.sessions = SessionHub(
            self.node, on_open=self._session_head, max_submit=MAX_SUBMIT_WIRE,
            on_submit=lambda wire, peer: self.handle(wire, via="session", transport_peer=peer))
        self.outbox = Outbox(identity, self.node, self.sessions, self.roundlog, self.meter)
        self.intake.receipt = self.outbox.receipt if config.round_log else None
        self.legacy = Legacy(self.store, self.workload) \
            if self.workload.takes_unprotected else None
        self.publisher = Publisher(self.store, self.node, self.outbox, self.workload,
                                   self.reputation, self.legacy,
                                   inline_result_max=config.inline_result_max,
                                   retain_rounds=config.retain_rounds, meter=self.meter,
                                   metrics=self.metrics, log_retain=config.log_retain,
                                   log_keep=config.log_keep,
                                   lie=config.lie, round_log=config.round_log)
        self.driver = RoundDriver(
            DriverConfig(config.min_peers, config.start_peers, config.round_pause,
                         config.max_rounds, config.linger, config.phase_timeout,
                         config.legacy_epoch),
            settings_of(config), self.mode, self.workload, self.store, self.node,
            self.outbox, self.publisher, self.open, self.reputation,
            self.intake.round_verifier, self.meter, self.metrics)
        self.evaluations = RemoteEvaluations(
            identity, self.node, self.store, self.reputation, self.intake.evaluators,
            self.driver.live_peers, config.redundancy, self.publisher.save_reputation)
        self.prompt_jobs: PromptJobs | None = None
        if config.llm_backend and (config.workload == "prompt" or config.prompt_search):
            backend = make_backend(config.llm_backend, url=config.llm_url,
                                   model=config.llm_model, max_new_tokens=config.llm_max_tokens)
            self.prompt_jobs = PromptJobs(
                self.store, backend, embedder=Embedder(),
                remote=self.evaluations.evaluate_remotely,
                settle=self.evaluations.settle_evaluations,
                joblog=JobLog(self.store.db, self.outbox.seal, config.redundancy)
                if config.round_log else None, lie=config.lie)
        self.metrics.watch(self)  # its state read at each scrape of /metrics
        self.http_urls: list[str] = []
        self.started_at = time.time()
        self._stop = trio.Event()
        # frames up to twice the cap are read so an oversize message is counted, not just cut
        self.node.serve(PROTO_SUBMIT, self.intake.on_submit_stream,
                        max_request=2 * MAX_SUBMIT_WIRE)
        self.node.serve(PROTO_PULL, self.outbox.on_pull, max_request=1024)
        self.node.serve(PROTO_PEERS, self._peer_list, max_request=0)
        latest = self.store.latest_published()
        if latest is not None:  # serve the current state by digest again after a restart
            self.node.blobs.put(canonical_json(json.loads(latest["result"])))
            state = self.store.get_blob(self.store.get_meta("state_blob") or "")
            self.workload.restore(json.loads(latest["result"]), state)
        if (blob := self.workload.state_blob()) is not None:
            self.node.blobs.put(blob)

    # --- what others read ---------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def current(self):
        return self.open.round

    @property
    def rounds_run(self) -> int:
        return self.driver.rounds_run

    @property
    def sent_at(self) -> dict[tuple[str, int], float]:
        return self.outbox.sent_at

    @property
    def round_verifier(self):
        return self.intake.round_verifier

    @property
    def evaluators(self):
        return self.intake.evaluators

    def live_peers(self) -> set[str]:
        return self.driver.live_peers()

    async def _peer_list(self, request: bytes, remote: str) -> bytes:
        """``PROTO_PEERS``: up to PEERS_MAX connected peers other than the asker, at random,
        each with the addresses it enrolled with that are on the IP it is connected from."""
        live = [p for p in self.live_peers() if p != remote and p in self.intake.addrs]
        out = []
        for peer in random.sample(live, min(len(live), 2 * PEERS_MAX)):
            ip = self.node.remote_ip(peer)
            addrs = [a for a in self.intake.addrs[peer] if ip and _addr_ip(a) == ip][:4]
            if addrs:
                out.append(PeerAddrs(peer_id=peer, addrs=addrs))
            if len(out) == PEERS_MAX:
                break
        return encode(PeerList(peers=out))

    def handle(self, wire: bytes, *, via: str, transport_peer: str) -> SubmitAck:
        return self.intake.handle(wire, via=via, transport_peer=transport_peer)

    def view(self) -> View:
        """What the HTTP API may see (coordinator.views)."""
        return View(self.store, self.node, self.open, self.workload, self.admission,
                    self.reputation, self.prompt_jobs, self.legacy, self.started_at,
                    self.metrics.registry)

    def _session_head(self, peer: str) -> list[bytes] | None:
        """A new session's first envelopes; None for a peer that is not admitted."""
        if not self.store.is_admitted(peer):
            return None
        return self.outbox.session_head(peer, self.open.number)

    # --- lifetime ---------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        gcpace.pace()  # the collector sized for a daemon (peer.gcpace)
        async with self.node.running():
            # a submitted message is handled by the topic's validator, which sees it before
            # gossipsub delivers or forwards it: what it refuses as malformed or forged
            # lowers its forwarder's score (see peer.gossip.SCORING)
            await self.node.subscribe(TOPIC_SUBMIT, _ignore,
                                      validate=self.intake.on_submit_gossip)
            # announcements and results are published on TOPIC_ANNOUNCE and TOPIC_RESULT
            # without joining their meshes (gossipsub's fanout: a few peers that did join):
            # every participant gets them on its session first, and a coordinator in those
            # meshes was every sparse peer's graft and gossip target (at N=1000, 28 GRAFTs
            # and 100 IHAVEs a second while idle)
            if self.mode.public_domains:  # relay peers' public round messages (audit)
                await self.node.subscribe(
                    TOPIC_REPLICAS, _ignore,
                    validate=rounds.base.public_gossip_check(self.mode.public_domains))
            async with trio.open_nursery() as nursery:
                hc = httpserver.config(self.config.http_host, self.config.port,
                                       write_timeout=self.config.http_write_timeout)
                self.http_urls = await nursery.start(
                    lambda task_status: httpserver.serve_http(
                        build_app(self.view()), hc, task_status=task_status,
                        shutdown_trigger=self._stop.wait))
                log.info("coordinator %s: HTTP %s, libp2p %s", self.peer_id,
                         ", ".join(self.http_urls), ", ".join(self.node.addrs))
                if self.workload.runs_rounds:  # prompt search runs jobs, not rounds
                    nursery.start_soon(self.driver.run, self._finish(nursery.cancel_scope))
                nursery.start_soon(self._mesh_log_loop)
                nursery.start_soon(self.intake.expiry_loop)
                if self.prompt_jobs is not None:
                    nursery.start_soon(self.prompt_jobs.run)
                    if isinstance(self.prompt_jobs.backend, LocalBackend):  # load it now, not
                        nursery.start_soon(trio.to_thread.run_sync,  # in a request's budget
                                           self.prompt_jobs.backend.load)
                task_status.started(self)

    def _finish(self, cancel_scope: trio.CancelScope):
        async def finish() -> None:
            self.stop()
            await trio.sleep(1.5)  # let hypercorn answer in-flight requests, then stop all
            cancel_scope.cancel()

        return finish

    def stop(self) -> None:
        self._stop.set()

    @property
    def http_url(self) -> str:
        url = self.http_urls[0] if self.http_urls else ""
        return url.replace("0.0.0.0", "127.0.0.1")

    async def _mesh_log_loop(self) -> None:
        while True:
            await trio.sleep(15.0)
            log.info("mesh sizes %s, %d connections", self.node.mesh_sizes(),
                     len(self.node.connected_peers()))


def settings_of(config: CoordinatorConfig) -> Settings:
    """The round settings a mode reads, from the coordinator's configuration."""
    return Settings(min_peers=config.min_peers, round_timeout=config.round_timeout,
                    phase_timeout=config.phase_timeout, dp_epsilon=config.dp_epsilon,
                    dp_delta=config.dp_delta, secagg_degree=config.secagg_degree,
                    secagg_threshold=config.secagg_threshold,
                    secagg_agreement=config.secagg_agreement,
                    vss_committee=config.vss_committee, vss_bits=config.vss_bits,
                    robust_tolerance=config.robust_tolerance, group_size=config.group_size,
                    robust_aggregator=config.robust_aggregator)


async def _ignore(data: bytes, origin: str) -> None:
    """Our own broadcasts echoed back by the mesh: nothing to do."""


def _addr_ip(addr: str) -> str | None:
    """The IP of a ``/ip4/A/...`` or ``/ip6/A/...`` multiaddr; None for anything else."""
    parts = addr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else None
