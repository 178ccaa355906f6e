"""Clear rounds and a peer whose contributions are refused (issue 15, must-show 4), over
libp2p: the round does not wait for it, and repeated refusals take it out of rounds."""

from __future__ import annotations

import json

import trio

from peer.behaviour import Behaviour
from protocol.rounds.clear import ClearPeerRound
from protocol.wire.messages import StatsContribution

from .netutil import start_coordinator, start_peer, wait_for

ROUNDS = 5
TIMEOUT = 300.0  # a round that waited for the refused peer would run to this


class OutOfRange(Behaviour):
    """Modified code: a contribution its schema refuses (height 10 m), signed and sent."""

    def peer_round(self, mode, ctx):
        if mode.name != "clear":
            return mode.peer_round(ctx)
        return ClearPeerRound(StatsContribution(height=1000.0, weight=70.0))


async def test_a_refused_peer_neither_holds_the_round_nor_stays_in(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, start_peers=4,
                                        max_rounds=ROUNDS, round_timeout=TIMEOUT,
                                        secure=False)
        boot = [coord.node.addrs[0]]
        for h in (160.0, 170.0, 180.0):
            await start_peer(nursery, boot, h, 70.0)
        liar = await start_peer(nursery, boot, 170.0, 70.0, behaviour=OutOfRange())
        # 5 rounds of 300 s each if the liar held them: the test would fail on this
        await wait_for(lambda: coord.rounds_run >= ROUNDS, timeout=90)
        rows = [coord.store.round_row(r) for r in range(1, ROUNDS + 1)]
        score = coord.reputation.score(liar.peer_id)
        nursery.cancel_scope.cancel()

    closed_early = [r for r in rows if r["closed_at"] < r["deadline"]]
    assert len(closed_early) == ROUNDS
    results = [json.loads(r["result"]) for r in rows]
    assert all(r["status"] == "published" and r["accepted"] == 3 for r in rows)
    assert all(res["mean_height"] == 170.0 for res in results)
    # refused in rounds 1-3 (0.5 - 3 x 0.15 < 0.2), then no longer asked
    refused = [liar.peer_id in res.get("refused", {}) for res in results]
    assert refused == [True, True, True, False, False]
    assert results[0]["refused"][liar.peer_id].startswith("schema")
    assert score < coord.reputation.threshold
    assert json.loads(rows[0]["rejected"]) == {"schema": 1}
