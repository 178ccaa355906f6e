"""The round driver: open a round in the configured mode, run it to its outcome, repeat.

Rounds: wait until enough admitted peers are connected, open (the mode builds the
round and its announcement parameters), announce (signed, gossiped, stored), feed
the round until it is ready (all connected participants in, or the deadline),
advance it -- a notice to send, work to do, or the outcome -- and publish. A
round left open by a crash is resumed on start when its mode allows it (its
stored messages offered again, with a fresh deadline), else published as failed.
The driver never asks which mode it runs: :mod:`protocol.rounds` says it all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import trio

from peer import gcpace
from peer.node import NetworkNode
from peer.streams import StreamProtocolError
from protocol.audit.log import MAX_REFUSALS, Refusal
from protocol.policy.attendance import Attendance
from protocol.policy.replication import Reputation
from protocol.rounds.base import Mode, Notice, Outcome, RoundLogic, Settings, Setup, Work
from protocol.wire.canonical import canonical_json
from protocol.wire.envelope import RejectedMessage, Verifier, open_envelope
from protocol.wire.identity import public_key_from_peer_id
from protocol.wire.messages import ANNOUNCE, TOPIC_ANNOUNCE, RoundAnnounce, decode, encode

from .meter import Meter
from .metrics import CoordinatorMetrics
from .outbox import Outbox
from .publisher import Publisher
from .store import Store

log = logging.getLogger("hypergossip.coordinator")
LIVENESS_GRACE = 3.0
LIVE_CACHE = 0.25  # s live_peers() reuses its last answer
FULL_CHECK_EVERY = 0.5  # s between a phase's whole readiness checks, at most


@dataclass
class OpenRound:
    """The round open now, shared by the driver (which opens and closes it), the intake
    (which offers it messages) and the outbox's readers."""

    round: RoundLogic | None = None
    mode: Mode | None = None
    participants: list[str] = field(default_factory=list)  # whom its notices go to
    asked: list[str] = field(default_factory=list)  # whom attendance expects a message from
    answered: set[str] = field(default_factory=set)  # who sent one it accepted
    accepted: set[bytes] = field(default_factory=set)  # wire digests of what it accepted
    withdrawn: set[str] = field(default_factory=set)  # participants that said they cannot go on
    phase: str = ""  # the phase running now ("announce", then each notice's), for the dashboard
    refusals: list[Refusal] = field(default_factory=list)  # for its round-log record
    refusals_uncounted: int = 0  # past the record's cap: counted, not listed
    _event: trio.Event = field(default_factory=trio.Event)
    _senders: list[str] = field(default_factory=list)  # heard from since the driver looked
    _anything: bool = False  # something else changed since the driver looked

    def refused(self, sender: str, reason: str, wire: bytes) -> None:
        """A refusal the round counts, for its record."""
        if len(self.refusals) < MAX_REFUSALS:
            self.refusals.append(Refusal(sender[:64], reason[:64],
                                         hashlib.sha256(wire).digest()))
        else:
            self.refusals_uncounted += 1

    def reset(self) -> None:
        """A new round: nobody has answered, withdrawn or been refused in it yet."""
        self.answered, self.withdrawn, self.accepted = set(), set(), set()
        self.refusals, self.refusals_uncounted = [], 0

    @property
    def number(self) -> int | None:
        return self.round.number if self.round is not None else None

    def changed(self, sender: str | None = None) -> None:
        """Something the driver waits on happened: ``sender``'s message was taken (or it
        withdrew), or, with None, anything else (it then looks at the whole round)."""
        if sender is None:
            self._anything = True
        else:
            self._senders.append(sender)
        self._event.set()

    async def wait_changed(self, timeout: float) -> tuple[list[str], bool]:
        """Wait up to ``timeout`` s for a change: the senders heard from meanwhile, and
        whether anything else changed or the wait timed out (then all is to be looked at)."""
        with trio.move_on_after(timeout) as scope:
            await self._event.wait()
        self._event = trio.Event()
        senders, self._senders = self._senders, []
        anything, self._anything = self._anything or scope.cancelled_caught, False
        return senders, anything


@dataclass
class DriverConfig:
    min_peers: int
    start_peers: int  # live peers to wait for before the first round (0: min_peers)
    round_pause: float
    max_rounds: int  # 0: until stopped
    linger: float
    phase_timeout: float  # also bounds a Work step's fetches
    legacy_epoch: float = 10.0  # s an epoch of legacy HTTP values alone waits for peers


