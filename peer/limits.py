"""What one node lets each remote peer use: connections, handshakes, streams, requests,
gossip. The defaults and their reasons are in :class:`Limits`; ``peer.runtime`` makes a
flag of each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import trio

T = TypeVar("T")

STREAM_TIMEOUT = 10.0  # seconds a request stream may take, its response's write aside
# a response's write gets STREAM_TIMEOUT plus its length at this rate (bytes/s), from when
# the handler returns, so a large answer that was slow to make is not cut for lack of time;
# a requester allows the same for a reply it waits for
REPLY_RATE = 250_000

# CPU-bound work (training, a round step) runs in worker threads, at most one per core in a
# process: more threads cannot go faster, and each one takes the GIL from the event loop
# (1,000 peers in 3 processes training 40 threads at a time left their loops so little
# time that almost every stream negotiation of a round's model fetch timed out)
_CPU = trio.lowlevel.RunVar("hypergossip_cpu_threads")


def cpu_limiter() -> trio.CapacityLimiter:
    """This trio run's limiter for CPU-bound worker threads (one per core)."""
    try:
        return _CPU.get()
    except LookupError:
        limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))
        _CPU.set(limiter)
        return limiter


async def run_cpu_bound(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, among at most one per core of this process."""
    return await trio.to_thread.run_sync(fn, *args, limiter=cpu_limiter())


@dataclass(frozen=True)
class Limits:
    """What remote peers may hold of a node at once; beyond a limit the input is refused
    (a stream reset, a message dropped), counted in :attr:`NetworkNode.faults` and logged
    once a minute per peer. :data:`DEFAULT_LIMITS` fit a peer with a few dozen
    neighbours, :data:`COORDINATOR_LIMITS` a coordinator serving thousands of peers;
    README's "Hostile networks" says what each one protects against.

    Connections are admitted, never pruned: an inbound connection that would take the
    node past ``max_connections`` (established and still authenticating together) is
    closed before its handshake, counted as "connection limit" and logged; one admitted
    stays until either side closes it (py-libp2p's pruner, which closed connections
    above a high watermark of 300 whatever their use, never fires: its watermark is
    ``max_connections``). py-libp2p's auto-connector (which dialled every peer it had
    heard of, 16 at a time, toward 200 connections) is replaced by the node's own dialler,
    which keeps ``dial_target`` connections. A yamux stream never holds more than the
    window it was granted (:class:`peer.yamux.BoundedYamux`), whatever these say."""

    max_connections: int = 64  # connections in all, in and out; beyond, inbound is refused
    dial_target: int = 8  # below this many connections, dial peers we have heard of
    dial_every: float = 30.0  # seconds between the dialler's looks (jittered +-50 %)
    connections_per_ip: int = 64  # inbound connections from one source address
    pending_per_ip: int = 16  # ... of them still in their handshake
    pending_total: int = 128  # inbound handshakes at once, all sources together
    handshake_timeout: float = 5.0  # seconds an inbound connection has to authenticate
    exempt_loopback: bool = True  # 127.0.0.1 is not limited per address (local testnets)
    streams_per_connection: int = 64  # inbound streams open at once on one connection
    requests_per_peer: int = 8  # request streams of one peer being read or answered at once
    request_bytes: int = 256 << 20  # request bytes held (read or handled) at once, all peers
    gossip_rate: float = 100.0  # gossip messages a second that one forwarding peer may send
    gossip_burst: float = 200.0  # ... saved up while it is quiet (a round's replica gossip);


DEFAULT_LIMITS = Limits()
# A coordinator holds a session with every peer and dials none: peers dial it.
COORDINATOR_LIMITS = replace(DEFAULT_LIMITS, max_connections=4096, dial_target=0)
