"""Connections as we manage them: admitted up to our own limit, never pruned, dialled by us.

py-libp2p 0.8.1's connection manager, as it ships, does not hold a coordinator's thousand
sessions: a limit of 300 with a pruner above it, a resource manager that refused the
257th inbound connection after its handshake (and then, by a circuit breaker, everyone for
60 s), an auto-connector dialling every peer it heard of, and an inbound handler that kept
a slot until the node stopped, so that after 300 connections in a node's life each new
one was closed without a word. Here:

- :func:`connection_config` and :func:`resource_manager` build py-libp2p's own machinery
  with our limit (``peer.limits.Limits.max_connections``) as a mere backstop;
- the swarm's inbound handler is replaced (installed by :func:`peer.libp2p_patches.install`)
  by :func:`handle_inbound_connection`, which refuses a connection over the limit before
  its handshake, counts it ("connection limit" in the node's faults), gates connections
  and handshakes per source address, and lives exactly as long as its connection;
- :func:`own_dialling` switches the auto-connector off; :func:`dial_toward` is the node's
  own dialler, a few peers at a time toward ``Limits.dial_target``;
- :func:`fd_bounded` makes the process's descriptor limit hold the connections;
- :class:`SizedPeerStore` holds as many peers as the connections, and never evicts the
  host's own keys.
"""

from __future__ import annotations

import logging
import random
import resource
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStore

from .faults import faults_of

log = logging.getLogger("hypergossip.node")
DIAL_EVERY, DIAL_BATCH = 30.0, 4  # the dialler's period (s) and most dials at a time
DIAL_TIMEOUT = 10.0
FDS_SPARE = 256  # descriptors beyond the connections: files, SQLite, HTTP clients


# --- inbound connections: our limit, gated per source address, one slot per connection --------
_original_upgrade_inbound = Swarm.upgrade_inbound_raw_conn
LOOPBACK = ("127.", "::1")


class _Gate:
    """Inbound connections of one swarm by source IP: all of them, and those still in their
    handshake (security and muxer negotiation)."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()
        self.pending: Counter[str] = Counter()

    @staticmethod
    def drop(counter: Counter[str], ip: str) -> None:
        counter[ip] -= 1
        if counter[ip] <= 0:
            del counter[ip]


def _gate(swarm: Any) -> _Gate:
    gate = getattr(swarm, "_hg_gate", None)
    if gate is None:
        gate = swarm._hg_gate = _Gate()
    return gate


def _source_ip(conn: Any) -> str:
    try:
        address = conn.get_remote_address()
    except Exception:
        address = None
    return str(address[0]) if address else "unknown"


def _exempt(swarm: Any, ip: str) -> bool:
    limits = getattr(swarm, "_hg_limits", None)
    return limits is None or (limits.exempt_loopback and ip.startswith(LOOPBACK))


async def handle_inbound_connection(self: Swarm, read_write_closer: Any, maddr: Any) -> None:
    """The swarm's inbound handler, rewritten to live exactly as long as its connection.

    py-libp2p's own kept every inbound handler alive until the whole swarm stopped ("an
    intentional barrier": trio's listener closes the socket when its handler returns), so
    its inbound limiter's token, and our count per address, were never given back when a
    connection closed: after ``max_connections`` inbound connections in the node's life,
    however short, every new one was closed without a word. Here the handler waits for
    its own connection to close; the swarm's limiter is not used (the limit is ours)."""
    ip, gate, limits = _source_ip(read_write_closer), _gate(self), getattr(self, "_hg_limits",
                                                                           None)
    if limits is not None:
        held = max(sum(gate.open.values()), len(self.get_connections()))
        if not _exempt(self, ip) and gate.open[ip] >= limits.connections_per_ip:
            refusal = ("connections per address", f"{gate.open[ip]} connections from {ip}")
        elif held >= limits.max_connections:
            refusal = ("connection limit",
                       f"{held} connections of at most {limits.max_connections}")
        else:
            refusal = None
        if refusal is not None:
            faults_of(self).record(refusal[0], ip, RuntimeError(refusal[1]))
            await _close_quietly(read_write_closer)
            return
    remote = self._build_remote_multiaddr(read_write_closer)
    if remote is not None and not await self.connection_gate.is_allowed(remote):
        await _close_quietly(read_write_closer)
        return
    gate.open[ip] += 1
    raw_conn = RawConnection(read_write_closer, False)
    try:
        muxed = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
        await _first(getattr(getattr(muxed, "event_closed", None), "wait", None),
                     self.manager.wait_finished)
    except Exception as exc:
        log.debug("inbound connection from %s ended: %s", ip, exc)
        await _close_quietly(raw_conn)
    finally:
        gate.drop(gate.open, ip)


