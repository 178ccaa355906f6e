"""Benchmark: gossip delivery latency and stream throughput, in one trio process.

What it measures, all on 127.0.0.1 inside one Python process:

1. Gossip delivery. For each N in ``--peers`` it starts N fresh
   :class:`peer.node.NetworkNode` instances, wires them as a random graph
   (node i dials 2 random earlier nodes, so the average degree is about 4;
   dials run concurrently because each costs ~250 ms), subscribes every node
   to one topic per message size, waits ``--warmup`` seconds of heartbeats so
   meshes form, then publishes ``--messages`` messages of each size from
   random nodes. Every message carries its sequence number and its
   ``time.perf_counter()`` send time; each receiver's handler computes its own
   latency (publish call to handler call). A copy not seen within
   ``--timeout`` seconds of its publish counts as missing.
2. Stream throughput between two hosts for ``--stream-mb`` MB, two ways:
   a raw libp2p stream written in 1 MiB chunks and acknowledged with the
   SHA-256 of what arrived, and ``NetworkNode.fetch_blob`` (the
   request/response API that moves payloads too large for gossip).

Caveats that matter when reading the numbers: all peers share one event loop
and the machine's cores, so latency includes CPU contention (the "loop lag"
column shows how late a 10 ms timer fired during the measurement); and
py-libp2p's gossipsub sometimes leaves a node with an empty mesh, which then
receives nothing (seen in 50- and 100-peer graphs here); the "empty mesh" column counts
those nodes at the start of the measurement.

Run from the repository root: ``.venv/bin/python scripts/bench/gossip.py``.
Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import platform
import random
import statistics
import struct
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from peer.blobs import BLOB_MAX  # noqa: E402
from peer.gossip import GOSSIP_MAX  # noqa: E402
from peer.node import NetworkNode  # noqa: E402
from peer.streams import read_exact  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402

LISTEN = ["/ip4/127.0.0.1/tcp/0"]
HEADER = struct.Struct(">Id")  # sequence number, perf_counter() at publish
# py-libp2p drops outbound RPCs over 1 MiB silently; leave room for the envelope.
PUBSUB_HARD_MAX = 1024 * 1024 - 4096
STREAM_PROTO = TProtocol("/hypergossip/bench/sink/1.0.0")
CHUNK = 1024 * 1024
GOAL_SIZE = 1024
GOAL_PEERS = 100
GOAL_P99 = 1.0


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B")
    for suffix, mult in (("KI", 1024), ("MI", 1024 * 1024), ("K", 1024), ("M", 1024 * 1024)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def human_size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KB"
    return f"{n} B"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; ``inf`` entries stand for missing deliveries."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "missing"
    return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


@dataclass
class GossipResult:
    peers: int
    size: int
    messages: int
    expected: int
    delivered: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    p99_all_s: float | None  # missing copies counted as never arriving (None = missing)
    slowest_message_s: list[float | None]  # per message: time until its last receiver
    empty_mesh_start: int
    empty_mesh_end: int
    mesh_min: int
    mesh_median: float
    mesh_max: int
    loop_lag_p99_s: float | None
    loop_lag_max_s: float | None
    publishers_with_empty_mesh: int
    receivers_missing_some: int  # distinct receivers that missed at least one message

    @property
    def delivered_fraction(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0


@dataclass
class NetworkSetup:
    peers: int
    edges: int
    connect_failures: int
    start_s: float
    connect_s: float
    shutdown_s: float | None = None
    shutdown_error: str | None = None
    results: list[GossipResult] = field(default_factory=list)


@dataclass
class ThroughputResult:
    method: str
    megabytes: float
    seconds: list[float]

    @property
    def best_mb_s(self) -> float:
        return self.megabytes / min(self.seconds)

    @property
    def median_mb_s(self) -> float:
        return self.megabytes / statistics.median(self.seconds)


class Recorder:
    """Per topic: sequence number -> receiver peer id -> latency in seconds."""

    def __init__(self) -> None:
        self.latencies: dict[int, dict[str, float]] = {}

    def handler_for(self, me: str):
        async def on_message(data: bytes, origin: str) -> None:
            seq, sent = HEADER.unpack_from(data)
            latency = time.perf_counter() - sent
            if origin != me:  # the publisher's own subscription sees its message too
                self.latencies.setdefault(seq, {}).setdefault(me, latency)

        return on_message


class LoopLag:
    """How late a 10 ms sleep wakes up: a proxy for CPU contention in the loop."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.recording = False

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await trio.sleep(0.01)
            if self.recording:
                self.samples.append(time.perf_counter() - t - 0.01)


