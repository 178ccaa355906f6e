"""Helpers for tests: real coordinators and peers on 127.0.0.1 in the test's trio loop."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import trio

from coordinator.service import Coordinator, CoordinatorConfig
from peer.daemon import PeerDaemon
from protocol.learning.registry import get_workload
from protocol.wire.identity import Identity
from protocol.wire.messages import StatsContribution

logging.getLogger("libp2p").setLevel(logging.ERROR)
logging.getLogger("multiaddr").setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coordinator_config(data_dir: Path, **overrides) -> CoordinatorConfig:
    base = dict(data_dir=data_dir, http_host="127.0.0.1", port=0,
                listen=["/ip4/127.0.0.1/tcp/0"], min_peers=2, round_timeout=20.0,
                round_pause=0.2,
                # tests read the final state over HTTP after the last round and then cancel:
                # without this, stopping after max_rounds races those reads
                linger=60.0)
    base.update(overrides)
    return CoordinatorConfig(**base)


async def start_coordinator(nursery: trio.Nursery, data_dir: Path, **overrides) -> Coordinator:
    coord = Coordinator(coordinator_config(data_dir, **overrides))
    await nursery.start(coord.run)
    return coord


async def start_peer(nursery: trio.Nursery, bootstrap: list[str], height: float = 170.0,
                     weight: float = 70.0, identity: Identity | None = None,
                     **kw) -> PeerDaemon:
    daemon = PeerDaemon(identity or Identity.generate(), get_workload("stats"),
                        StatsContribution(height=height, weight=weight), bootstrap=bootstrap,
                        **kw)
    await nursery.start(daemon.run)
    return daemon


async def model_network(nursery: trio.Nursery, data_dir: Path, workload, peer_workloads,
                        *, secure: bool, rounds: int, min_peers: int | None = None,
                        **overrides) -> tuple[Coordinator, list[str]]:
    """A coordinator running the model ``workload`` and a peer per entry of
    ``peer_workloads`` (its data: part i of n); the coordinator and the peers' ids, once
    ``rounds`` rounds have closed."""
    n = len(peer_workloads)
    config = coordinator_config(data_dir, min_peers=min_peers or n, start_peers=n,
                                secure=secure, phase_timeout=10.0, round_timeout=20.0,
                                workload=workload.name, **overrides)
    coord = Coordinator(config, workload=workload)
    await nursery.start(coord.run)
    ids = []
    for i, w in enumerate(peer_workloads):
        ident = Identity.generate()
        ids.append(ident.peer_id)
        daemon = PeerDaemon(ident, w, w.parse_data(f"part={i}/{n}"),
                            bootstrap=[coord.node.addrs[0]])
        await nursery.start(daemon.run)
    await wait_for(lambda: coord.rounds_run >= rounds, timeout=120)
    return coord, ids


THREE_PEOPLE = ((160.0, 60.0), (175.0, 72.0), (182.0, 88.0))  # mean height 172.33


async def three_peer_network(nursery: trio.Nursery, data_dir: Path, *, rounds: int,
                             **overrides) -> Coordinator:
    """A stats coordinator (quorum 3) and three real peers holding :data:`THREE_PEOPLE`,
    once ``rounds`` rounds have closed."""
    coord = await start_coordinator(nursery, data_dir, min_peers=3, **overrides)
    for h, w in THREE_PEOPLE:
        await start_peer(nursery, [coord.node.addrs[0]], h, w)
    await wait_for(lambda: coord.rounds_run >= rounds, timeout=60)
    return coord


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)
