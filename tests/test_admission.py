"""Admission by allow list: file parsing and a refused enrolment over libp2p."""

from __future__ import annotations

import pytest
import trio

from coordinator.__main__ import load_allow_list
from protocol.identity import Identity

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