async def read_raw_topic(sub, handler) -> None:
    # NetworkNode._read_topic drops anything over GOSSIP_MAX (512 KiB), so payloads
    # above it are read straight from the py-libp2p subscription.
    while True:
        msg = await sub.get()
        try:
            origin = ID(msg.from_id).to_base58()
        except Exception:
            origin = "?"
        await handler(msg.data, origin)


def mesh_counts(nodes: list[NetworkNode], topic: str) -> list[int]:
    return [node.mesh_sizes().get(topic, 0) for node in nodes]


async def publish(node: NetworkNode, topic: str, data: bytes) -> None:
    if len(data) <= GOSSIP_MAX:
        await node.publish(topic, data)
    else:
        # NetworkNode.publish refuses anything over GOSSIP_MAX (512 KiB) by design;
        # py-libp2p itself only drops RPCs over 1 MiB, so go to pubsub directly.
        await node.pubsub.publish(topic, data)


async def measure_topic(
    nodes: list[NetworkNode],
    topic: str,
    recorder: Recorder,
    size: int,
    count: int,
    args: argparse.Namespace,
    rng: random.Random,
    lag: LoopLag,
) -> GossipResult:
    n = len(nodes)
    meshes = mesh_counts(nodes, topic)
    pad = rng.randbytes(size - HEADER.size)
    sequential = size > GOSSIP_MAX or args.sequential
    published: dict[int, tuple[float, str]] = {}
    empty_publishers = 0

    async def wait_for(seqs: list[int]) -> None:
        # Until every receiver has every listed message, or each one's timeout passes.
        while True:
            now = time.perf_counter()
            pending = [
                s for s in seqs
                if len(recorder.latencies.get(s, {})) < n - 1
                and now - published[s][0] < args.timeout
            ]
            if not pending:
                return
            await trio.sleep(0.05)

    lag.samples.clear()
    lag.recording = True
    for seq in range(count):
        src = rng.choice(nodes)
        if src.mesh_sizes().get(topic, 0) == 0:
            empty_publishers += 1
        data = HEADER.pack(seq, time.perf_counter()) + pad
        published[seq] = (HEADER.unpack_from(data)[1], src.peer_id)
        await publish(src, topic, data)
        if sequential:
            await wait_for([seq])
        await trio.sleep(args.spacing)
    await wait_for(list(published))
    lag.recording = False

    lat_ok: list[float] = []
    lat_all: list[float] = []
    slowest: list[float | None] = []
    missed_by: set[str] = set()
    everyone = {node.peer_id for node in nodes}
    for seq, (_, src) in published.items():
        got = {p: v for p, v in recorder.latencies.get(seq, {}).items() if v <= args.timeout}
        missed_by |= everyone - got.keys() - {src}
        lat_ok.extend(got.values())
        lat_all.extend(got.values())
        lat_all.extend([math.inf] * (n - 1 - len(got)))
        slowest.append(max(got.values()) if len(got) == n - 1 else None)
    p99_all = percentile(lat_all, 0.99)
    end_meshes = mesh_counts(nodes, topic)
    return GossipResult(
        peers=n,
        size=size,
        messages=count,
        expected=count * (n - 1),
        delivered=len(lat_ok),
        p50_s=percentile(lat_ok, 0.5),
        p99_s=percentile(lat_ok, 0.99),
        max_s=max(lat_ok) if lat_ok else None,
        p99_all_s=None if p99_all is None or math.isinf(p99_all) else p99_all,
        slowest_message_s=slowest,
        empty_mesh_start=sum(1 for m in meshes if m == 0),
        empty_mesh_end=sum(1 for m in end_meshes if m == 0),
        mesh_min=min(meshes),
        mesh_median=statistics.median(meshes),
        mesh_max=max(meshes),
        loop_lag_p99_s=percentile(lag.samples, 0.99),
        loop_lag_max_s=max(lag.samples) if lag.samples else None,
        publishers_with_empty_mesh=empty_publishers,
        receivers_missing_some=len(missed_by),
    )


