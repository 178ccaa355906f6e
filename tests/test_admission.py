"""Admission by allow list: file parsing and a refused enrolment over libp2p."""

from __future__ import annotations

import time

import pytest
import trio

from coordinator.__main__ import load_allow_list
from peer.node import NetworkNode
from protocol.envelope import seal
from protocol.identity import Identity
from protocol.messages import (
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
