"""Simulation: rounds of N = 1,000 and 10,000 peers, with the real round state machines.

What one machine cannot hold as processes, it can as objects. This drives the same
sans-IO classes the daemons run -- the coordinator's ``Mode.open`` and round logic
(``offer_message`` / ``ready`` / ``advance``), every peer's ``PeerRound`` (``start`` /
``on_notice``), the real envelopes (``seal`` with each peer's Ed25519 key, checked by
the coordinator's ``Verifier``) and the real crypto (SecAgg+ key agreement, Shamir
shares and masks; Pedersen commitments and range proofs) -- over a discrete-event
network instead of libp2p. Nothing of the protocol is modelled; only the transport is.

The link model (``--uplink``, ``--downlink``, ``--latency``, ``--coordinator-link``):
a peer has a 20 Mbit/s uplink and a 100 Mbit/s downlink, the coordinator 1 Gbit/s both
ways, 50 ms one way between any two. A message leaves when its sender's uplink is free,
takes size / rate on it and on the receiver's downlink, plus the latency. Every
message goes through the coordinator (as sessions do), each notice to each member.

CPU: every call into a state machine is timed (``time.thread_time``) and that time is
spent on the simulated clock of whoever made it: a peer's on its own (each peer is its
own machine), the coordinator's on its one event loop, so a coordinator that is slower
than its inflow delays the round. The coordinator column is its measured CPU per round:
signature checks, message intake, phase closes, the final sum; ``loop share`` is the
part spent on messages as they arrive (envelope checks, intake), the rest in phase
closes. ``cores`` is how many cores that work would need to stay off the round's
critical path (see :func:`bottlenecks`): today's coordinator has one, its event loop,
whatever the machine has.

Dropout (``--dropout 0.05,0.3``): that fraction of the members, chosen at random, each
vanish before one of the messages a member sends in the round, chosen uniformly (five in
a SecAgg+ or VSS round, two in a replicated one: commit and reveal), their connection
seen closed one latency later.

Modes:

- ``secagg``: SecAgg+ over a float32 vector of ``--vector`` entries, with
  ``SecAggConfig.default``'s graph for N: a degree-100 Harary graph beyond 101 members
  and the largest threshold that leaves a member short of shares with probability
  <= 1e-6 under 30 % random dropout;
- ``vss``: stats, range-proven inputs summed by a committee of 16 (a round draws at most
  300 dealers);
- ``replicated``: the incremental workload's replicated round (the seed's MNIST
  autoencoder, 898 KB of weights): ``S = min(N / 3, --max-segments)`` segments of 64
  training examples each (the embedded digits, repeated to fill them), 3 replicas each,
  quorum 2. Replicas train for real; as training is deterministic, a segment is trained
  once and each of its replicas is charged the measured CPU (their bytes are equal by
  construction, which is what the commit-reveal checks). The coordinator fetches every
  agreed segment's weights from one of its agreeing replicas, re-executes the segments
  without a quorum (dropouts), and averages S models;
- ``prompts``: one batch of prompt evaluations, as ``coordinator.evaluations`` runs it:
  ``--prompts`` prompts (default N), each to 2 evaluators (``evaluation.plan``), 8 to a
  signed task, outputs checked by ``evaluation.Verification``, a second attempt with one
  more evaluator for the undecided ones, the rest evaluated by the coordinator. An
  evaluator's LLM is the one thing modelled: ``--generation-s`` seconds of one core per
  prompt (SmolLM2-135M, 32 new tokens, about 1 s here); its output is the prompt (the
  echo backend), so honest evaluators agree. An evaluator that drops out is seen gone
  at a random moment before it would have answered, and its requests fail then.

Run: ``.venv/bin/python scripts/bench/simulate.py --peers 1000,10000``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import json
import logging
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from protocol import rounds  # noqa: E402
from protocol.learning import datasets  # noqa: E402
from protocol.learning.incremental import Incremental  # noqa: E402
from protocol.learning.registry import get_workload  # noqa: E402
from protocol.policy.replication import Reputation  # noqa: E402
from protocol.prompts import evaluation  # noqa: E402
from protocol.rounds.base import Leave, Notice, Outcome, PeerContext, Settings, Setup, Work  # noqa: E402
from protocol.rounds.replica import ReplicaPeerRound  # noqa: E402
from protocol.wire.envelope import RejectedMessage, Verifier, open_envelope, seal  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402
from protocol.wire.messages import (  # noqa: E402
    ANNOUNCE,
    NOTICE,
    NOTICE_INLINE_MAX,
    PERSONAL,
    BlobRef,
    PersonalNotice,
    PhaseNotice,
    RoundAnnounce,
    StatsContribution,
    decode,
    encode,
)

MODES = ("secagg", "vss", "replicated", "prompts")
STEPS = {"secagg": 5, "vss": 5, "replicated": 2}  # messages a member sends in a round
SEGMENT_SAMPLES = 64  # training examples per replicated segment
REPLICAS = 3
SEED_COPIES = 4  # coordinator.service.SEED_COPIES
log = logging.getLogger("simulate")


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the network --------------------------------------------------------------------------
@dataclass
class Link:
    up_bps: float
    down_bps: float
    up_free: float = 0.0
    down_free: float = 0.0
    cpu_free: float = 0.0  # this node's own clock: when its CPU is next free
    sent: int = 0
    received: int = 0


class Network:
    """Events on a heap; messages cross the sender's uplink, the latency, the receiver's
    downlink."""

    def __init__(self, latency: float):
        self.latency, self.now, self._heap, self._seq = latency, 0.0, [], 0

    def at(self, t: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def send(self, src: Link, dst: Link, size: int, t: float, fn, *args) -> None:
        start = max(t, src.up_free)
        src.up_free = start + size * 8 / src.up_bps
        first = start + self.latency
        dst.down_free = max(first, dst.down_free) + size * 8 / dst.down_bps
        src.sent += size
        dst.received += size
        self.at(max(src.up_free + self.latency, dst.down_free), fn, *args)

    def run(self) -> None:
        while self._heap:
            self.now, _, fn, args = heapq.heappop(self._heap)
            fn(*args)


def timed(fn, *args) -> tuple[Any, float]:
    t0 = time.thread_time()
    out = fn(*args)
    return out, time.thread_time() - t0


def on_coordinator(coord: Link, stats: RoundStats, t: float, fn, *args) -> Any:
    """Run ``fn`` on the coordinator's one clock: it starts when the coordinator is free
    (not before ``t``), and its measured CPU is the round's coordinator CPU."""
    start = max(t, coord.cpu_free)
    out, cpu = timed(fn, *args)
    stats.coord_cpu_s += cpu
    coord.cpu_free = start + cpu
    return out


