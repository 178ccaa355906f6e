"""Benchmark: scale. A coordinator and N real libp2p peers on this machine, per round mode.

For each N in ``--peers`` and each mode in ``--modes``, a fresh network: a
:class:`coordinator.service.Coordinator` in this process (nothing else runs in it, so
its process is the coordinator's: libp2p, HTTP, SQLite and all), N-1 peers
(:class:`peer.daemon.PeerDaemon`) in ``--processes`` worker processes of their own (one
trio loop each), and one more peer alone in a process (its memory is "one peer
process"). Each peer bootstraps to the coordinator, and once all peers are up each dials
two others at random, in any process (so gossip and blobs have a mesh besides the
coordinator; peers then dial more of those they hear of, toward ``--dial-target``). Modes:

- ``stats``: secure stats rounds, range-proven VSS (the default secure protocol);
- ``secagg``: SecAgg+ on a float32 vector of ``--vector`` (1000) entries, on
  ``SecAggConfig.default``'s graph for N;
- ``fedavg``: clear federated averaging of the embedded digits CNN; each round's model
  is published by digest and fetched by the peers, from each other or the coordinator.

Per row: ``enrol_s`` (peers launched -> all N admitted and connected), ``link_s`` (how
much longer until every peer had dialled its links; the first round waits for them),
``round_s`` (the
median over the measured rounds of announcement -> result), ``published`` and
``accepted`` (the least over measured rounds), ``coord_cpu_s`` (the coordinator
process's CPU per round, median), ``coord_rss_mb`` (its peak), the coordinator's bytes
sent and received per peer per round (every TCP byte its process wrote or read), then,
after the rounds and once the last one's gossip has died down (``quiet_s`` after its
result: for 5 s no peer has delivered a gossip message within its last few heartbeats;
at most 120 s), a quiet ``--idle`` seconds (60): ``idle_ms_per_s`` (a connected peer's
own CPU, ms per second: the workers' CPU over their peers) and ``coord_idle_ms_per_s``
(the coordinator's, per connected peer), ``peer_cpu_ms`` (a peer's CPU per round, from
the workers), ``peer_rss_mb`` (the lone peer process's peak RSS) and, for fedavg, the
model's size and the coordinator's upload per round in models.

Goals (issue 16), printed one line each: N=1000 stats and SecAgg+ rounds publish; all
1000 enrolled within 120 s; the coordinator's CPU per peer per round at N=1000 at most
2x that at N=100; idle CPU per connected peer <= 1 ms/s; the coordinator's upload in a
fedavg round at N=500 <= 10 models; a fedavg peer process <= 350 MB.

Run from the repository root: ``.venv/bin/python scripts/bench/scale.py --peers 100,250``.
Progress goes to stderr, the table to stdout, ``--json PATH`` writes ``{"rows": [...]}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import trio  # noqa: E402

from peer import libp2p_patches  # noqa: E402
from peer.clock import SlackClock  # noqa: E402
from peer.libp2p_patches import Traffic  # noqa: E402
from scripts.bench._taskprof import TaskProfile, difference  # noqa: E402

MODES = ("stats", "secagg", "fedavg")
GOAL_ENROL_S, GOAL_CPU_RATIO, GOAL_IDLE_MS = 120.0, 2.0, 1.0
GOAL_UPLOAD_MODELS, GOAL_PEER_RSS_MB = 10.0, 350.0
START_CONCURRENCY = 8  # peers a worker starts at a time
TOP_TASKS = 25  # tasks listed by --task-profile
LINKS = 2  # random peers each peer dials, besides the coordinator
QUIET_MAX = 120.0  # s after the last result the idle window waits, at most, for quiet
QUIET_FOR = 5.0  # s without gossip in hand at every peer that make the network quiet


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- peers -------------------------------------------------------------------------------------
def bench_identity(seed: int, index: int):
    import hashlib

    from protocol.wire.identity import Identity
    return Identity(hashlib.sha256(f"scale-bench/{seed}/{index}".encode()).digest())


def workload_name(mode: str) -> str:
    return {"stats": "stats", "secagg": "bench-vector", "fedavg": "fedavg"}[mode]


@functools.cache
def secagg_bench() -> Any:
    """scripts/bench/secagg.py, imported when first needed (its imports are heavy for a
    peer worker): its bench-only vector workload and its process helpers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import secagg
    return secagg