async def gossip_network(n: int, args: argparse.Namespace, rng: random.Random) -> NetworkSetup:
    progress(f"N={n}: creating {n} nodes")
    nodes = [NetworkNode(Identity.generate(), listen=LISTEN) for _ in range(n)]
    edges = [(i, j) for i in range(1, n) for j in rng.sample(range(i), min(args.dials, i))]
    setup = NetworkSetup(peers=n, edges=len(edges), connect_failures=0, start_s=0, connect_s=0)
    lag = LoopLag()
    try:
        async with AsyncExitStack() as stack:
            t0 = time.perf_counter()
            for node in nodes:
                await stack.enter_async_context(node.running())
            setup.start_s = time.perf_counter() - t0
            progress(f"N={n}: started in {setup.start_s:.1f} s; dialling {len(edges)} edges")

            t0 = time.perf_counter()
            failed: list[tuple[int, int]] = []

            async def dial(i: int, j: int) -> None:
                if not await nodes[i].connect(nodes[j].addrs[0]):
                    failed.append((i, j))

            async with trio.open_nursery() as nursery:
                for i, j in edges:
                    nursery.start_soon(dial, i, j)
            if failed:
                progress(f"N={n}: {len(failed)} dials failed; retrying them once")
                retry, failed = failed, []
                async with trio.open_nursery() as nursery:
                    for i, j in retry:
                        nursery.start_soon(dial, i, j)
            setup.connect_failures = len(failed)
            setup.connect_s = time.perf_counter() - t0
            progress(f"N={n}: connected in {setup.connect_s:.1f} s "
                     f"({len(failed)} edges failed)")

            topics: dict[int, tuple[str, Recorder]] = {}
            for size in args.sizes:
                topic, rec = f"bench/n{n}/{size}", Recorder()
                topics[size] = (topic, rec)
                for node in nodes:
                    handler = rec.handler_for(node.peer_id)
                    if size <= GOSSIP_MAX:
                        await node.subscribe(topic, handler)
                    else:
                        sub = await node.pubsub.subscribe(topic)
                        node.start_soon(functools.partial(read_raw_topic, sub, handler))
            nodes[0].start_soon(lag.run)
            progress(f"N={n}: subscribed; warming up {args.warmup:.0f} s")
            await trio.sleep(args.warmup)

            for size, count in zip(args.sizes, args.messages, strict=True):
                topic, rec = topics[size]
                meshes = mesh_counts(nodes, topic)
                progress(f"N={n} {human_size(size)}: mesh sizes min/median/max "
                         f"{min(meshes)}/{statistics.median(meshes)}/{max(meshes)}, "
                         f"{meshes.count(0)} empty; publishing {count}")
                result = await measure_topic(nodes, topic, rec, size, count, args, rng, lag)
                setup.results.append(result)
                progress(f"N={n} {human_size(size)}: delivered "
                         f"{result.delivered}/{result.expected}, p50 {fmt_s(result.p50_s)}, "
                         f"p99 {fmt_s(result.p99_s)}, max {fmt_s(result.max_s)}")
            progress(f"N={n}: shutting down")
            t0 = time.perf_counter()
        setup.shutdown_s = time.perf_counter() - t0
    except Exception as exc:  # report shutdown trouble instead of losing the results
        setup.shutdown_error = f"{type(exc).__name__}: {exc}"
        progress(f"N={n}: error: {setup.shutdown_error}")
        if not setup.results:
            raise
    return setup


async def stream_throughput(args: argparse.Namespace) -> list[ThroughputResult]:
    total = int(args.stream_mb * 1_000_000)
    a = NetworkNode(Identity.generate(), listen=LISTEN)
    b = NetworkNode(Identity.generate(), listen=LISTEN)

    async def sink(stream) -> None:
        (length,) = struct.unpack(">Q", await read_exact(stream, 8))
        digest, got = hashlib.sha256(), 0
        while got < length:
            chunk = await stream.read(min(CHUNK, length - got))
            if not chunk:
                await stream.reset()
                return
            digest.update(chunk)
            got += len(chunk)
        await stream.write(digest.digest())
        await stream.close()

    b.host.set_stream_handler(STREAM_PROTO, sink)
    raw = ThroughputResult("raw stream, 1 MiB writes + digest ack", total / 1e6, [])
    blob = ThroughputResult("fetch_blob (request/response API)", total / 1e6, [])
    async with a.running(), b.running():
        if not await a.connect(b.addrs[0]):
            raise RuntimeError("could not connect the two throughput hosts")
        payload = os.urandom(total)
        expect = hashlib.sha256(payload).digest()
        for rep in range(args.stream_reps):
            t0 = time.perf_counter()
            stream = await a.host.new_stream(ID.from_base58(b.peer_id), [STREAM_PROTO])
            await stream.write(struct.pack(">Q", total))
            view = memoryview(payload)
            for off in range(0, total, CHUNK):
                await stream.write(bytes(view[off:off + CHUNK]))
            ack = await read_exact(stream, 32)
            elapsed = time.perf_counter() - t0
            await stream.close()
            if ack != expect:
                raise RuntimeError("raw stream: receiver digest does not match")
            raw.seconds.append(elapsed)
            progress(f"stream rep {rep + 1}: raw {total / 1e6 / elapsed:.1f} MB/s")

            # A fresh blob each rep: fetch_blob returns a local copy without a request.
            data = struct.pack(">Q", rep) + payload[8:]
            digest = b.blobs.put(data)
            t0 = time.perf_counter()
            got = await a.fetch_blob(digest, [b.peer_id], max_size=max(BLOB_MAX, total))
            elapsed = time.perf_counter() - t0
            if got != data:
                raise RuntimeError("fetch_blob returned different bytes")
            blob.seconds.append(elapsed)
            progress(f"stream rep {rep + 1}: fetch_blob {total / 1e6 / elapsed:.1f} MB/s")
    return [raw, blob]


