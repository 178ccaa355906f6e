"""Peers that know only their coordinator find neighbours through it (``PROTO_PEERS``),
over libp2p: without that, each held one connection, its coordinator's, and fetched
every blob from it."""

from __future__ import annotations

from dataclasses import replace

import trio

from peer.limits import DEFAULT_LIMITS

from .netutil import start_coordinator, start_peer, wait_for

FAST = replace(DEFAULT_LIMITS, dial_target=4, dial_every=0.3)


def neighbours(peer, coordinator_id: str) -> set[str]:
    return set(peer.node.connected_peers()) - {coordinator_id}


async def test_peers_that_know_only_the_coordinator_find_each_other(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=50, max_rounds=0)
        boot = [coord.node.addrs[0]]
        peers = [await start_peer(nursery, boot, limits=FAST) for _ in range(5)]
        await wait_for(lambda: len(coord.live_peers()) == 5, timeout=30)
        await wait_for(lambda: all(len(neighbours(p, coord.peer_id)) >= 2 for p in peers),
                       timeout=30)
        listed = await peers[0]._peers_from_coordinator()
        nursery.cancel_scope.cancel()
    names = {p.peer_id for p in peers}
    assert {peer for peer, _ in listed} <= names - {peers[0].peer_id}
    assert all(addrs and all(a.startswith("/ip4/127.0.0.1/") for a in addrs)
               for _, addrs in listed)


async def test_the_peer_list_names_no_address_off_the_peers_connection(data_dir):
    """A peer may enrol any addresses; the coordinator hands out only those on the IP the
    peer is connected from, so it cannot be made to send others to dial a third party."""
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=50, max_rounds=0)
        boot = [coord.node.addrs[0]]
        a = await start_peer(nursery, boot)
        b = await start_peer(nursery, boot)
        await wait_for(lambda: len(coord.live_peers()) == 2, timeout=30)
        coord.intake.addrs[b.peer_id] = ["/ip4/203.0.113.9/tcp/4001", b.node.addrs[0]]
        listed = dict(await a._peers_from_coordinator())
        nursery.cancel_scope.cancel()
    assert listed[b.peer_id] == [b.node.addrs[0].split("/p2p/")[0]]