def register_vector(m: int) -> None:
    """The bench-only vector workload of scripts/bench/secagg.py, M entries."""
    secagg_bench().register_bench_workload(m)


def peer_data(mode: str, k: int, n: int, args: argparse.Namespace) -> Any:
    from protocol.learning.registry import get_workload
    if mode == "stats":
        return get_workload("stats").parse_data(f"height={150 + k % 50},weight={50 + k % 40}")
    if mode == "secagg":
        return np.random.default_rng([args.seed, k]).uniform(-1, 1, args.vector).astype(
            np.float32)
    return get_workload("fedavg").parse_data(f"part={k}/{n},alpha=0.5,seed={args.seed}")


def die_with_parent() -> None:
    """Linux: SIGTERM this row's process when the bench's main process dies (killed, or
    crashed). Not for workers: the signal follows the parent *thread*, and trio starts
    processes from a worker thread that soon exits (:func:`watch_parent` instead)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def watch_parent() -> None:
    """SIGTERM this worker once its row's process is gone (it is re-parented), so an
    interrupted row leaves no peers running to load the next one's measurements."""
    parent = os.getppid()
    while os.getppid() == parent:
        await trio.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def peer_worker(args: argparse.Namespace) -> int:
    """``--peer-worker BOOT``: run peers ``--first`` .. ``--first + --count - 1`` of a
    network of ``--n`` until SIGINT/SIGTERM, then write this process's figures to
    ``--out``."""
    import random

    from peer.daemon import PeerDaemon
    from peer.gossip import DEFAULT_GOSSIP
    from protocol.learning.registry import get_workload

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    if args.mode == "secagg":
        register_vector(args.vector)
    workload = get_workload(workload_name(args.mode))
    rng = random.Random(args.first)
    started: list[PeerDaemon] = []
    gossip = DEFAULT_GOSSIP if args.gossip_heartbeat is None else dataclasses.replace(
        DEFAULT_GOSSIP, heartbeat_interval=args.gossip_heartbeat)

    profile = TaskProfile() if args.task_profile else None
    at_idle: dict = {}

    async def mark_idle(tmp: Path) -> None:  # the bench's quiet window, begun and ended
        for mark in ("idle.start", "idle.end"):
            while not (tmp / mark).exists():
                await trio.sleep(0.2)
            at_idle[mark] = profile.snapshot()

    async def mark_quiet(daemons: list[PeerDaemon], path: Path) -> None:
        """Writes to ``path``, every second, when it looked (wall clock) and when a peer
        here last had gossip in hand: a message delivered in its last few gossipsub
        heartbeats (its message cache's gossip window), so something to forward, advertise
        or answer for. The idle window begins once every process has looked after the last
        result and found nothing in hand for ``QUIET_FOR`` seconds."""
        busy = time.time()
        while True:
            now = time.time()
            if any(any(d.node.router.mcache.history[:d.node.router.mcache.window_size])
                   for d in daemons):
                busy = now
            path.write_text(json.dumps({"looked": now, "busy": busy}))
            await trio.sleep(1.0)

    async def main() -> None:
        if profile is not None:
            trio.lowlevel.add_instrument(profile)
            trio.lowlevel.spawn_system_task(mark_idle, Path(args.out).parent)
        # one worker thread (a peer's training) at a time: a peer on its own machine trains
        # in one thread beside its trio loop; a hundred peers' trainings in forty threads
        # left each loop a fortieth of the GIL, and stream negotiations timed out (10 s)
        trio.to_thread.current_default_thread_limiter().total_tokens = 1
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_parent)
                gate = trio.CapacityLimiter(START_CONCURRENCY)

                async def start(k: int) -> None:
                    async with gate:
                        daemon = PeerDaemon(bench_identity(args.seed, k), workload,
                                            peer_data(args.mode, k, args.n, args),
                                            bootstrap=[args.peer_worker], gossip=gossip)
                        await nursery.start(daemon.run)
                        started.append(daemon)

                async def link(daemon: PeerDaemon) -> None:
                    async with gate:
                        mine = daemon.node.addrs[0]  # (a property: not once per address)
                        others = [a for a in everyone if a != mine]
                        for addr in rng.sample(others, min(LINKS, len(others))):
                            await daemon.node.connect(addr)

                async with trio.open_nursery() as starter:
                    for k in range(args.first, args.first + args.count):
                        starter.start_soon(start, k)
                # every process's peers' addresses, gathered by the bench: links cross
                # processes, as they would cross machines
                listed = Path(args.out + ".addrs.tmp")
                listed.write_text(json.dumps([d.node.addrs[0] for d in started]))
                listed.rename(args.out + ".addrs")  # whole, when the bench sees it
                links = Path(args.out).with_name("links.json")
                while not links.exists():
                    await trio.sleep(0.2)
                everyone = json.loads(links.read_text())
                async with trio.open_nursery() as linker:  # a sparse mesh among them
                    for daemon in started:
                        linker.start_soon(link, daemon)
                linked = sorted(len(d.node.connected_peers()) for d in started)
                nursery.start_soon(mark_quiet, started, Path(args.out + ".quiet"))
                Path(args.out + ".linked").write_text("")  # the bench starts the rounds
                async for _ in signals:
                    break
                final = sorted(len(d.node.connected_peers()) for d in started)
                conns.update(linked=linked, final=final)
                nursery.cancel_scope.cancel()

    conns: dict[str, list[int]] = {}
    trio.run(main, clock=SlackClock())  # as a peer daemon runs (peer.runtime)
    fetched: Counter[str] = Counter()
    asks: Counter[str] = Counter()
    for d in started:
        fetched.update(d.node.blobs.fetched)
        asks.update(d.node.blobs.asks)
    Path(args.out).write_text(json.dumps({
        "peers": len(started), "rss_peak_mb": rss_mb(), "connections": conns,
        "fetched": dict(fetched), "asks": dict(asks),
        "fetch_seconds": sum(d.node.blobs.fetch_seconds for d in started),
        "fetch_longest": max((d.node.blobs.fetch_longest for d in started), default=0.0),
        "tasks_idle": difference(at_idle["idle.end"], at_idle["idle.start"])
        if "idle.end" in at_idle else {}}))
    return 0


