"""``GET /metrics`` (Prometheus text format) on a real coordinator after real rounds, and a
peer's ``--metrics-port``; both parsed with prometheus_client's own parser."""

from __future__ import annotations

import socket

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from peer.metrics import node_registry, serve_metrics
from peer.node import NetworkNode
from protocol.wire.identity import Identity
from protocol.wire.messages import PROTO_SUBMIT, SubmitAck, decode

from .netutil import three_peer_network


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample, by (name, sorted labels): parsed by prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_coordinator_metrics_count_rounds_phases_messages_and_refusals(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=2, max_rounds=2,
                                         round_pause=0.2)
        stranger = NetworkNode(Identity.generate())
        async with stranger.running():  # one malformed submit, refused and counted
            assert await stranger.connect(coord.node.addrs[0])
            ack = decode(await stranger.request(coord.peer_id, PROTO_SUBMIT, b"\x93junk"),
                         SubmitAck)
            assert not ack.accepted
        async with httpx.AsyncClient(base_url=coord.http_url) as http:
            resp = await http.get("/metrics")
        nursery.cancel_scope.cancel()

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    got = samples(resp.text)
    assert got[("hypergossip_rounds_total", (("status", "published"),))] == 2
    mode = coord.mode.name
    assert got[("hypergossip_round_duration_seconds_count", (("mode", mode),))] == 2
    phases = {dict(labels)["phase"] for (name, labels) in got
              if name == "hypergossip_phase_duration_seconds_count"}
    assert "announce" in phases and len(phases) >= 2, phases  # a secure round has notices
    accepted = {dict(labels)["domain"]: v for (name, labels), v in got.items()
                if name == "hypergossip_messages_accepted_total"}
    assert accepted["enroll"] >= 3 and sum(accepted.values()) > 3 * 2, accepted
    rejected = {dict(labels)["reason"]: v for (name, labels), v in got.items()
                if name == "hypergossip_messages_rejected_total"}
    assert rejected.get("malformed") == 1, rejected
    assert got[("hypergossip_admitted_peers", ())] == 3
    assert got[("hypergossip_connected_peers", ())] >= 3
    assert got[("hypergossip_libp2p_bytes_total", (("direction", "sent"),))] > 0
    assert got[("hypergossip_libp2p_bytes_total", (("direction", "received"),))] > 0
    assert ("hypergossip_session_queued_frames", ()) in got


async def test_a_peer_serves_its_own_metrics(nursery):
    node = NetworkNode(Identity.generate())
    other = NetworkNode(Identity.generate())
    port = free_port()
    async with node.running(), other.running():
        assert await other.connect(node.addrs[0])
        await nursery.start(serve_metrics, node_registry(node), "127.0.0.1", port)
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"http://127.0.0.1:{port}/metrics")
            missing = await http.get(f"http://127.0.0.1:{port}/other")
    assert resp.status_code == 200 and missing.status_code == 404
    got = samples(resp.text)
    assert got[("hypergossip_connected_peers", ())] == 1
    assert ("hypergossip_blob_requests_total", (("outcome", "served"),)) in got
