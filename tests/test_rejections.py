"""Bad messages over real libp2p, by stream and by gossip: each refused, counted, harmless.

An admitted but malicious peer (a raw network node, not our daemon) sends a
forged message (claiming an honest peer's key), a tampered one, a replay, a
stale-round and a future-round one, an oversized one; a key that never
enrolled sends a well-formed contribution. Each is refused with its own
reason, counted in ``GET /peers``, and the published mean is exactly the
mean of the accepted honest inputs.
"""

from __future__ import annotations

import hashlib
import math
import time

import httpx
import msgspec
import trio

from peer.node import NetworkNode
from protocol import rounds
from protocol.audit.log import open_receipt
from protocol.wire.envelope import Envelope, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    CONTRIBUTION,
    ENROLL,
    PROTO_SUBMIT,
    TOPIC_SUBMIT,
    Enroll,
    StatsContribution,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from .netutil import start_coordinator, start_peer, wait_for


async def submit(node: NetworkNode, coordinator: str, wire: bytes) -> SubmitAck:
    return decode(await node.request(coordinator, PROTO_SUBMIT, wire), SubmitAck)


def contribution(identity: Identity, round: int, height: float, weight: float) -> bytes:
    return seal(identity, CONTRIBUTION, round,
                encode(StatsContribution(height=height, weight=weight)))


def forge(claimed: Identity, signer: Identity, round: int) -> bytes:
    """A contribution that claims ``claimed``'s key but is signed by ``signer``."""
    genuine = msgspec.msgpack.decode(contribution(signer, round, 250.0, 300.0), type=Envelope)
    forged = msgspec.structs.replace(genuine, sender=claimed.public_key)
    return msgspec.msgpack.encode(forged)


def same_nonce(identity: Identity, wire: bytes, payload: bytes) -> bytes:
    """A replay: another payload, validly signed, under ``wire``'s nonce."""
    env = msgspec.msgpack.decode(wire, type=Envelope)
    digest = hashlib.sha256(payload).digest()
    replayed = msgspec.structs.replace(env, payload=payload, payload_digest=digest)
    signature = identity.sign(replayed.signing_bytes())
    return msgspec.msgpack.encode(msgspec.structs.replace(replayed, signature=signature))


def flip_payload_byte(wire: bytes) -> bytes:
    env = msgspec.msgpack.decode(wire, type=Envelope)
    at = wire.index(env.payload) + len(env.payload) // 2
    return wire[:at] + bytes([wire[at] ^ 0x01]) + wire[at + 1:]


async def test_bad_messages_are_refused_counted_and_change_nothing(data_dir):
    honest_inputs = [(165.0, 60.0), (180.0, 82.0)]
    mallory_input = (175.5, 71.0)
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, max_rounds=1,
                                        round_timeout=30.0, secure=False)
        boot = coord.node.addrs[0]
        alice_id = Identity.generate()
        await start_peer(nursery, [boot], *honest_inputs[0], identity=alice_id)
        await start_peer(nursery, [boot], *honest_inputs[1])

        mallory = Identity.generate()
        stranger = Identity.generate()
        node = NetworkNode(mallory)
        async with node.running():
            await node.subscribe(TOPIC_SUBMIT, lambda data, origin: trio.sleep(0))
            assert await node.connect(boot)
            enroll = seal(mallory, ENROLL, enroll_round(time.time()),
                          encode(Enroll(workloads=["stats"])))
            assert (await submit(node, coord.peer_id, enroll)).accepted
            # eve is admitted but not connected, so not asked: her broken contribution is
            # refused for its schema (a participant's would also end its round, see
            # test_fedavg_network's refusal test)
            eve = Identity.generate()
            assert (await submit(node, coord.peer_id, seal(eve, ENROLL, enroll_round(
                time.time()), encode(Enroll(workloads=["stats"]))))).accepted
            await wait_for(lambda: coord.current is not None and coord.current.number == 1)

            attacks = {
                "bad_signature": forge(alice_id, mallory, 1),
                "stale_round": contribution(mallory, 0, *mallory_input),
                "future_round": contribution(mallory, 2, *mallory_input),
                "oversize": seal(mallory, CONTRIBUTION, 1, b"\x00" * (9 * 1024 * 1024)),
                "not_admitted": contribution(stranger, 1, 150.0, 50.0),
                "schema": seal(eve, CONTRIBUTION, 1, encode(
                    StatsContribution(height=170.0, weight=70.0))[:-3]),
            }
            for reason, wire in attacks.items():
                ack = await submit(node, coord.peer_id, wire)
                assert not ack.accepted and ack.reason.startswith(reason), (reason, ack)

            valid = contribution(mallory, 1, *mallory_input)
            tampered = flip_payload_byte(valid)
            ack = await submit(node, coord.peer_id, tampered)
            assert not ack.accepted and ack.reason.startswith("digest_mismatch")
            assert (await submit(node, coord.peer_id, valid)).accepted
            replayed = same_nonce(mallory, valid, encode(StatsContribution(height=190.0,
                                                                           weight=99.0)))
            ack = await submit(node, coord.peer_id, replayed)  # an accepted message's nonce
            assert not ack.accepted and ack.reason.startswith("replay")

            # the same attacks by gossip are refused and counted the same way
            await node.publish(TOPIC_SUBMIT, forge(alice_id, mallory, 1))
            await node.publish(TOPIC_SUBMIT, replayed)
            await wait_for(lambda: coord.store.rejection_totals().get("bad_signature", 0) >= 2
                           and coord.store.rejection_totals().get("replay", 0) >= 2, timeout=15)

            await wait_for(lambda: coord.rounds_run >= 1, timeout=30)
            async with httpx.AsyncClient() as http:
                peers = (await http.get(f"{coord.http_url}/peers")).json()
                round1 = (await http.get(f"{coord.http_url}/rounds/1")).json()
        nursery.cancel_scope.cancel()

    # every refusal is counted against the peer that delivered it (mallory's node, as its
    # Noise handshake and pubsub signature prove), never against the key a message names:
    # the forgeries claiming alice's key leave her counters alone
    by_id = {p["peer_id"]: p for p in peers["peers"]}
    assert by_id[mallory.peer_id]["rejected"] == {
        "bad_signature": 2, "stale_round": 1, "future_round": 1, "oversize": 1, "schema": 1,
        "not_admitted": 1, "digest_mismatch": 1, "replay": 2}
    assert by_id[alice_id.peer_id]["rejected"] == {}
    assert peers["strangers"] == {}
    assert stranger.peer_id not in by_id

    accepted = honest_inputs + [mallory_input]
    assert round1["status"] == "published" and round1["accepted"] == 3
    assert round1["result"]["mean_height"] == math.fsum(h for h, _ in accepted) / 3
    assert round1["result"]["mean_weight"] == math.fsum(w for _, w in accepted) / 3
    senders = {m["sender"] for m in round1["messages"]}
    assert stranger.peer_id not in senders and len(senders) == 3
    # refusals while round 1 was open are in its record; the replays came after it closed
    assert round1["rejected"] == {reason: 1 for reason in (
        "bad_signature", "stale_round", "future_round", "oversize", "not_admitted", "schema",
        "digest_mismatch")}