async def _first(*waits: Any) -> None:
    """Return when the first of ``waits`` (async callables; None skipped) returns: an
    inbound handler ends with its connection, or with the swarm, whichever is first (a
    connection the swarm never closed must not hold its stop)."""
    async with trio.open_nursery() as nursery:
        async def until(wait: Any) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            if wait is not None:
                nursery.start_soon(until, wait)


async def upgrade_inbound(self: Swarm, raw_conn: Any, maddr: Any) -> Any:
    ip, gate, limits = _source_ip(raw_conn), _gate(self), getattr(self, "_hg_limits", None)
    if limits is not None:
        total = sum(gate.pending.values())
        busy = (total >= limits.pending_total) or (
            not _exempt(self, ip) and gate.pending[ip] >= limits.pending_per_ip)
        if busy:
            faults_of(self).record("handshakes pending", ip, RuntimeError(
                f"{gate.pending[ip]} handshakes from {ip}, {total} in all, pending"))
            await _close_quietly(raw_conn)
            raise SwarmException("too many handshakes pending")
    gate.pending[ip] += 1
    try:
        return await _original_upgrade_inbound(self, raw_conn, maddr)
    finally:
        gate.drop(gate.pending, ip)


async def _close_quietly(conn: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        try:
            await conn.close()
        except Exception:
            pass


# --- our limit, no pruning, our dialler -----------------------------------------------------
def connection_config(max_connections: int, handshake_timeout: float) -> ConnectionConfig:
    """py-libp2p's connection manager set so that :func:`_upgrade_inbound`'s limit is the
    only one: at most ``max_connections`` (py-libp2p's own registration check stays as a
    backstop), the pruner's high watermark at that limit (so it never prunes), no floor of
    connections to keep (its auto-connector is switched off by :func:`own_dialling`)."""
    return ConnectionConfig(max_connections=max_connections, min_connections=0,
                            low_watermark=max_connections, high_watermark=max_connections,
                            inbound_upgrade_timeout=handshake_timeout)


def resource_manager(max_connections: int, streams_per_connection: int) -> Any:
    """py-libp2p's resource manager with our limits, since new_host builds one whatever it
    is told: its defaults refused the 257th inbound connection after its handshake (the
    dialler saw a connection that the node then closed), counted every node's memory
    against 80 % of the machine's at each connection, and opened a circuit breaker after 5
    refusals that then refused everyone for 60 s: one peer over a limit could shut all
    the others out. Here it keeps only a total of connections and streams, as a backstop
    behind :func:`handle_inbound_connection` and ``_handle_muxed_stream``. Its own count is given
    twice the room: it counts a connection twice while its handshake ends (a scope before
    the handshake and one after), so at the limit itself it refused connections the
    swarm had room for (22 of 320 dialling a limit of 310 held 298)."""
    from libp2p.rcmgr import ResourceLimits, new_resource_manager
    from libp2p.rcmgr.connection_limits import ConnectionLimits

    return new_resource_manager(
        limits=ResourceLimits(max_connections=2 * max_connections, max_memory_mb=1 << 20,
                              max_streams=max_connections * (2 * streams_per_connection)),
        connection_limits=ConnectionLimits(max_established_total=max_connections),
        enable_metrics=False, enable_memory_limits=False, enable_memory_pooling=False,
        enable_circuit_breaker=False, enable_graceful_degradation=False)


async def _no_auto_connect() -> None:
    return None


PEERS_PER_CONNECTION = 4  # peers a node may know of (by identify, gossip) per connection


class SizedPeerStore(PeerStore):
    """py-libp2p's peerstore, sized by our connection limit, that never evicts its host.

    py-libp2p 0.8.1's holds 1,000 peers and, past that, evicts entries without addresses
    first, and the host's own entry (its key pair, no addresses) is one: a coordinator of
    1,000 peers then failed its gossip publishes ("peer ID not found": pubsub signs with
    the host's key from the store; in some runs, as the eviction order falls) and fell
    back on sessions and pulls. Here the store
    holds ``PEERS_PER_CONNECTION`` times the connection limit, and an eviction keeps the
    host's entry whatever its place."""

    def __init__(self, key_pair: Any, max_connections: int):
        super().__init__(max_peers=max(1000, PEERS_PER_CONNECTION * max_connections))
        self.me = ID.from_pubkey(key_pair.public_key)  # the host's (new_host adds its keys)

    def _enforce_peer_limit(self) -> None:
        own = self.peer_data_map.pop(self.me, None)  # out of the eviction's reach
        try:
            super()._enforce_peer_limit()
        finally:
            if own is not None:
                self.peer_data_map[self.me] = own


def own_dialling(swarm: Any) -> None:
    """Switch off py-libp2p's auto-connector on ``swarm``: the node dials for itself
    (``NetworkNode``'s dialler, toward ``Limits.dial_target``)."""
    swarm.auto_connector.maybe_connect = _no_auto_connect


def fd_bounded(max_connections: int) -> int:
    """``max_connections``, after raising this process's descriptor limit to hold that
    many sockets if the hard limit lets it; below, the most it can hold (logged)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FDS_SPARE
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fit = max(1, soft - FDS_SPARE)
        log.warning("open-file limit %d holds %d connections, not %d (raise `ulimit -n`)",
                    soft, fit, max_connections)
        return fit
    return max_connections


Discover = Callable[[], Awaitable[list[tuple[str, list[str]]]]]
PEER_TTL = 3600  # s the peerstore keeps addresses a discovery gave us
# below this many connections (the bootstrap's included) a node asks its discovery for peers,
# and only for as many as bring it there: at N=250, discovering toward the dial target (8)
# doubled every peer's CPU per round (173 ms against 85) and cut no coordinator copies
DISCOVER_BELOW = 3


async def dial_toward(host: Any, target: int, every: float = DIAL_EVERY,
                      discoverer: Callable[[], Discover | None] = lambda: None) -> None:
    """Below ``target`` connections, dial a few peers ``host`` has heard of (by identify or
    gossip) and is not connected to, every ``every`` seconds (jittered, so that a thousand
    peers started together do not dial together). Below DISCOVER_BELOW connections, when
    it knows too few, the discovery ``discoverer()`` returns (if any) names as many more as
    bring it there: peer ids and multiaddrs without /p2p (the daemon asks its coordinator);
    it must not raise. Runs until cancelled."""
    network = host.get_network()
    while True:
        await trio.sleep(every * random.uniform(0.5, 1.5))
        need = min(DIAL_BATCH, target - len(network.connections))
        if need <= 0:
            continue
        store, me = host.get_peerstore(), host.get_id()
        known = [p for p in store.peers_with_addrs() if p != me and p not in network.connections]
        short = DISCOVER_BELOW - len(network.connections) - len(known)
        if short > 0 and (discover := discoverer()) is not None:
            have = {p.to_base58() for p in network.connections}
            fresh = [(p, a) for p, a in await discover() if p not in have]
            for peer, addrs in fresh[:short]:
                try:
                    pid = ID.from_base58(peer)
                    store.add_addrs(pid, [multiaddr.Multiaddr(a) for a in addrs], PEER_TTL)
                except Exception as exc:  # one bad entry costs only itself
                    log.debug("discovered peer %s unusable: %s", peer, exc)
            known = [p for p in store.peers_with_addrs()
                     if p != me and p not in network.connections]
        async with trio.open_nursery() as nursery:
            for peer in random.sample(known, min(need, len(known))):
                nursery.start_soon(_dial_quietly, host, store.peer_info(peer))


async def _dial_quietly(host: Any, info: PeerInfo) -> None:
    with trio.move_on_after(DIAL_TIMEOUT):
        try:
            await host.connect(info)
        except Exception as exc:  # a peer we heard of may be long gone
            log.debug("dialling %s failed: %s", info.peer_id, exc)
