"""Connection management at scale: a coordinator holds more sessions than py-libp2p's
default limit of 300, refuses those beyond its own configured limit before their handshake
(counted, with the reason), and never prunes one it admitted.

With py-libp2p's defaults the 301st connection was refused silently (a debug line) and,
above the high watermark of 300, the pruner closed admitted connections down to 100.
"""

from __future__ import annotations

from dataclasses import replace

import trio

from peer.connections import own_dialling
from peer.hostile import dial, raw_host
from peer.limits import COORDINATOR_LIMITS

from .netutil import start_coordinator, wait_for

LIMIT, DIALLERS = 310, 320


async def test_sessions_beyond_300_are_held_and_those_past_the_limit_refused(data_dir):
    limits = replace(COORDINATOR_LIMITS, max_connections=LIMIT)
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=1000, secure=False,
                                        limits=limits)
        swarm = coord.node.host.get_network()
        hosts, stop = [], trio.Event()

        async def hold(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with raw_host() as host:
                own_dialling(host.get_network())  # no redials of their own
                hosts.append(host)
                task_status.started()
                await stop.wait()

        for _ in range(DIALLERS):
            await nursery.start(hold)
        gate, refused = trio.CapacityLimiter(32), []

        async def connect(host) -> None:
            async with gate:
                try:
                    with trio.fail_after(20):
                        await dial(host, coord.node.addrs[0])
                except Exception:
                    refused.append(host)

        async with trio.open_nursery() as dials:
            for host in hosts:
                dials.start_soon(connect, host)
        assert len(swarm.connections) == LIMIT
        assert len(refused) == DIALLERS - LIMIT
        # each refused dial counted (a dialler retries, so at least once each)
        assert coord.node.faults.by_kind["connection limit"] >= DIALLERS - LIMIT
        admitted = set(swarm.connections)
        await swarm.connection_pruner._maybe_prune_connections()  # a prune pass now
        await trio.sleep(1.0)
        assert set(swarm.connections) == admitted  # none pruned
        # a newcomer gets in once an admitted peer leaves (a refused dialler's own swarm
        # remembers its failure for a while: py-libp2p's negative dial cache)
        gone = next(h for h in hosts if h not in refused)
        await gone.get_network().close_peer(coord.node.host.get_id())
        await wait_for(lambda: len(swarm.connections) == LIMIT - 1)
        async with raw_host() as late:
            await dial(late, coord.node.addrs[0])
            assert late.get_id() in swarm.connections
        stop.set()
        nursery.cancel_scope.cancel()


def test_a_node_that_learns_of_thousands_of_peers_keeps_its_own_keys():
    """py-libp2p's peerstore holds 1,000 peers and then evicts those without addresses
    first, the host's own entry (its keys) among them: a coordinator of 1,000 peers failed
    every gossip publish ("peer ID not found"). Ours holds as many as our connection limit
    implies, and an eviction never takes the host's entry."""
    import multiaddr
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerstore import PeerStore, PeerStoreError

    from peer.connections import PEERS_PER_CONNECTION, SizedPeerStore
    from peer.node import NetworkNode
    from protocol.wire.identity import Identity

    node = NetworkNode(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"],
                       limits=replace(COORDINATOR_LIMITS, max_connections=300))
    store = node.host.get_peerstore()
    assert isinstance(store, SizedPeerStore) and store.max_peers == 1200
    others = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(1300)]
    addr = [multiaddr.Multiaddr("/ip4/10.0.0.1/tcp/4001")]
    plain, keys = PeerStore(), create_new_key_pair()  # py-libp2p's, as new_host builds it
    plain.add_key_pair(ID.from_pubkey(keys.public_key), keys)
    for store_ in (store, plain):
        for other in others:
            store_.add_addrs(other, addr, 3600)
    assert len(store.peer_data_map) == PEERS_PER_CONNECTION * 300 + 1  # and the host
    assert node.host.get_public_key() and node.host.get_private_key()  # still ours
    try:
        plain.pubkey(ID.from_pubkey(keys.public_key))
    except PeerStoreError:
        pass  # what happened before: the host's keys evicted
    else:
        raise AssertionError("py-libp2p's peerstore kept the host's keys: re-check the fix")
