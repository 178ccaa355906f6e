"""A coordinator and four peers in one trio process: rounds publish the true mean."""

from __future__ import annotations

import math

import httpx
import trio

from protocol.messages import RESULT

from .netutil import start_coordinator, start_peer, wait_for


async def test_rounds_publish_true_means_and_every_peer_has_them(data_dir):
    inputs = [(160.5, 55.0), (172.25, 68.5), (181.0, 90.25), (168.0, 61.0)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=4, max_rounds=3)
        boot = coord.node.addrs[0]
        peers = [await start_peer(nursery, [boot], h, w) for h, w in inputs]
        await wait_for(lambda: coord.rounds_run >= 3, timeout=40)
        await wait_for(lambda: all(p.roundlog.has(RESULT, 3) for p in peers), timeout=10)
        async with httpx.AsyncClient() as http:
            rounds = [(await http.get(f"{coord.http_url}/rounds/{n}")).json() for n in (1, 2, 3)]
        nursery.cancel_scope.cancel()
    mean_h = math.fsum(h for h, _ in inputs) / len(inputs)
    mean_w = math.fsum(w for _, w in inputs) / len(inputs)
    for view in rounds:
        assert view["status"] == "published"
        assert view["accepted"] == 4
        assert view["result"]["count"] == 4
        assert view["result"]["mean_height"] == mean_h
        assert view["result"]["mean_weight"] == mean_w
        assert len([m for m in view["messages"] if m["domain"] == "contribution"]) == 4
        # every peer holds the coordinator's result with the published state digest
        for p in peers:
            assert p.results[view["round"]].state_digest.hex() == view["state_digest"]
