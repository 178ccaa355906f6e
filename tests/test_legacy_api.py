"""The seed's challenge-1 reference client against our coordinator (secure rounds running).

The seed's client reads ``GET /current_model`` for the epoch, adds uniform
noise in [-5, 5] to its true height and weight, and posts them to
``POST /post_data/{epoch}``, expecting ``{"updated": true}``. Those values
travel in the clear, so they must be counted apart from the peers' protected
inputs and labelled unprotected in the published result.
"""

from __future__ import annotations

import math
import random

import httpx
import pytest
import trio

from .netutil import start_coordinator, start_peer, wait_for


def seed_client_values(rng: random.Random, height: float, weight: float) -> dict:
    return {"height": height + rng.uniform(-5, 5), "weight": weight + rng.uniform(-5, 5)}


async def test_seed_reference_client_works_and_is_labelled_unprotected(data_dir):
    rng = random.Random(1)
    peers_in = [(160.0, 60.0), (175.0, 72.0), (182.0, 88.0)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, max_rounds=0,
                                        round_pause=1.0)
        boot = coord.node.addrs[0]
        for h, w in peers_in:
            await start_peer(nursery, [boot], h, w)
        await wait_for(lambda: coord.rounds_run >= 1, timeout=30)
        async with httpx.AsyncClient(base_url=coord.http_url) as http:
            model = (await http.get("/current_model")).json()
            assert set(model) == {"epochs", "total_height", "total_weight", "samples",
                                  "average_height", "average_weight"}
            assert model["samples"] == 3
            epoch = model["epochs"]
            posted = seed_client_values(rng, 170.0, 70.0)
            resp = await http.post(f"/post_data/{epoch}", json=posted)
            assert resp.status_code == 200 and resp.json() == {"updated": True}
            stale = await http.post(f"/post_data/{epoch - 1}", json=posted)
            assert stale.json()["updated"] is False and "not the current" in \
                stale.json()["reason"]
            for bad, status in (({"height": 170.0}, 422), ({"height": 1e9, "weight": 70}, 422),
                                ({"height": 170, "weight": 70, "x": 1}, 422)):
                r = await http.post(f"/post_data/{epoch}", json=bad)
                assert r.status_code == status, (bad, r.text)
                assert "error" in r.json()
            r = await http.post(f"/post_data/{epoch}", content=b"{not json")
            assert r.status_code == 400
            await wait_for(lambda: coord.store.round_row(epoch) is not None
                           and coord.store.round_row(epoch)["status"] != "open", timeout=30)
            view = (await http.get(f"/rounds/{epoch}")).json()
            after = (await http.get("/current_model")).json()
        nursery.cancel_scope.cancel()

    result = view["result"]
    assert result["count"] == 3  # the peers' protected inputs ...
    assert result["unprotected"]["count"] == 1  # ... and the legacy value, apart
    assert "unprotected" in result["unprotected"]["label"]
    assert result["unprotected"]["mean_height"] == posted["height"]
    combined = result["combined"]
    assert combined["count"] == 4
    expect_h = (math.fsum(h for h, _ in peers_in) + posted["height"]) / 4
    bound = result["secure_aggregation"]["quantization_error_bound"]  # on the peers' sum
    assert 0 < bound < 0.1
    assert combined["mean_height"] == pytest.approx(expect_h, abs=bound / 4)
    assert after["samples"] == 4 and after["average_height"] == combined["mean_height"]


async def test_seed_clients_alone_run_epochs_without_any_libp2p_peer(data_dir):
    """A deployment of the seed's challenge-1 clients only: no libp2p peer ever connects,
    so no secure round can open, yet each epoch's posted values are counted in the next
    ``/current_model``, labelled unprotected, and an epoch with no post stays open. The
    client's calls are the seed's: read ``/current_model`` for the epoch, post noisy
    height and weight to ``/post_data/{epoch}``."""
    rng = random.Random(2)
    people = [(160.0, 60.0), (175.0, 72.0), (182.0, 88.0), (168.0, 64.0)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, max_rounds=0,
                                        round_pause=0.2, legacy_epoch=1.0)
        async with httpx.AsyncClient(base_url=coord.http_url) as http:
            first = (await http.get("/current_model")).json()
            assert first["samples"] == 0 and first["average_height"] is None
            await trio.sleep(2.0)  # nothing posted: no epoch closes, none is made up
            assert (await http.get("/current_model")).json()["epochs"] == first["epochs"]
            posted = []
            for batch in (people[:3], people[3:]):  # two epochs, each the seed client's loop
                epoch = (await http.get("/current_model")).json()["epochs"]
                for h, w in batch:
                    value = seed_client_values(rng, h, w)
                    r = await http.post(f"/post_data/{epoch}", json=value)
                    assert r.status_code == 200 and r.json() == {"updated": True}, r.text
                    posted.append(value)
                await wait_for(lambda e=epoch: (coord.store.round_row(e) or {"status": "open"})
                               ["status"] == "published", timeout=20)
                model = (await http.get("/current_model")).json()
                assert model["epochs"] == epoch + 1
                assert model["samples"] == len(batch)  # the epoch's own values
                assert model["average_height"] == pytest.approx(
                    math.fsum(v["height"] for v in posted[-len(batch):]) / len(batch))
            view = (await http.get(f"/rounds/{epoch}")).json()
        nursery.cancel_scope.cancel()
    assert view["status"] == "published" and view["accepted"] == 0
    assert "unprotected" in view["result"]["unprotected"]["label"]
    assert not list(coord.node.connected_peers())  # no libp2p peer took part