# --- measuring ---------------------------------------------------------------------------------
def rss_mb(pid: int | str = "self", key: str = "VmHWM") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Samples:
    """(time, coordinator CPU, workers' CPU, bytes sent, bytes received), taken as each
    round starts (before its announcement goes) and ends (once its result has gone), and
    at the idle window's ends: no polling in the process it measures (a sample every
    0.1 s cost the coordinator 0.4 ms per peer in a 94-s round at N=1000)."""

    def __init__(self, workers: list[int]):
        self.workers, self.rows = workers, []

    def take(self) -> float:
        now = time.monotonic()
        workers = sum(secagg_bench()._cpu_of(p) for p in self.workers)
        self.rows.append((now, time.process_time(), workers, Traffic.sent, Traffic.received))
        return now

    def hook(self, outbox) -> None:
        """Sample at ``outbox``'s announcements and results (the bench's own wrapper: the
        coordinator's behaviour is unchanged)."""
        announce, result = outbox.announce, outbox.result

        def on_announce(*args, **kwargs):
            self.take()
            return announce(*args, **kwargs)

        def on_result(*args, **kwargs):
            out = result(*args, **kwargs)
            self.take()
            return out

        outbox.announce, outbox.result = on_announce, on_result

    def at(self, t: float) -> tuple:
        return min(self.rows, key=lambda r: abs(r[0] - t))

    def between(self, t0: float, t1: float) -> tuple[float, ...]:
        a, b = self.at(t0), self.at(t1)
        return tuple(y - x for x, y in zip(a, b, strict=True))


