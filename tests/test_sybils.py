"""Silent Sybils over real libp2p: keys that enrol, stay connected and never take part.

Finding: two such keys beside four honest peers made every secure round abort
("phase keys ended with 4 members; 5 needed"), and rounds came back only when
they left. Now a secure round's first phase leaves its silent participants
out (it re-plans over those that answered, see protocol.rounds.secure and
protocol.crypto.vss), and the coordinator benches a silent participant for the next
rounds (protocol.policy.attendance), so rounds neither fail nor keep waiting for it.
"""

from __future__ import annotations

import json
import time

import pytest
import trio

from peer.node import NetworkNode
from protocol.wire.envelope import seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ENROLL,
    PROTO_SUBMIT,
    Enroll,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from .netutil import start_coordinator, start_peer, wait_for

HONEST = [(160.0, 55.0), (172.0, 68.0), (181.0, 80.0), (190.0, 95.0)]


async def sybil(nursery: trio.Nursery, coordinator) -> NetworkNode:
    """A key that enrols and stays connected, then says nothing at all."""
    node = NetworkNode(Identity.generate())
    ready = trio.Event()

    async def live() -> None:
        async with node.running():
            assert await node.connect(coordinator.node.addrs[0])
            wire = seal(node.identity, ENROLL, enroll_round(time.time()),
                        encode(Enroll(workloads=["stats"])))
            ack = decode(await node.request(coordinator.peer_id, PROTO_SUBMIT, wire), SubmitAck)
            assert ack.accepted, ack
            ready.set()
            await trio.sleep_forever()

    nursery.start_soon(live)
    await ready.wait()
    return node


@pytest.mark.parametrize("protocol", ["vss", "secagg"])
async def test_secure_rounds_keep_publishing_beside_two_then_eight_silent_sybils(data_dir,
                                                                               protocol):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=4, start_peers=6,
                                        secure_protocol=protocol, phase_timeout=3.0,
                                        round_pause=0.1)
        boot = coord.node.addrs[0]
        for h, w in HONEST:
            await start_peer(nursery, [boot], h, w)
        for _ in range(2):
            await sybil(nursery, coord)
        await wait_for(lambda: coord.rounds_run >= 2, timeout=60)
        for _ in range(6):
            await sybil(nursery, coord)
        await wait_for(lambda: len(coord.live_peers()) == 12, timeout=20)
        first_with_eight = coord.store.last_round() + 1
        await wait_for(lambda: coord.rounds_run >= first_with_eight + 1, timeout=60)
        rows = [coord.store.round_row(r) for r in range(1, first_with_eight + 2)]
        nursery.cancel_scope.cancel()
    truth = sum(h for h, _ in HONEST) / 4, sum(w for _, w in HONEST) / 4
    for row in rows:
        assert row["status"] == "published", (row["round"], row["result"])
        assert row["accepted"] == 4
        result = json.loads(row["result"])
        bound = result["secure_aggregation"]["quantization_error_bound"] / 4
        assert abs(result["mean_height"] - truth[0]) <= bound + 1e-9
        assert abs(result["mean_weight"] - truth[1]) <= bound + 1e-9
    report = json.loads(rows[0]["result"])["secure_aggregation"]
    assert (report["participants"], report["members"]) == (6, 4)  # the silent left out
    # the round after each arrival no longer asks them: it does not wait for them
    after = json.loads(rows[1]["result"])["secure_aggregation"]
    assert after["participants"] == 4
    eight = json.loads(rows[first_with_eight - 1]["result"])["secure_aggregation"]
    assert eight["participants"] in (10, 12) and eight["members"] == 4  # 6 new (+2 back)
    assert json.loads(rows[first_with_eight]["result"])["secure_aggregation"][
        "participants"] <= 6
