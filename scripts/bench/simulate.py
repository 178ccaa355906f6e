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
signature checks, message intake, phase closes, the final sum. "Keeps up" below asks
whether that CPU fits the round's duration on one core of this machine; a 4-core
coordinator runs one event loop (the network, intake, phase logic) plus worker threads
for the bulk arithmetic, so its limit is set by the per-message share that must stay on
the loop (shown as ``loop share``).

Dropout (``--dropout 0.05,0.3``): that fraction of the members, chosen at random, each
vanish at a random step of the round (before their first message, or after a random
phase), their connection seen closed one latency later.

Modes: ``secagg`` (SecAgg+ over a float32 vector of ``--vector`` entries, with
``SecAggConfig.default``'s graph for N: a degree-100 Harary graph beyond 101 members and
the largest threshold that leaves a member short of shares with probability <= 1e-6
under 30 % random dropout) and ``vss`` (stats, range-proven inputs summed by a committee
of 16). Run: ``.venv/bin/python scripts/bench/simulate.py --peers 1000,10000``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from protocol import rounds  # noqa: E402
from protocol.learning.registry import get_workload  # noqa: E402
from protocol.policy.replication import Reputation  # noqa: E402
from protocol.rounds.base import Leave, Notice, Outcome, PeerContext, Settings, Setup, Work  # noqa: E402
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
    encode,
)

MODES = ("secagg", "vss")
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
    error: str | None = None


def simulate(n: int, mode_name: str, dropout: float, args: argparse.Namespace) -> RoundStats:
    stats = RoundStats(n=n, mode=mode_name, dropout=dropout)
    rng = random.Random(args.seed)
    workload_name = "stats" if mode_name == "vss" else "bench-vector"
    if mode_name == "secagg":
        from secagg import register_bench_workload  # the bench-only vector workload
        register_bench_workload(args.vector)
    workload = get_workload(workload_name)
    mode = rounds.get(mode_name)
    coord_id = Identity(hashlib.sha256(b"sim-coordinator").digest())
    progress(f"N={n} {mode_name} dropout {dropout:.0%}: making {n} peers")
    peers: dict[str, SimPeer] = {}
    for k in range(n):
        ident = Identity(hashlib.sha256(f"sim/{args.seed}/{k}".encode()).digest())
        if mode_name == "vss":
            data = StatsContribution(height=150 + k % 50, weight=50 + k % 40)
        else:
            data = np.random.default_rng([args.seed, k]).uniform(-1, 1, args.vector).astype(
                np.float32)
        peers[ident.peer_id] = SimPeer(ident, data, Link(args.uplink * 1e6,
                                                         args.downlink * 1e6))
    dropped = rng.sample(sorted(peers), int(round(dropout * n)))
    for pid in dropped:
        peers[pid].drop_at = rng.randint(0, 5)
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
    verifier = Verifier()
    domains = mode.domains
    members = opening.participants or sorted(peers)  # whom notices go to
    gone: set[str] = set()  # connections the coordinator saw close
    cant: dict[str, int] = {}  # peers that could not build their side of the round, by why
    phase_opened = {"start": 0.0}
    done = {"flag": False}
    coord_wire = seal(coord_id, ANNOUNCE, 1, encode(announce))

    def coord_work(t: float, fn, *a) -> Any:
        start = max(t, coord.cpu_free)
        out, cpu = timed(fn, *a)
        stats.coord_cpu_s += cpu
        coord.cpu_free = start + cpu
        return out

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
        step = coord_work(t, rnd.advance, t)
        t = coord.cpu_free
        if isinstance(step, Work):  # blobs are not used by these modes
            if step.compute is not None:
                coord_work(t, step.compute)
            net.at(coord.cpu_free, check_ready)
            return
        if isinstance(step, Outcome):
            done["flag"] = True
            stats.status, stats.accepted = step.status, step.accepted
            stats.round_s = coord.cpu_free
            stats.error = step.result.get("error")
            return
        assert isinstance(step, Notice)
        phase_opened[step.phase] = t
        by_digest = len(step.body) > NOTICE_INLINE_MAX
        ref = BlobRef(digest=hashlib.sha256(step.body).digest(), size=len(step.body)) \
            if by_digest else None
        body = seal(coord_id, NOTICE, 1, encode(PhaseNotice(
            round=1, phase=step.phase, body=b"" if by_digest else step.body,
            personal=bool(step.personal), body_ref=ref)))
        for pid in members:
            personal = step.personal.get(pid)
            pw = None if personal is None else seal(coord_id, PERSONAL, 1, encode(
                PersonalNotice(round=1, phase=step.phase, recipient=pid, body=personal)))
            size = len(body) + (len(pw) if pw else 0)
            if by_digest:
                net.send(coord, peers[pid].link, size, t, lambda: None)
            else:
                net.send(coord, peers[pid].link, size, t, peer_notice, pid, step.phase,
                         step.body, personal)
        if by_digest:
            spread(step, t)
        net.at(rnd.deadline, check_ready)  # the phase's deadline
        schedule_check(coord.cpu_free)  # the driver asks at once (a phase may owe nothing)

    def spread(step: Notice, t: float) -> None:
        """A body by digest, as peer.blobs spreads it, idealised (no back-off): the
        coordinator serves SEED_COPIES, every member that has it serves two more."""
        waiting = [pid for pid in members if pid not in gone]
        random.Random(t).shuffle(waiting)

        def serve(src: Link, copies: int, at: float) -> None:
            for _ in range(copies):
                if waiting:
                    pid = waiting.pop()
                    net.send(src, peers[pid].link, len(step.body), at, got, pid)

        def got(pid: str) -> None:
            serve(peers[pid].link, 2, net.now)
            peer_notice(pid, step.phase, step.body, step.personal.get(pid))

        serve(coord, SEED_COPIES, t)

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
        ctx = PeerContext(pid, workload, announce, p.data, {}, p.identity.sign)
        try:
            t0 = time.thread_time()
            p.logic = mode.peer_round(ctx)
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
            out = p.logic.on_notice(phase, body, personal)
            cpu = time.thread_time() - t0
        except Leave:
            return
        p.cpu += cpu
        p.link.cpu_free = max(net.now, p.link.cpu_free) + cpu
        peer_send(pid, out, p.link.cpu_free)

    cohort = set(mode.participants(announce) or members)  # who takes part (a peer's check)
    stats.members = len(cohort)
    progress(f"N={n} {mode_name} dropout {dropout:.0%}: running the round")
    t_wall = time.perf_counter()
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


# --- report -----------------------------------------------------------------------------
def table(rows: list[RoundStats]) -> str:
    head = ["N", "mode", "dropout", "members", "graph k/t/agree", "status", "accepted",
            "round s",
            "coord CPU s", "loop share", "keeps up", "coord up MB", "coord down MB",
            "peer up KB", "peer down KB", "peer CPU s"]
    cells = [head]
    for r in rows:
        graph = "-" if r.degree is None else f"{r.degree}/{r.threshold}/{r.agreement}"
        keeps = "yes" if r.coord_cpu_s <= r.round_s else "no"
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
        if r.error:
            lines.append(f"N={r.n} {r.mode} {r.dropout:.0%}: {r.error}")
    return "\n".join(lines)


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