# --- one network -------------------------------------------------------------------------------
def coordinator_config(mode: str, n: int, tmp: Path, args: argparse.Namespace):
    from coordinator.service import CoordinatorConfig
    from protocol.policy.admission import AdmissionConfig
    by_mode = {"stats": dict(workload="stats", secure=True, secure_protocol="vss"),
               "secagg": dict(workload="bench-vector", secure=True, secure_protocol="secagg"),
               "fedavg": dict(workload="fedavg", secure=False)}[mode]
    return CoordinatorConfig(
        data_dir=tmp, http_host="127.0.0.1", port=0, listen=["/ip4/127.0.0.1/tcp/0"],
        # the first round waits for N live peers and the bench's links (one_network)
        min_peers=2, start_peers=n + 1, round_pause=1.0, round_timeout=args.phase_timeout * 6,
        phase_timeout=args.phase_timeout, max_rounds=args.warmup + args.rounds,
        linger=args.idle + 600.0,
        # every peer enrols from 127.0.0.1: the per-address burst (64) would let one more
        # in a minute; the overall budget (512 at once, then 5 a second) is the default
        admission=AdmissionConfig(per_source_burst=n + 8), round_log=not args.no_round_log,
        **by_mode)


def quiet_since(path: Path, t: float) -> bool:
    """Whether a worker (its ``mark_quiet`` file) has looked since wall time ``t`` and found
    no gossip in hand for ``QUIET_FOR`` seconds."""
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False
    return seen["looked"] > t and seen["looked"] - max(seen["busy"], t) >= QUIET_FOR


