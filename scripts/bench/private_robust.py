#!/usr/bin/env python3
"""Private and robust fedavg: every attack against the plain secure sum, robust secure
aggregation and robust clear aggregation (issue 15, must-show 1).

    .venv/bin/python scripts/bench/private_robust.py [--peers 20 --rounds 10
        --byzantine 2,4 --attacks ... --json out.json]

For each attack of peer/fedavg_attacks.py, each number of liars B and each column,
N peers (Dirichlet(alpha) shards of the embedded digits, 5 local epochs) run R rounds
of fedavg from the same initial model, the last B peers lying every round, and the
final test accuracy is printed. Columns:

- ``secagg``: today's secure sum (SecAgg+ over all peers, the mean of the sum);
- ``robust``: the robust secure mode (protocol/rounds/robust.py: SecAgg+ per group
  drawn from the beacon, each group sum bound-checked, ``nnm+centered_clipping`` over the
  group means);
- ``clear``: contributions in the clear, each checked (finite, within the clip
  norm; refusals cost reputation), combined by ``--clear-aggregator``.

Rounds run in this process through protocol/rounds/local.py: the same round modes,
SecAgg+ crypto, fixed-point encoding, checks and aggregators the network runs, with
messages handed over directly instead of over libp2p (the tests run these modes over
libp2p; the 20 x 10 x 60 rounds here would take hours that way). Peers' keys are
derived from the seed, so a rerun is the same run; each cell is the mean over
``--seeds`` (a single seed's 360 test digits move a cell by a point for 3.6 of them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from peer.fedavg_attacks import FEDAVG_ATTACKS, FedAvgLiar, knowing  # noqa: E402
from protocol.learning.federated import FedAvg  # noqa: E402
from protocol.learning.workloads import Workload  # noqa: E402
from protocol.policy.replication import Reputation  # noqa: E402
from protocol.rounds import MODES  # noqa: E402
from protocol.rounds.base import Mode, PeerRound, Settings  # noqa: E402
from protocol.rounds.local import LocalPeer, run_round  # noqa: E402
from protocol.wire.canonical import state_digest  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402
from protocol.wire.messages import PlainVector  # noqa: E402

COLUMNS = {"secagg": "secagg", "robust": "robust", "clear": "clear"}
LEARNS = {
    "secagg": "the sum of all N inputs",
    "robust": "the sum of each group of >= k inputs, and which groups passed the bound",
    "clear": "every input",
}


def identity(seed: int, i: int) -> Identity:
    return Identity(hashlib.sha256(f"private-robust/{seed}/{i}".encode()).digest())


def run(args: argparse.Namespace, column: str, attack: str, b: int, seed: int) -> dict:
    """R rounds; the final accuracy and what the rounds published. ``seed`` fixes the
    shards, the initial model and the peers' keys (so the groups)."""
    n = args.peers
    specs = [f"part={i}/{n},alpha={args.alpha},seed={seed}" for i in range(n)]
    coord = FedAvg(aggregator=args.clear_aggregator if column == "clear" else "mean",
                   tolerance=args.tolerance, seed=seed)
    shard_workload = FedAvg(seed=seed)
    shards = [shard_workload.parse_data(s) for s in specs]
    liars = set(range(n - b, n)) if attack != "none" else set()
    know = knowing(shards, liars) if attack in ("alie", "ipm") else None
    peers = []
    for i in range(n):
        p = LocalPeer(identity(seed, i), FedAvg(seed=seed), shards[i])
        if i in liars:
            p.factory = FedAvgLiar(attack, peers=n, colluders=b, knowledge=know).peer_round
        peers.append(p)
    settings = Settings(min_peers=2, dp_epsilon=args.dp_epsilon,
                        robust_tolerance=args.tolerance, group_size=args.group_size,
                        robust_aggregator=args.robust_aggregator)
    reputation, prev, rows = Reputation(), b"", []
    t0 = time.perf_counter()
    for r in range(1, args.rounds + 1):
        res = run_round(MODES[COLUMNS[column]], coord, r, peers, settings=settings,
                        prev_digest=prev, reputation=reputation)
        out = res.outcome
        if out.status == "published":
            prev = state_digest(out.result)
        sa = out.result.get("secure_aggregation", {})
        rows.append({"round": r, "status": out.status, "accepted": out.accepted,
                     "accuracy": out.result.get("accuracy"),
                     "groups_passed": sa.get("groups_passed"), "groups": sa.get("groups"),
                     "refused": len(out.result.get("refused", {})),
                     "error": out.result.get("error")})
    acc = next((x["accuracy"] for x in reversed(rows) if x["accuracy"] is not None), None)
    excluded = sorted(p for p, s in reputation.scores.items() if s < reputation.threshold)
    return {"column": column, "attack": attack, "byzantine": b if attack != "none" else 0,
            "seed": seed, "final_accuracy": acc, "rounds": rows, "wall_s": time.perf_counter() - t0,
            "excluded": len(excluded)}