# --- one round ----------------------------------------------------------------------------
@dataclass
class SimPeer:
    identity: Identity
    data: Any
    link: Link
    drop_at: int | None = None  # the step (0: before start) at which it vanishes
    steps: int = 0
    logic: Any = None
    cpu: float = 0.0


@dataclass
class RoundStats:
    n: int
    mode: str
    dropout: float
    status: str = "?"
    accepted: int = 0
    round_s: float = 0.0
    coord_cpu_s: float = 0.0
    coord_loop_s: float = 0.0  # signature checks and intake: what stays on the event loop
    coord_sent: int = 0
    coord_received: int = 0
    peer_sent_mean: float = 0.0
    peer_received_mean: float = 0.0
    peer_cpu_mean_s: float = 0.0
    peer_cpu_max_s: float = 0.0
    members: int = 0  # the round's cohort (a vss round draws 300, SecAgg+ 5,000)
    degree: int | None = None
    threshold: int | None = None
    agreement: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    setting: str = ""  # what this mode's round was (segments, prompts, ...)
    note: str = ""  # what else happened (disputes settled, ...)
    error: str | None = None


class TiledIncremental(Incremental):
    """The incremental workload over ``samples`` training examples: the embedded digits
    repeated (a round of S segments needs S * SEGMENT_SAMPLES of them)."""

    def __init__(self, samples: int, **options: Any):
        super().__init__(**options)
        self._samples, self._tiled = samples, None

    @property
    def dataset(self) -> datasets.Dataset:
        if self._tiled is None:
            ds = datasets.load(None)
            reps = -(-self._samples // len(ds.train_x))
            self._tiled = datasets.Dataset(
                ds.name + f"x{reps}", np.concatenate([ds.train_x] * reps)[:self._samples],
                np.concatenate([ds.train_y] * reps)[:self._samples], ds.test_x, ds.test_y)
        return self._tiled


def incremental_workload(n: int, args: argparse.Namespace) -> Incremental:
    segments = max(1, min(args.max_segments, n // REPLICAS))
    return TiledIncremental(segments * SEGMENT_SAMPLES, segments=segments, replicas=REPLICAS)


class Trained:
    """Replicas' training, done once per segment: training is deterministic (one thread,
    seeded), so every honest replica of a segment computes these very weights; each is
    charged the CPU the one real run took. After building a replica, ``extra`` is what
    to add to the CPU measured around it (the charge, less the training it really ran)."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[np.ndarray, float]] = {}
        self.extra = 0.0

    def claim(self, pr: ReplicaPeerRound, segment: int, train) -> np.ndarray:
        if segment in self._done:
            w, cpu = self._done[segment]
            self.extra += cpu
        else:
            t0 = time.thread_time()
            w = train()
            self._done[segment] = (w, time.thread_time() - t0)
        return w


class Once:
    """A deterministic function that every simulated peer calls on the same input, run
    once per input and timed; each later call is charged that time (``extra``, read after
    each peer step) instead of running again. Installed, for one simulation, in place of:

    - SecAgg+ clients' ``valid_signature``: each client checks ``agreement`` (about 0.7 N)
      signatures over the same survivor list, 0.7 N^2 checks a round (17.5 million at
      N = 5,000, about 18 minutes of this machine at 60 us each); keyed by signer,
      signature and the list's digest (the coordinator's own checks are untouched);
    - replicas' ``data_digest``: SHA-256 of every training image (200 MB at 1,000
      segments) over the one data set object the peers share; keyed by that object."""

    def __init__(self, fn, key) -> None:
        self.fn, self._key, self._seen = fn, key, {}
        self.extra = 0.0

    def __call__(self, *args):
        key = self._key(*args)
        if key in self._seen:
            out, cpu = self._seen[key]
            self.extra += cpu
            return out
        t0 = time.thread_time()
        out = self.fn(*args)
        self._seen[key] = (out, time.thread_time() - t0)
        return out


def _data_key(workload, shared, segments: int) -> tuple:
    return id(shared), segments


def _signature_key(peer: str, message: bytes, signature: bytes) -> tuple:
    return peer, signature, _digest_of(message)


@functools.lru_cache(maxsize=4)
def _digest_of(message: bytes) -> bytes:  # one survivor list, checked 0.7 N times a client
    return hashlib.sha256(message).digest()


def simulate(n: int, mode_name: str, dropout: float, args: argparse.Namespace) -> RoundStats:
    if mode_name in ("secagg", "replicated"):
        from protocol.crypto.secagg import client
        from protocol.rounds import replica
        module, name, key = (client, "valid_signature", _signature_key) \
            if mode_name == "secagg" else (replica, "data_digest", _data_key)
        memo = Once(getattr(module, name), key)
        setattr(module, name, memo)
        try:
            return simulate_round(n, mode_name, dropout, args, memo)
        finally:
            setattr(module, name, memo.fn)
    if mode_name == "prompts":
        return simulate_prompts(n, dropout, args)
    return simulate_round(n, mode_name, dropout, args, None)


def simulate_round(n: int, mode_name: str, dropout: float, args: argparse.Namespace,
                   memo: Once | None) -> RoundStats:
    stats = RoundStats(n=n, mode=mode_name, dropout=dropout)
    rng = random.Random(args.seed)
    if mode_name == "secagg":
        from secagg import register_bench_workload  # the bench-only vector workload
        register_bench_workload(args.vector)
        workload = get_workload("bench-vector")
    elif mode_name == "replicated":
        workload = incremental_workload(n, args)
        stats.setting = (f"S={workload.segments} r={workload.replicas} "
                         f"q={workload.quorum}")
    else:
        workload = get_workload("stats")
    mode = rounds.get(mode_name)
    coord_id = Identity(hashlib.sha256(b"sim-coordinator").digest())
    progress(f"N={n} {mode_name} dropout {dropout:.0%}: making {n} peers")
    peers: dict[str, SimPeer] = {}
    for k in range(n):
        ident = Identity(hashlib.sha256(f"sim/{args.seed}/{k}".encode()).digest())
        if mode_name == "vss":
            data = StatsContribution(height=150 + k % 50, weight=50 + k % 40)
        elif mode_name == "replicated":
            data = workload.dataset
        else:
            data = np.random.default_rng([args.seed, k]).uniform(-1, 1, args.vector).astype(
                np.float32)
        peers[ident.peer_id] = SimPeer(ident, data, Link(args.uplink * 1e6,
                                                         args.downlink * 1e6))
    dropped = rng.sample(sorted(peers), int(round(dropout * n)))
    for pid in dropped:
        peers[pid].drop_at = rng.randrange(STEPS[mode_name])
    coord = Link(args.coordinator_link * 1e6, args.coordinator_link * 1e6)
    net = Network(args.latency)
    settings = Settings(min_peers=2, phase_timeout=args.phase_timeout)
    setup = Setup(1, workload, sorted(peers), b"", 0.0, settings, Reputation())
    opening, cpu = timed(mode.open, setup)
    stats.coord_cpu_s += cpu
    rnd = opening.round
    params = getattr(rnd, "params", None)
    for attr in ("degree", "threshold", "agreement"):
        setattr(stats, attr, getattr(params, attr, None))
    announce = RoundAnnounce(round=1, workload=workload.name,
                             deadline_ms=int(opening.deadline * 1000), min_peers=2,
                             params=opening.params,
                             workload_params=opening.workload_params or workload.round_params(1),
                             mode=mode.name)
    announce = decode(encode(announce), RoundAnnounce)  # as a peer reads it: caps apply
    verifier = Verifier()
    domains = mode.domains
    members = opening.participants or sorted(peers)  # whom notices go to
    gone: set[str] = set()  # connections the coordinator saw close
    cant: dict[str, int] = {}  # peers that could not build their side of the round, by why
    phase_opened = {"start": 0.0}
    done = {"flag": False}
    coord_wire = seal(coord_id, ANNOUNCE, 1, encode(announce))

    def coord_work(t: float, fn, *a) -> Any:
        return on_coordinator(coord, stats, t, fn, *a)

    def live() -> set[str]:
        return set(members) - gone

    pending = {"at": None}

    def schedule_check(t: float) -> None:
        """The driver wakes on new messages, but one wake-up serves all that arrived
        while it was busy: checks closer than 10 ms apart are one."""
        if pending["at"] is not None and pending["at"] <= t + 0.01:
            return
        pending["at"] = t
        net.at(t, check_ready)

    def check_ready() -> None:
        pending["at"] = None
        if done["flag"]:
            return
        t = max(net.now, coord.cpu_free)
        if not rnd.ready(t, live()):
            return
        if fetching["left"]:
            return  # the round's Work is not done yet
        step = coord_work(t, rnd.advance, t)
        t = coord.cpu_free
        if isinstance(step, Work):
            work(step, t)
            return
        if isinstance(step, Outcome):
            done["flag"] = True
            stats.status, stats.accepted = step.status, step.accepted
            stats.round_s = coord.cpu_free
            stats.error = step.result.get("error")
            if "segments" in step.result:
                how = Counter(row["decided_by"] for row in step.result["segments"])
                stats.note = "segments decided by " + ", ".join(
                    f"{k}: {v}" for k, v in sorted(how.items()))
            return
        assert isinstance(step, Notice)
        phase_opened[step.phase] = t
        by_digest = len(step.body) > NOTICE_INLINE_MAX
        ref = BlobRef(digest=hashlib.sha256(step.body).digest(), size=len(step.body)) \
            if by_digest else None
        body = seal(coord_id, NOTICE, 1, encode(PhaseNotice(
            round=1, phase=step.phase, body=b"" if by_digest else step.body,
            personal=bool(step.personal), body_ref=ref)))
        fetch = []  # who fetches the body by digest (those that read it)
        for pid in members:
            personal = step.personal.get(pid)
            pw = None if personal is None else seal(coord_id, PERSONAL, 1, encode(
                PersonalNotice(round=1, phase=step.phase, recipient=pid, body=personal)))
            size = len(body) + (len(pw) if pw else 0)
            logic = peers[pid].logic
            if not by_digest:
                net.send(coord, peers[pid].link, size, t, peer_notice, pid, step.phase,
                         step.body, personal)
            elif logic is None or logic.needs_body(step.phase):
                net.send(coord, peers[pid].link, size, t, lambda: None)
                fetch.append(pid)
            else:  # a peer that does not read the body does not fetch it
                net.send(coord, peers[pid].link, size, t, peer_notice, pid, step.phase,
                         b"", personal)
        if by_digest:
            spread(step, fetch, t)
        net.at(rnd.deadline, check_ready)  # the phase's deadline
        schedule_check(coord.cpu_free)  # the driver asks at once (a phase may owe nothing)

    fetching = {"left": 0}

    def work(step: Work, t: float) -> None:
        """The driver's side of a Work step: each blob from the first of its holders still
        connected (sent over that peer's uplink), handed to the round; then the compute."""
        def arrived(digest: bytes, blob: bytes) -> None:
            coord_work(net.now, rnd.deliver, digest, blob)
            done_one()

        def done_one() -> None:
            fetching["left"] -= 1
            if not fetching["left"]:
                if step.compute is not None:
                    coord_work(net.now, step.compute)
                net.at(coord.cpu_free, check_ready)

        fetching["left"] = len(step.fetch) + 1
        for digest, holders in step.fetch.items():
            src = next((h for h in holders if h not in gone and peers[h].logic), None)
            blob = None if src is None else next(
                (b for b in peers[src].logic.blobs() if hashlib.sha256(b).digest() == digest),
                None)
            if blob is None:
                done_one()
            else:
                net.send(peers[src].link, coord, len(blob), t, arrived, digest, blob)
        net.at(t, done_one)

    def spread_blob(size: int, targets: list[str], t: float, got) -> None:
        """A blob by digest, as peer.blobs spreads it, idealised (no back-off): the
        coordinator serves SEED_COPIES, every target that has it serves two more."""
        waiting = [pid for pid in targets if pid not in gone]
        random.Random(t).shuffle(waiting)

        def serve(src: Link, copies: int, at: float) -> None:
            for _ in range(copies):
                if waiting:
                    pid = waiting.pop()
                    net.send(src, peers[pid].link, size, at, arrived, pid)

        def arrived(pid: str) -> None:
            serve(peers[pid].link, 2, net.now)
            got(pid)

        serve(coord, SEED_COPIES, t)

    def spread(step: Notice, targets: list[str], t: float) -> None:
        spread_blob(len(step.body), targets, t, lambda pid: peer_notice(
            pid, step.phase, step.body, step.personal.get(pid)))

    def deliver(pid: str, wire: bytes) -> None:
        def intake() -> None:
            try:
                env = verifier.verify(wire, domains=domains, min_round=1, max_round=1)
                rnd.offer_message(pid, env.domain, env.payload)
            except RejectedMessage:
                pass
        t0 = time.thread_time()
        coord_work(net.now, intake)
        stats.coord_loop_s += time.thread_time() - t0
        schedule_check(coord.cpu_free)

    def peer_send(pid: str, out: list[tuple[str, bytes]], t: float) -> None:
        p = peers[pid]
        for domain, payload in out:
            wire, cpu = timed(seal, p.identity, domain, 1, payload)
            p.cpu += cpu
            p.link.cpu_free = max(t, p.link.cpu_free) + cpu
            net.send(p.link, coord, len(wire), p.link.cpu_free, deliver, pid, wire)

    def vanish(pid: str) -> bool:
        p = peers[pid]
        if p.drop_at is not None and p.steps >= p.drop_at:
            if pid not in gone:
                net.at(net.now + net.latency, gone.add, pid)
                schedule_check(net.now + net.latency + 1e-6)
            return True
        p.steps += 1
        return False

    def peer_start(pid: str) -> None:
        p = peers[pid]
        if pid not in cohort or vanish(pid):  # not drawn this round: sits it out
            return
        _, cpu = timed(open_envelope, coord_wire)  # checks the coordinator's signature
        ctx = PeerContext(pid, workload, announce, p.data, blobs, p.identity.sign)
        try:
            t0 = time.thread_time()
            trained.extra = 0.0
            if memo is not None:
                memo.extra = 0.0
            p.logic = mode.peer_round(ctx) if mode_name != "replicated" else \
                ReplicaPeerRound(pid, workload, announce, p.data, blobs, claim=trained.claim)
            cpu += trained.extra + (memo.extra if memo is not None else 0.0)
            out = p.logic.start()
            cpu += time.thread_time() - t0
        except (Leave, RejectedMessage, ValueError) as exc:  # a peer that cannot take part
            cant[type(exc).__name__] = cant.get(type(exc).__name__, 0) + 1
            return
        p.cpu += cpu
        p.link.cpu_free = net.now + cpu
        peer_send(pid, out, p.link.cpu_free)

    def peer_notice(pid: str, phase: str, body: bytes, personal: bytes | None) -> None:
        p = peers[pid]
        if p.logic is None or phase not in p.logic.phases or vanish(pid):
            return
        try:
            t0 = time.thread_time()
            if p.logic.needs_personal(phase) and personal is None:
                raise Leave("no personal message")
            if memo is not None:
                memo.extra = 0.0
            out = p.logic.on_notice(phase, body, personal)
            cpu = time.thread_time() - t0 + (memo.extra if memo is not None else 0.0)
        except Leave:
            return
        p.cpu += cpu
        p.link.cpu_free = max(net.now, p.link.cpu_free) + cpu
        peer_send(pid, out, p.link.cpu_free)

    cohort = set(mode.participants(announce) or members)  # who takes part (a peer's check)
    stats.members = len(cohort)
    blobs, trained = {}, Trained()
    progress(f"N={n} {mode_name} dropout {dropout:.0%}: running the round")
    t_wall = time.perf_counter()
    if mode_name == "replicated":  # replicas fetch the published model by digest first
        model = workload.state_blob()
        blobs[hashlib.sha256(model).digest()] = model
        tasked = sorted({q for reps in rnd.params.assignment for q in reps})
        for pid in sorted(set(members) - set(tasked)):
            net.send(coord, peers[pid].link, len(coord_wire), 0.0, lambda: None)
        for pid in tasked:
            net.send(coord, peers[pid].link, len(coord_wire), 0.0, lambda: None)
        spread_blob(len(model), tasked, net.latency, peer_start)
    else:
        for pid in members:
            net.send(coord, peers[pid].link, len(coord_wire), 0.0, peer_start, pid)
    net.at(rnd.deadline, check_ready)
    net.run()
    if not done["flag"]:
        stats.status, stats.error = "stuck", "the round never finished"
    if cant:
        stats.error = f"{stats.error or ''} peers that could not take part: {cant}".strip()
    stats.coord_sent, stats.coord_received = coord.sent, coord.received
    stats.peer_sent_mean = statistics.fmean(p.link.sent for p in peers.values())
    stats.peer_received_mean = statistics.fmean(p.link.received for p in peers.values())
    cpus = [p.cpu for p in peers.values()]
    stats.peer_cpu_mean_s, stats.peer_cpu_max_s = statistics.fmean(cpus), max(cpus)
    order = sorted(phase_opened.items(), key=lambda kv: kv[1])
    ends = [t for _, t in order[1:]] + [stats.round_s]
    stats.phases = {name: end - t for (name, t), end in zip(order, ends, strict=True)}
    progress(f"N={n} {mode_name} dropout {dropout:.0%}: {stats.status}, {stats.accepted} "
             f"accepted, {stats.round_s:.1f} s simulated, coordinator CPU "
             f"{stats.coord_cpu_s:.1f} s ({time.perf_counter() - t_wall:.0f} s to simulate)")
    return stats


def simulate_prompts(n: int, dropout: float, args: argparse.Namespace) -> RoundStats:
    """One batch of prompt evaluations over N evaluators, as
    coordinator.evaluations.RemoteEvaluations runs it (see the module's docstring)."""
    from coordinator.evaluations import BATCH

    stats = RoundStats(n=n, mode="prompts", dropout=dropout)
    rng = random.Random(args.seed)
    count = args.prompts or n
    prompts = [f"Review {k}: is this positive or negative? Answer with one word." for k in
               range(count)]
    redundancy = 2
    stats.setting = f"P={count} r={redundancy} batch={BATCH} gen={args.generation_s:g}s"
    progress(f"N={n} prompts dropout {dropout:.0%}: making {n} evaluators")
    coord_id = Identity(hashlib.sha256(b"sim-coordinator").digest())
    peers: dict[str, SimPeer] = {}
    for k in range(n):
        ident = Identity(hashlib.sha256(f"sim/{args.seed}/{k}".encode()).digest())
        peers[ident.peer_id] = SimPeer(ident, None, Link(args.uplink * 1e6,
                                                         args.downlink * 1e6))
    dropped = set(rng.sample(sorted(peers), int(round(dropout * n))))
    coord = Link(args.coordinator_link * 1e6, args.coordinator_link * 1e6)
    net = Network(args.latency)
    ver = evaluation.Verification(redundancy=redundancy)
    gone: set[str] = set()  # evaluators whose connection was seen closed
    stats.members = n
    state = {"attempt": 0, "open": 0}
    batches: dict[int, list[str]] = {}  # batch number -> its prompts

    def coord_work(t: float, fn, *a) -> Any:
        return on_coordinator(coord, stats, t, fn, *a)

    def attempt() -> None:
        """One pass of RemoteEvaluations.evaluate_remotely's loop: plan the undecided
        prompts, send every batch at once, go on when all have answered or failed."""
        todo = ver.undecided(prompts)
        if state["attempt"] >= 3 or not todo:
            return finish()
        asked = {q: ver.asked(q) for q in todo}
        need = redundancy if state["attempt"] == 0 else 1
        capable = sorted(set(peers) - gone)  # the live ones, asked again each attempt
        work = coord_work(net.now, evaluation.plan, todo, capable, need, asked)
        state["attempt"] += 1
        if not work:
            return finish()
        for peer, items in work.items():
            for i in range(0, len(items), BATCH):
                send_task(peer, items[i:i + BATCH])

    def send_task(peer: str, items: list[str]) -> None:
        batch = len(batches) + 1
        batches[batch] = items
        state["open"] += 1

        def make() -> bytes:
            task = evaluation.EvalTask(batch=batch, model_digest="echo", gen_params="{}",
                                       prompts=items)
            return seal(coord_id, evaluation.EVAL_TASK, batch, encode(task))
        wire = coord_work(net.now, make)
        net.send(coord, peers[peer].link, len(wire), coord.cpu_free, evaluate, peer, wire)

    def evaluate(peer: str, wire: bytes) -> None:
        """The daemon's eval handler: check the task, generate (modelled), sign."""
        p = peers[peer]

        def answer() -> tuple[int, bytes]:
            env = open_envelope(wire, domains={evaluation.EVAL_TASK}, max_wire=512 * 1024)
            task = decode(env.payload, evaluation.EvalTask)
            res = evaluation.EvalResult(batch=task.batch, outputs=list(task.prompts))
            return task.batch, seal(p.identity, evaluation.EVAL_RESULT, task.batch,
                                    encode(res))
        (batch, out), cpu = timed(answer)
        busy = cpu + args.generation_s * len(batches[batch])
        start = max(net.now, p.link.cpu_free)
        p.link.cpu_free = start + busy
        p.cpu += busy
        if peer in dropped:  # gone before it answers: its connection is seen closed
            net.at(start + rng.uniform(0, busy) + net.latency, closed, peer)
            return
        net.send(p.link, coord, len(out), p.link.cpu_free, result, peer, batch, out)

    def result(peer: str, batch: int, out: bytes) -> None:
        def intake() -> None:
            env = open_envelope(out, domains={evaluation.EVAL_RESULT},
                                max_wire=2 * 1024 * 1024)
            res = decode(env.payload, evaluation.EvalResult)
            if env.sender_id != peer or res.batch != batch or env.round != batch:
                raise RejectedMessage("not the peer asked, or another batch")
            for prompt, output in zip(batches[batch], res.outputs, strict=True):
                ver.record(peer, prompt, output)
        t0 = time.thread_time()
        coord_work(net.now, intake)
        stats.coord_loop_s += time.thread_time() - t0
        closed()

    def closed(peer: str | None = None) -> None:
        if peer is not None:
            gone.add(peer)
        state["open"] -= 1
        if not state["open"]:
            net.at(coord.cpu_free, attempt)

    def finish() -> None:
        left = ver.undecided(prompts)
        if left:  # the coordinator evaluates these itself (modelled like a peer's)
            coord.cpu_free = max(net.now, coord.cpu_free) + args.generation_s * len(left)
            for q in left:
                ver.settle(q, q)
        stats.round_s = max(net.now, coord.cpu_free)
        stats.accepted = len(ver.accepted) - len(left)
        stats.note = f"{state['attempt']} attempts, {len(batches)} batches"
        stats.status = "published" if len(ver.accepted) == count else "failed"
        if left:
            stats.error = f"{len(left)} prompts evaluated by the coordinator itself"

    progress(f"N={n} prompts dropout {dropout:.0%}: running {count} evaluations")
    t_wall = time.perf_counter()
    net.at(0.0, attempt)
    net.run()
    stats.coord_sent, stats.coord_received = coord.sent, coord.received
    stats.peer_sent_mean = statistics.fmean(p.link.sent for p in peers.values())
    stats.peer_received_mean = statistics.fmean(p.link.received for p in peers.values())
    cpus = [p.cpu for p in peers.values()]
    stats.peer_cpu_mean_s, stats.peer_cpu_max_s = statistics.fmean(cpus), max(cpus)
    progress(f"N={n} prompts dropout {dropout:.0%}: {stats.status}, {stats.accepted} "
             f"accepted by agreement, {stats.round_s:.1f} s simulated, coordinator CPU "
             f"{stats.coord_cpu_s:.1f} s ({time.perf_counter() - t_wall:.0f} s to simulate)")
    return stats


# --- report -----------------------------------------------------------------------------
def table(rows: list[RoundStats]) -> str:
    head = ["N", "mode", "dropout", "members", "setting (secagg: k/t/agree)", "status",
            "accepted",
            "round s",
            "coord CPU s", "loop share", "cores", "coord up MB", "coord down MB",
            "peer up KB", "peer down KB", "peer CPU s"]
    cells = [head]
    for r in rows:
        graph = r.setting or ("-" if r.degree is None else
                              f"{r.degree}/{r.threshold}/{r.agreement}")
        keeps = str(cores_needed(r))
        cells.append([str(r.n), r.mode, f"{r.dropout:.0%}", str(r.members), graph, r.status,
                      str(r.accepted),
                      f"{r.round_s:.1f}", f"{r.coord_cpu_s:.1f}",
                      f"{r.coord_loop_s / max(r.coord_cpu_s, 1e-9):.0%}", keeps,
                      f"{r.coord_sent / 1e6:.1f}", f"{r.coord_received / 1e6:.1f}",
                      f"{r.peer_sent_mean / 1e3:.1f}", f"{r.peer_received_mean / 1e3:.1f}",
                      f"{r.peer_cpu_mean_s:.2f}"])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        for text in (r.note, r.error):
            if text:
                lines.append(f"N={r.n} {r.mode} {r.dropout:.0%}: {text}")
    return "\n".join(lines)


def cores_needed(r: RoundStats) -> int:
    """Cores the coordinator's round work would need to stay off the critical path (see
    :func:`bottlenecks`)."""
    return max(1, int(np.ceil(r.coord_cpu_s / max(r.round_s - r.coord_cpu_s, 1e-9))))


def bottlenecks(rows: list[RoundStats], link_mbit: float) -> list[str]:
    """Whether the coordinator keeps up, row by row. Its measured CPU C sits on the
    round's critical path (the simulated coordinator does one thing at a time), so the
    round without it would take about R - C (the network's and the peers' time; less,
    where its work overlapped their waits). It keeps up while C <= R - C; if its round
    work were split k ways it would take ``k = ceil(C / (R - C))`` cores. Today's
    coordinator runs its round logic on one event loop of one CPython process: k must
    be 1, whatever cores the machine has (the pure-Python Shamir reconstruction of a
    SecAgg+ unmask would need worker processes to use more). Its link (bytes in and out
    over ``link_mbit``) is shown the same way. Cohorts bound C: a round takes at most
    5,000 SecAgg+ members or 300 VSS dealers whatever N is."""
    out = []
    for r in rows:
        if r.status != "published" or r.round_s <= 0:
            continue
        cores = cores_needed(r)
        link = (r.coord_sent + r.coord_received) * 8 / (link_mbit * 1e6)
        out.append(f"N={r.n} {r.mode} {r.dropout:.0%} ({r.members} members): coordinator "
                   f"CPU {r.coord_cpu_s:.1f} s of a {r.round_s:.1f} s round, "
                   f"{'keeps up on one core' if cores == 1 else f'needs {cores} cores'}; "
                   f"link busy {link / r.round_s:.0%}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="1000,10000", help="comma-separated N (%(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="of: " + ", ".join(MODES))
    p.add_argument("--dropout", default="0.05,0.3", help="fractions (%(default)s)")
    p.add_argument("--vector", type=int, default=1000, help="secagg: M (default 1000)")
    p.add_argument("--uplink", type=float, default=20.0, help="peer Mbit/s up (20)")
    p.add_argument("--downlink", type=float, default=100.0, help="peer Mbit/s down (100)")
    p.add_argument("--coordinator-link", type=float, default=1000.0,
                   help="coordinator Mbit/s each way (1000)")
    p.add_argument("--latency", type=float, default=0.05, help="one way, s (0.05)")
    p.add_argument("--phase-timeout", type=float, default=60.0,
                   help="the coordinator's phase timeout, s (60)")
    p.add_argument("--max-segments", type=int, default=1000,
                   help="replicated: at most this many segments (N/3 below it; default "
                        "1000: the coordinator averages S models of 898 KB)")
    p.add_argument("--prompts", type=int, default=0,
                   help="prompts: evaluations in the batch (default N)")
    p.add_argument("--generation-s", type=float, default=1.0,
                   help="prompts: one core's seconds to generate one output (1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write {'rows': [...]} here")
    args = p.parse_args(argv)
    args.peer_list = [int(v) for v in args.peers.split(",") if v]
    args.mode_list = [m for m in args.modes.split(",") if m]
    args.dropout_list = [float(v) for v in args.dropout.split(",") if v]
    if bad := set(args.mode_list) - set(MODES):
        p.error(f"unknown modes {sorted(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows: list[RoundStats] = []
    for n in args.peer_list:
        for mode in args.mode_list:
            for d in args.dropout_list:
                rows.append(simulate(n, mode, d, args))
                if args.json:
                    args.json.write_text(json.dumps({"rows": [r.__dict__ for r in rows]},
                                                    indent=1))
    print(table(rows))
    print()
    print("Where the coordinator becomes the bottleneck (one core for its round logic):")
    for line in bottlenecks(rows, args.coordinator_link):
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
