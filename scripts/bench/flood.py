"""Gossip floods: are an honest peer's messages delivered while another peer floods?

A victim node subscribes to a topic; an honest node publishes ``--honest``
messages on it, 10 ms apart, while a bare libp2p host writes ``--flood``
validly signed messages at it as fast as it can. Run side by side, ``--runs``
times each, with py-libp2p's behaviour (no per-peer budget, 32-message
subscription queues) and with ours (peer.limits.Limits: 100 messages/s per
forwarder, bursts of 200; 512-message queues). The table gives how many honest
and flood messages the victim's handler received, and how many were dropped
by the budget (counted); the rest were refused by gossipsub's score gate once the
flooder's score fell (ours) or lost in a full queue without a trace (py-libp2p's).

    .venv/bin/python scripts/bench/flood.py
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from libp2p.pubsub import pubsub as _pubsub  # noqa: E402

from peer import libp2p_patches  # noqa: E402
from peer.hostile import flood_beside  # noqa: E402
from peer.limits import Limits  # noqa: E402


async def one(ours: bool, flood: int, honest: int) -> dict:
    limits = Limits() if ours else Limits(gossip_rate=1e12, gossip_burst=1e12)
    libp2p_patches.install()  # then py-libp2p's queue size, or ours, for this run
    _pubsub.SUBSCRIPTION_CHANNEL_SIZE = libp2p_patches.SUBSCRIPTION_QUEUE if ours else 32
    out = await flood_beside(limits, flood=flood, honest=honest)
    return {"honest": out.honest, "flood": out.flood, "budget_drops": out.budget_drops}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench/flood.py", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--flood", type=int, default=20_000, help="flood messages (default: 20000)")
    p.add_argument("--honest", type=int, default=100, help="honest messages (default: 100)")
    p.add_argument("--runs", type=int, default=3, help="runs of each, interleaved (default: 3)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    results: dict[str, list[dict]] = {"py-libp2p": [], "ours": []}
    for _ in range(args.runs):
        for label, ours in (("py-libp2p", False), ("ours", True)):
            results[label].append(trio.run(one, ours, args.flood, args.honest))
    table = Table(title=f"a flood of {args.flood:,} signed messages from one host beside "
                  f"{args.honest} honest ones ({args.runs} runs each, interleaved)")
    for col in ("budget and queues", "honest delivered", "flood delivered",
                "flood dropped by budget (counted)",
                "flood neither (refused by score, or lost in a full queue)"):
        table.add_column(col, justify="right" if col != "budget and queues" else "left")
    for label, runs in results.items():
        lost = [args.flood - r["flood"] - r["budget_drops"] for r in runs]
        table.add_row(label, " / ".join(f"{r['honest']}" for r in runs),
                      " / ".join(f"{r['flood']:,}" for r in runs),
                      " / ".join(f"{r['budget_drops']:,}" for r in runs),
                      " / ".join(f"{x:,}" for x in lost))
    Console().print(table)
    worst = {k: min(r["honest"] for r in v) for k, v in results.items()}
    median = {k: statistics.median(r["flood"] for r in v) for k, v in results.items()}
    print(f"honest messages delivered, worst run: py-libp2p {worst['py-libp2p']}/"
          f"{args.honest}, ours {worst['ours']}/{args.honest}; flood delivered (median): "
          f"{median['py-libp2p']:,.0f} vs {median['ours']:,.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