def gossip_table(setups: list[NetworkSetup], timeout: float) -> Table:
    table = Table(title=f"Gossip delivery (publish -> handler; missing = not within {timeout:g} s)")
    for col in ("peers", "size", "msgs", "delivered", "short (d)", "p50", "p99", "max",
                "p99 all (a)", "empty mesh (b)", "mesh min/med/max", "empty pub (c)",
                "loop lag p99/max"):
        table.add_column(col, justify="right", no_wrap=True)
    for setup in setups:
        for r in setup.results:
            table.add_row(
                str(r.peers), human_size(r.size), str(r.messages),
                f"{r.delivered}/{r.expected} ({100 * r.delivered_fraction:.1f}%)",
                str(r.receivers_missing_some),
                fmt_s(r.p50_s), fmt_s(r.p99_s), fmt_s(r.max_s),
                fmt_s(r.p99_all_s) if r.p99_all_s is not None else "missing",
                f"{r.empty_mesh_start}/{r.empty_mesh_end}",
                f"{r.mesh_min}/{r.mesh_median:g}/{r.mesh_max}",
                f"{r.publishers_with_empty_mesh}/{r.messages}",
                f"{fmt_s(r.loop_lag_p99_s)}/{fmt_s(r.loop_lag_max_s)}",
            )
    return table


