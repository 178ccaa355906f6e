"""The hostile harness: every layer of a live testnet attacked, then checked.

Starts a testnet (a coordinator and ``--peers`` honest peers, each its own
process, stats rounds under range-proven secure aggregation), lets it publish,
then sends ``--inputs`` hostile inputs from bare libp2p hosts and plain
sockets (peer/hostile.py: TCP before the handshake, multistream, yamux,
meshsub RPCs, every gossip topic, every stream protocol, HTTP), aimed at the
coordinator and at one peer, layer by layer, while rounds go on. Then it
checks that every process is alive, no hostile input was accepted, every
round published the honest mean (within the secure sum's stated bound), and
reports the coordinator's RSS and open files before and after.

    .venv/bin/python scripts/bench/hostile.py                  # 100,000 inputs (long)
    .venv/bin/python scripts/bench/hostile.py --inputs 3000    # a short run, as CI does

Exit status 0 when every check holds; the table and ``--json`` say why not.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import trio
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from testnet import Testnet, check_stats, round_summary  # noqa: E402
from testnet import parse_args as testnet_args  # noqa: E402

from peer.hostile import LAYERS, Hostile, Target, enroll, raw_host  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402

# the share of the inputs each layer gets (its attacks differ in cost a lot)
SHARE = {"tcp (before the handshake)": 0.005, "multistream": 0.01, "yamux": 0.05,
         "meshsub RPCs": 0.05, "gossip topics": 0.45, "stream protocols": 0.3, "HTTP": 0.135}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/hostile.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=100_000,
                   help="hostile inputs to send in all (default: %(default)s)")
    p.add_argument("--peers", type=int, default=4, help="honest peers (default: 4)")
    p.add_argument("--max-seconds", type=float, default=1800.0,
                   help="stop attacking after this long whatever the count (default: 1800)")
    p.add_argument("--settle-rounds", type=int, default=2,
                   help="rounds that must publish after the attack (default: 2)")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--run-dir", type=Path, help="testnet keys, database, logs (default: a "
                   "temporary directory)")
    return p.parse_args(argv)


def resources(proc: psutil.Process) -> dict:
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds()}


class Rounds:
    """Follows the coordinator's rounds: every one that ends is checked when the run does."""

    def __init__(self, url: str):
        self.url, self.rows, self.next = url, [], 1

    async def poll(self, http: httpx.AsyncClient) -> None:
        while True:
            try:
                r = await http.get(f"{self.url}/rounds/{self.next}", timeout=10)
                if r.status_code == 200 and r.json()["status"] != "open":
                    self.rows.append(round_summary(r.json()))
                    self.next += 1
                    continue
            except httpx.HTTPError:
                pass
            await trio.sleep(0.5)


