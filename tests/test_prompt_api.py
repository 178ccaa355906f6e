"""Prompt search behind the AIM API (echo backend): the seed's test, jobs, queue, 403."""

from __future__ import annotations

import httpx
import trio

from .netutil import start_coordinator, wait_for


async def test_prompt_endpoints(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, workload="prompt", llm_backend="echo")
        url = coord.http_url
        async with httpx.AsyncClient(timeout=60) as http:
            # the seed's own test
            r = await http.post(f"{url}/prompt", json={"target_output": "simple, lively, strong"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert isinstance(body["prompt"], str) and body["prompt"]
            assert isinstance(body["score"], float)
            assert body["llm_calls"] > 0 and body["generations"] >= 1
            # the same request again: every output comes from the cache, no new call
            again = (await http.post(f"{url}/prompt",
                                     json={"target_output": "simple, lively, strong"})).json()
            assert again["llm_calls"] == 0 and again["cache_hits"] > 0
            assert again["prompt"] == body["prompt"]
            # the sentiment task reports held-out accuracy beside the hand-written baseline
            r = await http.post(f"{url}/prompt", json={"task": "sentiment", "population": 4,
                                                       "generations": 2})
            held = r.json()["held_out"]
            assert held["reviews"] == 176 and 0 <= held["evolved"] <= 1
            assert 0 <= held["baseline"] <= 1 and held["baseline_prompt"]
            # cost only: a price, no work
            cost = (await http.post(f"{url}/prompt?cost_only=1",
                                    json={"target_output": "x"})).json()
            assert set(cost) >= {"min", "max", "estimated_cost", "currency"}
            assert cost["min"] <= cost["estimated_cost"] <= cost["max"]
            # bad bodies: 4xx with a reason
            for bad in ({"target_output": ""}, {"target_output": "x", "population": 1},
                        {"target_output": "x", "fitness": {"nope": 1}},
                        {"target_output": "x", "max_seconds": 500}):
                r = await http.post(f"{url}/prompt", json=bad)
                assert r.status_code == 422 and r.json()["error"], bad
            r = await http.post(f"{url}/prompt", json={"target_output": "x", "extra": 1})
            assert r.status_code == 422
            r = await http.post(f"{url}/prompt", content=b"{not json")
            assert r.status_code == 400
            # a long job, the queue, and its result only for its owner
            alice = {"hypc_user": "0xalice"}
            job = (await http.post(f"{url}/prompt/jobs", headers=alice, json={
                "target_output": "calm, quiet, gentle", "generations": 5})).json()
            n = job["job_number"]
            q = (await http.get(f"{url}/queue")).json()
            assert set(q) == {"current_job_number", "next_job_number", "queue_length"}

            async def done() -> bool:
                return (await http.get(f"{url}/result", params={"job_number": n},
                                       headers=alice)).json()["completed"]

            with trio.fail_after(30):
                while not await done():
                    await trio.sleep(0.1)
            res = (await http.get(f"{url}/result", params={"job_number": n},
                                  headers=alice)).json()
            assert res["status"] == "done" and res["result"]["prompt"]
            assert res["progress"]["best_per_generation"]
            r = await http.get(f"{url}/result", params={"job_number": n},
                               headers={"hypc_user": "0xmallory"})
            assert r.status_code == 403
            r = await http.get(f"{url}/result", params={"job_number": 999}, headers=alice)
            assert r.status_code == 404
            manifest = (await http.get(f"{url}/manifest.json")).json()
            uris = {e["uri"] for e in manifest["endpoints"]}
            assert {"/prompt", "/prompt/jobs", "/queue", "/result"} <= uris
        await wait_for(lambda: True)
        nursery.cancel_scope.cancel()
