#!/usr/bin/env python3
"""A/B: one benchmark run in two checkouts, alternately, and their figures side by side.

    .venv/bin/python scripts/bench/ab.py --a /tmp/before --b . --runs 3 -- \\
        scripts/bench/secagg.py --clients 10,50,100 --skip-flower

runs the benchmark (its path relative to each checkout, each with that checkout's own
code: the benchmarks put their checkout first on ``sys.path``) in pairs A B, B A, A B,
... so that both see the same machine drift and neither always goes first, each with
``--json``, then prints for every figure the median of A's runs, the median of B's,
their ratio B/A, the noise (how far apart the runs of one side were: the largest of
(max - min) / median over A's runs and over B's), and the paired ratio: the median
over pairs of B_i/A_i, with its range, which cancels the drift the two runs of a pair
share. A change is outside the noise when |B/A - 1| exceeds it.

Figures are the numeric leaves of the benchmarks' JSON whose names are listed in
:data:`FIGURES`; list items are told apart by their identifying fields (clients,
peers, size, ...), and per-round items are averaged over the warm rounds (round > 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIGURES = {"client_cpu_mean_s", "server_cpu_s", "upload_bytes_mean", "wall_s",
           "coordinator_cpu_s", "coordinator_process_cpu_s", "process_cpu_s", "p50_s",
           "p99_s", "median_mb_s", "delivered", "start_s", "connect_s",
           # scale.py's rows
           "enrol_s", "link_s", "round_s", "coord_cpu_ms_per_peer", "idle_ms_per_s",
           "coord_idle_ms_per_s", "peer_cpu_ms", "accepted"}
IDENTITY = ("setting", "graph", "clients", "peers", "vector_len", "size", "method", "n",
            "mode")


def figures(node, path: str = "", out: dict[str, float] | None = None) -> dict[str, float]:
    """Flatten a benchmark's JSON into {figure path: value}."""
    out = {} if out is None else out
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("args", "machine"):
                continue
            if isinstance(v, int | float) and not isinstance(v, bool) and k in FIGURES:
                out[f"{path}{k}"] = float(v)
            elif isinstance(v, dict | list):
                figures(v, f"{path}{k}.", out)
    elif isinstance(node, list):
        rounds = [x for x in node if isinstance(x, dict) and "round" in x]
        if rounds:  # per-round items: the mean over the warm rounds
            warm = [figures(x) for x in rounds if x["round"] > 1 and
                    x.get("status", "published") == "published"]
            for key in {k for w in warm for k in w}:
                vals = [w[key] for w in warm if key in w]
                out[f"{path}warm.{key}"] = statistics.fmean(vals)
            return out
        for i, x in enumerate(node):
            if isinstance(x, dict):
                ident = ",".join(f"{k}={x[k]}" for k in IDENTITY if k in x) or str(i)
                figures(x, f"{path}[{ident}].", out)
    return out


def run(checkout: Path, bench: list[str], json_path: Path,
        extra: list[str] | None = None) -> dict[str, float]:
    cmd = [sys.executable, str(checkout / bench[0]), *bench[1:], *(extra or []),
           "--json", str(json_path)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(bench)} failed:\n{proc.stderr[-2000:]}")
    print(f"  {checkout}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return figures(json.loads(json_path.read_text()))


def spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med and len(values) > 1 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="checkout A (e.g. the commit before)")
    p.add_argument("--b", type=Path, required=True, help="checkout B (e.g. this one)")
    p.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    p.add_argument("--b-args", default="", metavar="ARGS",
                   help="arguments only B's runs get, space-separated (a switch A's checkout "
                   "lacks, e.g. --b-args=--no-round-log to compare with a commit from before "
                   "the round log); printed with the table")
    p.add_argument("bench", nargs=argparse.REMAINDER, help="-- BENCH.py [its arguments]")
    args = p.parse_args()
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    if not bench:
        p.error("give the benchmark after --")
    results: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            order = (("a", args.a), ("b", args.b))
            for side, checkout in order if i % 2 == 0 else order[::-1]:
                print(f"run {i + 1}/{args.runs} {side.upper()}", file=sys.stderr)
                extra = args.b_args.split() if side == "b" else []
                results[side].append(run(checkout.resolve(), bench,
                                         Path(tmp) / f"{side}{i}.json", extra))
    keys = sorted(set().union(*results["a"]) & set().union(*results["b"]))
    b_args = f" (B with {args.b_args})" if args.b_args else ""
    print(f"{' '.join(bench)}: A = {args.a}, B = {args.b}{b_args}, {args.runs} runs each, "
          "alternating")
    print("| figure | A (median) | B (median) | B/A | noise | paired B/A (range) | A runs "
          "| B runs |\n|---|---|---|---|---|---|---|---|")
    for key in keys:
        a = [r[key] for r in results["a"] if key in r]
        b = [r[key] for r in results["b"] if key in r]
        ma, mb = statistics.median(a), statistics.median(b)
        noise = max(spread(a), spread(b))
        ratio = mb / ma if ma else float("nan")
        flag = " *" if ma and abs(ratio - 1) > noise else ""
        pairs = [rb[key] / ra[key] for ra, rb in zip(results["a"], results["b"], strict=True)
                 if ra.get(key) and key in rb]
        paired = (f"{statistics.median(pairs):.3f} ({min(pairs):.2f}-{max(pairs):.2f})"
                  if pairs else "-")
        print(f"| {key} | {ma:.4g} | {mb:.4g} | {ratio:.3f}{flag} | {noise:.0%} | {paired} | "
              f"{', '.join(f'{v:.3g}' for v in a)} | {', '.join(f'{v:.3g}' for v in b)} |")
    print("(* = B/A outside the noise of either side's runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
