"""A coordinator and four peers in one trio process: rounds publish the true mean."""

from __future__ import annotations

import hashlib
import json
import math

import httpx
import pytest
import trio

from peer.node import NetworkNode
from peer.streams import StreamProtocolError
from protocol.wire.identity import Identity
from protocol.wire.messages import RESULT

from .netutil import start_coordinator, start_peer, wait_for


@pytest.mark.parametrize("protocol", ["clear", "secagg", "vss"])
async def test_rounds_publish_true_means_and_every_peer_has_them(data_dir, protocol):
    inputs = [(160.3, 55.1), (172.25, 68.5), (181.0, 90.25), (168.9, 61.0)]
    secure = protocol != "clear"
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=4, max_rounds=3,
                                        secure=secure, secure_protocol=protocol
                                        if secure else "auto")
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
        result = view["result"]
        assert result["count"] == 4
        domains = [m["domain"] for m in view["messages"]]
        if secure:
            bound = result["secure_aggregation"]["quantization_error_bound"] / 4
            assert 0 < bound < (1e-12 if protocol == "secagg" else 0.01)
            assert abs(result["mean_height"] - mean_h) <= bound
            assert abs(result["mean_weight"] - mean_w) <= bound
            assert result["mean_height"] != mean_h  # quantized: 160.3 is not a multiple of 2^-k
            phases = ("keys", "shares", "masked", "unmask") if protocol == "secagg" else \
                ("keys", "deal", "check", "aggregate")  # the committee is all four peers
            for phase in phases:
                assert domains.count(f"{protocol}/{phase}") == 4
            if protocol == "vss":
                assert result["secure_aggregation"]["included"] == sorted(result[
                    "secure_aggregation"]["included"]) and len(result["secure_aggregation"][
                        "included"]) == 4 and "vss/resolve" not in domains
        else:
            assert result["mean_height"] == mean_h and result["mean_weight"] == mean_w
            assert domains == ["contribution"] * 4
        # every peer holds the coordinator's result with the published state digest
        for p in peers:
            assert p.results[view["round"]].state_digest.hex() == view["state_digest"]