# --- cost: what robust rounds cost a peer and the coordinator, against the plain sum ----------

class BoundedVector(Workload):
    """A vector of ``m`` values with inputs L2-clipped to 2 (fedavg's bound), no model."""

    name = "bench-bounded"
    contribution_schema = PlainVector
    clip = 2.0

    def __init__(self, m: int):
        self.m = m

    def vector_len(self) -> int:
        return self.m

    def bound(self, v: np.ndarray) -> np.ndarray:
        n = float(np.linalg.norm(v))
        return v if n <= self.clip else v * (self.clip / n)

    def sensitivity(self) -> float:
        return 2 * self.clip

    def l2_bound(self) -> float:
        return self.clip

    def finalize(self, total: np.ndarray, n: int) -> dict:
        return {"count": n, "norm": float(np.linalg.norm(total / n))}

    def vector(self, announce, data, blobs) -> np.ndarray:
        return data


class Meter:
    def __init__(self) -> None:
        self.peer_cpu: dict[str, float] = {}
        self.peer_bytes: dict[str, int] = {}
        self.coord_cpu = 0.0

    def peer(self, pid: str, fn, *args):
        t0 = time.thread_time()
        out = fn(*args)
        self.peer_cpu[pid] = self.peer_cpu.get(pid, 0.0) + time.thread_time() - t0
        self.peer_bytes[pid] = self.peer_bytes.get(pid, 0) + sum(len(p) for _, p in out)
        return out

    def coord(self, fn, *args):
        t0 = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.coord_cpu += time.thread_time() - t0


class TimedPeer(PeerRound):
    def __init__(self, inner: PeerRound, pid: str, meter: Meter):
        self.inner, self.pid, self.meter = inner, pid, meter
        self.phases, self.offload = inner.phases, inner.offload

    def start(self):
        return self.meter.peer(self.pid, self.inner.start)

    def needs_personal(self, phase: str) -> bool:
        return self.inner.needs_personal(phase)

    def needs_body(self, phase: str) -> bool:
        return self.inner.needs_body(phase)

    def on_notice(self, phase, body, personal):
        return self.meter.peer(self.pid, self.inner.on_notice, phase, body, personal)


class TimedRound:
    def __init__(self, inner, meter: Meter):
        self.inner, self.meter = inner, meter

    def offer_message(self, *args):
        return self.meter.coord(self.inner.offer_message, *args)

    def advance(self, now):
        return self.meter.coord(self.inner.advance, now)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def timed_mode(mode: Mode, meter: Meter) -> Mode:
    class Timed(type(mode)):
        def open(self, setup):
            opening = meter.coord(mode.open, setup)
            opening.round = TimedRound(opening.round, meter)
            return opening
    return Timed()


