"""Robust aggregation without verification (issue 4, must-show 4): r=1, B of N peers attack.

For each attack (signflip, alie) and each aggregator, runs the testnet
(coordinator and peers as processes over libp2p, the attackers being real
peers running peer/attacks.py) and prints the final held-out loss, beside the
attack-free run with the mean.

    .venv/bin/python scripts/bench/robust.py [--peers 10 --byzantine 2 --rounds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGGREGATORS = ["mean", "median", "trimmed_mean", "krum", "geometric_median",
               "centered_clipping"]


def run(args: argparse.Namespace, aggregator: str, attack: str | None) -> float:
    out = Path(f"/tmp/hg-robust-{aggregator}-{attack}-lr{args.lr}.json")
    cmd = [sys.executable, str(ROOT / "scripts" / "testnet.py"), "--workload", "incremental",
           "--peers", str(args.peers), "--segments", str(args.peers), "--replicas", "1",
           "--rounds", str(args.rounds), "--aggregator", aggregator, "--json", str(out)]
    if args.lr is not None:
        cmd += ["--lr", str(args.lr)]
    if attack:
        cmd += ["--byzantine", str(args.byzantine), "--attack", attack]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    summary = json.loads(out.read_text())
    return summary["final_loss"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=10)
    p.add_argument("--byzantine", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--attacks", nargs="+", default=["signflip", "alie"])
    p.add_argument("--aggregators", nargs="+", default=AGGREGATORS)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: the seed's 0.1)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    table: dict[str, dict[str, float]] = {}
    for agg in args.aggregators:
        table[agg] = {"none": run(args, agg, None)}
        for attack in args.attacks:
            table[agg][attack] = run(args, agg, attack)
    base = table.get("mean", {}).get("none")
    print(f"\nfinal held-out loss after {args.rounds} rounds, r=1, {args.byzantine} of "
          f"{args.peers} peers attacking, lr {args.lr or 0.1} (in brackets: against the "
          f"attack-free mean, {base:.6f})" if base else "")
    print(f"{'aggregator':<18}  {'no attack':>10}  " +
          "  ".join(f"{a:>16}" for a in args.attacks))
    for agg, row in table.items():
        cells = []
        for a in args.attacks:
            rel = f" ({row[a] / base - 1:+.1%})" if base else ""
            cells.append(f"{row[a]:.6f}{rel}".rjust(16))
        print(f"{agg:<18}  {row['none']:>10.6f}  " + "  ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