async def one_network(n: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from coordinator.service import Coordinator
    from protocol.wire.messages import ANNOUNCE, RESULT

    row: dict[str, Any] = {"n": n, "mode": mode, "error": None}
    procs: list[tuple[trio.Process, Path, int]] = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        coord = Coordinator(coordinator_config(mode, n, Path(tmp), args))
        samples = Samples([])
        profile = TaskProfile() if args.task_profile else None
        if profile is not None:  # the coordinator's loop too, over the rounds and the idle
            trio.lowlevel.add_instrument(profile)
            profile.count_gc()
        marks: dict[str, dict] = {}  # the coordinator's task profile, by moment

        def mark(name: str) -> None:
            if profile is not None:
                marks[name] = profile.snapshot()
        total = args.warmup + args.rounds
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(coord.run)
                samples.hook(coord.outbox)
                boot = coord.node.addrs[0]
                t0 = time.monotonic()
                # the lone peer last, so its process holds one peer whatever the slices
                slices = [*secagg_bench()._slices(n - 1, args.processes), (n - 1, 1)]
                for first, count in slices:
                    out = Path(tmp) / f"worker-{first}.json"
                    argv = [sys.executable, __file__, "--peer-worker", boot, "--mode", mode,
                            "--first", str(first), "--count", str(count), "--n", str(n),
                            "--seed", str(args.seed), "--vector", str(args.vector),
                            "--out", str(out)]
                    if args.gossip_heartbeat is not None:
                        argv += ["--gossip-heartbeat", str(args.gossip_heartbeat)]
                    if args.task_profile:
                        argv += ["--task-profile"]
                    proc = await trio.lowlevel.open_process(argv)
                    procs.append((proc, out, count))
                samples.workers[:] = [p.pid for p, _, c in procs]
                addrs: list[str] = []
                for _, out, _ in procs:  # every peer's address, for links across processes
                    listed = Path(str(out) + ".addrs")
                    while not listed.exists():
                        if time.monotonic() - t0 > args.enrol_timeout:
                            raise RuntimeError("peer processes did not start in time")
                        await trio.sleep(0.2)
                    addrs += json.loads(listed.read_text())
                (Path(tmp) / "links.json").write_text(json.dumps(addrs))
                progress(f"N={n} {mode}: coordinator up; {n} peers starting in "
                         f"{len(procs)} processes")
                last = -1
                while len(coord.live_peers()) < n:
                    live = len(coord.live_peers())
                    if live // 50 != last // 50:
                        progress(f"N={n} {mode}: {live} of {n} enrolled after "
                                 f"{time.monotonic() - t0:.0f} s")
                    last = live
                    if time.monotonic() - t0 > args.enrol_timeout:
                        raise RuntimeError(f"only {live} of {n} enrolled after "
                                           f"{args.enrol_timeout:g} s")
                    for proc, _, _ in procs:
                        if proc.returncode is not None:
                            raise RuntimeError(f"a peer process exited ({proc.returncode})")
                    await trio.sleep(0.5)
                row["enrol_s"] = time.monotonic() - t0
                # rounds begin once every peer has dialled its LINKS others: a round that
                # opened before would find many peers with the coordinator alone to fetch
                # from (at N=500, 343 of 500 model copies came from the coordinator)
                for _, out, _ in procs:
                    while not Path(str(out) + ".linked").exists():
                        if time.monotonic() - t0 > args.enrol_timeout:
                            raise RuntimeError("peers did not link in time")
                        await trio.sleep(0.2)
                row["link_s"] = time.monotonic() - t0 - row["enrol_s"]
                coord.driver.config.start_peers = n
                progress(f"N={n} {mode}: all {n} enrolled in {row['enrol_s']:.1f} s, "
                         f"linked {row['link_s']:.1f} s later; {args.warmup} warm-up + "
                         f"{args.rounds} rounds")
                seen = 0
                mark("rounds.start")
                with trio.move_on_after(args.round_budget * total) as scope:
                    while coord.rounds_run < total:
                        if coord.rounds_run > seen:
                            seen = coord.rounds_run
                            r = coord.store.round_row(seen)
                            progress(f"N={n} {mode}: round {seen} {r['status']}, "
                                     f"{r['accepted']} accepted")
                        await trio.sleep(1.0)  # (the bench's own wakes land on the coordinator)
                if scope.cancelled_caught:
                    row["error"] = f"{coord.rounds_run} of {total} rounds in time"
                else:
                    mark("rounds.end")
                    # the last round's gossip dies down first (its tail, like every earlier
                    # round's, belongs to the rounds: at N=1000 it ran for 30 s)
                    # (quiet takes QUIET_FOR s at least: the last result's fetches settle)
                    t_end, t_tail = time.time(), samples.take()
                    while not all(quiet_since(Path(str(out) + ".quiet"), t_end)
                                  for _, out, _ in procs) and time.time() - t_end < QUIET_MAX:
                        await trio.sleep(0.5)
                    row["quiet_s"] = time.time() - t_end
                    t_idle = samples.take()
                    tail = samples.between(t_tail, t_idle)  # CPU s: the coordinator, the peers
                    row["tail_coord_ms_per_peer"] = tail[1] * 1000 / n
                    row["tail_peer_ms"] = tail[2] * 1000 / n
                    progress(f"N={n} {mode}: quiet {row['quiet_s']:.1f} s after the last "
                             f"result (until then {row['tail_peer_ms']:.1f} ms of CPU a peer, "
                             f"the coordinator {row['tail_coord_ms_per_peer']:.2f} ms a peer); "
                             f"idle for {args.idle:g} s")
                    (Path(tmp) / "idle.start").write_text("")
                    mark("idle.start")
                    await trio.sleep(args.idle)
                    (Path(tmp) / "idle.end").write_text("")
                    mark("idle.end")
                    d = samples.between(t_idle, samples.take())
                    connected = len(coord.node.connected_peers())
                    row["coord_idle_ms_per_s"] = d[1] / d[0] * 1000 / max(connected, 1)
                    row["idle_ms_per_s"] = d[2] / d[0] * 1000 / n
                    row["connected"] = connected
                blobs = coord.node.blobs
                row.update(blob_copies=sum(blobs.served.values()), blob_busy=blobs.busy,
                           blob_last_resort=blobs.last_resort, blob_not_found=blobs.not_found)
                row["coord_rss_mb"] = rss_mb()
                row["peer_rss_mb"] = rss_mb(procs[-1][0].pid)
                row["worker_rss_mb"] = max(rss_mb(p.pid) for p, _, _ in procs[:-1]) \
                    if len(procs) > 1 else None
                nursery.cancel_scope.cancel()
        except Exception as exc:  # keep what was measured; say what went wrong
            leaf = exc
            while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
                leaf = leaf.exceptions[0]
            row["error"] = f"{type(leaf).__name__}: {leaf}"
            progress(f"N={n} {mode}: error: {row['error']}")
        finally:
            for proc, _, _ in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGINT)
            for proc, _, _ in procs:
                with trio.move_on_after(30):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
        rounds = []
        for r in range(args.warmup + 1, coord.rounds_run + 1):
            start, end = coord.sent_at.get((ANNOUNCE, r)), coord.sent_at.get((RESULT, r))
            rec = coord.store.round_row(r)
            if start is None or end is None or rec is None:
                continue
            dt, cpu, peers_cpu, sent, received = samples.between(start, end)
            result = json.loads(rec["result"]) if rec["result"] else {}
            rounds.append({"round": r, "status": rec["status"], "accepted": rec["accepted"],
                           "wall_s": end - start, "cpu_s": cpu, "peers_cpu_s": peers_cpu,
                           "sent": sent, "received": received,
                           "model_bytes": result.get("model_bytes")})
        fetched: Counter[str] = Counter()
        asks: Counter[str] = Counter()
        tasks: dict[str, list] = defaultdict(lambda: [0.0, 0])  # cpu s, steps
        profiled = 0  # peers in the processes whose tasks are summed
        for _, out, _ in procs:  # what the peer processes saw
            try:
                report = json.loads(out.read_text())
            except (OSError, ValueError):
                continue
            for key, counts in report.get("connections", {}).items():
                row.setdefault(f"peer_connections_{key}", []).extend(counts)
            fetched.update(report.get("fetched", {}))
            asks.update(report.get("asks", {}))
            if report.get("peers", 0) > 1 and report.get("tasks_idle"):  # workers, not lone
                profiled += report["peers"]
                for key, (cpu, steps) in report["tasks_idle"].items():
                    tasks[key][0] += cpu
                    tasks[key][1] += steps
            row["peer_fetch_s"] = row.get("peer_fetch_s", 0.0) + report.get("fetch_seconds", 0)
            row["peer_fetch_longest_s"] = max(row.get("peer_fetch_longest_s", 0.0),
                                              report.get("fetch_longest", 0.0))
        if fetched:  # the peers' blob fetches over the whole row, by where each came from
            row["peer_fetches"] = dict(fetched)
            row["peer_fetch_mean_s"] = row.pop("peer_fetch_s") / sum(fetched.values())
            row["peer_asks"] = dict(asks)  # each ask of a fetch, by whom and how it ended
        if tasks:  # per peer per idle second, the workers' peers together
            row["idle_tasks"] = {k: [c / profiled / args.idle * 1000, s / profiled / args.idle]
                                 for k, (c, s) in tasks.items()}
        # the whole coordinator loop: per second of the idle; per round, over all rounds
        # (warm-up included)
        for key, span, per in (("coord_idle_tasks", "idle", args.idle),
                               ("coord_round_tasks", "rounds", total)):
            if f"{span}.end" in marks:
                row[key] = {k: [c / per * 1000, st / per] for k, (c, st) in difference(
                    marks[f"{span}.end"], marks[f"{span}.start"]).items()}
        coord.store.close()
    for key in ("peer_connections_linked", "peer_connections_final"):
        if counts := row.pop(key, None):
            counts.sort()
            row[key] = {"min": counts[0], "median": counts[len(counts) // 2],
                        "max": counts[-1]}
    row["rounds"] = rounds
    row["published"] = sum(r["status"] == "published" for r in rounds)
    row["measured"] = len(rounds)
    if rounds:
        med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
        row.update(accepted=min(r["accepted"] for r in rounds), round_s=med("wall_s"),
                   coord_cpu_s=med("cpu_s"), coord_cpu_ms_per_peer=med("cpu_s") / n * 1000,
                   sent_kib_per_peer=med("sent") / n / 1024,
                   received_kib_per_peer=med("received") / n / 1024,
                   peer_cpu_ms=med("peers_cpu_s") / n * 1000)
        models = [r["model_bytes"] for r in rounds if r["model_bytes"]]
        if models:
            row["model_bytes"] = models[-1]
            row["upload_models"] = med("sent") / models[-1]
    return row


# --- report ------------------------------------------------------------------------------------
COLUMNS = [("n", "N", "{}"), ("mode", "mode", "{}"), ("published", "published", "{}"),
           ("accepted", "accepted", "{}"), ("enrol_s", "enrol s", "{:.1f}"),
           ("round_s", "round s", "{:.2f}"), ("coord_cpu_s", "coord CPU s", "{:.2f}"),
           ("coord_cpu_ms_per_peer", "CPU ms/peer", "{:.2f}"),
           ("coord_rss_mb", "coord RSS MB", "{:.0f}"),
           ("sent_kib_per_peer", "sent KiB/peer", "{:.1f}"),
           ("received_kib_per_peer", "recv KiB/peer", "{:.1f}"),
           ("quiet_s", "quiet s", "{:.0f}"), ("idle_ms_per_s", "idle ms/s", "{:.2f}"),
           ("coord_idle_ms_per_s", "coord idle ms/s", "{:.3f}"),
           ("peer_cpu_ms", "peer CPU ms/round", "{:.1f}"),
           ("peer_rss_mb", "peer RSS MB", "{:.0f}"),
           ("upload_models", "upload models", "{:.1f}")]


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for _, h, _ in COLUMNS]]
    for r in rows:
        cells.append([fmt.format(r[k]) if r.get(k) is not None else "-"
                      for k, _, fmt in COLUMNS])
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if r.get("error"):
            lines.append(f"N={r['n']} {r['mode']}: {r['error']}")
    for r in rows:
        if f := r.get("peer_fetches"):
            lines.append(
                f"N={r['n']} {r['mode']}: peers' blob fetches "
                f"{', '.join(f'{k} {v}' for k, v in sorted(f.items()))}; mean "
                f"{r['peer_fetch_mean_s']:.1f} s, longest {r['peer_fetch_longest_s']:.1f} s; "
                f"the coordinator served {r.get('blob_copies')} copies, said busy "
                f"{r.get('blob_busy')} times, {r.get('blob_last_resort')} last resorts, "
                f"{r.get('blob_not_found')} not found; asks: "
                f"{', '.join(f'{k} {v}' for k, v in sorted(r.get('peer_asks', {}).items()))}")
    for r in rows:
        if t := r.get("idle_tasks"):
            top = sorted(t.items(), key=lambda kv: -kv[1][0])[:TOP_TASKS]
            lines.append(f"N={r['n']} {r['mode']}: idle CPU by task, ms/s and steps/s per peer "
                         f"(of {sum(c for c, _ in t.values()):.3f} ms/s):")
            lines += [f"  {c:7.4f}  {n:7.3f}  {k}" for k, (c, n) in top]
    for r in rows:
        for key, what in (("coord_idle_tasks", "idle CPU by task, ms/s and steps/s"),
                          ("coord_round_tasks", "CPU by task per round, ms and steps")):
            if t := r.get(key):
                top = sorted(t.items(), key=lambda kv: -kv[1][0])[:TOP_TASKS]
                lines.append(f"N={r['n']} {r['mode']}: coordinator {what} (of "
                             f"{sum(c for c, _ in t.values()):.1f}):")
                lines += [f"  {c:9.2f}  {n:9.1f}  {k}" for k, (c, n) in top]
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]]) -> list[str]:
    def find(n: int, mode: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["n"] == n and r["mode"] == mode), None)

    def line(ok: bool | None, text: str) -> str:
        return f"{'-   ' if ok is None else 'ok  ' if ok else 'MISS'} {text}"

    out = []
    for mode in ("stats", "secagg"):
        r = find(1000, mode)
        out.append(line(None if r is None else r["published"] == r["measured"] > 0,
                        f"N=1000 {mode} rounds publish: " + ("not run" if r is None else
                        f"{r['published']} of {r['measured']}")))
    enrols = [r for r in rows if r["n"] == 1000 and r.get("enrol_s") is not None]
    out.append(line(None if not enrols else max(r["enrol_s"] for r in enrols) <= GOAL_ENROL_S,
                    f"all 1000 enrolled within {GOAL_ENROL_S:g} s: " + (
                        "not run" if not enrols else
                        f"{max(r['enrol_s'] for r in enrols):.1f} s")))
    for mode in MODES:
        a, b = find(100, mode), find(1000, mode)
        if a and b and a.get("coord_cpu_ms_per_peer") and b.get("coord_cpu_ms_per_peer"):
            ratio = b["coord_cpu_ms_per_peer"] / a["coord_cpu_ms_per_peer"]
            out.append(line(ratio <= GOAL_CPU_RATIO, f"{mode}: coordinator CPU per peer per "
                            f"round at N=1000 / N=100 = {ratio:.2f} (<= {GOAL_CPU_RATIO:g})"))
        else:
            out.append(line(None, f"{mode}: CPU per peer at 1000 vs 100: not both run"))
    idle = [r["idle_ms_per_s"] for r in rows if r.get("idle_ms_per_s") is not None]
    out.append(line(None if not idle else max(idle) <= GOAL_IDLE_MS,
                    f"idle CPU per connected peer <= {GOAL_IDLE_MS:g} ms/s: " + (
                        "not measured" if not idle else f"at most {max(idle):.2f} ms/s")))
    r = find(500, "fedavg")
    up = r.get("upload_models") if r else None
    out.append(line(None if up is None else up <= GOAL_UPLOAD_MODELS,
                    f"fedavg N=500: coordinator upload per round <= {GOAL_UPLOAD_MODELS:g} "
                    f"models: " + ("not run" if up is None else f"{up:.1f} models")))
    fed = [r["peer_rss_mb"] for r in rows if r["mode"] == "fedavg" and r.get("peer_rss_mb")]
    out.append(line(None if not fed else max(fed) <= GOAL_PEER_RSS_MB,
                    f"a fedavg peer process <= {GOAL_PEER_RSS_MB:g} MB: " + (
                        "not run" if not fed else f"{max(fed):.0f} MB")))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="100,250,500,1000",
                   help="comma-separated N (default: %(default)s)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated modes of {', '.join(MODES)} (default: all)")
    p.add_argument("--rounds", type=int, default=2, help="measured rounds (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds first (default 1)")
    p.add_argument("--processes", type=int, default=max(2, os.cpu_count() or 2),
                   help="worker processes for the peers, besides the lone one "
                   "(default: the cores, at least 2)")
    p.add_argument("--vector", type=int, default=1000, help="secagg: M (default 1000)")
    p.add_argument("--idle", type=float, default=60.0,
                   help="seconds of quiet measured after the rounds (default 60)")
    p.add_argument("--phase-timeout", type=float, default=120.0,
                   help="the coordinator's phase timeout (default 120 s: the measure is "
                   "what a round takes, not who misses a deadline)")
    p.add_argument("--round-budget", type=float, default=900.0,
                   help="give up a network's rounds after this many seconds each (900)")
    p.add_argument("--enrol-timeout", type=float, default=900.0,
                   help="give up a network whose peers are not all in after this (900 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-round-log", action="store_true",
                   help="run the coordinator without its round log (records, heads, receipts), "
                   "to measure what the log costs side by side")
    p.add_argument("--json", type=Path, help="write {'rows': [...]} here")
    p.add_argument("--gossip-heartbeat", type=float, metavar="S",
                   help="the peers' gossipsub heartbeat interval (default: peer.gossip's)")
    p.add_argument("--task-profile", action="store_true",
                   help="peer workers and the coordinator charge their event loop's CPU to "
                   "tasks by name; print the top tasks: the peers' per peer per second of the "
                   "idle window, the coordinator's per second of it and per round")
    # worker mode (internal)
    p.add_argument("--peer-worker", metavar="BOOT", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.peer_list = [int(v) for v in args.peers.split(",") if v]
    args.mode_list = [m for m in args.modes.split(",") if m]
    if bad := set(args.mode_list) - set(MODES):
        p.error(f"unknown modes {sorted(bad)}")
    if any(n < 3 for n in args.peer_list):
        p.error("N must be at least 3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer_worker:
        return peer_worker(args)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    for noisy in ("libp2p", "libp2p.pubsub.gossipsub"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    libp2p_patches.install()  # counts every TCP byte (Traffic): here, the coordinator's
    if "secagg" in args.mode_list:
        register_vector(args.vector)
    if args.row:  # one network in this process (its coordinator's RSS is this process's)
        die_with_parent()
        n, mode = args.row.split(",")
        Path(args.out).write_text(json.dumps(trio.run(one_network, int(n), mode, args,
                                                      clock=SlackClock())))
        return 0
    rows = []
    for n in args.peer_list:
        for mode in args.mode_list:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                argv = [a for a in (argv if argv is not None else sys.argv[1:])]
                subprocess.run([sys.executable, __file__, *argv, "--row", f"{n},{mode}",
                                "--out", out.name], check=False)
                try:
                    rows.append(json.loads(Path(out.name).read_text()))
                except ValueError:
                    rows.append({"n": n, "mode": mode, "error": "the row's process failed",
                                 "published": 0, "measured": 0})
            if args.json:
                args.json.write_text(json.dumps({"rows": rows}, indent=1))
    print(table(rows))
    print()
    for line in goals(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
