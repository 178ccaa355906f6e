"""The database's growth is bounded by the retention setting (real SQLite, real rounds)."""

from __future__ import annotations

import trio

from coordinator.store import Store

from .netutil import start_coordinator, start_peer, wait_for


def test_pruning_forgets_old_rounds_and_their_messages_and_the_file_stops_growing(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    sizes = []
    for r in range(1, 601):
        store.open_round(r, "stats", 0.0, 1, b"a" * 2000)
        for i in range(4):
            store.record_message(r.to_bytes(4, "big") + bytes([i]) * 28, r, f"p{i}",
                                 "contribution", bytes(16), b"x" * 500)
        store.close_round(r, "published", 4, {}, {"count": 4}, bytes(32), b"r" * 2000)
        if r % 100 == 0:
            store.prune_rounds(before=r - 100 + 1)
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append((tmp_path / "c.sqlite3").stat().st_size)
    assert store.count_rounds() == 100 and store.last_round() == 600
    assert store.count_messages() == 400
    assert store.round_row(500) is None and store.round_row(501) is not None
    assert max(sizes[2:]) <= 1.1 * sizes[1], sizes  # freed pages are reused: no growth


async def test_a_coordinator_keeps_only_the_rounds_it_is_told_to(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=1, secure=False,
                                        retain_rounds=4, round_pause=0.05)
        await start_peer(nursery, [coord.node.addrs[0]])
        await wait_for(lambda: coord.rounds_run >= 12, timeout=60)
        nursery.cancel_scope.cancel()
    kept = coord.store.count_rounds()
    assert 4 <= kept <= 6, kept  # pruned every retain // 4 rounds
    assert coord.store.round_row(1) is None and coord.store.last_round() >= 12
