"""A participant that cannot go on says so (a signed ``withdraw``), over libp2p: the
round stops waiting for it instead of running to its deadline, and counts it."""

from __future__ import annotations

import json

import pytest
import trio

from peer.behaviour import Behaviour

from .netutil import start_coordinator, start_peer, wait_for

ROUNDS = 2
TIMEOUT = 600.0  # a round that waited for the withdrawn peer would run to this


class CannotTakePart(Behaviour):
    """A peer that cannot build its side of any round (say, its data does not fit)."""

    def peer_round(self, mode, ctx):
        raise ValueError("this peer's data does not fit the round")


@pytest.mark.parametrize("secure", [False, True], ids=["clear", "vss"])
async def test_a_peer_that_cannot_take_part_withdraws_and_the_round_goes_on(data_dir, secure):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, start_peers=4,
                                        max_rounds=ROUNDS, round_timeout=TIMEOUT,
                                        phase_timeout=TIMEOUT, secure=secure)
        boot = [coord.node.addrs[0]]
        for h in (160.0, 170.0, 180.0):
            await start_peer(nursery, boot, h, 70.0)
        await start_peer(nursery, boot, 170.0, 70.0, behaviour=CannotTakePart())
        # ROUNDS x 600 s if the round waited for it: the test would fail on this
        await wait_for(lambda: coord.rounds_run >= ROUNDS, timeout=120)
        rows = [coord.store.round_row(r) for r in range(1, ROUNDS + 1)]
        nursery.cancel_scope.cancel()

    assert all(r["closed_at"] < r["deadline"] - TIMEOUT / 2 for r in rows)
    assert all(r["status"] == "published" and r["accepted"] == 3 for r in rows)
    results = [json.loads(r["result"]) for r in rows]
    assert results[0]["withdrawn"] == 1
    assert all(res["mean_height"] == pytest.approx(170.0, abs=0.01) for res in results)
