"""Benchmark: what range-checked secure sums (protocol.crypto.vss) cost, beside SecAgg+.

For each N in ``--clients``, one round of the stats workload's two coordinates
(height, weight), driven sans-IO in one process, one thread, no network:

* dealer CPU per client (``time.thread_time``): encode, commit, prove the range
  of each coordinate (``--bits`` bits each), share to the committee;
* member CPU per committee member: decrypt and test every dealer's shares,
  then sum them;
* coordinator CPU: check every dealing (points and range proofs: the expensive
  part), route, check every member's sum, interpolate;
* bytes each client uploads (its dealing, msgpack);
* the same round under SecAgg+ (``Config.default``) for comparison;
* the decoded sums against the clipped true sums, within the stated bound.

Then ``--network-rounds`` rounds of the real thing over libp2p on 127.0.0.1 (a
coordinator and N peer daemons in this process, stats workload, vss and
secagg), reporting the warm rounds' wall time.

Run from the repository root: ``.venv/bin/python scripts/bench/rangecheck.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import trio  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from coordinator.service import Coordinator, CoordinatorConfig  # noqa: E402
from peer.daemon import PeerDaemon  # noqa: E402
from protocol.crypto import secagg, vss  # noqa: E402
from protocol.crypto.fixedpoint import FixedPoint  # noqa: E402
from protocol.learning.registry import get_workload  # noqa: E402
from protocol.learning.workloads import Stats  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402
from protocol.wire.messages import StatsContribution, encode  # noqa: E402

LOW, HIGH = Stats.LOW.tolist(), Stats.HIGH.tolist()


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(acc: dict, key: str, fn, *args):
    t0 = time.thread_time()
    try:
        return fn(*args)
    finally:
        acc[key] = acc.get(key, 0.0) + time.thread_time() - t0


def vss_round(n: int, bits: int, committee: int, seed: int) -> dict:
    ids = sorted(Identity.generate().peer_id for _ in range(n))
    rng = np.random.default_rng(seed)
    xs = {p: np.array([rng.uniform(150, 200), rng.uniform(45, 110)]) for p in ids}
    cfg = vss.VssConfig.default(1, ids, os.urandom(32), LOW, HIGH, bits=bits,
                             committee_size=committee)
    server, clients = vss.VssServer(cfg), {p: vss.VssClient(p, cfg) for p in ids}
    cpu: dict[str, dict] = {p: {} for p in ids}
    srv: dict = {}
    upload = {}
    for p, c in clients.items():
        key = timed(cpu[p], "member", c.advertise)
        if key is not None:
            timed(srv, "s", server.receive_key, p, key)
    directory = timed(srv, "s", server.close_keys)
    for p, c in clients.items():
        dealing = timed(cpu[p], "dealer", c.deal, directory, xs[p])
        upload[p] = len(encode(dealing))
        timed(srv, "s", server.receive_dealing, p, dealing)
    body, inboxes = timed(srv, "s", server.close_deal)
    empty = vss.MemberInbox(ciphertexts={})
    for p, c in clients.items():
        acc = timed(cpu[p], "member", c.check, body, inboxes.get(p, empty))
        if acc is not None:
            timed(srv, "s", server.receive_accusations, p, acc)
    disputes = timed(srv, "s", server.close_check)
    for c in clients.values():
        c.reveal(disputes)
    inclusion = timed(srv, "s", server.close_resolve)
    for p, c in clients.items():
        share = timed(cpu[p], "member", c.aggregate, inclusion)
        if share is not None:
            timed(srv, "s", server.receive_aggregate, p, share)
    out = timed(srv, "s", server.close_aggregate)
    truth = sum(np.clip(xs[p], LOW, HIGH) for p in ids)
    members = [cpu[m]["member"] for m in cfg.committee]
    return dict(clients=n, committee=len(cfg.committee), threshold=cfg.threshold, bits=bits,
                dealer_cpu_s=statistics.fmean(cpu[p]["dealer"] for p in ids),
                member_cpu_s=statistics.fmean(members), coordinator_cpu_s=srv["s"],
                upload_bytes=statistics.fmean(upload.values()),
                max_error=float(np.max(np.abs(out.total - truth))),
                error_bound=cfg.error_bound(n),
                correct=bool(np.max(np.abs(out.total - truth)) <= cfg.error_bound(n)))


def secagg_round(n: int, seed: int) -> dict:
    idents = [Identity.generate() for _ in range(n)]
    by = {i.peer_id: i for i in idents}
    ids = sorted(by)
    rng = np.random.default_rng(seed)
    xs = {p: np.array([rng.uniform(150, 200), rng.uniform(45, 110)]) for p in ids}
    enc = FixedPoint(300.0, 10_000, 64)
    cfg = secagg.SecAggConfig.default(1, ids, os.urandom(32), 2, enc)
    server = secagg.SecAggServer(cfg)
    clients = {p: secagg.SecAggClient(p, cfg, by[p].sign) for p in ids}
    cpu: dict[str, dict] = {p: {} for p in ids}
    srv: dict = {}
    upload = {p: 0 for p in ids}

    def client(p, fn, *args):
        msg = timed(cpu[p], "c", fn, *args)
        upload[p] += len(encode(msg))
        return msg

    for p, c in clients.items():
        timed(srv, "s", server.receive_keys, p, client(p, c.advertise))
    d = timed(srv, "s", server.close_keys)
    for p, c in clients.items():
        timed(srv, "s", server.receive_shares, p, client(p, c.share_keys, d))
    inboxes = timed(srv, "s", server.close_shares)
    for p, c in clients.items():
        timed(srv, "s", server.receive_masked, p, client(p, c.masked_input, inboxes[p], xs[p]))
    survivors = timed(srv, "s", server.close_masked)
    for p, c in clients.items():
        timed(srv, "s", server.receive_consistency, p, client(p, c.confirm, survivors))
    request = timed(srv, "s", server.close_consistency)
    for p, c in clients.items():
        timed(srv, "s", server.receive_unmask, p, client(p, c.unmask, request))
    timed(srv, "s", server.close_unmask)
    return dict(clients=n, degree=cfg.degree, threshold=cfg.threshold,
                client_cpu_s=statistics.fmean(cpu[p]["c"] for p in ids),
                coordinator_cpu_s=srv["s"], upload_bytes=statistics.fmean(upload.values()))


async def network(n: int, protocol: str, rounds: int) -> list[float]:
    walls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rangecheck-bench-") as tmp:
        cfg = CoordinatorConfig(data_dir=Path(tmp), http_host="127.0.0.1", port=0,
                                listen=["/ip4/127.0.0.1/tcp/0"], min_peers=2, start_peers=n,
                                round_pause=0.2, max_rounds=rounds + 1, phase_timeout=30.0,
                                secure_protocol=protocol)
        coord = Coordinator(cfg)
        rng = np.random.default_rng(n)
        async with trio.open_nursery() as nursery:
            await nursery.start(coord.run)
            boot = coord.node.addrs[0]
            for _ in range(n):
                data = StatsContribution(height=float(rng.uniform(150, 200)),
                                         weight=float(rng.uniform(45, 110)))
                await nursery.start(PeerDaemon(Identity.generate(), get_workload("stats"),
                                               data, bootstrap=[boot]).run)
            while coord.rounds_run < rounds + 1:
                await trio.sleep(0.1)
            for r in range(2, rounds + 2):  # round 1 warms up
                start, end = coord.sent_at.get(("announce", r)), coord.sent_at.get(("result", r))
                if start and end and coord.store.round_row(r)["status"] == "published":
                    walls.append(end - start)
            nursery.cancel_scope.cancel()
        coord.store.close()
    return walls


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="10,50,100", help="comma-separated N (default 10,50,100)")
    p.add_argument("--bits", type=int, default=14, help="range-proof bits (default 14)")
    p.add_argument("--committee", type=int, default=16, help="committee size (default 16)")
    p.add_argument("--network-rounds", type=int, default=2,
                   help="measured rounds over libp2p per N and protocol (0: skip; default 2)")
    p.add_argument("--network-clients", default="10,50",
                   help="N for the libp2p rounds (default 10,50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for name in ("libp2p", "multiaddr", "hypercorn", "hypergossip"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    ns = [int(x) for x in args.clients.split(",") if x]
    rows = []
    for n in ns:
        progress(f"sans-IO N={n}")
        rows.append((vss_round(n, args.bits, args.committee, args.seed),
                     secagg_round(n, args.seed)))
    table = Table(title=f"Range-checked sums (vss, {args.bits}-bit proofs of 2 coordinates) "
                        "vs SecAgg+ (Config.default), one round sans-IO, CPU = thread time")
    for col in ("N", "committee/thr", "dealer CPU", "member CPU", "coordinator CPU",
                "upload/client", "max err / bound", "SecAgg+ deg/thr", "SecAgg+ client",
                "SecAgg+ coordinator", "SecAgg+ upload"):
        table.add_column(col, justify="right", no_wrap=True)
    for v, s in rows:
        table.add_row(str(v["clients"]), f"{v['committee']}/{v['threshold']}",
                      ms(v["dealer_cpu_s"]), ms(v["member_cpu_s"]), ms(v["coordinator_cpu_s"]),
                      f"{v['upload_bytes'] / 1024:.1f} KiB",
                      f"{v['max_error']:.1e} / {v['error_bound']:.1e}"
                      + ("" if v["correct"] else " WRONG"),
                      f"{s['degree']}/{s['threshold']}", ms(s["client_cpu_s"]),
                      ms(s["coordinator_cpu_s"]), f"{s['upload_bytes'] / 1024:.1f} KiB")
    console = Console(width=200)
    console.print(table)
    net = []
    if args.network_rounds:
        for n in [int(x) for x in args.network_clients.split(",") if x]:
            for protocol in ("vss", "secagg"):
                progress(f"libp2p N={n} {protocol}")
                walls = trio.run(network, n, protocol, args.network_rounds)
                net.append(dict(clients=n, protocol=protocol, walls_s=walls))
        t2 = Table(title="Stats rounds over libp2p, coordinator and peers in one process "
                         "(announcement to result, warm rounds)")
        for col in ("N", "protocol", "rounds", "mean"):
            t2.add_column(col, justify="right")
        for r in net:
            t2.add_row(str(r["clients"]), r["protocol"],
                       ", ".join(ms(w) for w in r["walls_s"]) or "-",
                       ms(statistics.fmean(r["walls_s"])) if r["walls_s"] else "-")
        console.print(t2)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"sansio": [{"vss": v, "secagg": s} for v, s in rows], "network": net}, indent=2))
    return 0 if all(v["correct"] for v, _ in rows) and not any(
        math.isnan(x) for v, _ in rows for x in (v["max_error"],)) else 1


if __name__ == "__main__":
    sys.exit(main())