def setup_table(setups: list[NetworkSetup]) -> Table:
    table = Table(title="Network setup")
    for col in ("peers", "edges", "failed dials", "start", "connect", "shutdown"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in setups:
        shutdown = s.shutdown_error or (f"{s.shutdown_s:.1f} s" if s.shutdown_s else "-")
        table.add_row(str(s.peers), str(s.edges), str(s.connect_failures),
                      f"{s.start_s:.1f} s", f"{s.connect_s:.1f} s", shutdown)
    return table


def throughput_table(results: list[ThroughputResult]) -> Table:
    table = Table(title="Stream throughput between two hosts (one process)")
    for col in ("method", "MB", "runs (s)", "best MB/s", "median MB/s"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in results:
        table.add_row(r.method, f"{r.megabytes:g}", ", ".join(f"{s:.2f}" for s in r.seconds),
                      f"{r.best_mb_s:.1f}", f"{r.median_mb_s:.1f}")
    return table


def goal_line(setups: list[NetworkSetup]) -> str:
    for s in setups:
        for r in s.results:
            if r.peers == GOAL_PEERS and r.size == GOAL_SIZE:
                if r.p99_all_s is not None and r.p99_all_s < GOAL_P99:
                    verdict = "MET"
                else:
                    verdict = "NOT MET"
                shown = fmt_s(r.p99_all_s) if r.p99_all_s is not None else "missing (>1% lost)"
                return (f"Goal: 1 KB to {GOAL_PEERS} peers in < {GOAL_P99:g} s at p99 "
                        f"(missing counted as late): p99 = {shown} -> {verdict}")
    return f"Goal: 1 KB to {GOAL_PEERS} peers in < {GOAL_P99:g} s at p99: not measured in this run"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="Goal: 1 KB gossip reaches 100 peers in under 1 s at p99. Latencies are "
               "measured in one process on shared cores, so they include CPU contention.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--peers", default="10,50,100",
                   help="comma-separated network sizes; a fresh network is built for each "
                        "(default 10,50,100; --quick 10,50)")
    p.add_argument("--sizes", default="1KB,900KB",
                   help="comma-separated gossip payload sizes (B, KB=1024, MB); sizes over "
                        f"{GOSSIP_MAX} bytes bypass NetworkNode's GOSSIP_MAX check "
                        "(default 1KB,900KB)")
    p.add_argument("--messages", default=None,
                   help="messages per size: one number, or one per size "
                        "(default 20 for sizes up to 64 KB, 5 above; --quick: 10 and 3)")
    p.add_argument("--quick", action="store_true",
                   help="peers 10,50, fewer messages, 3 s warm-up, 20 MB stream test, 2 reps")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of heartbeats after subscribing, before measuring "
                        "(default 5, --quick 3)")
    p.add_argument("--spacing", type=float, default=0.3,
                   help="seconds between publishes (default 0.3)")
    p.add_argument("--sequential", action="store_true",
                   help="wait for each message's delivery (or timeout) before the next; "
                        f"always on for sizes over {GOSSIP_MAX} bytes")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds after publish before a copy counts as missing (default 10)")
    p.add_argument("--dials", type=int, default=2,
                   help="earlier nodes each node dials; average degree is about twice this "
                        "(default 2)")
    p.add_argument("--stream-mb", type=float, default=None,
                   help="MB (10^6 bytes) per stream throughput run (default 50, --quick 20); "
                        "0 skips it")
    p.add_argument("--stream-reps", type=int, default=None,
                   help="stream throughput repetitions (default 3, --quick 2)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for graph and publishers (default: random, printed)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    p.add_argument("--verbose", action="store_true",
                   help="keep hypergossip.node warnings (failed dials etc.) on stderr")
    args = p.parse_args(argv)

    if args.quick and args.peers == "10,50,100":
        args.peers = "10,50"
    args.peers = [int(x) for x in args.peers.split(",") if x.strip()]
    args.sizes = [parse_size(x) for x in args.sizes.split(",") if x.strip()]
    for size in args.sizes:
        if not HEADER.size <= size <= PUBSUB_HARD_MAX:
            p.error(f"size {size} must be between {HEADER.size} and {PUBSUB_HARD_MAX} bytes "
                    "(py-libp2p drops larger RPCs silently)")
    if min(args.peers) < 2:
        p.error("each network needs at least 2 peers")
    if args.messages is None:
        small, large = (10, 3) if args.quick else (20, 5)
        args.messages = [small if s <= 64 * 1024 else large for s in args.sizes]
    else:
        counts = [int(x) for x in args.messages.split(",")]
        if len(counts) == 1:
            counts *= len(args.sizes)
        if len(counts) != len(args.sizes):
            p.error("--messages needs one number or one per size")
        args.messages = counts
    if args.warmup is None:
        args.warmup = 3.0 if args.quick else 5.0
    if args.stream_mb is None:
        args.stream_mb = 20.0 if args.quick else 50.0
    if args.stream_reps is None:
        args.stream_reps = 2 if args.quick else 3
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    return args


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    setups = []
    for n in args.peers:
        setups.append(await gossip_network(n, args, rng))
    throughput: list[ThroughputResult] = []
    if args.stream_mb > 0:
        progress(f"stream throughput: {args.stream_mb:g} MB x {args.stream_reps}")
        throughput = await stream_throughput(args)
    return {"setups": setups, "throughput": throughput}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    if not args.verbose:
        logging.getLogger("hypergossip").setLevel(logging.ERROR)
    progress(f"peers {args.peers}, sizes {args.sizes}, messages {args.messages}, "
             f"seed {args.seed}, {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    out = trio.run(run, args)
    wall = time.perf_counter() - t0

    # Wide enough for the gossip table when stdout is a file or a pipe.
    console = Console() if sys.stdout.isatty() else Console(width=190)
    console.print(setup_table(out["setups"]))
    console.print(gossip_table(out["setups"], args.timeout))
    console.print("(a) p99 over every (message, receiver) pair, a missing copy counting as "
                  "never arriving.\n(b) nodes with no mesh peers for the topic when measuring "
                  "began / ended.\n(c) messages published by a node whose mesh was empty.\n"
                  "(d) receivers that missed at least one message.")
    if out["throughput"]:
        console.print(throughput_table(out["throughput"]))
    console.print(goal_line(out["setups"]))
    console.print(f"Total wall time {wall:.0f} s, seed {args.seed}, {os.cpu_count()} CPUs.")

    if args.json:
        doc = {
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "wall_s": wall,
            "setups": [asdict(s) for s in out["setups"]],
            "throughput": [
                {**asdict(r), "best_mb_s": r.best_mb_s, "median_mb_s": r.median_mb_s}
                for r in out["throughput"]
            ],
            "goal": goal_line(out["setups"]),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
