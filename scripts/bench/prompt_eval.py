"""Issue 5, must-show 4: prompt evaluations per second with 1 and 2 evaluator peers.

Runs the testnet's prompt workload (coordinator and peers as separate
processes over libp2p, the embedded SmolLM2 on each peer, one thread each)
with redundancy 1, so every prompt is evaluated once, on one peer; one
generation of ``--prompts`` distinct prompts. Throughput = LLM calls / the
job's wall time. Goal: 2 peers >= 1.7x one peer on this 2-core machine.

    .venv/bin/python scripts/bench/prompt_eval.py [--prompts 16] [--backend local]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(peers: int, args: argparse.Namespace) -> dict:
    out = Path(f"/tmp/hg-prompt-eval-{peers}.json")
    cmd = [sys.executable, str(ROOT / "scripts" / "testnet.py"), "--workload", "prompt",
           "--peers", str(peers), "--backend", args.backend, "--redundancy", "1",
           "--population", str(args.prompts), "--generations", "1", "--seed", str(args.seed),
           "--json", str(out)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    job = json.loads(out.read_text())["job"]
    return {"peers": peers, "calls": job["llm_calls"], "on_peers": job["evaluated_on_peers"],
            "seconds": job["seconds"], "per_second": job["llm_calls"] / job["seconds"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--backend", default="local", choices=["local", "echo", "openai"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = [run(1, args), run(2, args)]
    print(f"\n{'evaluator peers':>15}  {'LLM calls':>9}  {'on peers':>8}  {'seconds':>8}  "
          f"{'calls/s':>8}")
    for r in rows:
        print(f"{r['peers']:>15}  {r['calls']:>9}  {r['on_peers']:>8}  {r['seconds']:>8.1f}  "
              f"{r['per_second']:>8.3f}")
    speedup = rows[1]["per_second"] / rows[0]["per_second"]
    print(f"2 peers / 1 peer: {speedup:.2f}x (goal >= 1.7x): "
          f"{'met' if speedup >= 1.7 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "speedup": speedup}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
