"""Admission by allow list: file parsing and a refused enrolment over libp2p."""

from __future__ import annotations

import time

import pytest
import trio

from coordinator.__main__ import load_allow_list
from peer.node import NetworkNode
from protocol.wire.envelope import seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ENROLL,
    PROTO_SUBMIT,
    Enroll,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from .netutil import start_coordinator, start_peer, wait_for


def test_allow_list_accepts_peer_ids_and_hex_keys(tmp_path):
    a, b = Identity.generate(), Identity.generate()
    f = tmp_path / "allow.txt"
    f.write_text(f"# admitted\n{a.peer_id}\n\n{b.public_key.hex()}  # bob\n")
    assert load_allow_list(f) == {a.peer_id, b.peer_id}


def test_the_admitted_set_kept_in_memory_follows_admissions_and_expiry(tmp_path):
    """Store.admitted() is answered from memory (the round driver asks several times a
    second): it must still change when a peer is admitted or forgotten, and a reopened
    database must give the same set."""
    from coordinator.store import Store

    store = Store(tmp_path / "c.db")
    a, b, c = (Identity.generate().peer_id for _ in range(3))
    assert store.admitted() == frozenset()
    assert store.admit(a, [], "t") and store.admit(b, [], "t")
    assert store.admitted() == {a, b} and store.is_admitted(a) and not store.is_admitted(c)
    assert not store.admit(a, ["/ip4/127.0.0.1/tcp/1"], "t")  # again: no new member
    assert store.forget_silent(before=time.time() + 1, keep={b}) == [a]
    assert store.admitted() == {b} and not store.is_admitted(a)
    assert store.admit(c, [], "t")
    assert store.admitted() == {b, c}
    store.close()
    again = Store(tmp_path / "c.db")
    assert again.admitted() == {b, c}
    again.close()


def test_keys_refused_by_the_overall_budget_spend_nothing_of_their_sources():
    from protocol.policy.admission import AdmissionConfig, AdmissionPolicy, EnrollRate

    policy = AdmissionPolicy(AdmissionConfig(per_source_burst=4, per_source_rate=0.0,
                                             total_burst=2, total_rate=1.0), now=0.0)
    keys = [Identity.generate().peer_id for _ in range(4)]
    for k in keys[:2]:
        policy.before_verify(k, "10.0.0.1", known=False, admitted=0, now=0.0)
    for _ in range(50):  # the other two retry while everyone's budget is spent
        for k in keys[2:]:
            with pytest.raises(EnrollRate, match="just now"):
                policy.before_verify(k, "10.0.0.1", known=False, admitted=2, now=0.0)
    # the overall budget refills (1 a second): both get in, on their source's own budget
    policy.before_verify(keys[2], "10.0.0.1", known=False, admitted=2, now=1.0)
    policy.before_verify(keys[3], "10.0.0.1", known=False, admitted=3, now=2.0)
    with pytest.raises(EnrollRate, match="from 10.0.0.1"):  # and the source's is now spent
        policy.before_verify(Identity.generate().peer_id, "10.0.0.1", known=False,
                             admitted=4, now=3.0)


@pytest.mark.parametrize("line", ["QmNotAnEd25519Key", "zz" * 32, "12D3KooW" + "1" * 44])
def test_allow_list_refuses_bad_lines(tmp_path, line):
    f = tmp_path / "allow.txt"
    f.write_text(f"{Identity.generate().peer_id}\n{line}\n")
    with pytest.raises(ValueError, match=":2:"):
        load_allow_list(f)


async def test_unlisted_key_is_not_admitted(data_dir):
    listed, unlisted = Identity.generate(), Identity.generate()
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=1, max_rounds=1,
                                        allow=frozenset({listed.peer_id}),
                                        secure=False)
        boot = coord.node.addrs[0]
        ok = await start_peer(nursery, [boot], identity=listed)
        refused = await start_peer(nursery, [boot], identity=unlisted)
        await wait_for(lambda: ok.enrolled.is_set() and
                       coord.store.rejections_by_peer().get(unlisted.peer_id), timeout=15)
        await wait_for(lambda: coord.rounds_run >= 1)
        nursery.cancel_scope.cancel()
    assert not refused.enrolled.is_set()
    assert coord.store.admitted() == {listed.peer_id}
    assert coord.store.rejections_by_peer()[unlisted.peer_id]["not_admitted"] >= 1
    assert coord.store.round_row(1)["accepted"] == 1