def cost(args: argparse.Namespace) -> list[dict]:
    """Per peer and at the coordinator, CPU (thread time: the sans-IO work, no transport)
    and upload of one round, robust against the plain secure sum, median of repeats."""
    rows = []
    for m in args.cost_sizes:
        rng = np.random.default_rng(0)
        data = [rng.normal(0, 0.01, m) for _ in range(args.peers)]
        for column in ("secagg", "robust"):
            runs = []
            for rep in range(args.cost_repeats):
                meter = Meter()
                peers = []
                for i in range(args.peers):
                    pid = identity(args.seeds[0], i).peer_id

                    def factory(mode, ctx, pid=pid, meter=meter):
                        return TimedPeer(mode.peer_round(ctx), pid, meter)
                    peers.append(LocalPeer(identity(args.seeds[0], i), BoundedVector(m), data[i],
                                           factory))
                settings = Settings(min_peers=2, robust_tolerance=args.tolerance,
                                    group_size=args.group_size,
                                    robust_aggregator=args.robust_aggregator)
                res = run_round(timed_mode(MODES[column], meter), BoundedVector(m), 1 + rep,
                                peers, settings=settings)
                assert res.outcome.status == "published", res.outcome.result
                runs.append((statistics.fmean(meter.peer_cpu.values()), meter.coord_cpu,
                             statistics.fmean(meter.peer_bytes.values())))
            runs.sort()
            peer_cpu, coord_cpu, up = runs[len(runs) // 2]
            rows.append({"vector_len": m, "column": column, "peers": args.peers,
                         "peer_cpu_s": peer_cpu, "coordinator_cpu_s": statistics.median(
                             r[1] for r in runs), "upload_bytes_mean": up})
            print(f"cost M={m} {column}: peer CPU {1e3 * peer_cpu:.1f} ms, coordinator "
                  f"{1e3 * rows[-1]['coordinator_cpu_s']:.1f} ms, upload {up / 1e3:.0f} kB",
                  file=sys.stderr, flush=True)
    return rows


def print_cost(rows: list[dict]) -> None:
    print(f"\ncost of one round, {rows[0]['peers']} peers (sans-IO CPU, median of repeats; "
          "upload: a peer's round messages)")
    print("| M | mode | peer CPU | coordinator CPU | upload per peer | "
          "x secagg (peer, coord, up) |")
    print("|---|---|---|---|---|---|")
    by = {(r["vector_len"], r["column"]): r for r in rows}
    for r in rows:
        base = by[(r["vector_len"], "secagg")]
        print(f"| {r['vector_len']} | {r['column']} | {1e3 * r['peer_cpu_s']:.1f} ms | "
              f"{1e3 * r['coordinator_cpu_s']:.1f} ms | {r['upload_bytes_mean'] / 1e3:.0f} kB | "
              f"{r['peer_cpu_s'] / base['peer_cpu_s']:.2f}, "
              f"{r['coordinator_cpu_s'] / base['coordinator_cpu_s']:.2f}, "
              f"{r['upload_bytes_mean'] / base['upload_bytes_mean']:.2f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=20)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--byzantine", default="2,4", help="comma-separated B values")
    p.add_argument("--attacks", nargs="+", default=list(FEDAVG_ATTACKS),
                   choices=list(FEDAVG_ATTACKS))
    p.add_argument("--columns", nargs="+", default=list(COLUMNS), choices=list(COLUMNS))
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seeds", default="0,1,2",
                   help="comma-separated seeds: each cell is the mean final accuracy over them "
                   "(one seed's test set is 360 digits: a point is 3.6 of them; default "
                   "%(default)s)")
    p.add_argument("--tolerance", type=float, default=0.2,
                   help="robust: the fraction of liars to withstand (default 0.2: k = 2)")
    p.add_argument("--group-size", type=int, default=None, help="robust: k (default: from "
                   "--tolerance)")
    p.add_argument("--robust-aggregator", default="nnm+centered_clipping")
    p.add_argument("--clear-aggregator", default="nnm+trimmed_mean")
    p.add_argument("--dp-epsilon", type=float, default=0.0)
    p.add_argument("--cost-sizes", type=int, nargs="*", default=[50_890, 100_000],
                   help="vector lengths of the cost table (none: skip it)")
    p.add_argument("--cost-repeats", type=int, default=3)
    p.add_argument("--skip-table", action="store_true", help="only the cost table")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the liars announce each lie at WARNING
    bs = [int(x) for x in args.byzantine.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    results = []
    cells = [(c, "none", 0, sd) for sd in args.seeds for c in args.columns] + [
        (c, a, b, sd) for sd in args.seeds for b in bs for a in args.attacks
        for c in args.columns]
    if args.skip_table:
        cells = []
    t_all = time.perf_counter()
    costs = cost(args) if args.cost_sizes else []
    for k, (column, attack, b, seed) in enumerate(cells, 1):
        res = run(args, column, attack, b, seed)
        results.append(res)
        acc = res["final_accuracy"]
        print(f"[{k}/{len(cells)}] seed {seed} {column:>6} B={b} {attack:<9} accuracy "
              f"{'-' if acc is None else f'{100 * acc:.1f} %'} ({res['wall_s']:.0f} s)",
              file=sys.stderr, flush=True)

    def acc(column: str, attack: str, b: int, seed: int | None = None) -> float | None:
        """The cell's final accuracy: one seed's, or the mean over the seeds."""
        got = [r["final_accuracy"] for r in results
               if (r["column"], r["attack"], r["byzantine"]) == (column, attack, b)
               and (seed is None or r["seed"] == seed) and r["final_accuracy"] is not None]
        return statistics.fmean(got) if got else None

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    if costs:
        print_cost(costs)
    if not cells:
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                             "cost": costs}, indent=1))
        return 0
    print(f"\nfinal test accuracy (%) after {args.rounds} rounds, {args.peers} peers, digits, "
          f"Dirichlet {args.alpha}, mean over seeds {args.seeds}; robust: tolerance "
          f"{args.tolerance}, k = "
          f"{args.group_size or 'from tolerance'}, {args.robust_aggregator}; clear: "
          f"{args.clear_aggregator}")
    head = [f"B={b} {c}" for b in bs for c in args.columns]
    print("| attack | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    print("| none (B=0) | " + " | ".join(pct(acc(c, "none", 0)) for b in bs
                                       for c in args.columns) + " |")
    for a in args.attacks:
        print(f"| {a} | " + " | ".join(pct(acc(c, a, b)) for b in bs for c in args.columns)
              + " |")
    print("\nwhat the coordinator learns: " + "; ".join(f"{c}: {LEARNS[c]}"
                                                         for c in args.columns))
    goals = []
    if "robust" in args.columns:
        for seed in [None, *args.seeds] if len(args.seeds) > 1 else [None]:
            label = "mean over seeds" if seed is None else f"seed {seed} alone"
            free = acc("robust", "none", 0, seed)
            for b, margin in ((2, 0.02), (4, 0.05)):
                if b not in bs or free is None:
                    continue
                worst = min((acc("robust", a, b, seed) or 0.0, a) for a in args.attacks)
                ok = free - worst[0] <= margin
                goals.append(f"goal B={b} ({label}): robust within {100 * margin:.0f} points "
                             f"of its attack-free run under every attack: worst "
                             f"{pct(worst[0])} ({worst[1]}) vs {pct(free)}: "
                             f"{'met' if ok else 'MISSED'}")
            base = acc("secagg", "none", 0, seed)
            if base is not None and free is not None:
                goals.append(f"goal ({label}): attack-free robust within 1 point of the "
                             f"secure sum: {pct(free)} vs {pct(base)}: "
                             f"{'met' if abs(free - base) <= 0.01 else 'MISSED'}")
    for g in goals:
        print(g)
    print(f"(total {time.perf_counter() - t_all:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "results": results, "goals": goals,
                                         "cost": costs,
                                         "median_cell_s": statistics.median(
                                             r["wall_s"] for r in results)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
