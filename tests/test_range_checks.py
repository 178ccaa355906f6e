"""Hidden inputs are range-checked: a peer that adds 10^6 cm to its height, inside a secure
sum over real libp2p, moves a SecAgg+ mean by 200 km and is refused by a vss round."""

from __future__ import annotations

import json
import math

import pytest
import trio

from peer.attacks import INFLATE, Attack

from .netutil import start_coordinator, start_peer, wait_for

INPUTS = [(158.0, 52.5), (171.5, 66.0), (189.25, 95.0), (176.0, 80.0), (165.5, 61.5)]


async def one_round(data_dir, protocol: str) -> tuple[dict, list[str], str]:
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=4, max_rounds=1,
                                        start_peers=5, secure_protocol=protocol)
        boot = coord.node.addrs[0]
        peers = [await start_peer(nursery, [boot], h, w, behaviour=Attack("outofrange")
                                  if i == 4 else None) for i, (h, w) in enumerate(INPUTS)]
        await wait_for(lambda: coord.rounds_run >= 1, timeout=40)
        row = coord.store.round_row(1)
        nursery.cancel_scope.cancel()
    return json.loads(row["result"]), [p.peer_id for p in peers], row["status"]


@pytest.mark.parametrize("protocol", ["vss", "secagg"])
async def test_an_inflated_hidden_input_is_refused_by_vss_and_skews_secagg(data_dir, protocol):
    result, ids, status = await one_round(data_dir, protocol)
    assert status == "published"
    sa = result["secure_aggregation"]
    honest_h = math.fsum(h for h, _ in INPUTS[:4]) / 4
    if protocol == "vss":
        assert ids[4] not in sa["included"] and sorted(sa["included"]) == sorted(ids[:4])
        assert "range proof of coordinate 0 does not verify" in sa["rejected"][ids[4]]
        assert abs(result["mean_height"] - honest_h) <= sa["quantization_error_bound"] / 4
    else:  # what the range check prevents: SecAgg+ sums whatever ring element it is given
        assert ids[4] in sa["included"]
        all_h = math.fsum(h for h, _ in INPUTS) / 5
        assert result["mean_height"] == pytest.approx(all_h + INFLATE / 5, rel=1e-9)
