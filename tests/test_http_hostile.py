"""What anyone can make the HTTP server spend: bounded, and refused with a reason.

Findings: 100 unread ``GET /peers`` answers pinned about 100 MB (no write
timeout, and ``/peers`` listed every admitted key); one unauthenticated
``POST /prompt`` asking for the embedding fitness loaded torch and MiniLM
into a *stats* coordinator for good; a ``GET`` with a 60 kB body got no
answer; the job queue took 1,000 jobs of a day each; a POST body cut short
logged an unhandled ``ClientDisconnect`` traceback.
"""

from __future__ import annotations

import logging
import socket

import httpx
import pytest
import trio

from .netutil import start_coordinator


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def test_a_stats_coordinator_runs_no_prompt_search(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2)
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{coord.http_url}/prompt",
                                json={"target_output": "x", "fitness": {"embedding": 1}})
        nursery.cancel_scope.cancel()
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]
    assert coord.prompt_jobs is None


async def test_a_get_with_a_body_is_refused_at_once(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2)
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.request("GET", f"{coord.http_url}/peers", content=b"x" * 60_000)
            after = await http.get(f"{coord.http_url}/health")
        nursery.cancel_scope.cancel()
    assert r.status_code == 400 and "carry no body" in r.json()["error"]
    assert after.status_code == 200


async def test_a_post_body_cut_short_is_a_client_error_not_a_traceback(data_dir, caplog):
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2)
        stream = await trio.open_tcp_stream(*host_port(coord.http_url))
        await stream.send_all(b"POST /post_data/1 HTTP/1.1\r\nHost: x\r\nContent-Type: "
                              b"application/json\r\nContent-Length: 1000\r\n\r\n{\"height\"")
        await stream.aclose()
        await trio.sleep(0.5)
        async with httpx.AsyncClient() as http:
            after = await http.get(f"{coord.http_url}/health")
        nursery.cancel_scope.cancel()
    assert after.status_code == 200
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def test_a_client_that_does_not_read_its_answers_is_cut_off(data_dir):
    """20 clients ask for a 300 kB page of /peers and never read: each connection is closed
    once a write has waited ``http_write_timeout`` (1 s here), so what the server held for
    them is freed; what they receive when they finally read is cut short."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2, http_write_timeout=1.0)
        for i in range(1000):
            coord.store.admit(f"12D3KooW{i:044d}", [f"/ip4/10.0.0.1/tcp/{i}"] * 8,
                              "hypergossip-peer/0.1")
        async with httpx.AsyncClient() as http:
            full = len((await http.get(f"{coord.http_url}/peers?limit=1000")).content)
        assert full > 300_000
        socks = []
        for _ in range(20):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(host_port(coord.http_url))
            s.sendall(b"GET /peers?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        await trio.sleep(3.0)  # past the write timeout (the waiting, not an assertion)
        got = []
        for s in socks:
            s.settimeout(5.0)
            n = 0
            try:
                while chunk := s.recv(65536):
                    n += len(chunk)
            except (ConnectionResetError, TimeoutError):
                pass
            got.append(n)
            s.close()
        async with httpx.AsyncClient() as http:
            after = await http.get(f"{coord.http_url}/health")
        nursery.cancel_scope.cancel()
    assert all(n < full for n in got), (got, full)  # cut off, not served in full
    assert after.status_code == 200


async def test_peers_is_served_a_page_at_a_time(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2)
        for i in range(250):
            coord.store.admit(f"12D3KooW{i:044d}", [], "")
        async with httpx.AsyncClient() as http:
            first = (await http.get(f"{coord.http_url}/peers")).json()
            last = (await http.get(f"{coord.http_url}/peers?offset=200&limit=1000")).json()
            bad = await http.get(f"{coord.http_url}/peers?limit=5000")
        nursery.cancel_scope.cancel()
    assert first["total"] == 250 and len(first["peers"]) == 100
    assert len(last["peers"]) == 50
    assert bad.status_code == 400


async def test_the_job_queue_holds_only_so_many_jobs_per_user(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, workload="prompt",
                                        llm_backend="echo")
        alice = {"hypc_user": "0xalice"}
        long_job = {"target_output": "calm, quiet, gentle", "generations": 500,
                    "population": 200, "patience": None, "max_calls": 100000,
                    "max_seconds": 3600}
        async with httpx.AsyncClient(timeout=30) as http:
            codes = [(await http.post(f"{coord.http_url}/prompt/jobs", headers=alice,
                                      json=long_job)).status_code for _ in range(5)]
            too_long = await http.post(f"{coord.http_url}/prompt/jobs", headers=alice,
                                       json={**long_job, "max_seconds": 86400})
        nursery.cancel_scope.cancel()
    assert codes == [200] * 4 + [429]
    assert too_long.status_code == 422 and "max_seconds" in too_long.json()["error"]


def test_an_endpoint_budget_admits_each_client_so_often_and_so_many_at_once():
    from coordinator.aim import ClientBudget, HTTPError, _Spender

    spender = _Spender(ClientBudget(per_minute=60, burst=3, concurrent=1, total_concurrent=2))
    spender.enter("a")
    with pytest.raises(HTTPError) as one_at_a_time:
        spender.enter("a")
    spender.enter("b")
    with pytest.raises(HTTPError) as two_in_all:
        spender.enter("c")
    spender.leave("a")
    spender.leave("b")
    for _ in range(2):  # "a" has spent 1 of its burst of 3
        spender.enter("a")
        spender.leave("a")
    with pytest.raises(HTTPError) as burst:
        spender.enter("a")
    assert one_at_a_time.value.status == 429 and "at a time" in one_at_a_time.value.reason
    assert two_in_all.value.status == 503
    assert burst.value.status == 429 and "a minute" in burst.value.reason
