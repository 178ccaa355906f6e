"""Benchmark: what the signed round log costs, and what auditing it costs.

For each N in ``--peers`` and each mode in ``--modes`` (``clear`` stats, ``vss`` stats:
the secure default, range-proven), a coordinator and N stats peers run in this process
on 127.0.0.1 (real libp2p, real SQLite), ``--rounds`` measured rounds after one warm-up,
twice side by side: with the round log (records, signed heads, a signed receipt per
accepted message) and without it (``CoordinatorConfig.round_log=False``, only for this
measurement), in the order on, off, on, off, ... (``--pairs``), so that this machine's
drift hits both alike. Per setting:

- round wall time (median; announcement to published result, the coordinator's stamps);
- CPU of this process per round (coordinator and peers: what the log adds is the
  coordinator's record, head and receipt signatures, SQLite writes);
- the coordinator's own CPU per round (``coordinator.meter.CpuMeter``: every unit of its
  work, libp2p aside), and within it the ``intake`` (a receipt signed per accepted
  message) and ``publish`` steps (the record built, hashed, signed and written);
- log bytes per round: the record (digests, the round's own signed envelopes) and the
  accepted envelopes it names (kept and served to auditors);
- ``hypergossip audit``'s wall time per round over that log (HTTP, signatures, the
  replay of each round through its mode's state machine).

Ratios are with / without, paired by position. Run from the repository root:
``.venv/bin/python scripts/bench/roundlog.py --peers 10,100``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coordinator.audit import main as audit_main  # noqa: E402
from coordinator.meter import CpuMeter  # noqa: E402
from coordinator.service import Coordinator, CoordinatorConfig  # noqa: E402
from peer.daemon import PeerDaemon  # noqa: E402
from protocol.learning.registry import get_workload  # noqa: E402
from protocol.policy.admission import AdmissionConfig  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402
from protocol.wire.messages import ANNOUNCE, RESULT, StatsContribution  # noqa: E402

logging.getLogger("libp2p").setLevel(logging.ERROR)
logging.getLogger("multiaddr").setLevel(logging.ERROR)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def one_setting(n: int, mode: str, rounds: int, log_on: bool, workdir: Path) -> dict:
    """A fresh network of ``n`` peers; ``rounds`` measured rounds after a warm-up."""
    config = CoordinatorConfig(
        data_dir=workdir, http_host="127.0.0.1", port=0, listen=["/ip4/127.0.0.1/tcp/0"],
        min_peers=n, start_peers=n, max_rounds=rounds + 1, round_pause=0.2,
        round_timeout=60.0, phase_timeout=30.0, secure=mode != "clear", linger=3600.0,
        round_log=log_on, admission=AdmissionConfig(per_source_burst=n + 8))
    meter = CpuMeter()
    coord = Coordinator(config, meter=meter)
    out: dict = {"n": n, "mode": mode, "log": log_on}
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        boot = [coord.node.addrs[0]]
        for i in range(n):
            daemon = PeerDaemon(Identity.generate(), get_workload("stats"),
                                StatsContribution(height=150 + i % 50, weight=50 + i % 40),
                                bootstrap=boot)
            await nursery.start(daemon.run)
        while coord.rounds_run < 1:
            await trio.sleep(0.1)
        cpu0 = time.process_time()
        while coord.rounds_run < rounds + 1:
            await trio.sleep(0.1)
        out["cpu_s_per_round"] = (time.process_time() - cpu0) / rounds
        out["coord_ms_per_round"] = 1000 * statistics.mean(
            meter.by_round[r] for r in range(2, rounds + 2))
        out["publish_ms_per_round"] = 1000 * meter.by_kind["publish"] / (rounds + 1)
        out["intake_ms_per_round"] = 1000 * meter.by_kind["intake"] / (rounds + 1)
        walls = [coord.outbox.sent_at[(RESULT, r)] - coord.outbox.sent_at[(ANNOUNCE, r)]
                 for r in range(2, rounds + 2)]
        out["round_s"] = statistics.median(walls)
        statuses = [r["status"] for r in coord.store.rounds(rounds + 1, 0)]
        out["published"] = statuses.count("published")
        if log_on:
            sizes = coord.store.log.sizes()
            out["record_bytes_per_round"] = statistics.mean(sizes)
            envelopes = coord.store.db.execute(
                "SELECT SUM(LENGTH(wire)) FROM messages WHERE round > 1").fetchone()[0] or 0
            out["envelope_bytes_per_round"] = envelopes / rounds
            report = workdir / "audit.json"
            t0 = time.perf_counter()
            rc = await trio.to_thread.run_sync(audit_main, [coord.http_url, "--json",
                                                            str(report)])
            out["audit_s_per_round"] = (time.perf_counter() - t0) / (rounds + 1)
            findings = json.loads(report.read_text())["findings"]
            out["audit"] = f"rc {rc}: " + ", ".join(
                f"{s} {sum(f['status'] == s for f in findings)}"
                for s in ("checked", "failed", "not checkable"))
        nursery.cancel_scope.cancel()
    coord.store.close()
    return out


def table(rows: list[dict]) -> str:
    cols = ["n", "mode", "log", "published", "round_s", "cpu_s_per_round",
            "coord_ms_per_round", "intake_ms_per_round", "publish_ms_per_round",
            "record_bytes_per_round", "envelope_bytes_per_round", "audit_s_per_round",
            "audit"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        lines.append(" | ".join(_fmt(r.get(c, "-")) for c in cols))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def ratios(rows: list[dict]) -> str:
    lines = ["n | mode | round_s with/without (pairs) | process CPU per round with/without "
             "(pairs) | coordinator's own CPU per round with/without (pairs)",
             "--- | --- | --- | --- | ---"]
    keys = sorted({(r["n"], r["mode"]) for r in rows})
    for n, mode in keys:
        on = [r for r in rows if (r["n"], r["mode"], r["log"]) == (n, mode, True)]
        off = [r for r in rows if (r["n"], r["mode"], r["log"]) == (n, mode, False)]
        wall = [a["round_s"] / b["round_s"] for a, b in zip(on, off, strict=False)]
        cpu = [a["cpu_s_per_round"] / b["cpu_s_per_round"] for a, b in zip(on, off,
                                                                            strict=False)]
        own = [a["coord_ms_per_round"] / b["coord_ms_per_round"]
               for a, b in zip(on, off, strict=False)]
        lines.append(f"{n} | {mode} | " + " | ".join(
            f"{statistics.median(xs):.3f} ({', '.join(f'{x:.2f}' for x in xs)})"
            for xs in (wall, cpu, own)))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", default="10,100", help="N values (default: %(default)s)")
    p.add_argument("--modes", default="clear,vss", help="clear and/or vss (default: both)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds per setting")
    p.add_argument("--pairs", type=int, default=2,
                   help="with/without pairs per N and mode (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args()
    rows = []
    for n in [int(x) for x in args.peers.split(",")]:
        for mode in args.modes.split(","):
            for pair in range(args.pairs):
                for log_on in (True, False):
                    progress(f"N={n} {mode} log {'on' if log_on else 'off'} (pair {pair + 1})")
                    with tempfile.TemporaryDirectory() as tmp:
                        rows.append(trio.run(one_setting, n, mode, args.rounds, log_on,
                                             Path(tmp)))
                    progress(f"  {rows[-1]}")
    print(table(rows))
    print()
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