async def test_enrolments_are_fresh_within_a_clock_window(data_dir):
    """Enrolments carry the current minute as their round: an old one (replayed an hour
    later) or one from the future is refused, so the coordinator's memory of enrolment
    nonces stays bounded by the window."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=5)
        node = NetworkNode(Identity.generate())
        async with node.running():
            assert await node.connect(coord.node.addrs[0])
            now = enroll_round(time.time())
            payload = encode(Enroll(workloads=["stats"]))
            verdicts = {}
            for label, minute in (("old", now - 60), ("future", now + 60), ("fresh", now)):
                raw = await node.request(coord.peer_id, PROTO_SUBMIT,
                                         seal(node.identity, ENROLL, minute, payload))
                verdicts[label] = decode(raw, SubmitAck)
        nursery.cancel_scope.cancel()
    assert verdicts["old"].reason.startswith("stale_round")
    assert verdicts["future"].reason.startswith("future_round")
    assert verdicts["fresh"].accepted


async def submit(node: NetworkNode, coordinator: str, wire: bytes) -> SubmitAck:
    return decode(await node.request(coordinator, PROTO_SUBMIT, wire), SubmitAck)


def enrolment(identity: Identity, ticket: bytes = b"") -> bytes:
    return seal(identity, ENROLL, enroll_round(time.time()),
                encode(Enroll(workloads=["stats"], ticket=ticket)))


async def test_a_sybil_flood_from_one_host_is_refused_beyond_its_budget(data_dir):
    """Finding: open admission took 4,453 fresh keys from one host in two minutes. With the
    default policy a source (an IP address) enrols 64 new keys at once, then one a minute:
    the 65th and later fresh keys are refused with ``enroll_rate``, counted against the node
    that sent them, while a key admitted earlier still re-enrols."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=500)
        node = NetworkNode(Identity.generate())
        async with node.running():
            assert await node.connect(coord.node.addrs[0])
            acks = [await submit(node, coord.peer_id, enrolment(Identity.generate()))
                    for _ in range(80)]
            first = Identity.generate()  # spends nothing: it is refused like the rest
            assert (await submit(node, coord.peer_id, enrolment(first))).reason.startswith(
                "enroll_rate")
            known = next(p for p in coord.store.admitted())
        nursery.cancel_scope.cancel()
    verdicts = [a.accepted for a in acks]
    assert verdicts == [True] * 64 + [False] * 16
    assert all(a.reason.startswith("enroll_rate") for a in acks[64:])
    assert coord.store.count_admitted() == 64
    assert coord.store.rejections_by_peer()[node.peer_id] == {"enroll_rate": 17}
    assert coord.admission.refused == {"enroll_rate": 17}
    assert known in coord.store.admitted()


async def test_re_enrolment_spends_nothing_and_admission_is_capped(data_dir):
    from protocol.policy.admission import AdmissionConfig

    admitted = [Identity.generate() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=500,
                                        admission=AdmissionConfig(max_peers=3,
                                                                  per_source_burst=3))
        node = NetworkNode(Identity.generate())
        async with node.running():
            assert await node.connect(coord.node.addrs[0])
            for ident in admitted:
                assert (await submit(node, coord.peer_id, enrolment(ident))).accepted
            full = await submit(node, coord.peer_id, enrolment(Identity.generate()))
            again = [await submit(node, coord.peer_id, enrolment(ident)) for ident in admitted]
        nursery.cancel_scope.cancel()
    assert full.reason.startswith("enroll_full")
    assert all(a.accepted for a in again)  # no budget left, yet known keys get through


async def test_admission_by_operator_ticket(data_dir):
    from protocol.policy.admission import AdmissionConfig, issue_ticket

    operator, alice, bob = Identity.generate(), Identity.generate(), Identity.generate()
    later = int(time.time()) + 3600
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(
            nursery, data_dir, min_peers=1, max_rounds=1, secure=False,
            admission=AdmissionConfig(ticket_key=operator.public_key))
        node = NetworkNode(Identity.generate())
        async with node.running():
            assert await node.connect(coord.node.addrs[0])
            verdicts = {
                "none": await submit(node, coord.peer_id, enrolment(bob)),
                "other peer's": await submit(node, coord.peer_id, enrolment(
                    bob, issue_ticket(operator, alice.peer_id, later))),
                "not the operator's": await submit(node, coord.peer_id, enrolment(
                    bob, issue_ticket(bob, bob.peer_id, later))),
                "expired": await submit(node, coord.peer_id, enrolment(
                    bob, issue_ticket(operator, bob.peer_id, int(time.time()) - 1))),
            }
        # a real peer with its ticket enrols and takes part in a round
        peer = await start_peer(nursery, [coord.node.addrs[0]], identity=alice,
                                ticket=issue_ticket(operator, alice.peer_id, later))
        await wait_for(lambda: coord.rounds_run >= 1)
        nursery.cancel_scope.cancel()
    assert verdicts["none"].reason.startswith("no_ticket")
    for label in ("other peer's", "not the operator's", "expired"):
        assert verdicts[label].reason.startswith("bad_ticket"), label
    assert peer.enrolled.is_set() and coord.store.admitted() == {alice.peer_id}
    assert coord.store.round_row(1)["accepted"] == 1


