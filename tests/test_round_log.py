"""The signed round log (protocol.audit, coordinator.roundlog) and ``hypergossip audit``:
records chained and signed, inclusion proofs, every lie of a coordinator named, a record
tampered with or an envelope withheld caught, and the chain kept across a restart."""

from __future__ import annotations

import hashlib
import json

import httpx
import msgspec
import pytest
import trio

from coordinator.audit import main as audit_main
from examples.wine import Wine
from protocol.audit import merkle
from protocol.audit.log import (
    GENESIS,
    HEAD,
    HeadWatch,
    InclusionProof,
    LogHead,
    equivocation,
    open_head,
    record_hash,
    verify_proof,
)
from protocol.wire.envelope import RejectedMessage, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import encode

from .netutil import (
    THREE_PEOPLE,
    model_network,
    start_coordinator,
    start_peer,
    three_peer_network,
    wait_for,
)
from .test_workload_plugins import Lies


def test_merkle_inclusion_proofs_hold_for_each_leaf_and_no_other():
    for n in (1, 2, 3, 5, 8, 13, 33):
        leaves = [hashlib.sha256(f"{n}/{i}".encode()).digest() for i in range(n)]
        root = merkle.root(leaves)
        for i in range(n):
            path = merkle.prove(leaves, i)
            assert merkle.verify_inclusion(leaves[i], i, n, path, root)
            assert not merkle.verify_inclusion(hashlib.sha256(b"other").digest(), i, n, path,
                                               root)
            if n > 1:
                assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, path, root)
    assert merkle.root([]) == hashlib.sha256(b"").digest()


async def audit(url: str, tmp_path, *extra: str) -> tuple[int, list[dict]]:
    out = tmp_path / "audit.json"
    rc = await trio.to_thread.run_sync(audit_main, [url, "--json", str(out), *extra])
    return rc, json.loads(out.read_text())["findings"] if out.exists() else []


async def test_a_clear_round_log_is_chained_signed_proves_inclusion_and_audits(data_dir,
                                                                              tmp_path):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=3, secure=False,
                                         max_rounds=3, linger=60.0)
        url = coord.http_url
        rc, findings = await audit(url, tmp_path)
        async with httpx.AsyncClient(base_url=url) as http:
            info = (await http.get("/log")).json()
            heads = []
            for n in (1, 2, 3):
                resp = await http.get(f"/log/{n}")
                heads.append((open_head(bytes.fromhex(resp.headers["X-Log-Head"]),
                                        coord.node.peer_id)[1], resp.content))
            mine = coord.store.log.accepted(2, skip="legacy")[0]  # one peer's accepted message
            proof = (await http.get(f"/log/2/proof/{bytes(mine['digest']).hex()}")).json()
            absent = await http.get(f"/log/2/proof/{'ab' * 32}")
            batch = msgspec.msgpack.decode((await http.get("/log/2/messages")).content,
                                           type=list[bytes])
            one = (await http.get(f"/log/message/{bytes(mine['digest']).hex()}")).content
            bad = await http.get("/log/2/proof/xyz")
        nursery.cancel_scope.cancel()

    assert rc == 0 and [f["status"] for f in findings] == ["checked"] * 3, findings
    assert info["first"] == 1 and info["last"] == 3 and info["coordinator"] == coord.node.peer_id
    assert heads[0][0].prev == GENESIS
    for (head, data), (nxt, _) in zip(heads, heads[1:], strict=False):
        assert head.record == record_hash(data) and nxt.prev == head.record  # the chain
    assert all(h.accepted == 3 for h, _ in heads)
    # the peer checks its own message against the signed head alone
    _, head2 = open_head(bytes.fromhex(proof["head"]), coord.node.peer_id)
    p = InclusionProof(round=2, digest=bytes(mine["digest"]), index=proof["proof"]["index"],
                       size=proof["proof"]["size"],
                       path=[bytes.fromhex(x) for x in proof["proof"]["path"]])
    assert verify_proof(p, head2)
    # the same path does not prove a message that was not included, nor another round
    assert not verify_proof(msgspec.structs.replace(p, digest=b"\xab" * 32), head2)
    assert not verify_proof(p, heads[0][0])
    assert not verify_proof(msgspec.structs.replace(p, size=p.size + 1), head2)
    assert absent.status_code == 404 and "not among round 2" in absent.json()["error"]
    assert len(batch) == 3 and one in batch  # every envelope of the round in one response
    assert hashlib.sha256(one).digest() == bytes(mine["digest"])
    assert bad.status_code == 400


