"""Keeping up with the coordinator: its signed announcements, notices and results.

Every coordinator envelope, from gossip, the session or a pull, goes through
:meth:`Follower.ingest`: checked (signature, domain, signer = the coordinator's
key, round in payload = round in envelope) before it is kept in the round log or
acted on; a bad one is logged and dropped. Published states are kept (fetched by
digest when too big to travel inline) and served to neighbours, and so is the
model a result publishes. Pull: every ``pull_interval`` ask a neighbour (most ticks)
or the coordinator (every third tick, or when alone) for the latest round heads,
then fill gaps by round, so a peer outside the mesh and without a session still
sees everything (while its session is up a peer does not pull: the coordinator
pushes it everything, and its head again on every reconnect).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import trio

from protocol.audit.log import HEAD, HeadWatch
from protocol.wire.envelope import RejectedMessage, open_envelope
from protocol.wire.messages import (
    ANNOUNCE,
    NOTICE,
    PROTO_PULL,
    RESULT,
    TOPIC_RESULT,
    PhaseNotice,
    PullRequest,
    PullResponse,
    RoundAnnounce,
    RoundResult,
    decode,
    encode,
)

from .blobs import FETCH_ATTEMPTS
from .node import NetworkNode
from .roundlog import RoundLog
from .session import SessionClient
from .streams import StreamProtocolError

log = logging.getLogger("hypergossip.peer")
PULL_MAX_RESPONSE = 2 * 1024 * 1024
KEEP_ROUNDS = 64  # per-round bookkeeping kept in memory
GAP_FILL_PER_TICK = 8
HEAD_COMPARE_SPREAD = 5.0  # s after a new round-log head: compare it with a neighbour


class Follower:
    def __init__(self, node: NetworkNode, roundlog: RoundLog, coordinator_id: str,
                 workload: Any, session: SessionClient | None, pull_interval: float, *,
                 on_announce: Callable[[int], None], on_round: Callable[[int], None],
                 on_forget: Callable[[int], None],
                 on_result: Callable[[RoundResult], None] | None = None):
        self.node, self.roundlog, self.coordinator_id = node, roundlog, coordinator_id
        self.workload, self.session, self.pull_interval = workload, session, pull_interval
        self.on_announce, self.on_round, self.on_forget = on_announce, on_round, on_forget
        self.on_result = on_result
        self.results: dict[int, RoundResult] = {}
        self.states: dict[int, bytes] = {}  # round -> published state (canonical JSON), verified
        self.received_at: dict[tuple[str, int], float] = {}  # (domain, round) -> monotonic
        self.received_via: dict[tuple[str, int], str] = {}  # (domain, round) -> how it came
        self.first_round = 0  # first round this peer saw; it does not chase older ones
        self.models: dict[int, bytes] = {}  # round -> digest of the published model we hold
        self.nursery: trio.Nursery | None = None
        # the round log's signed heads; two for one round prove the coordinator equivocated
        self.heads = HeadWatch(coordinator_id)
        self.proofs_file: str | None = None  # equivocation proofs appended here (hex heads)

    def signed_by_coordinator(self, data: bytes, origin: str) -> bool:
        """Gossip on the coordinator's topics: valid when the coordinator signed it (a peer
        forwarding anything else is lowered in our gossip scores)."""
        try:
            env = open_envelope(data, domains={ANNOUNCE, RESULT, NOTICE, HEAD})
        except RejectedMessage:
            return False
        return env.sender_id == self.coordinator_id

    def ingest(self, wire: bytes, *, source: str, origin: str | None = None) -> None:
        try:
            env = open_envelope(wire, domains={ANNOUNCE, RESULT, NOTICE, HEAD})
            if env.domain == HEAD:
                self._head(wire, source)
                return
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
        self.on_round(env.round)
        if isinstance(msg, RoundAnnounce):
            log.info("round %d announced (%s, via %s)", msg.round, msg.workload, source)
            self.on_announce(msg.round)
        elif isinstance(msg, PhaseNotice):
            log.debug("round %d: phase %s notice (via %s)", msg.round, msg.phase, source)
        else:
            self.results[msg.round] = msg
            self._forget_before(msg.round - KEEP_ROUNDS)
            log.info("round %d %s: %d accepted, state %s (via %s)", msg.round, msg.status,
                     msg.accepted, msg.state_digest.hex()[:16], source)
            if msg.blob is None:
                self._keep_state(msg, msg.result)
            elif self.nursery is not None:
                self.nursery.start_soon(self._fetch_state, msg, origin)
            if self.on_result is not None:
                self.on_result(msg)

    def _head(self, wire: bytes, source: str) -> None:
        """A signed head of the round log (already checked as an envelope): kept and
        served to neighbours; a second one for a round, over another history, is proof
        that the coordinator equivocated: logged, kept, and gossiped so every peer sees
        both."""
        head, proof = self.heads.observe(wire)
        new = self.roundlog.add(HEAD, head.round, wire)  # the first one held is served
        if new and self.nursery is not None and head.round == self.roundlog.latest(HEAD):
            self.nursery.start_soon(self._compare_head)  # once a round: idle peers pay nothing
        if proof is None:
            return
        log.error("the coordinator EQUIVOCATED: two signed round-log heads for round %d (the "
                  "second via %s); proof kept and gossiped", head.round, source)
        if self.proofs_file:  # for the operator: hypergossip audit URL --heads PATH
            with open(self.proofs_file, "a") as fh:
                fh.write("".join(w.hex() + "\n" for w in proof))
        if self.nursery is not None:
            for w in proof:
                self.nursery.start_soon(self._gossip, w)

    async def _gossip(self, wire: bytes) -> None:
        try:
            await self.node.publish(TOPIC_RESULT, wire)
        except Exception as exc:  # best effort: the proof is kept here either way
            log.warning("could not gossip the equivocation proof: %s", exc)

    def _forget_before(self, round: int) -> None:
        """A daemon runs for months: per-round bookkeeping keeps the last rounds only (the
        round log and blob store bound themselves)."""
        for table in (self.results, self.states):
            for r in [r for r in table if r < round]:
                del table[r]
        for table in (self.received_at, self.received_via):
            for key in [k for k in table if k[1] < round]:
                del table[key]
        self.on_forget(round)
        self.roundlog.forget(NOTICE, before=round)

    def _keep_state(self, msg: RoundResult, state: bytes) -> None:
        if hashlib.sha256(state).digest() != msg.state_digest:
            log.warning("round %d: published state does not match its signed digest", msg.round)
            return
        self.states[msg.round] = state
        self.node.blobs.put(state)  # so neighbours can fetch it from us
        result_blobs = getattr(self.workload, "result_blobs", None)
        if result_blobs is not None and msg.status == "published" and self.nursery is not None:
            try:
                wanted = result_blobs(json.loads(state))
            except ValueError:
                wanted = []
            for digest, size in wanted:
                self.nursery.start_soon(self._fetch_model, msg.round, digest, size)

    async def _fetch_retrying(self, what: str, round: int, digest: bytes, size: int,
                              first: str | None = None) -> bytes | None:
        """A blob by digest (hash-checked) from ``first``, a neighbour or the coordinator,
        retried with back-off (:func:`peer.blobs.fetch_blob`); None if nobody had it."""
        peers = ([first] if first and first != self.coordinator_id else []) + \
            self.node.connected_peers()
        try:
            return await self.node.fetch_blob(digest, peers, max_size=size,
                                              seed=self.coordinator_id,
                                              attempts=FETCH_ATTEMPTS)
        except StreamProtocolError as exc:
            log.info("round %d: %s not fetched (%s)", round, what, exc)
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

    async def serve_pull(self, request: bytes, remote: str) -> bytes:
        return self.roundlog.answer(request)

    async def _pull_from(self, target: str) -> None:
        raw = await self.node.request(target, PROTO_PULL, encode(PullRequest(kind="head")),
                                      max_response=PULL_MAX_RESPONSE, timeout=3.0)
        for wire in decode(raw, PullResponse).envelopes:
            self.ingest(wire, source=f"pull from {target}", origin=target)
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
                self.ingest(wire, source=f"pull from {target}", origin=target)

    async def _compare_head(self) -> None:
        """Ask one random neighbour for its latest head, a few seconds after a new round's
        head came (two histories shown to two peers meet here; spread so that a round's
        heads do not all cross at once)."""
        await trio.sleep(random.uniform(1.0, HEAD_COMPARE_SPREAD))
        neighbours = [p for p in self.node.connected_peers() if p != self.coordinator_id]
        if not neighbours:
            return
        target = random.choice(neighbours)
        try:
            raw = await self.node.request(target, PROTO_PULL, encode(PullRequest(
                kind="loghead")), max_response=4096, timeout=3.0)
            for wire in decode(raw, PullResponse).envelopes[:1]:
                self.ingest(wire, source=f"head from {target}", origin=target)
        except (StreamProtocolError, RejectedMessage) as exc:
            log.debug("head from %s not read: %s", target, exc)
        except Exception:  # one bad exchange must not stop the daemon keeping up
            log.exception("head from %s not read", target)

    async def pull_loop(self) -> None:
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
