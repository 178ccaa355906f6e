"""The ``hypergossip`` command: subcommands and ``hypergossip status`` against a live
coordinator with real peers (the command runs as its own process)."""

from __future__ import annotations

import json
import subprocess
import sys

import trio

from .netutil import three_peer_network

CLI = [sys.executable, "-m", "coordinator.cli"]


def test_every_subcommand_explains_itself():
    top = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0
    for command in ("coordinator", "peer", "testnet", "status"):
        assert command in top.stdout
        sub = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True,
                             timeout=120)
        assert sub.returncode == 0, (command, sub.stderr)
        assert "usage:" in sub.stdout
    wrong = subprocess.run([*CLI, "nonsense"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown command" in wrong.stderr


async def test_status_prints_the_round_peers_and_last_results(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=2, max_rounds=2,
                                         round_pause=0.2)
        table = await trio.run_process([*CLI, "status", coord.http_url], capture_stdout=True,
                                       capture_stderr=True, check=False)
        raw = await trio.run_process([*CLI, "status", coord.http_url, "--json"],
                                     capture_stdout=True, check=False)
        nursery.cancel_scope.cancel()
    await trio.sleep(0)
    down = subprocess.run([*CLI, "status", coord.http_url, "--timeout", "2"],
                          capture_output=True, text=True, timeout=60)

    out = table.stdout.decode()
    assert table.returncode == 0, table.stderr.decode()
    assert coord.peer_id in out and "peers admitted" in out
    assert "last 2 of 2 rounds" in out and out.count("published") >= 2
    assert "mean_height=172.3" in out  # (160 + 175 + 182) / 3
    state = json.loads(raw.stdout)
    assert state["peers"]["total"] == 3 and state["rounds"]["total"] == 2
    assert down.returncode == 1 and "did not answer" in down.stderr