async def test_large_state_travels_by_digest_not_gossip(data_dir):
    """With the inline limit at 0 every result's state is a blob: gossip carries only its
    signed digest and every peer fetches the state over the blob stream protocol."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, max_rounds=2,
                                        inline_result_max=0)
        boot = coord.node.addrs[0]
        peers = [await start_peer(nursery, [boot], 170.0 + i, 70.0 + i) for i in range(3)]
        await wait_for(lambda: all(2 in p.states for p in peers), timeout=40)
        nursery.cancel_scope.cancel()
    for p in peers:
        for r in (1, 2):
            result = p.results[r]
            assert result.result == b"" and result.blob is not None
            assert hashlib.sha256(p.states[r]).digest() == result.state_digest
            state = json.loads(p.states[r])
            bound = state["secure_aggregation"]["quantization_error_bound"] / 3
            assert abs(state["mean_height"] - 171.0) <= bound


async def test_blob_fetch_by_digest_between_two_hosts():
    a, b = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    blob = bytes(range(256)) * 3600  # 900 KiB: over the gossip limit
    async with a.running(), b.running():
        assert await b.connect(a.addrs[0])
        with pytest.raises(ValueError, match="gossip limit"):
            await a.publish("t", blob)
        digest = a.blobs.put(blob)
        assert await b.fetch_blob(digest, [a.peer_id]) == blob
        with pytest.raises(StreamProtocolError, match="not available"):
            await b.fetch_blob(hashlib.sha256(b"missing").digest(), [a.peer_id])
        with pytest.raises(StreamProtocolError):  # a size cap below the blob's size
            await b.fetch_blob(a.blobs.put(blob[::-1]), [a.peer_id], max_size=1024)


async def test_dp_rounds_report_epsilon_and_stay_within_their_noise(data_dir):
    inputs = [(150.0 + 7 * i, 50.0 + 9 * i) for i in range(5)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=5, max_rounds=3,
                                        dp_epsilon=1.0)
        boot = coord.node.addrs[0]
        for h, w in inputs:
            await start_peer(nursery, [boot], h, w)
        await wait_for(lambda: coord.rounds_run >= 3, timeout=40)
        async with httpx.AsyncClient() as http:
            rounds = [(await http.get(f"{coord.http_url}/rounds/{n}")).json() for n in (1, 2, 3)]
            model = (await http.get(f"{coord.http_url}/model")).json()
        nursery.cancel_scope.cancel()
    true_h = math.fsum(h for h, _ in inputs) / 5
    cumulative = []
    for view in rounds:
        dp = view["result"]["dp"]
        assert 0.99 <= dp["epsilon"] <= 1.0 and dp["delta"] == 1e-5
        assert dp["noise_multiplier"] > 3  # Gaussian mechanism at eps=1 needs z ~ 4 (RDP)
        cumulative.append(dp["cumulative_epsilon"])
        noise_std = dp["sigma_of_sum"] / 5
        assert abs(view["result"]["mean_height"] - true_h) <= 5 * noise_std
    assert cumulative[0] == pytest.approx(1.0, abs=0.01) and cumulative[0] < cumulative[1] < \
        cumulative[2] < 3.0  # composition grows sublinearly under RDP
    assert model["dp"]["cumulative_epsilon"] == cumulative[2]
    # the noise is real: three releases of the same data differ
    assert len({v["result"]["mean_height"] for v in rounds}) == 3


async def test_garbage_on_the_gossip_protocol_does_not_take_a_node_down():
    """py-libp2p lets a malformed pubsub RPC crash the swarm; our node must survive it."""
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID

    from peer.gossip import GOSSIPSUB_PROTOCOLS

    target, attacker = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    async with target.running(), attacker.running():
        assert await attacker.connect(target.addrs[0])
        for proto in GOSSIPSUB_PROTOCOLS:
            stream = await attacker.host.new_stream(ID.from_base58(target.peer_id),
                                                    [TProtocol(proto)])
            await stream.write(bytes([20]) + b"\xff" * 20)  # varint length, then junk
            await trio.sleep(0.2)
        # still alive and serving: a blob fetch works, gossip still subscribes and publishes
        digest = target.blobs.put(b"still here")
        assert await attacker.fetch_blob(digest, [target.peer_id]) == b"still here"
        await target.subscribe("t", lambda data, origin: trio.sleep(0))
        await target.publish("t", b"ok")


async def test_a_bug_in_round_logic_fails_that_round_not_the_coordinator(data_dir, monkeypatch):
    from protocol.learning.workloads import Stats

    real = Stats.aggregate
    calls = []

    def flaky(self, contributions):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real(self, contributions)

    monkeypatch.setattr(Stats, "aggregate", flaky)
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2, max_rounds=2,
                                        secure=False)
        boot = coord.node.addrs[0]
        for h in (170.0, 180.0):
            await start_peer(nursery, [boot], h, 70.0)
        await wait_for(lambda: coord.rounds_run >= 2, timeout=30)
        rows = [coord.store.round_row(n) for n in (1, 2)]
        nursery.cancel_scope.cancel()
    assert rows[0]["status"] == "failed"  # with the reason, for whoever reads the round
    assert json.loads(rows[0]["result"])["error"] == "RuntimeError: injected fault"
    assert rows[1]["status"] == "published"


@pytest.mark.parametrize("protocol", ["secagg", "vss"])
async def test_large_notice_bodies_travel_by_digest(data_dir, monkeypatch, protocol):
    """With the inline limit at 16 bytes every phase notice's body is a blob the signed
    notice names by digest: members fetch it (here from the coordinator: it is small) and
    the round publishes the true mean, as with bodies inline. (A SecAgg+ round of ~600
    members has 64 KiB of survivor signatures in its unmask notice.)"""
    import coordinator.outbox

    monkeypatch.setattr(coordinator.outbox, "NOTICE_INLINE_MAX", 16)
    inputs = [(160.0, 55.0), (170.0, 65.0), (180.0, 75.0)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, max_rounds=1,
                                        secure_protocol=protocol)
        boot = coord.node.addrs[0]
        for h, w in inputs:
            await start_peer(nursery, [boot], h, w)
        await wait_for(lambda: coord.rounds_run >= 1, timeout=40)
        nursery.cancel_scope.cancel()
    row = coord.store.round_row(1)
    assert row["status"] == "published" and row["accepted"] == 3
    assert abs(json.loads(row["result"])["mean_height"] - 170.0) < 0.01
    assert sum(coord.node.blobs.served.values()) >= 3  # bodies fetched by digest