async def test_strangers_spend_neither_the_nonce_budget_nor_the_round_record(data_dir):
    """Finding: the per-round nonce cap was filled before the admission check, so a flood of
    validly signed messages from keys that never enrolled could make an honest peer's
    message fail as "too many messages"; and refusals of such senders went into the round's
    signed result. Now a stranger's message is refused before its nonce is remembered, and
    only refusals of admitted peers are in the round's record."""
    import json

    from protocol.wire.messages import CONTRIBUTION, StatsContribution

    def contribution(identity: Identity, height: float) -> bytes:
        return seal(identity, CONTRIBUTION, 1,
                    encode(StatsContribution(height=height, weight=70.0)))

    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2, max_rounds=1,
                                        secure=False, round_timeout=30.0)
        coord.round_verifier.max_nonces_per_round = 5
        alice, mallory = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
        outsider = NetworkNode(Identity.generate())  # never enrols
        async with alice.running(), mallory.running(), outsider.running():
            for node in (alice, mallory):
                assert await node.connect(coord.node.addrs[0])
                assert (await submit(node, coord.peer_id, enrolment(node.identity))).accepted
            assert await outsider.connect(coord.node.addrs[0])
            await wait_for(lambda: coord.current is not None)
            for _ in range(5):  # an outsider's own refusals stay out of the round's record
                ack = await submit(outsider, coord.peer_id,
                                   contribution(outsider.identity, 100.0))
                assert ack.reason.startswith("not_admitted")
            for _ in range(10):  # strangers' contributions, delivered by mallory
                ack = await submit(mallory, coord.peer_id,
                                   contribution(Identity.generate(), 100.0))
                assert ack.reason.startswith("not_admitted")
            assert (await submit(alice, coord.peer_id, contribution(alice.identity, 160.0))
                    ).accepted
            assert (await submit(mallory, coord.peer_id,
                                 contribution(mallory.identity, 180.0))).accepted
            await wait_for(lambda: coord.rounds_run >= 1, timeout=40)
        nursery.cancel_scope.cancel()
    row = coord.store.round_row(1)
    assert row["status"] == "published" and row["accepted"] == 2
    assert json.loads(row["result"])["mean_height"] == 170.0
    assert json.loads(row["rejected"]) == {"not_admitted": 10}  # mallory is admitted


async def test_repeated_refusals_are_logged_once_a_minute_per_peer(data_dir, caplog):
    import logging

    from protocol.wire.messages import CONTRIBUTION

    caplog.set_level(logging.WARNING, logger="hypergossip.coordinator")
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=5)
        node = NetworkNode(Identity.generate())
        async with node.running():
            assert await node.connect(coord.node.addrs[0])
            for _ in range(50):
                await submit(node, coord.peer_id, seal(Identity.generate(), CONTRIBUTION, 9,
                                                       b"junk"))
        nursery.cancel_scope.cancel()
    lines = [r for r in caplog.records if r.name == "hypergossip.coordinator" and
             "rejected" in r.getMessage()]
    assert len(lines) == 1 and coord.store.rejection_totals() == {"future_round": 50}


def test_the_ticket_command_writes_a_ticket_the_policy_accepts(tmp_path, capsys):
    from coordinator.__main__ import main
    from protocol.policy.admission import check_ticket

    peer = Identity.generate().peer_id
    out = tmp_path / "peer.ticket"
    assert main(["ticket", "--key", str(tmp_path / "operator.key"), "--peer", peer,
                 "--days", "2", "--out", str(out)]) == 0
    operator = Identity.load(tmp_path / "operator.key")
    assert f"--ticket-key {operator.peer_id}" in capsys.readouterr().out
    ticket = check_ticket(out.read_bytes(), operator.public_key, peer, time.time())
    assert ticket.peer_id == peer and ticket.expires > time.time() + 86400
    assert main(["ticket", "--key", str(tmp_path / "operator.key"), "--peer", "nope"]) == 2