@pytest.mark.parametrize("lie", ["drop", "double", "fake-result"])
async def test_the_audit_names_each_lie_of_the_coordinator(data_dir, tmp_path, lie):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=2, secure=False,
                                         max_rounds=2, linger=60.0, lie=lie)
        rc, findings = await audit(coord.http_url, tmp_path)
        nursery.cancel_scope.cancel()
    assert rc == 1
    assert [(f["status"], f["lie"]) for f in findings] == [("failed", lie)] * 2, findings


async def test_a_tampered_record_or_a_withheld_envelope_fails_the_audit(data_dir, tmp_path):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=3, secure=False,
                                         max_rounds=3, linger=60.0)
        row = coord.store.log.record(2)
        record = bytearray(row["record"])
        record[-40] ^= 1  # a flipped bit in round 2's record, after its head was signed
        coord.store.db.execute("UPDATE round_log SET record=? WHERE round=2", (bytes(record),))
        coord.store.db.execute("UPDATE messages SET wire_at=-1 WHERE round=3 AND digest=?",
                               (coord.store.log.accepted(3, skip="legacy")[0]["digest"],))
        rc, findings = await audit(coord.http_url, tmp_path)
        nursery.cancel_scope.cancel()
    assert rc == 1
    by_round = {f["round"]: f for f in findings}
    assert by_round[1]["status"] == "checked"
    assert by_round[2]["lie"] == "bad-record" and "does not hash" in by_round[2]["detail"]
    assert by_round[3]["lie"] == "withheld", by_round[3]


async def test_the_log_survives_a_restart_and_the_chain_goes_on(data_dir, tmp_path):
    for run in (1, 2):  # the same database: rounds 1-2, then 3-4 after a restart
        async with trio.open_nursery() as nursery:
            coord = await three_peer_network(nursery, data_dir, rounds=2, secure=False,
                                             max_rounds=2, linger=60.0)
            if run == 2:
                rc, findings = await audit(coord.http_url, tmp_path)
            nursery.cancel_scope.cancel()
        coord.store.close()
    assert rc == 0 and [f["round"] for f in findings] == [1, 2, 3, 4], findings
    assert {f["status"] for f in findings} == {"checked"}


@pytest.mark.parametrize("protocol", ["vss", "secagg"])
async def test_secure_stats_rounds_replay_to_their_published_sums(data_dir, tmp_path,
                                                                  protocol):
    """The auditor replays the mode's own server on the logged messages: every range proof
    and share (vss) or the unmasking (SecAgg+) again, giving the published sum."""
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=2, secure=True,
                                         secure_protocol=protocol, max_rounds=2, linger=60.0,
                                         phase_timeout=10.0)
        rc, findings = await audit(coord.http_url, tmp_path)
        nursery.cancel_scope.cancel()
    assert rc == 0, findings
    assert [(f["mode"], f["status"]) for f in findings] == [(protocol, "checked")] * 2
    if protocol == "secagg":  # what the parameters guarantee, and what no replay checks
        detail = findings[0]["detail"]
        assert "announced n=3, degree 2, threshold 2, agreement 2 (the default rule)" in detail
        assert "not checkable: the inputs themselves" in detail, detail


