"""The coordinator's AIM HTTP contract on a real hypercorn server."""

from __future__ import annotations

import httpx
import pytest
import trio

from coordinator.aim import CORS_HEADERS

from .netutil import start_coordinator

# a stats coordinator runs no prompt search
ENDPOINTS = {"/health", "/peers", "/model", "/rounds", "/rounds/{n}", "/manifest.json",
             "/current_model", "/post_data/{epoch}", "/metrics", "/", "/dashboard.js",
             "/dashboard.css", "/dashboard/state", "/log", "/log/{n}",
             "/log/{n}/proof/{digest}", "/log/{n}/messages", "/log/message/{digest}",
             "/log/blob/{digest}"}


@pytest.fixture
async def coord_url(data_dir, nursery):
    coord = await start_coordinator(nursery, data_dir, min_peers=2)
    yield coord.http_url
    coord.stop()
    nursery.cancel_scope.cancel()


def assert_cors(resp: httpx.Response) -> None:
    for name, value in CORS_HEADERS.items():
        assert resp.headers.get(name) == value, (resp.request.url, name)


async def test_manifest_lists_every_endpoint_with_example_calls(coord_url):
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{coord_url}/manifest.json")
    assert resp.status_code == 200
    assert_cors(resp)
    m = resp.json()
    for key in ("name", "short_name", "version", "license", "author"):
        assert isinstance(m[key], str) and m[key]
    assert {e["uri"] for e in m["endpoints"]} == ENDPOINTS
    for e in m["endpoints"]:
        for key in ("input_methods", "input_query", "input_headers", "input_body", "output",
                    "documentation", "example_calls"):
            assert key in e, (e["uri"], key)
        assert e["documentation"] and e["example_calls"], e["uri"]
        for call in e["example_calls"]:
            assert set(call) == {"body", "method", "query", "headers", "output"}
            assert call["method"] in e["input_methods"]


async def test_every_endpoint_answers_json_with_cors(coord_url):
    async with httpx.AsyncClient() as http:
        for uri in ("/health", "/peers", "/model", "/rounds"):
            resp = await http.get(f"{coord_url}{uri}")
            assert resp.status_code == 200, uri
            assert resp.headers["content-type"].startswith("application/json")
            assert_cors(resp)
        health = (await http.get(f"{coord_url}/health")).json()
    assert health["status"] == "ok" and health["multiaddrs"][0].endswith(health["peer_id"])


@pytest.mark.parametrize("method,uri,status,fragment", [
    ("GET", "/nope", 404, "no such endpoint"),
    ("GET", "/rounds/abc", 400, "must be an integer"),
    ("GET", "/rounds/0", 400, "must be in"),
    ("GET", "/rounds/99999999999999999999999", 400, "must be in"),
    ("GET", "/rounds/7", 404, "no round 7"),
    ("GET", "/rounds?limit=0", 400, "limit"),
    ("GET", "/rounds?offset=-1", 400, "offset"),
    ("GET", "/rounds?limit=%FF%FE", 400, "limit"),
    ("POST", "/health", 405, "not allowed"),
    ("DELETE", "/model", 405, "not allowed"),
])
async def test_bad_requests_get_4xx_json_with_reason(coord_url, method, uri, status, fragment):
    async with httpx.AsyncClient() as http:
        resp = await http.request(method, f"{coord_url}{uri}",
                                  content=None if method == "GET" else b"{not json")
    assert resp.status_code == status
    assert_cors(resp)
    body = resp.json()
    assert body["status"] == status and fragment in body["error"], body


async def test_preflight_is_answered(coord_url):
    async with httpx.AsyncClient() as http:
        resp = await http.options(f"{coord_url}/model")
    assert resp.status_code == 204
    assert_cors(resp)


async def test_hammering_with_junk_never_yields_500(coord_url):
    junk = ["/rounds/%00", "/rounds/-1", "/rounds/1.5", "/rounds?limit=1e9", "/%2e%2e/etc",
            "/manifest.json?x=" + "a" * 4000, "/rounds/" + "9" * 300]
    async with httpx.AsyncClient() as http:
        for uri in junk:
            resp = await http.get(f"{coord_url}{uri}")
            assert 200 <= resp.status_code < 500, (uri, resp.status_code, resp.text[:200])
            assert_cors(resp)
        await trio.sleep(0)
