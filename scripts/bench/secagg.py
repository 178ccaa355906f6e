"""Benchmark: the cost of secure aggregation (SecAgg+), and Flower's SecAgg+ beside it.

What it measures, for each N in ``--clients`` and each vector length M in ``--sizes``
(float32 vectors, values uniform in [-1, 1], clip 1.0, a 32-bit ring):

1. Protocol cost in one process, no network (``protocol.crypto.secagg``'s sans-IO client and
   server driven directly, one thread). Per client the CPU time (``time.thread_time``) of
   ``advertise``, ``share_keys``, ``masked_input`` and ``unmask``; the coordinator's CPU
   time over every ``receive_*`` and ``close_*`` call; the bytes each client uploads (the
   msgpack encoding of AdvertiseKeys, ShareBundle, MaskedInput and UnmaskShares, and the
   same inside their signed envelopes) against the plain float32 vector (4 M bytes). Two
   graph settings: ``Config.default`` (the complete graph up to 101 clients, as the network
   rounds use) and a Flower-like sparse graph (degree 2, threshold 2: Flower's
   ``num_shares=3`` counts the client itself). The decoded sum is checked against the
   clipped float sum within ``FixedPoint.error_bound(n)``. Each setting runs
   ``--repeats`` fresh rounds (Flower's sans-IO round too, a fresh process each) and
   reports the median: this machine's speed drifts by tens of percent within minutes.
2. Secure rounds over real libp2p: a :class:`coordinator.service.Coordinator`
   (``secure=True``) in this process and N :class:`peer.daemon.PeerDaemon` peers on
   127.0.0.1, running a bench-only vector workload (``bench-vector``), on both graphs of
   table 1 (``--network-settings``): Config.default's and Flower's. By default the peers
   run in ``--peer-processes 2`` processes of their own (one trio loop each, N/2 peers
   apiece), as Flower's simulation runs its clients in Ray worker processes beside its
   driver: coordinator and peers then share this machine's cores instead of one event
   loop. ``--peer-processes 0`` puts every peer into the coordinator's process and loop.
   A round's wall time runs from the coordinator's announcement to its published result
   (its ``sent_at`` stamps), after ``--warmup-rounds`` warm-up rounds. The CPU column is
   the CPU time per round of all the benchmark's processes together (coordinator, peers,
   libp2p), not the coordinator's: the coordinator's own CPU is table 1's.
3. Flower 1.42 (``flwr[simulation]==1.42.*``) SecAggPlusWorkflow + secaggplus_mod on the
   same N and M with ``num_shares=3, reconstruction_threshold=2`` (Flower's own example):
   sans-IO (its workflow against an in-process Grid; same CPU and upload accounting as 1)
   and in its Ray simulation (warm-round wall time). Flower runs in whatever Python has
   ``flwr`` (``--flower-python``, this one, or a venv made by ``--setup-flower``), driven as
   a subprocess of ``scripts/bench/_flower_secagg.py``; when none has it, the Flower columns
   say so and are skipped. Ratios are ours / Flower's.

Run from the repository root: ``.venv/bin/python scripts/bench/secagg.py``.
Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import trio  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from coordinator.meter import CpuMeter  # noqa: E402
from coordinator.service import Coordinator, CoordinatorConfig  # noqa: E402
from peer.daemon import PeerDaemon  # noqa: E402
from peer.gossip import DEFAULT_GOSSIP  # noqa: E402
from protocol.crypto import secagg  # noqa: E402
from protocol.crypto.fixedpoint import FixedPoint  # noqa: E402
from protocol.learning.registry import get_workload, register_workload  # noqa: E402
from protocol.learning.workloads import Workload  # noqa: E402
from protocol.policy.admission import AdmissionConfig  # noqa: E402
from protocol.rounds import secure as secure_round  # noqa: E402
from protocol.wire.envelope import seal  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402
from protocol.wire.messages import ANNOUNCE, NOTICE, RESULT, PlainVector, encode  # noqa: E402

CLIP = 1.0
MAX_SUMMANDS = 10_000  # what secure_round.make_params uses for network rounds
FLOWER_SPEC = "flwr[simulation]==1.42.*"
FLOWER_HELPER = Path(__file__).resolve().with_name("_flower_secagg.py")
FLOWER_MARKER = "FLOWER_BENCH_JSON "
DEFAULT_FLOWER_VENV = Path(tempfile.gettempdir()) / "flwr-venv"
SETTINGS = {"default": "default", "sparse": "Flower-like"}  # Config.default; degree 2, thr. 2
PHASE_NAMES = ("keys", "shares", "masked", "consistency", "unmask")
GOAL_UPLOAD = 1.1  # x the plain float32 vector
GOAL_SERVER = 0.5  # x Flower's server CPU
GOAL_CLIENT = 1.0  # x Flower's client CPU
GOAL_WALL = 0.5  # x Flower's round wall time


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def bench_identity(seed: int, index: int) -> Identity:
    """Peer ``index``'s key, derived from the seed: the coordinator's process knows every
    peer's id (and so its input) also when the peers run in other processes."""
    return Identity(hashlib.sha256(f"secagg-bench/{seed}/{index}".encode()).digest())


def input_vector(index: int, m: int, seed: int) -> np.ndarray:
    """Client ``index``'s float32 vector, uniform in [-1, 1]: the same as Flower's side
    (``_flower_secagg.client_vector``), so both sum the same inputs."""
    return np.random.default_rng([seed, index]).uniform(-1.0, 1.0, m).astype(np.float32)