async def test_a_faked_secure_result_is_named(data_dir, tmp_path):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=1, secure=True,
                                         max_rounds=1, linger=60.0, lie="fake-result",
                                         phase_timeout=10.0)
        rc, findings = await audit(coord.http_url, tmp_path)
        nursery.cancel_scope.cancel()
    assert rc == 1 and findings[0]["mode"] == "vss" and findings[0]["lie"] == "fake-result"
    assert "its inputs give" in findings[0]["detail"], findings


@pytest.mark.parametrize("replicated", [False, True], ids=["robust", "replicated"])
async def test_model_rounds_replay_robust_secagg_and_replicated_with_a_liar(data_dir, tmp_path,
                                                                           replicated):
    """Wine in robust secure rounds (SecAgg+ per group, bound checks, a robust aggregator)
    and in replicated rounds where one replica lies: the auditor replays both, re-executing
    the disputed segments and training the agreed ones again, and gets the same model."""
    coordinator = Wine(replicas=2, segments=4) if replicated else Wine()
    peers = [Wine(), Wine(), Wine(), Lies() if replicated else Wine()]
    async with trio.open_nursery() as nursery:
        coord, _ = await model_network(nursery, data_dir, coordinator, peers, secure=True,
                                       rounds=2, max_rounds=2, linger=60.0)
        rc, findings = await audit(coord.http_url, tmp_path, "--workload",
                                   "examples.wine:Wine")
        nursery.cancel_scope.cancel()
    assert rc == 0, findings
    mode = "replicated" if replicated else "robust"
    assert [(f["mode"], f["status"]) for f in findings] == [(mode, "checked")] * 2, findings