class RoundDriver:
    def __init__(self, config: DriverConfig, settings: Settings, mode: Mode, workload,
                 store: Store, node: NetworkNode, outbox: Outbox, publisher: Publisher,
                 open_round: OpenRound, reputation: Reputation, verifier: Verifier,
                 meter: Meter, metrics: CoordinatorMetrics):
        self.config, self.settings, self.mode, self.workload = config, settings, mode, workload
        self.store, self.node, self.outbox, self.publisher = store, node, outbox, publisher
        self.open, self.reputation, self.verifier, self.meter = (open_round, reputation,
                                                                 verifier, meter)
        self.metrics = metrics
        self.attendance = Attendance()  # silent participants sit out the next rounds
        self.rounds_run = 0
        self._last_live: dict[str, float] = {}  # peer -> when last seen connected
        self._live_at = float("-inf")  # when _last_live was last brought up to date

    def live_peers(self) -> set[str]:
        """Admitted peers connected to us now or within the last ``LIVENESS_GRACE`` seconds:
        under load py-libp2p connections flap, and a phase must not close on a peer that is
        only reconnecting (its message would then arrive a phase late)."""
        now = time.monotonic()
        if now - self._live_at < LIVE_CACHE:  # asked at every wake of a phase's wait: the
            return set(self._last_live)  # scan (and its SELECT) was O(N) per message
        self._live_at = now
        for p in set(self.node.connected_peers()) & self.store.admitted():
            self._last_live[p] = now
            self.store.touch(p, every=60.0)  # connected is seen: not forgotten by expiry
        for p in [p for p, t in self._last_live.items() if now - t > LIVENESS_GRACE]:
            del self._last_live[p]
        return set(self._last_live)

    async def run(self, stop) -> None:
        """Run rounds until ``max_rounds``; then linger and call ``stop``."""
        resumed = self._resume_open_round()
        while self.config.max_rounds == 0 or self.rounds_run < self.config.max_rounds:
            if resumed is not None:
                rnd, resumed = resumed, None
            elif await self._wait_for_peers():
                rnd = self._open_round()
            else:  # values posted over the seed's HTTP API, and too few peers for a round
                self._legacy_epoch()
                self.rounds_run += 1
                await trio.sleep(self.config.round_pause)
                continue
            self.open.round = rnd
            try:
                step = await self._drive(rnd)
                canonical_json(step.result)  # publishable: JSON, finite numbers
            except Exception as exc:  # a bug in round logic or in a user's workload (a raise,
                # a wrong length, a NaN) fails this round; it must not take the coordinator down
                log.exception("round %d failed: %s: %s", rnd.number, type(exc).__name__, exc)
                step = Outcome("failed", 0, {"error": f"{type(exc).__name__}: {exc}"[:500]})
            if self.open.withdrawn:  # participants that said they could not go on
                step.result.setdefault("withdrawn", len(self.open.withdrawn))
            self.publisher.publish(rnd, step, self.open.refusals, self.open.refusals_uncounted)
            benched = self.attendance.record(rnd.number, self.open.asked,
                                             self.open.answered | rnd.refused_senders())
            if benched:
                log.info("round %d: %d participants sent nothing and sit out the next "
                         "rounds: %s", rnd.number, len(benched), ", ".join(benched[:8]) +
                         (" ..." if len(benched) > 8 else ""))
            self.open.round = None
            self.rounds_run += 1
            gcpace.settle()  # between rounds (peer.gcpace: full collections walk less)
            await trio.sleep(self.config.round_pause)
        log.info("ran %d rounds; stopping%s", self.rounds_run,
                 f" in {self.config.linger:g} s" if self.config.linger else "")
        await trio.sleep(self.config.linger)  # HTTP still answers (the final model, rounds)
        await stop()

    async def _drive(self, rnd: RoundLogic) -> Outcome:
        """Run ``rnd``'s phases to its outcome: wait until ready, advance, then send the
        notice or do the work the step names. Each phase's duration goes to /metrics."""
        mode = getattr(self.open.mode, "name", "?")  # a label for /metrics, no branch on it
        opened = began = time.monotonic()
        phase = self.open.phase = "announce"
        while True:
            await self._until_ready(rnd)
            with self.meter.timed("advance", rnd.number):
                step = rnd.advance(time.time())
            now = time.monotonic()
            self.metrics.phase_seconds.labels(mode, phase).observe(now - began)
            began = now
            if isinstance(step, Outcome):
                self.metrics.round_seconds.labels(mode).observe(now - opened)
                return step
            if isinstance(step, Work):
                await self._do_work(rnd, step)
                self.metrics.phase_seconds.labels(mode, "work").observe(
                    time.monotonic() - began)
                began = time.monotonic()
            elif isinstance(step, Notice):
                self.outbox.notice(rnd.number, step, self.open.participants)
                phase = self.open.phase = step.phase

    async def _do_work(self, rnd: RoundLogic, work: Work) -> None:
        """Fetch the blobs ``work`` names (in parallel, hash-checked, from the peers it
        lists), then run its computation in a worker thread."""

        async def fetch(digest: bytes, sources: list[str]) -> None:
            with trio.move_on_after(self.config.phase_timeout):
                try:
                    rnd.deliver(digest, await self.node.fetch_blob(digest, sources,
                                                                   max_size=work.max_size))
                except StreamProtocolError as exc:
                    log.warning("round %d: blob %s not fetched: %s", rnd.number,
                                digest.hex()[:12], exc)

        async with trio.open_nursery() as nursery:
            for digest, sources in work.fetch.items():
                nursery.start_soon(fetch, digest, sources)
        if work.compute is not None:
            log.info("round %d: %s", rnd.number, work.what or "computing")
            await trio.to_thread.run_sync(work.compute)

    async def _until_ready(self, rnd: RoundLogic) -> None:
        """Wait until ``rnd`` can advance: its deadline passed, or no live peer it expects
        owes it a message. The whole check (O(N): live peers, who owes what) runs at a
        phase's start, after a wait that timed out or saw a change other than a message,
        when the deadline has come, and at least every FULL_CHECK_EVERY s (peers come and
        go); in between, each message only takes its sender off the set still owed, and
        the whole check runs when that set empties (at N=1,000, the whole check at each of
        a round's ~5,000 messages was O(N^2) and 6 % of the coordinator's CPU). Only the
        round's own ``ready`` decides; a stale set can delay that by FULL_CHECK_EVERY at
        most. A round that cannot name who owes it (``waiting_for``) gets the whole check
        at each wake."""
        owes = getattr(rnd, "waiting_for", None)  # a round that names who owes it what
        owed: set[str] = set()
        checked = float("-inf")
        look = True
        while True:
            now = time.time()
            if look or owes is None or not owed or now >= rnd.deadline or \
                    now - checked >= FULL_CHECK_EVERY:
                expected = self._expected()
                if rnd.ready(now, expected):
                    return
                if owes is not None:
                    owed, checked = owes() & expected, now
            senders, look = await self.open.wait_changed(
                min(FULL_CHECK_EVERY, max(0.0, rnd.deadline - time.time())))
            owed.difference_update(senders)

    def _expected(self) -> set[str]:
        """The live peers the open round waits for: its participants (a resumed round,
        whose participants were not stored, waits for every live peer)."""
        live = self.live_peers() - self.open.withdrawn
        return live & set(self.open.participants) if self.open.participants else live

    def _need(self) -> int:
        return max(self.config.min_peers, self.mode.min_participants)

    def _participants(self, number: int) -> list[str]:
        """Round ``number``'s participants: the live peers, less those sitting out for
        having been silent (:mod:`protocol.policy.attendance`), unless that leaves fewer
        than the round needs: then those whose bench ends first are asked again."""
        live = self.live_peers()
        benched = self.attendance.benched(number) & live
        chosen = live - benched
        short = self._need() - len(chosen)
        if short > 0:
            chosen |= set(sorted(benched, key=lambda p: (self.attendance.until[p], p))[:short])
        if benched - chosen:
            log.info("round %d: %d silent peers sit this one out", number,
                     len(benched - chosen))
        return sorted(chosen)

    async def _wait_for_peers(self) -> bool:
        """Wait until enough peers are live for a round (True), or until values posted
        over the seed's HTTP API have waited ``legacy_epoch`` seconds for them (False: an
        epoch of those values alone is due, as the seed's own server would count them)."""
        def need() -> int:  # read each time: the operator may change either while we wait
            return max(self._need(), self.config.start_peers if self.rounds_run == 0 else 0)

        last_log = 0.0
        legacy, posted_at = self.publisher.legacy, None
        while len(live := self.live_peers()) < need():
            if legacy is not None and legacy.pending(self.store.last_round() + 1):
                posted_at = time.monotonic() if posted_at is None else posted_at
                if time.monotonic() - posted_at >= self.config.legacy_epoch:
                    return False
            if time.time() - last_log > 10:
                log.info("waiting for peers: %d of %d connected and admitted", len(live),
                         need())
                last_log = time.time()
            await self.open.wait_changed(0.5)
        return True

    def _legacy_epoch(self) -> None:
        """An epoch of the values posted in the clear alone: no peer takes part, the
        result holds them labelled unprotected (:meth:`Legacy.settle`). Its announcement is
        signed and stored, not sent: there is nothing for a peer to do in it."""
        number = self.store.last_round() + 1
        prev = self.store.latest_published()
        announce = RoundAnnounce(
            round=number, workload=self.workload.name, deadline_ms=int(time.time() * 1000),
            min_peers=self.config.min_peers,
            prev_state_digest=bytes(prev["state_digest"]) if prev else b"", mode="legacy")
        wire = self.outbox.seal(ANNOUNCE, number, encode(announce))
        self.store.open_round(number, self.workload.name, time.time(), self.config.min_peers,
                              wire)
        log.info("round %d: an epoch of values posted over the legacy HTTP API alone "
                 "(fewer than %d peers connected)", number, self._need())
        self.publisher.publish_legacy(number)

    def _open_round(self) -> RoundLogic:
        number = self.store.last_round() + 1
        with self.meter.timed("open", number):
            now = time.time()
            prev = self.store.latest_published()
            prev_digest = bytes(prev["state_digest"]) if prev else b""
            participants = self._participants(number)
            opening = self.mode.open(Setup(number, self.workload, participants, prev_digest,
                                           now, self.settings, self.reputation))
            for note in opening.notes:
                log.info("round %d: %s", number, note)
            announce = RoundAnnounce(
                round=number, workload=self.workload.name,
                deadline_ms=int(opening.deadline * 1000), min_peers=self.config.min_peers,
                prev_state_digest=prev_digest, params=opening.params,
                workload_params=opening.workload_params or self.workload.round_params(number),
                mode=self.mode.name)
            wire = self.outbox.seal(ANNOUNCE, number, encode(announce))
            if self.store.get_meta("state_blob") is None and \
                    (blob := self.workload.state_blob()) is not None:  # the initial model:
                self.store.set_meta("state_blob", self.store.put_blob(blob))  # for auditors
            self.store.open_round(number, self.workload.name, opening.deadline,
                                  self.config.min_peers, wire)
            self.open.mode = self.mode
            self.open.participants = opening.participants or participants
            self.open.asked = participants if opening.asked is None else opening.asked
            self.open.reset()
            self.outbox.announce(number, wire)
        log.info("round %d open: %s (%s), %d participants", number, self.workload.name,
                 self.mode.name, len(participants))
        return opening.round

    def _resume_open_round(self) -> RoundLogic | None:
        rows = self.store.open_rounds()
        if not rows:
            return None
        row = rows[-1]
        number = row["round"]
        announce = decode(open_envelope(row["announce_wire"]).payload, RoundAnnounce)
        mode = self.mode if announce.mode == self.mode.name else None
        if mode is None or not mode.resumable:  # its server state is gone by design
            log.warning("round %d was a %s round cut by a restart; marking it failed", number,
                        announce.mode)
            self.publisher.publish_failed(number, f"coordinator restarted during a "
                                                  f"{announce.mode} round")
            return None
        rnd = mode.resume(number, self.workload, self.settings, time.time())
        stored = 0
        for m in [m for d in sorted(mode.domains) for m in self.store.messages(number, d)]:
            try:
                rnd.offer_message(m["sender"], m["domain"], m["payload"])
            except RejectedMessage as exc:
                log.warning("round %d: stored message from %s not taken again: %s", number,
                            m["sender"], exc)
                continue
            self.verifier.remember(number, public_key_from_peer_id(m["sender"]), m["nonce"])
            stored += 1
        self.open.mode, self.open.participants, self.open.asked = mode, [], []
        self.open.reset()
        log.info("resuming round %d after restart with %d stored messages", number, stored)
        self.outbox.gossip(TOPIC_ANNOUNCE, row["announce_wire"])
        return rnd
