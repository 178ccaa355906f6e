"""The round log's envelopes in a file per round (coordinator/segments.py), behind the
store's messages table: real SQLite, real files."""

from __future__ import annotations

import hashlib
import os

from coordinator.store import Store


def put(store: Store, round: int, wire: bytes) -> bytes:
    digest = hashlib.sha256(wire).digest()
    store.record_message(digest, round, "p", "secagg/masked", os.urandom(16), b"", wire,
                         len(wire))
    return digest


def test_envelopes_survive_a_restart_and_go_with_their_round(tmp_path):
    store = Store(tmp_path / "c.db")
    wires = {r: [os.urandom(1000 + 7 * i) for i in range(3)] for r in (1, 2, 3)}
    digests = {r: [put(store, r, w) for w in ws] for r, ws in wires.items() if r < 3}
    store.close()
    store = Store(tmp_path / "c.db")  # a restart: round 2's file is appended to again
    digests[2].append(put(store, 2, extra := os.urandom(500)))
    wires[2].append(extra)
    digests[3] = [put(store, 3, w) for w in wires[3]]
    for r in (1, 2, 3):
        assert [store.log.message_wire(d) for d in digests[r]] == wires[r]
        assert store.log.round_wires(r, 1 << 20) == dict(zip(digests[r], wires[r], strict=True))
    assert store.log.round_wires(3, 100) is None  # over the limit: asked one by one
    store.log.strip_wires(before=3)
    assert store.log.message_wire(digests[2][0]) is None
    assert store.log.round_wires(2, 1 << 20) == {}
    assert store.log.message_wire(digests[3][1]) == wires[3][1]
    assert sorted(p.name for p in store.segments.folder.iterdir()) == ["3.env"]
    store.prune_rounds(before=4)  # retention forgets round 3's messages: its file goes too
    assert list(store.segments.folder.iterdir()) == []


def test_a_message_without_an_envelope_or_from_an_older_database_reads_as_before(tmp_path):
    store = Store(tmp_path / "c.db")
    plain = hashlib.sha256(b"posted").digest()
    store.record_message(plain, 1, "p", "legacy", bytes(16), b"payload")  # no envelope
    assert store.log.message_wire(plain) is None
    old = os.urandom(300)  # a row from before the segment files: the envelope in the row
    store.db.execute("INSERT INTO messages (digest, round, sender, domain, nonce, received_at,"
                     " payload, wire, size) VALUES (?, 1, 'q', 'x', ?, 0, x'', ?, ?)",
                     (b"d" * 32, bytes(16), old, len(old)))
    assert store.log.message_wire(b"d" * 32) == old
    assert store.log.round_wires(1, 1 << 20) == {b"d" * 32: old}
    # a file cut short (a crash mid-write) loses that envelope, not the others
    first = put(store, 2, a := os.urandom(100))
    second = put(store, 2, os.urandom(100))
    path = store.segments.folder / "2.env"
    os.truncate(path, 150)
    assert store.log.message_wire(first) == a and store.log.message_wire(second) is None