# --- 1. protocol cost, sans-IO -------------------------------------------------------------
@dataclass
class ProtocolResult:
    setting: str
    clients: int
    vector_len: int
    degree: int
    threshold: int
    client_cpu_mean_s: float
    client_cpu_max_s: float
    client_phase_cpu_mean_s: dict[str, float]
    server_cpu_s: float
    server_close_unmask_s: float
    upload_bytes_mean: float
    upload_parts_mean: dict[str, float]
    sealed_upload_bytes_mean: float
    plain_bytes: int
    max_abs_error: float
    error_bound: float
    correct: bool
    wall_s: float
    client_cpu_runs_s: list[float] = field(default_factory=list)  # each repeat's mean
    server_cpu_runs_s: list[float] = field(default_factory=list)

    @property
    def upload_ratio(self) -> float:
        return self.upload_bytes_mean / self.plain_bytes

    @property
    def sealed_ratio(self) -> float:
        return self.sealed_upload_bytes_mean / self.plain_bytes


def protocol_cost(n: int, m: int, setting: str, seed: int) -> ProtocolResult:
    ids = [Identity.generate() for _ in range(n)]  # real peer ids: they size the messages
    by_peer = {i.peer_id: i for i in ids}
    people = sorted(by_peer)
    xs = {p: input_vector(k, m, seed) for k, p in enumerate(people)}
    enc = FixedPoint(CLIP, max(MAX_SUMMANDS, n), 32)
    graph_seed = os.urandom(32)
    if setting == "default":
        cfg = secagg.SecAggConfig.default(1, people, graph_seed, m, enc)
    else:
        degree = 2 if n > 3 else n - 1
        cfg = secagg.SecAggConfig(1, tuple(people), degree, min(2, degree), graph_seed, m, enc)
    cpu = {p: dict.fromkeys(PHASE_NAMES, 0.0) for p in people}
    sent = {p: dict.fromkeys(PHASE_NAMES, 0) for p in people}
    sealed = dict.fromkeys(people, 0)
    server_cpu = [0.0]

    def client(p: str, phase: str, fn, *args):
        t0 = time.thread_time()
        msg = fn(*args)
        cpu[p][phase] += time.thread_time() - t0
        payload = encode(msg)  # sizes are measured outside the timings
        sent[p][phase] += len(payload)
        sealed[p] += len(seal(by_peer[p], secure_round.DOMAIN[phase], 1, payload))
        return msg

    def server(fn, *args):
        t0 = time.thread_time()
        out = fn(*args)
        server_cpu[0] += time.thread_time() - t0
        return out

    w0 = time.perf_counter()
    srv = secagg.SecAggServer(cfg)
    clients = {}
    for p in people:
        t0 = time.thread_time()
        clients[p] = secagg.SecAggClient(p, cfg, by_peer[p].sign)  # key generation here
        cpu[p]["keys"] += time.thread_time() - t0
    for p in people:
        server(srv.receive_keys, p, client(p, "keys", clients[p].advertise))
    directory = server(srv.close_keys)
    for p in people:
        server(srv.receive_shares, p, client(p, "shares", clients[p].share_keys, directory))
    inboxes = server(srv.close_shares)
    for p in people:
        server(srv.receive_masked, p,
               client(p, "masked", clients[p].masked_input, inboxes[p], xs[p]))
    survivors = server(srv.close_masked)
    for p in people:
        server(srv.receive_consistency, p,
               client(p, "consistency", clients[p].confirm, survivors))
    request = server(srv.close_consistency)
    for p in people:
        server(srv.receive_unmask, p, client(p, "unmask", clients[p].unmask, request))
    t0 = time.thread_time()
    outcome = server(srv.close_unmask)
    close_unmask = time.thread_time() - t0
    wall = time.perf_counter() - w0

    plain = np.sum([np.clip(x.astype(np.float64), -CLIP, CLIP) for x in xs.values()], axis=0)
    err = float(np.max(np.abs(outcome.total - plain)))
    totals = [sum(c.values()) for c in cpu.values()]
    uploads = [sum(s.values()) for s in sent.values()]
    return ProtocolResult(
        setting=setting, clients=n, vector_len=m, degree=cfg.degree, threshold=cfg.threshold,
        client_cpu_mean_s=statistics.fmean(totals), client_cpu_max_s=max(totals),
        client_phase_cpu_mean_s={ph: statistics.fmean(c[ph] for c in cpu.values())
                                 for ph in PHASE_NAMES},
        server_cpu_s=server_cpu[0], server_close_unmask_s=close_unmask,
        upload_bytes_mean=statistics.fmean(uploads),
        upload_parts_mean={ph: statistics.fmean(s[ph] for s in sent.values())
                           for ph in PHASE_NAMES},
        sealed_upload_bytes_mean=statistics.fmean(sealed.values()), plain_bytes=4 * m,
        max_abs_error=err, error_bound=enc.error_bound(n),
        correct=len(outcome.survivors) == n and err <= enc.error_bound(n), wall_s=wall)


