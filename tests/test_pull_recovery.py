"""30 peers in one process, some kept out of gossip: pull still delivers every round.

Eight peers never subscribe to the announcement and result topics (they are
in no mesh at all) and six more drop every gossip message they receive. All
of them must still get every round's signed announcement and result, through
the pull protocol. Half of the isolated peers also have no session with the
coordinator, so they depend on the periodic pull of heads from a neighbour
or the coordinator. How late they get them is printed, not asserted (tests
do not assert wall-clock time; ``scripts/bench/`` measures): the deadline
below only stops a test that would otherwise hang.
"""

from __future__ import annotations

import random

import trio

from peer.behaviour import Flaky
from protocol.wire.messages import ANNOUNCE, RESULT

from .netutil import start_coordinator, start_peer, wait_for

N_PEERS = 30
OUT_OF_MESH = 8
DROPPING = 6
ROUNDS = 3
DEADLINE_S = 30.0  # liveness only: with pull every 1 s this is several times what it needs


async def test_every_live_peer_gets_every_round_through_pull(data_dir):
    rng = random.Random(7)
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=N_PEERS, max_rounds=ROUNDS,
                                        round_timeout=30.0, round_pause=1.0)
        boot = coord.node.addrs[0]
        peers = []
        for i in range(N_PEERS):
            links = rng.sample([p.node.addrs[0] for p in peers], min(2, len(peers)))
            peers.append(await start_peer(
                nursery, [boot, *links], 150.0 + i, 50.0 + i,
                subscribe_gossip=i >= OUT_OF_MESH,
                behaviour=Flaky(gossip_drop=1.0 if OUT_OF_MESH <= i < OUT_OF_MESH + DROPPING
                                else 0.0),
                session=i % 2 == 0 or i >= OUT_OF_MESH + DROPPING, pull_interval=1.0))
        await wait_for(lambda: coord.rounds_run >= ROUNDS, timeout=90)
        await wait_for(lambda: all(p.roundlog.has(RESULT, ROUNDS) for p in peers),
                       timeout=DEADLINE_S)
        nursery.cancel_scope.cancel()

    lateness = {}
    for i, p in enumerate(peers):
        for r in range(1, ROUNDS + 1):
            for domain in (ANNOUNCE, RESULT):
                got = p.received_at.get((domain, r))
                assert got is not None, f"peer {i} never got {domain} {r}"
                lateness[(i, domain, r)] = got - coord.sent_at[(domain, r)]
    worst = max(lateness.values())
    gossip_fed = [v for (i, _, _), v in lateness.items() if i >= OUT_OF_MESH + DROPPING]
    print(f"\nlateness after publish: worst {worst:.3f} s over all peers; isolated peers' "
          f"worst {max(v for (i, _, _), v in lateness.items() if i < OUT_OF_MESH + DROPPING):.3f}"
          f" s; gossip-fed peers' worst {max(gossip_fed):.3f} s")
    # the peers outside gossip really did depend on pull (not a vacuous pass) ...
    isolated = range(OUT_OF_MESH + DROPPING)
    for i in isolated:
        for key, via in peers[i].received_via.items():
            assert not via.startswith("gossip"), (i, key, via)
    # ... and those without a session got some of it from a neighbour, not the coordinator
    from_neighbours = [via for i in isolated if i % 2 for via in peers[i].received_via.values()
                       if via.startswith("pull from") and coord.peer_id not in via]
    assert from_neighbours
    # every round was published with all 30 contributions
    for r in range(1, ROUNDS + 1):
        assert coord.store.round_row(r)["accepted"] == N_PEERS