async def attack(args: argparse.Namespace, net: Testnet, console: Console,
                 proc: psutil.Process) -> dict:
    coordinator = Target(net.coordinator_id, net.coordinator_addr, http=net.url,
                         coordinator=True)
    peer = Target(net.peer_ids[0], net.peer_addrs[0])
    outcomes: dict[str, Counter] = {layer: Counter() for layer in LAYERS}
    sent: Counter = Counter()
    rss: dict[str, dict] = {}  # the coordinator's, after each layer
    rounds = Rounds(net.url)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
        nursery.start_soon(rounds.poll, http)
        while not rounds.rows:
            await trio.sleep(0.5)
        before = len(rounds.rows)
        async with raw_host() as host:
            h = Hostile(host, Identity.generate(), net.coordinator_id, http=http)
            assert await enroll(h, coordinator), "the attacker's key was not admitted"
            for layer, attacks in LAYERS.items():
                budget = max(len(attacks), int(args.inputs * SHARE[layer]))
                layer_started = time.monotonic()
                i = 0
                while sent[layer] < budget and time.monotonic() - started < args.max_seconds:
                    fn, at_peer = attacks[i % len(attacks)]
                    target = peer if at_peer and i % 2 else coordinator
                    h.round_hint = max(1, rounds.next)
                    with trio.move_on_after(30):
                        got = await fn(h, target)
                        outcomes[layer] += got
                        sent[layer] += sum(got.values())
                    i += 1
                rss[layer] = resources(proc)
                console.print(f"{layer:28s} {sent[layer]:>7,} inputs in "
                              f"{time.monotonic() - layer_started:6.1f} s; rounds so far "
                              f"{len(rounds.rows)}; coordinator RSS {rss[layer]['rss_mb']} MB",
                              highlight=False)
        attacked = len(rounds.rows)
        console.print(f"waiting for {args.settle_rounds} more rounds ...")
        with trio.move_on_after(120):
            while len(rounds.rows) < attacked + args.settle_rounds:
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    return {"outcomes": outcomes, "sent": sent, "rows": rounds.rows, "before": before,
            "attacked": attacked, "seconds": time.monotonic() - started, "rss": rss}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("libp2p", "multiaddr", "hypergossip"):  # the attacker's side of things
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    console = Console()
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="hg-hostile-"))
    net = Testnet(testnet_args(["--peers", str(args.peers), "--keep-running", "--run-dir",
                                str(run_dir), "--log-level", "WARNING"]))
    try:
        with httpx.Client(timeout=10) as client:
            health = net.start(client)
        net.coordinator_id = health["peer_id"]
        net.coordinator_addr = health["multiaddrs"][0]
        proc = psutil.Process(net.procs[0][1].pid)
        console.print(f"testnet up: coordinator {net.coordinator_id[:16]}..., "
                      f"{args.peers} peers; attacking with {args.inputs:,} inputs")
        time.sleep(3.0)
        res_before = resources(proc)
        report = trio.run(attack, args, net, console, proc)
        alive = {name: p.poll() is None for name, p in net.procs}
        res_after = resources(proc) if alive["coordinator"] else {}
        try:
            health = httpx.get(f"{net.url}/health", timeout=10).json()
        except httpx.HTTPError:
            health = {}
    finally:
        net.stop()
    data = {pid: net.data[i] for i, pid in enumerate(net.peer_ids)}
    rows = report["rows"]
    correct = check_stats([r for r in rows if r["status"] == "published"], data, secure=True)
    published = sum(r["status"] == "published" for r in rows)
    honest = set(net.peer_ids)
    outsiders = sum(len(set(r.get("secure_aggregation", {}).get("included", [])) - honest)
                    for r in rows)
    accepted = sum(c["accepted"] for c in report["outcomes"].values())
    table = Table(title=f"hostile harness: {sum(report['sent'].values()):,} inputs in "
                  f"{report['seconds']:.0f} s")
    table.add_column("layer")
    table.add_column("inputs", justify="right")
    table.add_column("outcome as the attacker saw it")
    table.add_column("coordinator RSS after", justify="right")
    for layer, c in report["outcomes"].items():
        table.add_row(layer, f"{report['sent'][layer]:,}",
                      ", ".join(f"{k} {v:,}" for k, v in c.most_common()),
                      f"{report['rss'].get(layer, {}).get('rss_mb', '-')} MB")
    console.print(table)
    crashes = [name for name, ok in alive.items() if not ok]
    summary = {
        "inputs": sum(report["sent"].values()), "seconds": round(report["seconds"], 1),
        "crashes": crashes, "accepted_bad_inputs": accepted + outsiders,
        "rounds": len(rows), "rounds_published": published,
        "rounds_during_attack": report["attacked"] - report["before"],
        "rounds_correct": correct and published == len(rows),
        "coordinator_before": res_before, "coordinator_after": res_after,
        "coordinator_after_each_layer": report["rss"],
        "contained_at_coordinator": health.get("contained", {}),
        "refused_at_coordinator": _refusals(net),
        "by_layer": {k: dict(v) for k, v in report["outcomes"].items()},
    }
    console.print(f"crashes: {len(crashes)} {crashes or ''}; accepted bad inputs: "
                  f"{summary['accepted_bad_inputs']}; rounds: {published} of {len(rows)} "
                  f"published ({summary['rounds_during_attack']} during the attack), honest "
                  f"result {'correct in all' if summary['rounds_correct'] else 'NOT correct'}; "
                  f"coordinator RSS {res_before.get('rss_mb')} -> {res_after.get('rss_mb')} MB, "
                  f"fds {res_before.get('fds')} -> {res_after.get('fds')}")
    console.print(f"contained at the coordinator: {summary['contained_at_coordinator']}")
    console.print(f"refused at the coordinator: {summary['refused_at_coordinator']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    ok = not crashes and summary["accepted_bad_inputs"] == 0 and summary["rounds_correct"] \
        and summary["rounds_during_attack"] >= 1
    return 0 if ok else 1


def _refusals(net: Testnet) -> dict:
    """The coordinator's refusal counters, from its database (the process has stopped)."""
    import sqlite3
    db = sqlite3.connect(net.run_dir / "coordinator" / "coordinator.sqlite3")
    try:
        return dict(db.execute("SELECT reason, SUM(count) FROM rejections GROUP BY reason"))
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