def repeated_cost(n: int, m: int, setting: str, seed: int, repeats: int) -> ProtocolResult:
    """``repeats`` fresh rounds; the one with the median client CPU is reported, with the
    coordinator's CPU as the median over all of them (this machine's speed drifts by tens
    of percent from minute to minute; Flower's sans-IO figures are taken the same way)."""
    runs = [protocol_cost(n, m, setting, seed) for _ in range(max(1, repeats))]
    runs.sort(key=lambda r: r.client_cpu_mean_s)
    pick = runs[(len(runs) - 1) // 2]
    return dataclasses.replace(
        pick, server_cpu_s=statistics.median(r.server_cpu_s for r in runs),
        server_close_unmask_s=statistics.median(r.server_close_unmask_s for r in runs),
        client_cpu_runs_s=[r.client_cpu_mean_s for r in runs],
        server_cpu_runs_s=sorted(r.server_cpu_s for r in runs))


# --- 2. secure rounds over libp2p ------------------------------------------------------------
class BenchVector(Workload):
    """Bench-only workload: each peer's ``data`` is its float vector, summed as is."""

    name = "bench-vector"
    contribution_schema = PlainVector
    clip = CLIP
    ring_bits = 32
    size: ClassVar[int] = 100_000

    def vector_len(self) -> int:
        return self.size

    def bound(self, vector: np.ndarray) -> np.ndarray:
        return np.clip(vector, -self.clip, self.clip)

    def sensitivity(self) -> float:
        return 2 * self.clip * math.sqrt(self.size)

    # ``blobs`` is optional so the class fits the Workload interface before and after peers
    # started passing fetched blobs (model weights) to vector()/contribute()
    def vector(self, announce, data: Any, blobs: Any = None) -> np.ndarray:
        return np.asarray(data, dtype=np.float64)

    def contribute(self, announce, data: Any, blobs: Any = None) -> PlainVector:
        return PlainVector(vector=np.asarray(data, dtype="<f4").tobytes())

    def aggregate(self, contributions) -> dict[str, Any]:
        vecs = [np.frombuffer(c.vector, dtype="<f4") for c in contributions.values()]
        return self.finalize(np.sum(vecs, axis=0, dtype=np.float64), len(vecs))

    def finalize(self, total: np.ndarray, n: int) -> dict[str, Any]:
        return {"count": n, "norm": float(np.linalg.norm(total)),
                "head": [float(v) for v in np.asarray(total)[:4]]}


def register_bench_workload(m: int) -> type[BenchVector]:
    cls = type("BenchVector", (BenchVector,), {"size": m})
    register_workload(BenchVector.name, cls)
    return cls


@dataclass
class RoundTiming:
    round: int
    status: str
    accepted: int
    wall_s: float | None
    phases_s: dict[str, float]
    process_cpu_s: float | None  # whole process (coordinator + peers), approximate
    coordinator_process_cpu_s: float | None  # the coordinator's process alone (libp2p too)
    coordinator_cpu_s: float | None  # coordinator.meter.CpuMeter: its own work, by round
    norm: float | None
    norm_ok: bool | None
    error: str | None
    # per coordinator broadcast (announce, notices, result): coordinator send -> the last
    # peer's receipt (gossip or pull), in seconds; a phase cannot end before its notice lands
    delivery_max_s: dict[str, float] = field(default_factory=dict)
    delivery_median_s: dict[str, float] = field(default_factory=dict)


@dataclass
class NetworkResult:
    peers: int
    vector_len: int
    warmup_rounds: int
    graph: str = "Config.default"
    peer_processes: int = 0  # processes the peers ran in (0: the coordinator's)
    start_s: float = 0.0
    total_s: float = 0.0
    rounds: list[RoundTiming] = field(default_factory=list)
    error: str | None = None

    @property
    def layout(self) -> str:
        k = self.peer_processes
        return f"peers in {k} process{'es' if k > 1 else ''}" if k else "one process"

    def measured(self) -> list[RoundTiming]:
        return [r for r in self.rounds[self.warmup_rounds:] if r.wall_s is not None]

    @property
    def wall_mean_s(self) -> float | None:
        walls = [r.wall_s for r in self.measured() if r.status == "published"]
        return statistics.fmean(walls) if walls else None


async def network_rounds(n: int, m: int, args: argparse.Namespace, degree: int | None = None,
                         threshold: int | None = None) -> NetworkResult:
    """Secure rounds of N peers over libp2p; ``degree``/``threshold`` None: Config.default."""
    register_bench_workload(m)
    res = NetworkResult(peers=n, vector_len=m, warmup_rounds=args.warmup_rounds,
                        peer_processes=args.peer_processes)
    if degree is not None:
        res.graph = f"degree {degree}, t={threshold}"
    total_rounds = args.warmup_rounds + args.rounds
    data_of = {bench_identity(args.seed, k).peer_id: input_vector(k, m, args.seed)
               for k in range(n)}  # peer id -> its input
    cpu_samples: list[tuple[float, float, float]] = []
    received: dict[str, dict[tuple[str, int], float]] = {}  # peer -> (key, round) -> time
    peers: list[PeerDaemon] = []  # in this process (--peer-processes 0)
    workers: list[tuple[trio.Process, Path]] = []

    async def sample_cpu() -> None:
        while True:
            own = time.process_time()
            cpu_samples.append((time.monotonic(), own + sum(
                _cpu_of(proc.pid) for proc, _ in workers), own))
            await trio.sleep(0.1)  # reading /proc costs the coordinator's process too

    def cpu_at(t: float, column: int = 1) -> float | None:
        best = min(cpu_samples, key=lambda s: abs(s[0] - t), default=None)
        return best[column] if best is not None else None

    t_begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="secagg-bench-") as tmp:
        gossip = DEFAULT_GOSSIP if args.gossip_heartbeat is None else dataclasses.replace(
            DEFAULT_GOSSIP, heartbeat_interval=args.gossip_heartbeat)
        cfg = CoordinatorConfig(
            data_dir=Path(tmp), http_host="127.0.0.1", port=0, listen=["/ip4/127.0.0.1/tcp/0"],
            # the first round waits for all N; a round with dropouts still publishes (and
            # shows as accepted < N) instead of failing its quorum
            min_peers=2, start_peers=n, round_pause=0.2, max_rounds=total_rounds,
            workload=BenchVector.name, secure=True, phase_timeout=args.phase_timeout,
            gossip=gossip, secagg_degree=degree, secagg_threshold=threshold,
            secagg_agreement=threshold,  # an explicit graph: as many signatures as shares
            # every peer enrols from 127.0.0.1: above the default per-address burst (64) the
            # admission policy would let one more in a minute
            admission=AdmissionConfig(per_source_burst=max(64, n + 8)),
            round_log=not args.no_round_log)
        meter = CpuMeter()  # the coordinator's own work, announce -> result
        coord = Coordinator(cfg, meter=meter)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_cpu)
                await nursery.start(coord.run)
                boot = coord.node.addrs[0]
                workload = get_workload(BenchVector.name)
                where = f"{args.peer_processes} processes" if args.peer_processes \
                    else "this process"
                progress(f"network N={n} M={m}: coordinator up; starting {n} peers in {where}")

                async def start_peer(k: int) -> None:
                    daemon = PeerDaemon(bench_identity(args.seed, k), workload,
                                        input_vector(k, m, args.seed), bootstrap=[boot],
                                        gossip=gossip)
                    await nursery.start(daemon.run)
                    peers.append(daemon)

                if args.peer_processes:
                    for first, count in _slices(n, args.peer_processes):
                        out = Path(tmp) / f"peers-{first}.json"
                        argv = [sys.executable, __file__, "--peer-worker", boot,
                                "--first", str(first), "--count", str(count), "--sizes", str(m),
                                "--seed", str(args.seed), "--json", str(out)]
                        if args.gossip_heartbeat is not None:
                            argv += ["--gossip-heartbeat", str(args.gossip_heartbeat)]
                        workers.append((await trio.lowlevel.open_process(argv), out))
                    while len(coord.live_peers()) < n:
                        await trio.sleep(0.1)
                else:
                    async with trio.open_nursery() as starter:
                        for k in range(n):
                            starter.start_soon(start_peer, k)
                res.start_s = time.perf_counter() - t_begin
                progress(f"network N={n}: {n} peers started in {res.start_s:.1f} s; "
                         f"running {args.warmup_rounds} warm-up + {args.rounds} rounds")
                seen = 0
                with trio.move_on_after(args.network_timeout) as scope:
                    while coord.rounds_run < total_rounds:
                        if coord.rounds_run > seen:
                            seen = coord.rounds_run
                            progress(f"network N={n}: round {seen} of {total_rounds} done")
                        await trio.sleep(0.05)
                if scope.cancelled_caught:
                    res.error = (f"timed out after {args.network_timeout:g} s with "
                                 f"{coord.rounds_run} of {total_rounds} rounds done")
                    progress(f"network N={n}: {res.error}")
                for proc, _ in workers:  # they write what their peers received, then exit
                    proc.send_signal(signal.SIGINT)
                for proc, out in workers:
                    with trio.move_on_after(30):
                        await proc.wait()
                    if proc.returncode is None:
                        proc.kill()
                    if out.exists():
                        for peer, stamps in json.loads(out.read_text()).items():
                            received[peer] = {(key, r): t for key, r, t in stamps}
                nursery.cancel_scope.cancel()
        except Exception as exc:  # keep what was measured; say what went wrong
            for proc, _ in workers:
                if proc.returncode is None:
                    proc.kill()
            leaf = exc
            while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
                leaf = leaf.exceptions[0]
            res.error = f"{type(leaf).__name__}: {leaf}"
            progress(f"network N={n}: error: {res.error}")
            traceback.print_exception(leaf, file=sys.stderr)
        for p in peers:
            received[p.peer_id] = dict(p.received_at)
        for r in range(1, coord.rounds_run + 1):
            row = coord.store.round_row(r)
            start = coord.sent_at.get((ANNOUNCE, r))
            end = coord.sent_at.get((RESULT, r))
            stamps = [start] + [coord.sent_at.get((f"{NOTICE}/{ph}", r))
                                for ph in PHASE_NAMES[1:]] + [end]
            pairs = zip(PHASE_NAMES, stamps[:-1], stamps[1:], strict=True)
            phases = {ph: b - a for ph, a, b in pairs if a is not None and b is not None}
            cpu0, cpu1 = (cpu_at(start), cpu_at(end)) if start and end else (None, None)
            own0, own1 = (cpu_at(start, 2), cpu_at(end, 2)) if start and end else (None, None)
            result = json.loads(row["result"]) if row is not None and row["result"] else {}
            delivery_max, delivery_median = {}, {}
            for key in [ANNOUNCE, *(f"{NOTICE}/{ph}" for ph in PHASE_NAMES[1:]), RESULT]:
                sent = coord.sent_at.get((key, r))
                got = [stamps[(key, r)] - sent for stamps in received.values()
                       if sent is not None and (key, r) in stamps]
                if got:
                    name = key.rsplit("/", 1)[-1]
                    delivery_max[name], delivery_median[name] = max(got), statistics.median(got)
            norm = result.get("norm")
            included = result.get("secure_aggregation", {}).get("included", [])
            ok = None
            if norm is not None and included and all(p in data_of for p in included):
                expected_norm = float(np.linalg.norm(np.sum(
                    [np.clip(data_of[p].astype(np.float64), -CLIP, CLIP) for p in included],
                    axis=0)))
                bound = FixedPoint(CLIP, MAX_SUMMANDS, 32).error_bound(len(included))
                ok = abs(norm - expected_norm) <= bound * math.sqrt(m) + 1e-9
            res.rounds.append(RoundTiming(
                round=r, status=row["status"] if row is not None else "?",
                accepted=row["accepted"] if row is not None else 0,
                wall_s=end - start if start and end else None, phases_s=phases,
                process_cpu_s=cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None,
                coordinator_process_cpu_s=(own1 - own0 if own0 is not None and own1 is not None
                                           else None),
                coordinator_cpu_s=meter.by_round.get(r),
                delivery_max_s=delivery_max, delivery_median_s=delivery_median,
                norm=norm, norm_ok=ok, error=result.get("error")))
        coord.store.close()
    res.total_s = time.perf_counter() - t_begin
    for r in res.rounds:
        progress(f"network N={n}: round {r.round} {r.status}, {r.accepted} accepted, "
                 f"wall {ms(r.wall_s)}, coordinator CPU {ms(r.coordinator_cpu_s)}, process CPU "
                 f"{ms(r.process_cpu_s)}{', ' + r.error if r.error else ''}")
    return res


