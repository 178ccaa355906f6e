"""The job log: every prompt job's outputs with the signed evaluations behind them, and
``hypergossip audit`` re-deriving each job's published fitness from them."""

from __future__ import annotations

import json

import httpx
import msgspec
import trio

from coordinator.audit import main as audit_main
from peer.attacks import Attack
from peer.daemon import PeerDaemon
from peer.llm import make_backend
from protocol.audit.jobs import PEERS, check_evidence, check_job, open_job_head, replay
from protocol.learning.registry import get_workload
from protocol.wire.identity import Identity

from .netutil import start_coordinator, wait_for

JOB = {"target_output": "simple, lively, strong", "population": 8, "generations": 3,
       "patience": None}


async def audit(url: str, tmp_path, *extra: str) -> tuple[int, list[dict]]:
    out = tmp_path / "audit.json"
    rc = await trio.to_thread.run_sync(audit_main, [url, "--json", str(out), *extra])
    return rc, json.loads(out.read_text())["jobs"] if out.exists() else []


async def finished(http: httpx.AsyncClient, number: int, user: str) -> dict:
    while True:
        r = (await http.get("/result", params={"job_number": number},
                            headers={"hypc_user": user})).json()
        if r["completed"]:
            assert r["status"] == "done", r
            return r["result"]
        await trio.sleep(0.2)


async def test_prompt_jobs_are_logged_with_their_signed_evaluations_and_audit(data_dir,
                                                                               tmp_path):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, workload="prompt",
                                        llm_backend="echo", redundancy=2)
        for attack in (None, None, None, "fakescore"):  # one peer answers made-up outputs
            d = PeerDaemon(Identity.generate(), get_workload("prompt"), None,
                           bootstrap=[coord.node.addrs[0]], evaluator=make_backend("echo"),
                           behaviour=Attack(attack) if attack else None)
            await nursery.start(d.run)
        await wait_for(lambda: len(coord.evaluators) == 4 and len(coord.live_peers()) == 4)
        async with httpx.AsyncClient(base_url=coord.http_url, timeout=60) as http:
            number = (await http.post("/prompt/jobs", json=JOB,
                                      headers={"hypc_user": "alice"})).json()["job_number"]
            queued = await finished(http, number, "alice")
            # the same search again, synchronously: every output from the shared cache
            again = (await http.post("/prompt", json=JOB, headers={"hypc_user": "alice"})).json()
            heads = (await http.get("/log/jobs")).json()
            mine = await http.get("/log/jobs/1", headers={"hypc_user": "alice"})
            theirs = await http.get("/log/jobs/1", headers={"hypc_user": "bob"})
        rc, findings = await audit(coord.http_url, tmp_path, "--user", "alice")
        rc_bob, bob = await audit(coord.http_url, tmp_path, "--user", "bob")
        nursery.cancel_scope.cancel()
    assert queued["log_entry"] == 1 and again["log_entry"] == 2
    assert again["cache_hits"] > 0 and again["score"] == queued["score"]
    assert heads["first"] == 1 and heads["last"] == 2 and len(heads["heads"]) == 2
    assert mine.status_code == 200 and theirs.status_code == 403, theirs.text
    assert rc == 0, findings
    assert [f["status"] for f in findings] == ["checked", "checked"], findings
    assert rc_bob == 0 and bob == []  # bob reads both heads, neither record

    head = open_job_head(bytes.fromhex(mine.headers["X-Log-Head"]), coord.identity.peer_id)
    rec = check_job(mine.content, head)
    assert rec.job == number and rec.user == "alice" and rec.redundancy == 2
    assert sum(o.by == PEERS for o in rec.outputs) > 0
    assert check_evidence(rec, coord.identity.peer_id) == []
    assert replay(rec)[0]["score"] == queued["score"]
    # the same evaluations do not carry a stricter claim: redundancy 3 is not what they show
    stricter = msgspec.structs.replace(rec, redundancy=3)
    assert check_evidence(stricter, coord.identity.peer_id)
    # nor another coordinator's key: its tasks are not this coordinator's
    assert check_evidence(rec, Identity.generate().peer_id)
    # an output changed after the fact no longer rests on the signed answers
    outputs = list(rec.outputs)
    i = next(i for i, o in enumerate(outputs) if o.by == PEERS)
    outputs[i] = msgspec.structs.replace(outputs[i], output="something else")
    assert check_evidence(msgspec.structs.replace(rec, outputs=outputs),
                          coord.identity.peer_id)


async def test_a_faked_fitness_is_named_and_own_evaluations_are_rerun(data_dir, tmp_path):
    async with trio.open_nursery() as nursery:  # no peers: the coordinator evaluates alone
        coord = await start_coordinator(nursery, data_dir, workload="prompt",
                                        llm_backend="echo", lie="fake-fitness")
        async with httpx.AsyncClient(base_url=coord.http_url, timeout=60) as http:
            r = await http.post("/prompt", json=JOB)
            assert r.status_code == 200, r.text
        rc, findings = await audit(coord.http_url, tmp_path)
        nursery.cancel_scope.cancel()
    assert rc == 1
    assert [(f["status"], f["lie"]) for f in findings] == [("failed", "fake-fitness")], findings
    assert "score published" in findings[0]["detail"]


async def test_the_coordinators_own_evaluations_are_rerun_by_the_auditor(data_dir, tmp_path):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, workload="prompt",
                                        llm_backend="echo")
        async with httpx.AsyncClient(base_url=coord.http_url, timeout=60) as http:
            r = await http.post("/prompt", json=JOB)
            assert r.status_code == 200, r.text
            r = await http.post("/prompt", json={"task": "sentiment", "population": 4,
                                                 "generations": 2, "patience": None})
            assert r.status_code == 200, r.text
            assert "held_out" in r.json()
        rc, findings = await audit(coord.http_url, tmp_path)
        # the same job audited with a backend of another model: not checkable, not failed
        rc_other, other = await audit(coord.http_url, tmp_path, "--llm", "local")
        nursery.cancel_scope.cancel()
    assert rc == 0 and [f["status"] for f in findings] == ["checked", "checked"], findings
    assert all("re-run here" in f["detail"] for f in findings)
    assert rc_other == 0 and other[0]["status"] == "not checkable", other
