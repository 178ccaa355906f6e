"""The hostile harness, short: a live testnet attacked at every layer, in CI.

``scripts/bench/hostile.py`` starts a coordinator and four honest peers (each its own
process), sends hostile inputs at the coordinator and a peer (TCP before the handshake,
multistream, yamux, meshsub RPCs, every topic, every stream protocol, HTTP) while rounds
run, and checks: every process alive, no hostile input accepted, every round published
with the honest mean. The long run (100,000 inputs) is the bench itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_hostile_run_leaves_every_node_up_and_every_round_honest(tmp_path):
    report = tmp_path / "hostile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/bench/hostile.py"),
                           "--inputs", "1500", "--json", str(report),
                           "--run-dir", str(tmp_path / "net")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(report.read_text())
    assert summary["crashes"] == [], summary
    assert summary["accepted_bad_inputs"] == 0
    assert summary["rounds_correct"] and summary["rounds_during_attack"] >= 1
    assert summary["inputs"] >= 1500
    assert set(summary["by_layer"]) == {
        "tcp (before the handshake)", "multistream", "yamux", "meshsub RPCs",
        "gossip topics", "stream protocols", "HTTP"}
    contained = summary["contained_at_coordinator"]
    assert contained.get("gossip message", 0) >= 1  # finding 1's frame, contained
    assert contained.get("gossip flood", 0) >= 1
    assert proc.returncode == 0, proc.stdout[-3000:]
