"""Prompt evaluations on peers over libp2p, verified by redundancy; a liar is outvoted."""

from __future__ import annotations

import httpx
import trio

from peer.attacks import Attack
from peer.daemon import PeerDaemon
from peer.llm import make_backend
from protocol.learning.registry import get_workload
from protocol.wire.identity import Identity

from .netutil import start_coordinator, wait_for


async def test_evaluations_run_on_peers_and_a_liar_never_decides_alone(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, workload="prompt",
                                        llm_backend="echo", redundancy=2)
        boot = coord.node.addrs[0]
        peers = []
        for attack in (None, None, None, "fakescore"):
            d = PeerDaemon(Identity.generate(), get_workload("prompt"), None, bootstrap=[boot],
                           evaluator=make_backend("echo"),
                           behaviour=Attack(attack) if attack else None)
            await nursery.start(d.run)
            peers.append(d)
        await wait_for(lambda: len(coord.evaluators) == 4 and len(coord.live_peers()) == 4)
        liar = peers[-1]
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.post(f"{coord.http_url}/prompt", json={
                "target_output": "simple, lively, strong", "population": 8, "generations": 3})
            assert r.status_code == 200, r.text
            body = r.json()
            rep = {p["peer_id"]: p for p in (await http.get(
                f"{coord.http_url}/peers")).json()["peers"]}
        nursery.cancel_scope.cancel()
    assert body["evaluated_on_peers"] > 0
    assert body["evaluated_here"] + body["evaluated_on_peers"] == body["llm_calls"]
    assert "amazing, wonderful" not in body["output"]  # echo: the output is the prompt
    assert body["output"] == body["prompt"]
    assert sum(p.evaluations for p in peers[:3]) > 0
    assert coord.reputation.score(liar.peer_id) < coord.reputation.threshold
    for p in peers[:3]:
        assert coord.reputation.score(p.peer_id) >= 0.5
    assert liar.peer_id in rep
