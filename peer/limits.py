"""What one node lets each remote peer use: connections, handshakes, streams, requests,
gossip. The defaults and their reasons are in :class:`Limits`; ``peer.runtime`` makes a
flag of each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What remote peers may hold of a node at once; beyond a limit the input is refused
    (a stream reset, a message dropped), counted in :attr:`NetworkNode.faults` and logged
    once a minute per peer. The defaults fit a coordinator serving thousands of peers and
    a peer with a few dozen neighbours alike; README's "Hostile networks" says what each
    one protects against. A yamux stream never holds more than the window it was granted
    (:class:`peer.yamux.BoundedYamux`), whatever these say."""

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