async def test_a_message_sent_again_while_its_round_is_open_is_acked_again_and_counted_once(
        data_dir):
    """A peer whose ack was lost (its session broke) sends the same envelope again: while
    the round is open it gets the same answer and receipt, and the message counts once;
    after the round has closed the same bytes are a replay."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2, max_rounds=1,
                                        round_timeout=5.0, secure=False)
        boot = coord.node.addrs[0]
        mallory, silent = Identity.generate(), Identity.generate()
        node, quiet = NetworkNode(mallory), NetworkNode(silent)
        async with node.running(), quiet.running():
            for n, ident in ((node, mallory), (quiet, silent)):  # silent keeps round 1 open
                assert await n.connect(boot)
                assert (await submit(n, coord.peer_id, seal(ident, ENROLL, enroll_round(
                    time.time()), encode(Enroll(workloads=["stats"]))))).accepted
            await wait_for(lambda: coord.current is not None and coord.current.number == 1)

            valid = contribution(mallory, 1, 170.0, 70.0)
            first = await submit(node, coord.peer_id, valid)
            again = await submit(node, coord.peer_id, valid)
            assert first.accepted and again.accepted, again
            assert open_receipt(again.receipt, coord.peer_id) == \
                open_receipt(first.receipt, coord.peer_id)
            assert coord.store.rejection_totals() == {}
            await wait_for(lambda: coord.rounds_run >= 1, timeout=30)
            late = await submit(node, coord.peer_id, valid)
            assert not late.accepted and late.reason.startswith("replay"), late
            async with httpx.AsyncClient() as http:
                round1 = (await http.get(f"{coord.http_url}/rounds/1")).json()
        nursery.cancel_scope.cancel()
    assert [m["sender"] for m in round1["messages"]] == [mallory.peer_id]
    assert round1["rejected"] == {}
    assert coord.store.rejection_totals() == {"replay": 1}


async def test_a_peer_sends_nothing_for_a_round_that_has_its_result(data_dir):
    """A message a peer would send after its round's result (a slow peer's last phase)
    is not sent: the coordinator would only refuse it as late."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=2, max_rounds=1,
                                        round_timeout=30.0, secure=False)
        boot = coord.node.addrs[0]
        peers = [await start_peer(nursery, [boot]) for _ in range(2)]
        await wait_for(lambda: all(1 in p.results for p in peers), timeout=30)
        before = dict(coord.store.rejection_totals())
        late = encode(StatsContribution(height=171.0, weight=71.0))
        await peers[0].participant._send(1, CONTRIBUTION, late, rounds.get("clear"))
        await trio.sleep(0.5)  # the coordinator would have answered by now
        assert coord.store.rejection_totals() == before == {}
        nursery.cancel_scope.cancel()
