"""The coordinator publishes on the announcement and result topics without joining their
meshes: peers gossip them among themselves, and none grafts the coordinator.

In those meshes the coordinator was every sparse peer's graft and IHAVE target (at
N=1000, 28 GRAFTs and 100 IHAVEs a second reached it while the network was idle). Here
four peers without sessions and without pulls (so gossip is all they have) still get
every announcement and result by gossip, from gossipsub's fanout.
"""

from __future__ import annotations

import trio

from protocol.wire.messages import ANNOUNCE, RESULT, TOPIC_ANNOUNCE, TOPIC_RESULT

from .netutil import start_coordinator, start_peer, wait_for

N_PEERS = 4
ROUNDS = 2


async def test_peers_get_announcements_and_results_by_gossip_from_a_coordinator_in_no_mesh(
        data_dir):
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=N_PEERS,
                                        max_rounds=ROUNDS, round_timeout=30.0, round_pause=1.0)
        boot = coord.node.addrs[0]
        peers = []
        for i in range(N_PEERS):
            peers.append(await start_peer(
                nursery, [boot, *(p.node.addrs[0] for p in peers)], 150.0 + i, 50.0 + i,
                session=False, pull_interval=3600.0))  # gossip only
        await wait_for(lambda: coord.rounds_run >= ROUNDS, timeout=90)
        await wait_for(lambda: all(p.roundlog.has(RESULT, ROUNDS) for p in peers), timeout=30)
        meshes = {topic: set(members) for topic, members in coord.node.router.mesh.items()}
        peer_meshes = [{t: {m.to_base58() for m in members}
                        for t, members in p.node.router.mesh.items()} for p in peers]
        nursery.cancel_scope.cancel()

    assert TOPIC_ANNOUNCE not in meshes and TOPIC_RESULT not in meshes, meshes
    for i, mesh in enumerate(peer_meshes):
        for topic in (TOPIC_ANNOUNCE, TOPIC_RESULT):
            assert coord.peer_id not in mesh.get(topic, set()), (i, topic)
            assert mesh.get(topic), (i, topic, "peers form the mesh among themselves")
        for r in range(1, ROUNDS + 1):
            for domain in (ANNOUNCE, RESULT):
                via = peers[i].received_via.get((domain, r), "")
                assert via.startswith("gossip from"), (i, domain, r, via)
