"""``hypergossip status URL``: a running coordinator at a glance, from its HTTP API alone.

Reads ``/health``, ``/model``, ``/peers`` and ``/rounds`` (four GETs, each bounded by
``--timeout``) and prints the coordinator, its current round, its peers and its last
rounds as tables. Exit status 0 when the coordinator answered, 1 when it did not (a
clear line says why), so it also serves as a liveness check in scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="hypergossip status",
        description="Print a running coordinator's state: its peer id and workload, the "
        "current round, admitted and connected peers with refusals by reason, and the last "
        "rounds with their results, read from its HTTP API.",
        epilog="Example: hypergossip status http://127.0.0.1:4000")
    p.add_argument("url", help="the coordinator's HTTP base URL, e.g. http://127.0.0.1:4000")
    p.add_argument("--rounds", type=int, default=5, metavar="N",
                   help="how many of the last rounds to list (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds each request may take (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print what was read as one JSON object instead of tables")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 500:
        p.error("--rounds must be in [1, 500]")
    return args


def fetch(url: str, rounds: int, timeout: float) -> dict[str, Any]:
    base = url.rstrip("/")
    with httpx.Client(base_url=base, timeout=timeout) as http:
        def get(path: str, **params: Any) -> Any:
            resp = http.get(path, params=params)
            resp.raise_for_status()
            return resp.json()

        return {"health": get("/health"), "model": get("/model"),
                "peers": get("/peers", limit=1), "rounds": get("/rounds", limit=rounds)}


def _summary(result: Any, width: int = 70) -> str:
    if not result:
        return "-"
    if "error" in result:
        return f"error: {result['error']}"
    keys = ("count", "mean_height", "mean_weight", "accuracy", "loss", "prompt", "score")
    shown = {k: result[k] for k in keys if k in result} or result
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown.items() if not isinstance(v, dict | list))
    return text if len(text) <= width else text[:width - 3] + "..."


def render(state: dict[str, Any], console: Console) -> None:
    health, model, peers, rounds = (state[k] for k in ("health", "model", "peers", "rounds"))
    top = Table(title="coordinator", show_header=False)
    top.add_row("peer id", health["peer_id"])
    top.add_row("workload", str(health.get("workload")))
    top.add_row("uptime", f"{health.get('uptime_s', 0):.0f} s")
    top.add_row("round", f"{model['round']} ({model['status']})")
    top.add_row("last published", str(model.get("published_round")))
    top.add_row("published result", _summary(model.get("result")))
    top.add_row("peers admitted", str(peers["total"]))
    top.add_row("refused, by reason", ", ".join(
        f"{k} {v}" for k, v in sorted(peers.get("rejected_total", {}).items())) or "none")
    if peers.get("admission"):
        top.add_row("enrolments refused", ", ".join(
            f"{k} {v}" for k, v in sorted(peers["admission"].items())))
    if health.get("contained"):
        top.add_row("contained inputs", ", ".join(
            f"{k} {v}" for k, v in sorted(health["contained"].items())))
    console.print(top)
    table = Table(title=f"last {len(rounds['rounds'])} of {rounds['total']} rounds")
    for col in ("round", "status", "accepted", "rejected", "seconds", "result"):
        table.add_column(col, justify="right" if col in ("round", "accepted") else "left")
    for r in rounds["rounds"]:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted((r.get("rejected") or {}).items()))
        secs = r.get("seconds")
        table.add_row(str(r["round"]), r["status"], str(r.get("accepted") or 0),
                      rejected or "-", "-" if secs is None else f"{secs:.1f}",
                      _summary(r.get("result")))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        state = fetch(args.url, args.rounds, args.timeout)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"hypergossip status: {args.url} did not answer as a coordinator: {exc}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(state, indent=1))
    else:
        console = Console()
        render(state, console)
        console.print(f"read at {time.strftime('%Y-%m-%d %H:%M:%S')} from {args.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