async def test_an_equivocating_coordinator_is_caught_by_its_peers(data_dir, tmp_path):
    """``--lie equivocate``: a second signed head per round, over a history with one
    accepted message fewer, on the peers' sessions while gossip carries the true one.
    Every peer that sees both holds a proof anyone can check with the coordinator's key,
    and the audit, given the heads a peer saw, names the lie."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, secure=False,
                                        max_rounds=2, linger=60.0, lie="equivocate")
        peers = [await start_peer(nursery, [coord.node.addrs[0]], h, w)
                 for h, w in THREE_PEOPLE]
        heads = tmp_path / "heads.txt"  # what a peer run with --equivocations PATH writes
        peers[0].follower.proofs_file = str(heads)
        await wait_for(lambda: coord.rounds_run >= 2 and all(
            p.follower.heads.proofs for p in peers), timeout=60)
        rc, findings = await audit(coord.http_url, tmp_path, "--heads", str(heads))
        nursery.cancel_scope.cancel()
    for p in peers:
        for round, (first, second) in p.follower.heads.proofs.items():
            assert equivocation(first, second, coord.node.peer_id) == round
    assert rc == 1 and any(f["lie"] == "equivocate" for f in findings), findings


async def test_an_unfair_dispute_is_named(data_dir, tmp_path):
    """Replicated wine rounds where one replica lies and the coordinator, settling the
    disputes, sides with it: the audit re-executes the contested segments and names it."""
    async with trio.open_nursery() as nursery:
        coord, ids = await model_network(nursery, data_dir, Wine(replicas=2, segments=4),
                                         [Wine(), Wine(), Wine(), Lies()], secure=True,
                                         rounds=2, max_rounds=2, linger=60.0,
                                         lie="unfair-dispute")
        rc, findings = await audit(coord.http_url, tmp_path, "--workload",
                                   "examples.wine:Wine")
        nursery.cancel_scope.cancel()
    assert rc == 1
    assert {f["lie"] for f in findings if f["status"] == "failed"} == {"unfair-dispute"}, \
        findings
    assert coord.reputation.score(ids[3]) >= max(coord.reputation.score(p) for p in ids[:3])


async def test_a_peers_receipts_prove_inclusion_or_a_hidden_drop(data_dir, tmp_path):
    """Each accepted message gets the coordinator's signed receipt; the peer proves it in
    the round's signed record with a Merkle path. A coordinator that leaves a message out
    of its result and its record alike (``drop-hidden``) is caught by that message's
    receipt, which names it."""
    for lie in ("", "drop-hidden"):
        async with trio.open_nursery() as nursery:
            coord = await start_coordinator(nursery, data_dir / (lie or "honest"), min_peers=2,
                                            start_peers=3, secure=False, max_rounds=2,
                                            linger=60.0, lie=lie)
            peers = [await start_peer(nursery, [coord.node.addrs[0]], h, w)
                     for h, w in THREE_PEOPLE]
            await wait_for(lambda c=coord: c.rounds_run >= 2, timeout=60)
            # each peer's acks come back on its own time: wait for all six receipts
            await wait_for(lambda ps=peers: sum(len(ws) for p in ps
                                                for ws in p.participant.receipts.values()) == 6,
                           timeout=30)
            receipts = tmp_path / f"receipts{lie}.txt"
            receipts.write_text("\n".join(w.hex() for p in peers
                                          for ws in p.participant.receipts.values() for w in ws))
            rc, findings = await audit(coord.http_url, tmp_path, "--receipts", str(receipts))
            nursery.cancel_scope.cancel()
        assert sum(len(ws) for p in peers for ws in p.participant.receipts.values()) == 6
        if not lie:
            assert rc == 0 and {f["status"] for f in findings} == {"checked"}, findings
        else:
            assert rc == 1
            assert {f["lie"] for f in findings if f["status"] == "failed"} == {"drop"}, findings
            named = [f for f in findings if "receipted as accepted" in f["detail"]]
            assert len(named) == 2, findings  # the receipt of each round's dropped message


async def test_envelopes_are_kept_for_the_last_rounds_only(data_dir, tmp_path):
    """``log_keep=1``: the last round is re-derived; older ones stay in the chain (heads,
    hashes checked) but say plainly that their envelopes are gone."""
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=3, secure=False,
                                         max_rounds=3, linger=60.0, log_keep=1)
        rc, findings = await audit(coord.http_url, tmp_path)
        kept = coord.store.db.execute(
            "SELECT round, COUNT(*) FROM messages WHERE wire_at >= 0 GROUP BY round"
        ).fetchall()
        files = sorted(p.name for p in coord.store.segments.folder.iterdir())
        nursery.cancel_scope.cancel()
    assert rc == 0 and [tuple(r) for r in kept] == [(3, 3)]
    assert files == ["3.env"]  # the older rounds' envelope files are deleted
    assert [f["status"] for f in findings] == ["not checkable", "not checkable", "checked"]
    assert "no longer kept" in findings[0]["detail"]


def test_a_peers_head_watch_keeps_the_last_rounds_and_proves_a_second_head():
    """Sans-IO: heads of the last ``keep`` rounds, a second one for a round proves it,
    anything not the coordinator's is refused, memory stays bounded."""
    coord, other = Identity.generate(), Identity.generate()

    def head(ident, r, record):
        return seal(ident, HEAD, r, encode(LogHead(round=r, record=record, prev=GENESIS,
                                                   root=GENESIS, accepted=0)))

    watch = HeadWatch(coord.peer_id, keep=4)
    for r in range(1, 11):
        assert watch.observe(head(coord, r, bytes([r]) * 32))[1] is None
    assert sorted(watch.heads) == [7, 8, 9, 10]
    assert watch.observe(head(coord, 10, bytes([10]) * 32))[1] is None  # the same head again
    _, proof = watch.observe(head(coord, 9, b"\xee" * 32))
    assert proof is not None and equivocation(*proof, coord.peer_id) == 9
    assert watch.observe(head(coord, 9, b"\xdd" * 32))[1] is None  # proven once is enough
    with pytest.raises(RejectedMessage):
        watch.observe(head(other, 8, b"\xee" * 32))  # not the coordinator's: no proof
    for r in range(11, 30):
        watch.observe(head(coord, r, bytes([r]) * 32))
        watch.observe(head(coord, r, b"\xff" * 32))
    assert len(watch.heads) == 4 and len(watch.proofs) == 4
