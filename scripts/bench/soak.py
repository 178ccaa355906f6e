"""The soak: many fast rounds, peers killed and restarted at random, the coordinator SIGKILLed.

Runs ``--rounds`` rounds in the clear, then as many under range-proven secure
aggregation, on one database: a coordinator and ``--peers`` peers, each its
own process, on 127.0.0.1. Every few seconds a random peer is SIGKILLed and
restarted a moment later (same key); half-way through each phase the
coordinator itself is SIGKILLed and restarted on the same database. It
reports, at the start, a quarter, half (just before the SIGKILL), three
quarters and the end of each phase, the coordinator's RSS and open file
descriptors and the database's size (bounded by ``--retain-rounds``): within
one process, compare a quarter with half, and three quarters with the end.
It checks that every message a peer was told was
accepted (its log says so) is in the database: none lost to a SIGKILL.

    .venv/bin/python scripts/bench/soak.py                 # 1,000 rounds (a few minutes)
    .venv/bin/python scripts/bench/soak.py --rounds 50     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from protocol.wire.identity import Identity  # noqa: E402

ACCEPTED = re.compile(rb"round (\d+): (\S+) accepted")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/soak.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=500,
                   help="rounds per phase (clear, then secure; default: %(default)s)")
    p.add_argument("--peers", type=int, default=6, help="peers (default: 6)")
    p.add_argument("--retain-rounds", type=int, default=200,
                   help="the coordinator's --retain-rounds (default: %(default)s)")
    p.add_argument("--kill-every", type=float, default=5.0,
                   help="seconds between peer kills, on average (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--run-dir", type=Path, help="keys, database, logs (default: a temporary "
                   "directory)")
    return p.parse_args(argv)


class Net:
    def __init__(self, args: argparse.Namespace, run_dir: Path):
        self.args, self.dir = args, run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.http = free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.libp2p = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, list[str]] = {}
        self.db = run_dir / "coordinator" / "coordinator.sqlite3"
        self.peer_ids: dict[str, str] = {}
        self.restarts = {"peers": 0, "coordinator": 0}

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.argv[name] = argv
        self.procs[name] = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def coordinator(self, secure: bool) -> None:
        argv = ["-m", "coordinator", "--host", "127.0.0.1", "--port", str(self.http),
                "--listen", f"/ip4/127.0.0.1/tcp/{self.libp2p}", "--data-dir",
                str(self.dir / "coordinator"), "--min-peers", "3", "--round-timeout", "3",
                "--phase-timeout", "2", "--round-pause", "0.05", "--retain-rounds",
                str(self.args.retain_rounds), "--log-level", "WARNING"]
        self.spawn("coordinator", argv + ([] if secure else ["--insecure"]))

    def peers(self, boot: str) -> None:
        rng = random.Random(self.args.seed)
        for i in range(self.args.peers):
            key = self.dir / f"peer-{i}.key"
            ident = Identity.generate()
            ident.save(key)
            self.peer_ids[f"peer-{i}"] = ident.peer_id
            h, w = round(rng.gauss(170, 10), 1), round(rng.gauss(70, 12), 1)
            self.spawn(f"peer-{i}", ["-m", "peer", "--key", str(key), "--listen",
                                     f"/ip4/127.0.0.1/tcp/{free_port()}", "--bootstrap", boot,
                                     "--data", f"height={h},weight={w}", "--log-level", "INFO"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, name: str) -> None:
        self.spawn(name, self.argv[name])
        self.restarts["coordinator" if name == "coordinator" else "peers"] += 1

    def health(self, timeout: float = 60.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                return httpx.get(f"{self.url}/health", timeout=5).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("coordinator did not answer /health")

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGINT)

    def sample(self, label: str) -> dict:
        proc = psutil.Process(self.procs["coordinator"].pid)
        size = sum(p.stat().st_size for p in self.db.parent.glob("coordinator.sqlite3*"))
        return {"at": label, "round": self.last_round(), "rss_mb":
                round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds(),
                "db_kb": size // 1024}

    def last_round(self) -> int:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).json()["round"]
        except (httpx.HTTPError, KeyError, ValueError):
            return -1


def run_phase(net: Net, secure: bool, start: int, console: Console) -> dict:
    """Run rounds until ``--rounds`` more have ended, with chaos; samples and counts."""
    args = net.args
    rng = random.Random(args.seed + secure)
    net.coordinator(secure)
    health = net.health()
    if not net.peer_ids:
        net.peers(health["multiaddrs"][0])
    target, half = start + args.rounds, start + args.rounds // 2
    quarters = {start + args.rounds // 4: "1/4", start + 3 * args.rounds // 4: "3/4"}
    samples, killed_coordinator, down = [], False, {}
    time.sleep(2.0)
    samples.append(net.sample("start"))
    next_kill = time.time() + rng.expovariate(1 / args.kill_every)
    last_print = 0.0
    while (r := net.last_round()) < target:
        now = time.time()
        for name, back in list(down.items()):
            if now >= back:
                net.restart(name)
                del down[name]
        if now >= next_kill:
            name = rng.choice(sorted(net.peer_ids))
            if name not in down:
                net.kill(name)
                down[name] = now + rng.uniform(1.0, 3.0)
            next_kill = now + rng.expovariate(1 / args.kill_every)
        for at, label in list(quarters.items()):
            if r >= at:
                samples.append(net.sample(label))
                del quarters[at]
        if not killed_coordinator and r >= half:
            samples.append(net.sample("middle, then SIGKILL"))
            net.kill("coordinator")  # SIGKILL mid-run: nothing it acknowledged may be lost
            net.restart("coordinator")
            net.health()
            killed_coordinator = True
        if now - last_print > 10:
            console.print(f"  {'secure' if secure else 'clear'}: round {r} of {target}; "
                          f"restarts {net.restarts}", highlight=False)
            last_print = now
        time.sleep(0.2)
    for name in list(down):
        net.restart(name)
    samples.append(net.sample("end"))
    net.kill("coordinator", signal.SIGINT)
    return {"samples": samples, "until": target}


def accepted_vs_stored(net: Net) -> dict:
    """Every (peer, round, domain) a peer logged as accepted, against the database's
    messages of the rounds it still holds."""
    db = sqlite3.connect(net.db)
    try:
        oldest = db.execute("SELECT COALESCE(MIN(round), 0) FROM rounds").fetchone()[0]
        stored = {(s, r, d) for s, r, d in db.execute(
            "SELECT sender, round, domain FROM messages WHERE round >= ?", (oldest,))}
        rounds = dict(db.execute("SELECT status, COUNT(*) FROM rounds GROUP BY status"))
    finally:
        db.close()
    accepted = set()
    for name, peer_id in net.peer_ids.items():
        for m in ACCEPTED.finditer((net.logs / f"{name}.log").read_bytes()):
            if int(m.group(1)) >= oldest:
                accepted.add((peer_id, int(m.group(1)), m.group(2).decode()))
    return {"oldest_round_kept": oldest, "accepted": len(accepted), "stored": len(stored),
            "lost": len(accepted - stored), "rounds_kept": rounds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="hg-soak-"))
    net = Net(args, run_dir)
    phases = {}
    try:
        console.print(f"soak: {args.rounds} clear rounds, then {args.rounds} secure, "
                      f"{args.peers} peers, a peer killed every ~{args.kill_every:g} s, the "
                      f"coordinator SIGKILLed half-way through each; run dir {run_dir}")
        t0 = time.time()
        phases["clear"] = run_phase(net, False, 0, console)
        phases["secure"] = run_phase(net, True, phases["clear"]["until"], console)
        elapsed = time.time() - t0
    finally:
        net.stop()
    check = accepted_vs_stored(net)
    table = Table(title=f"soak: {phases['secure']['until']} rounds in {elapsed / 60:.1f} min, "
                  f"restarts: {net.restarts['peers']} peers, {net.restarts['coordinator']} "
                  "coordinator (SIGKILL)")
    for col in ("phase", "at", "round", "RSS MB", "fds", "DB kB"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    for phase, res in phases.items():
        for s in sorted(res["samples"], key=lambda s: s["round"]):
            table.add_row(phase, s["at"], str(s["round"]), str(s["rss_mb"]), str(s["fds"]),
                          f"{s['db_kb']:,}")
    console.print(table)
    console.print(f"messages accepted (peers' logs, rounds {check['oldest_round_kept']}+): "
                  f"{check['accepted']:,}; stored: {check['stored']:,}; accepted but not "
                  f"stored: {check['lost']}; rounds kept by status {check['rounds_kept']}")
    report = {"phases": phases, "restarts": net.restarts, "check": check,
              "minutes": round(elapsed / 60, 1)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if check["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
