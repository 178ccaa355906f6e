"""Incremental learning over real libp2p: replicas, commit-reveal, reputation, attacks."""

from __future__ import annotations

import hashlib

import httpx
import trio

from coordinator.service import Coordinator
from peer.attacks import Attack
from peer.daemon import PeerDaemon
from protocol.learning import datasets
from protocol.learning.registry import get_workload
from protocol.wire.identity import Identity

from .netutil import coordinator_config, start_coordinator, wait_for

DS = datasets.load()


async def start_incremental_peer(nursery, boot: str, attack: str | None = None) -> PeerDaemon:
    daemon = PeerDaemon(Identity.generate(), get_workload("incremental"), DS, bootstrap=[boot],
                        behaviour=Attack(attack) if attack else None)
    await nursery.start(daemon.run)
    return daemon


async def run_net(data_dir, *, peers: int, attackers: int, attack: str | None, rounds: int,
                  **options):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(
            nursery, data_dir, min_peers=2, start_peers=peers, max_rounds=rounds,
            workload="incremental", phase_timeout=6.0,
            workload_options=dict(segments=4, replicas=3, **options))
        boot = coord.node.addrs[0]
        honest = [await start_incremental_peer(nursery, boot) for _ in range(peers - attackers)]
        bad = [await start_incremental_peer(nursery, boot, attack) for _ in range(attackers)]
        await wait_for(lambda: coord.rounds_run >= rounds, timeout=90)
        async with httpx.AsyncClient() as http:
            views = [(await http.get(f"{coord.http_url}/rounds/{n}")).json()
                     for n in range(1, rounds + 1)]
            rep = (await http.get(f"{coord.http_url}/reputation")).json()
            weights = await http.get(f"{coord.http_url}/model/weights")
            model = (await http.get(f"{coord.http_url}/model")).json()
        await wait_for(lambda: all(rounds in p.models for p in honest + bad), timeout=20)
        nursery.cancel_scope.cancel()
    return views, rep, weights, model, honest, bad


async def test_collusion_is_refused_and_colluders_lose_their_tasks(data_dir):
    views, rep, weights, model, honest, bad = await run_net(
        data_dir, peers=6, attackers=2, attack="collude", rounds=3)
    bad_ids = {p.peer_id for p in bad}
    losses = [v["result"]["loss"] for v in views]
    for v in views:
        assert v["status"] == "published", v
        for seg in v["result"]["segments"]:
            assert seg["used"]
            assert not bad_ids & set(seg["agree"]), seg  # nothing of theirs accepted
    assert losses == sorted(losses, reverse=True), losses
    scores = {p["peer_id"]: p for p in rep["peers"]}
    for b in bad_ids:
        assert not scores[b]["eligible"], scores[b]
    # after falling below the threshold an attacker is assigned nothing
    for v in views:
        fallen = {p for p, s in v["result"]["reputation"].items() if s < rep["threshold"]}
        later = [x for x in views if x["round"] > v["round"]]
        for x in later:
            for seg in x["result"]["segments"]:
                assert not fallen & set(seg["replicas"])
    # the coordinator serves the published weights; every peer holds the same bytes
    assert weights.headers["x-model-digest"] == model["model_digest"]
    assert hashlib.sha256(weights.content).hexdigest() == model["model_digest"]
    for p in honest + bad:
        assert p.models[3].hex() == model["model_digest"]
    # reputation and the model survive a restart on the same database
    again = Coordinator(coordinator_config(data_dir, workload="incremental"))
    assert {p: again.reputation.score(p) for p in scores} == {
        p: v["score"] for p, v in scores.items()}
    assert hashlib.sha256(again.workload.state_blob()).hexdigest() == model["model_digest"]
    again.store.close()


async def test_copiers_see_the_gossip_but_nothing_they_copy_is_accepted(data_dir):
    views, rep, _, _, honest, bad = await run_net(
        data_dir, peers=4, attackers=1, attack="copy", rounds=2)
    copier = bad[0].peer_id
    assert bad[0].behaviour.seen_commits  # it did read co-replicas' commitments off gossip
    for v in views:
        assert v["status"] == "published"
        for seg in v["result"]["segments"]:
            assert copier not in seg["agree"]
    first = views[0]["result"]["segments"]
    # what it copied in is refused (a reveal that does not open its commitment), or, when
    # no co-replica's reveal reached it in time (a loaded machine), it revealed nothing
    assert all(copier in s["bad_reveal"] or copier in s["missing"]
               for s in first if copier in s["replicas"])
    assert not {p["peer_id"]: p for p in rep["peers"]}[copier]["eligible"]


async def test_disputes_settled_by_extra_replicas_over_the_network(data_dir):
    views, rep, _, _, honest, bad = await run_net(
        data_dir, peers=7, attackers=2, attack="random", rounds=2, dispute="replicas")
    bad_ids = {p.peer_id for p in bad}
    first = views[0]["result"]["segments"]
    contested = [s for s in first if s["extra_replicas"]]
    assert contested, first  # the liars' segments went to extra replicas
    for s in contested:  # decided by them (or, failing a clear majority, by re-execution)
        assert s["decided_by"] in ("extra replicas", "re-execution")
        assert not bad_ids & set(s["agree"]) and bad_ids & set(s["disagree"])
    assert any(s["decided_by"] == "extra replicas" for s in contested)
    for v in views:
        assert v["status"] == "published"
        assert all(s["used"] for s in v["result"]["segments"])
    scores = {p["peer_id"]: p for p in rep["peers"]}
    assert all(not scores[b]["eligible"] for b in bad_ids)