def _slices(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` peers cut into ``parts`` runs of consecutive indices: (first, count) each."""
    parts = max(1, min(parts, n))
    return [(k * n // parts, (k + 1) * n // parts - k * n // parts) for k in range(parts)]


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a child process has used so far; 0 where /proc has none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def peer_worker(args: argparse.Namespace) -> int:
    """``--peer-worker BOOT``: run peers ``--first`` .. ``--first + --count - 1`` in this
    process until SIGINT, then write what each received when to ``--json``."""
    m = args.sizes[0]
    register_bench_workload(m)
    gossip = DEFAULT_GOSSIP if args.gossip_heartbeat is None else dataclasses.replace(
        DEFAULT_GOSSIP, heartbeat_interval=args.gossip_heartbeat)

    async def main() -> None:
        workload = get_workload(BenchVector.name)
        daemons: list[PeerDaemon] = []
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def start(k: int) -> None:
                    daemon = PeerDaemon(bench_identity(args.seed, k), workload,
                                        input_vector(k, m, args.seed),
                                        bootstrap=[args.peer_worker], gossip=gossip)
                    await nursery.start(daemon.run)
                    daemons.append(daemon)

                async with trio.open_nursery() as starter:
                    for k in range(args.first, args.first + args.count):
                        starter.start_soon(start, k)
                async for _ in signals:
                    break
                Path(args.json).write_text(json.dumps(
                    {d.peer_id: [[key, r, t] for (key, r), t in d.received_at.items()]
                     for d in daemons}))
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


# --- 3. Flower --------------------------------------------------------------------------------
def flower_version(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import flwr; print(flwr.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_flower(args: argparse.Namespace) -> tuple[str | None, str]:
    """The Python that has flwr, and a sentence saying which (or why there is none)."""
    candidates = [args.flower_python] if args.flower_python else [
        sys.executable, str(DEFAULT_FLOWER_VENV / "bin" / "python")]
    if args.setup_flower and not args.flower_python:
        venv = DEFAULT_FLOWER_VENV
        if flower_version(str(venv / "bin" / "python")) is None:
            progress(f"creating {venv} and installing {FLOWER_SPEC} into it (minutes)")
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", FLOWER_SPEC],
                               check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                return None, f"installing {FLOWER_SPEC} into {venv} failed: {exc}"
    for python in candidates:
        if python and Path(python).exists() and (version := flower_version(python)):
            return python, f"flwr {version} in {python}"
    return None, (f"Flower not available: no flwr in {', '.join(c for c in candidates if c)} "
                  f"(install {FLOWER_SPEC} in a separate venv with --setup-flower, or pass "
                  "--flower-python)")


def run_flower(python: str, mode: str, n: int, m: int, args: argparse.Namespace,
               timeout: float) -> dict[str, Any]:
    cmd = [python, str(FLOWER_HELPER), mode, "--clients", str(n), "--size", str(m),
           "--seed", str(args.seed), "--clip", str(CLIP)]
    if mode == "simulation":
        cmd += ["--rounds", str(args.warmup_rounds + args.rounds),
                "--cpus-per-client", str(args.flower_cpus_per_client)]
    progress(f"flower {mode} N={n} M={m}: {' '.join(cmd[1:])}")
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(FLOWER_MARKER):
            return json.loads(line[len(FLOWER_MARKER):])
    tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {out.returncode}: {' / '.join(tail)}"[:400]}


def network_settings(args: argparse.Namespace) -> list[tuple[int | None, int | None]]:
    """The graphs the libp2p rounds run: --network-degree/--network-threshold when given,
    else ``--network-settings`` (both: Config.default and Flower's degree 2, threshold 2)."""
    if args.network_degree is not None or args.network_threshold is not None:
        return [(args.network_degree, args.network_threshold)]
    return {"default": [(None, None)], "flower": [(2, 2)],
            "both": [(None, None), (2, 2)]}[args.network_settings]


def flower_sansio(python: str, n: int, m: int, args: argparse.Namespace) -> dict[str, Any]:
    """``--repeats`` runs of Flower's sans-IO round (a fresh process each); the one with the
    median client CPU, with the server CPU as the median over all (as for ours)."""
    runs = [run_flower(python, "sansio", n, m, args, args.flower_timeout)
            for _ in range(max(1, args.repeats))]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    good.sort(key=lambda r: statistics.fmean(r["client_protocol_cpu_s"]))
    pick = dict(good[(len(good) - 1) // 2])
    pick["server_cpu_s"] = statistics.median(r["server_cpu_s"] for r in good)
    pick["client_cpu_runs_s"] = [statistics.fmean(r["client_protocol_cpu_s"]) for r in good]
    pick["server_cpu_runs_s"] = sorted(r["server_cpu_s"] for r in good)
    return pick


def flower_summary(sansio: dict[str, Any] | None, sim: dict[str, Any] | None,
                   warmup: int) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if sansio and "error" not in sansio:
        s.update(client_cpu_mean_s=statistics.fmean(sansio["client_protocol_cpu_s"]),
                 client_app_cpu_mean_s=statistics.fmean(sansio["client_app_cpu_s"]),
                 server_cpu_s=sansio["server_cpu_s"],
                 upload_bytes_mean=statistics.fmean(sansio["upload_bytes"]),
                 download_bytes_mean=statistics.fmean(sansio["download_bytes"]),
                 plain_bytes=sansio["plain_bytes"], correct=sansio["correct"])
    if sim and "error" not in sim:
        warm = sim["rounds"][warmup:]
        if warm:
            s.update(round_walls_s=[r["wall_s"] for r in warm],
                     wall_mean_s=statistics.fmean(r["wall_s"] for r in warm),
                     sim_server_thread_cpu_s=statistics.fmean(
                         r["server_thread_cpu_s"] for r in warm),
                     sim_server_process_cpu_s=statistics.fmean(
                         r["server_process_cpu_s"] for r in warm))
    return s


# --- tables -----------------------------------------------------------------------------------
def protocol_table(results: list[ProtocolResult]) -> Table:
    table = Table(title="1. SecAgg+ protocol cost in one process, no network "
                        "(median of --repeats rounds; CPU = thread time)")
    for col in ("N", "M", "graph (a)", "deg/thr", "client CPU mean", "max", "masking (b)",
                "coord CPU", "close_unmask", "upload/client", "x plain", "sealed x plain",
                "max err / bound", "sum ok"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in results:
        table.add_row(
            str(r.clients), f"{r.vector_len:,}", SETTINGS[r.setting], f"{r.degree}/{r.threshold}",
            ms(r.client_cpu_mean_s), ms(r.client_cpu_max_s),
            ms(r.client_phase_cpu_mean_s["masked"]), ms(r.server_cpu_s),
            ms(r.server_close_unmask_s), kib(r.upload_bytes_mean), f"{r.upload_ratio:.4f}",
            f"{r.sealed_ratio:.4f}", f"{r.max_abs_error:.1e} / {r.error_bound:.1e}",
            "yes" if r.correct else "NO")
    return table


def mean_over(rounds: list[RoundTiming], attr: str, keys: tuple[str, ...]) -> str:
    """``a / b / ...``: per key, the mean over ``rounds`` of ``getattr(round, attr)[key]``."""
    if not rounds:
        return "-"
    return " / ".join(ms(statistics.fmean(getattr(x, attr).get(k, math.nan) for x in rounds))
                      for k in keys)


def mark(x: RoundTiming, peers: int) -> str:
    if x.status != "published":
        return " failed"
    return "*" if x.accepted < peers else ""


def network_table(results: list[NetworkResult], heartbeat: float) -> Table:
    table = Table(title="2. Secure rounds over libp2p: coordinator + N peers on 127.0.0.1 "
                        f"(gossip heartbeat {heartbeat:g} s)")
    for col in ("N", "M", "graph, layout", "start", "accepted per round", "warm rounds (c)",
                "mean",
                "phases keys/shares/masked/consistency/unmask (d)", "notice to last peer (e)",
                "coord CPU (f)", "process CPU (g)", "sum ok", "note"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in results:
        measured = r.measured()

        cpus = [x.process_cpu_s for x in measured if x.process_cpu_s is not None]
        coord = [x.coordinator_cpu_s for x in measured if x.coordinator_cpu_s is not None]
        norms = [x.norm_ok for x in r.rounds if x.norm_ok is not None]
        notes = [r.error] if r.error else []
        notes += sorted({f"round {x.round}: {x.error}" for x in r.rounds if x.error})
        table.add_row(
            str(r.peers), f"{r.vector_len:,}", f"{r.graph}, {r.layout}", f"{r.start_s:.1f} s",
            ", ".join(str(x.accepted) for x in r.rounds) or "-",
            ", ".join(ms(x.wall_s) + mark(x, r.peers) for x in measured) or "-",
            ms(r.wall_mean_s),
            mean_over(measured, "phases_s", PHASE_NAMES),
            mean_over(measured, "delivery_max_s",
                      ("announce", "shares", "masked", "consistency", "unmask")),
            ms(statistics.fmean(coord)) if coord else "-",
            ms(statistics.fmean(cpus)) if cpus else "-",
            ("yes" if all(norms) else "NO") if norms else "-", "; ".join(notes)[:90])
    return table


def flower_table(flower: dict[tuple[int, int], dict[str, Any]]) -> Table:
    table = Table(title="3. Flower 1.42 SecAgg+ (SecAggPlusWorkflow + secaggplus_mod, "
                        "num_shares=3, reconstruction_threshold=2)")
    for col in ("N", "M", "client CPU (h)", "client app CPU", "server CPU (i)",
                "upload/client", "x plain", "sum ok", "sim warm rounds", "sim mean",
                "sim server CPU thread/process (j)", "note"):
        table.add_column(col, justify="right", no_wrap=True)
    for (n, m), f in sorted(flower.items()):
        s = f["summary"]
        errors = "; ".join(f"{k}: {v['error']}" for k, v in (("sans-IO", f["sansio"]),
                           ("simulation", f["simulation"])) if v and "error" in v)
        table.add_row(
            str(n), f"{m:,}", ms(s.get("client_cpu_mean_s")), ms(s.get("client_app_cpu_mean_s")),
            ms(s.get("server_cpu_s")),
            kib(s["upload_bytes_mean"]) if "upload_bytes_mean" in s else "-",
            f"{s['upload_bytes_mean'] / s['plain_bytes']:.4f}" if "upload_bytes_mean" in s
            else "-",
            ("yes" if s["correct"] else "NO") if "correct" in s else "-",
            ", ".join(ms(w) for w in s.get("round_walls_s", [])) or "-",
            ms(s.get("wall_mean_s")),
            f"{ms(s['sim_server_thread_cpu_s'])} / {ms(s['sim_server_process_cpu_s'])}"
            if "sim_server_thread_cpu_s" in s else "-", errors[:80])
    return table


def comparison_rows(protocol: list[ProtocolResult], network: list[NetworkResult],
                    flower: dict[tuple[int, int], dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (n, m), f in sorted(flower.items()):
        s = f["summary"]
        for p in (p for p in protocol if (p.clients, p.vector_len) == (n, m)):
            label = SETTINGS[p.setting]
            if "upload_bytes_mean" in s:
                ratio = p.upload_bytes_mean / s["upload_bytes_mean"]
                rows.append(dict(clients=n, vector_len=m, metric="upload per client",
                                 ours_setting=label, ours=kib(p.upload_bytes_mean),
                                 flower=kib(s["upload_bytes_mean"]), ratio=ratio,
                                 goal=f"ours <= {GOAL_UPLOAD:g}x plain",
                                 met=p.upload_ratio <= GOAL_UPLOAD))
            if "server_cpu_s" in s:
                ratio = p.server_cpu_s / s["server_cpu_s"]
                rows.append(dict(clients=n, vector_len=m, metric="coordinator CPU (sans-IO)",
                                 ours_setting=label, ours=ms(p.server_cpu_s),
                                 flower=ms(s["server_cpu_s"]), ratio=ratio,
                                 goal=f"<= {GOAL_SERVER:g}", met=ratio <= GOAL_SERVER))
            if "client_cpu_mean_s" in s:
                ratio = p.client_cpu_mean_s / s["client_cpu_mean_s"]
                rows.append(dict(clients=n, vector_len=m, metric="client CPU (sans-IO)",
                                 ours_setting=label, ours=ms(p.client_cpu_mean_s),
                                 flower=ms(s["client_cpu_mean_s"]), ratio=ratio,
                                 goal=f"<= {GOAL_CLIENT:g}", met=ratio <= GOAL_CLIENT))
        for net in (x for x in network if (x.peers, x.vector_len) == (n, m)):
            if net.wall_mean_s is not None and "wall_mean_s" in s:
                ratio = net.wall_mean_s / s["wall_mean_s"]
                rows.append(dict(clients=n, vector_len=m, metric="round wall time",
                                 ours_setting=f"libp2p, {net.graph}, {net.layout}",
                                 ours=ms(net.wall_mean_s),
                                 flower=f"{ms(s['wall_mean_s'])} (Ray sim)", ratio=ratio,
                                 goal=f"<= {GOAL_WALL:g}", met=ratio <= GOAL_WALL))
    return rows


def goal_summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per graph: how many of its goals are met, and which are not."""
    out = []
    for name, test in (("Flower's parameters (degree 2, threshold 2)",
                        lambda r: "Flower-like" in r["ours_setting"] or
                        "degree 2, t=2" in r["ours_setting"]),
                       ("Config.default (complete graph)",
                        lambda r: r["ours_setting"] == "default" or
                        "Config.default" in r["ours_setting"])):
        mine = [r for r in rows if test(r)]
        if not mine:
            continue
        missed = [f"{r['metric']} at N={r['clients']} ({r['ratio']:.2f})" for r in mine
                  if not r["met"]]
        out.append(f"Goals at {name}: {len(mine) - len(missed)} of {len(mine)} met"
                   + (f"; not met: {', '.join(missed)}" if missed else ""))
    return out


def comparison_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="4. Ours / Flower's (ratio < 1: ours is smaller)")
    for col in ("N", "M", "metric", "ours: setting", "ours", "Flower", "ratio", "goal",
                "met"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(str(r["clients"]), f"{r['vector_len']:,}", r["metric"], r["ours_setting"],
                      r["ours"], r["flower"], f"{r['ratio']:.3f}", r["goal"],
                      "yes" if r["met"] else "NO")
    return table


FOOTNOTES = """\
(a) default: Config.default (complete graph up to 101 clients, threshold (n-1) - floor(0.3 n),
    as many survivor signatures needed before unmasking); Flower-like: degree 2, threshold 2
    (Flower's num_shares=3 counts the client itself), 2 signatures (Flower has no such round).
(b) client CPU in masked_input alone (fixed-point encoding, self mask, one AES-256-CTR pairwise
    mask per neighbour). Client CPU includes the X25519 key generation in SecAggClient().
(c) coordinator's announcement -> its published result; * = published with dropouts (accepted
    < N), failed = not published. "mean" is over the published warm rounds.
(d) announcement -> shares notice -> masked notice -> unmask notice -> result, mean of the warm
    rounds.
(e) the coordinator sends the announcement / a phase notice -> the last peer has it (gossip or
    pull), mean of the warm rounds.
(f) thread CPU of the coordinator's own work per warm round: message intake (verify, decode,
    SecAgg+ receive, SQLite), closing phases (incl. unmasking), notices, result, pull answers;
    not libp2p's transport work for its connections.
(g) CPU time of all the benchmark's processes per warm round (sampled every 0.1 s): the
    coordinator's and the peers' (--peer-processes), libp2p included: with many peers the
    machine's cores are busy with all of them at once, which a real deployment (one machine
    per peer) is not.
(h) Flower client CPU inside secaggplus_mod, excluding the wrapped client's fit (like ours);
    "client app CPU" is the whole ClientApp call (mod + NumPyClient + record conversions).
(i) Flower's SecAggPlusWorkflow against an in-process Grid, minus the client calls; no
    serialization (like ours); includes FedAvg's aggregate_fit over the N (identical) results.
(j) Flower's Ray simulation, warm rounds: CPU of the thread running the workflow / of the whole
    driver process (ServerApp, in-memory SuperLink, simulation engine; not the Ray workers)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog=f"Goals: upload <= {GOAL_UPLOAD:g}x the plain vector; coordinator CPU <= "
               f"{GOAL_SERVER:g}x Flower's; client CPU <= {GOAL_CLIENT:g}x Flower's; round wall "
               f"time over libp2p <= {GOAL_WALL:g}x Flower's simulated round.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="10,50,100",
                   help="comma-separated client counts N (default 10,50,100; --quick 10,50)")
    p.add_argument("--sizes", default="100000",
                   help="comma-separated float32 vector lengths M (default 100000)")
    p.add_argument("--quick", action="store_true", help="clients 10,50 (unless --clients)")
    p.add_argument("--rounds", type=int, default=2,
                   help="measured rounds over libp2p and in Flower's simulation (default 2)")
    p.add_argument("--warmup-rounds", type=int, default=1,
                   help="warm-up rounds before those (default 1)")
    p.add_argument("--phase-timeout", type=float, default=60.0,
                   help="coordinator phase timeout in the libp2p rounds (default 60 s)")
    p.add_argument("--gossip-heartbeat", type=float, default=None, metavar="S",
                   help="gossipsub heartbeat of the coordinator and peers in the libp2p rounds "
                        "(default: the project's, peer.gossip.DEFAULT_GOSSIP)")
    p.add_argument("--network-timeout", type=float, default=420.0,
                   help="give up on one N's libp2p rounds after this many seconds (default 420)")
    p.add_argument("--network-degree", type=int, default=None, metavar="K",
                   help="libp2p rounds: SecAgg+ graph degree (default: Config.default's; 2 "
                   "with --network-threshold 2 is Flower's num_shares=3, threshold 2)")
    p.add_argument("--network-threshold", type=int, default=None, metavar="T")
    p.add_argument("--network-settings", choices=["default", "flower", "both"], default="both",
                   help="libp2p rounds' graphs unless --network-degree is given: "
                        "Config.default, Flower's (degree 2, threshold 2), or both (default)")
    p.add_argument("--peer-processes", type=int, default=2, metavar="K",
                   help="libp2p rounds: run the N peers in K processes of their own beside the "
                        "coordinator's (default 2, one per core here, as Flower's simulation "
                        "runs its clients in Ray worker processes); 0 runs them all in the "
                        "coordinator's process and event loop")
    p.add_argument("--peer-worker", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-round-log", action="store_true",
                   help="run the coordinator without its round log (records, heads, a signed "
                   "receipt per accepted message): what the log costs, or an A/B against a "
                   "commit from before it (scripts/bench/ab.py --b-args)")
    p.add_argument("--skip-protocol", action="store_true", help="skip the sans-IO measurement")
    p.add_argument("--skip-network", action="store_true", help="skip the libp2p rounds")
    p.add_argument("--skip-flower", action="store_true", help="skip Flower")
    p.add_argument("--no-flower-simulation", action="store_true",
                   help="run Flower sans-IO only (no Ray simulation)")
    p.add_argument("--flower-python", metavar="PATH",
                   help="Python with flwr installed (default: this one, else "
                        f"{DEFAULT_FLOWER_VENV}/bin/python)")
    p.add_argument("--setup-flower", action="store_true",
                   help=f"create {DEFAULT_FLOWER_VENV} with {FLOWER_SPEC} if it has no flwr "
                        "(a separate venv: Flower's pins would move packages ours needs)")
    p.add_argument("--flower-cpus-per-client", type=float, default=1.0,
                   help="Ray CPUs per simulated Flower client (default 1: as many parallel "
                        "client actors as cores; Flower's own default is 2)")
    p.add_argument("--flower-timeout", type=float, default=600.0,
                   help="seconds per Flower subprocess (default 600)")
    p.add_argument("--repeats", type=int, default=3,
                   help="sans-IO rounds per setting, ours and Flower's: the median is "
                        "reported (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input vectors (default 0)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    p.add_argument("--verbose", action="store_true", help="keep hypergossip logs on stderr")
    args = p.parse_args(argv)
    if args.quick and args.clients == "10,50,100":
        args.clients = "10,50"
    args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    args.sizes = [int(float(x)) for x in args.sizes.split(",") if x.strip()]
    if min(args.clients) < 3:
        p.error("need at least 3 clients (Flower's num_shares=3)")
    if min(args.sizes) < 1:
        p.error("vector lengths must be positive")
    if args.rounds < 1 or args.warmup_rounds < 0:
        p.error("--rounds must be >= 1 and --warmup-rounds >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer_worker:
        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
        return peer_worker(args)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in ("libp2p", "multiaddr", "hypercorn"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not args.verbose:
        logging.getLogger("hypergossip").setLevel(logging.ERROR)
    progress(f"clients {args.clients}, sizes {args.sizes}, {os.cpu_count()} CPUs, "
             f"python {platform.python_version()}")
    t_start = time.perf_counter()

    protocol: list[ProtocolResult] = []
    if not args.skip_protocol:
        protocol_cost(3, 1000, "default", args.seed)  # warm-up: first-call costs, imports
        for m in args.sizes:
            for n in args.clients:
                for setting in SETTINGS:
                    r = repeated_cost(n, m, setting, args.seed, args.repeats)
                    protocol.append(r)
                    progress(f"sans-IO N={n} M={m} {setting}: client {ms(r.client_cpu_mean_s)}, "
                             f"coordinator {ms(r.server_cpu_s)}, upload "
                             f"{r.upload_ratio:.4f}x plain, sum {'ok' if r.correct else 'WRONG'}")

    flower_status = "skipped (--skip-flower)"
    flower: dict[tuple[int, int], dict[str, Any]] = {}
    if not args.skip_flower:
        python, flower_status = find_flower(args)
        progress(flower_status)
        if python is not None:
            for m in args.sizes:
                for n in args.clients:
                    sansio = flower_sansio(python, n, m, args)
                    sim = None if args.no_flower_simulation else run_flower(
                        python, "simulation", n, m, args, args.flower_timeout)
                    for what, out in (("sans-IO", sansio), ("simulation", sim)):
                        if out and "error" in out:
                            progress(f"flower {what} N={n}: {out['error']}")
                    flower[(n, m)] = {"sansio": sansio, "simulation": sim,
                                      "summary": flower_summary(sansio, sim,
                                                                args.warmup_rounds)}

    network: list[NetworkResult] = []
    if not args.skip_network:
        for degree, threshold in network_settings(args):
            for m in args.sizes:
                for n in args.clients:
                    network.append(trio.run(network_rounds, n, m, args, degree, threshold))
    wall = time.perf_counter() - t_start

    rows = comparison_rows(protocol, network, flower)
    # wide enough for table 1 when stdout is a file or a pipe
    console = Console() if sys.stdout.isatty() else Console(width=230)
    if protocol:
        console.print(protocol_table(protocol))
    if network:
        heartbeat = args.gossip_heartbeat if args.gossip_heartbeat is not None \
            else DEFAULT_GOSSIP.heartbeat_interval
        console.print(network_table(network, heartbeat))
    if flower:
        console.print(flower_table(flower))
    console.print(f"Flower: {flower_status}")
    if rows:
        console.print(comparison_table(rows))
        for line in goal_summary(rows):
            console.print(line)
    console.print(FOOTNOTES)
    console.print(f"Total wall time {wall:.0f} s, {os.cpu_count()} CPUs.")

    if args.json:
        doc = {
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "wall_s": wall,
            "protocol": [{**asdict(r), "upload_ratio": r.upload_ratio,
                          "sealed_ratio": r.sealed_ratio} for r in protocol],
            "network": [{**asdict(r), "wall_mean_s": r.wall_mean_s} for r in network],
            "flower_status": flower_status,
            "flower": [{"clients": n, "vector_len": m, **f} for (n, m), f in flower.items()],
            "comparison": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
