"""The hypergossip peer: a libp2p node that enrols, takes part in rounds and keeps up.

``node`` (with ``streams``, ``gossip``, ``limits``, ``blobs``) moves bytes;
``libp2p_patches`` (with ``yamux``, ``faults``) is every change to py-libp2p;
``session`` is the long-lived stream to the coordinator; the daemon is ``daemon``
(lifetime), ``follower`` (the coordinator's signed log) and ``participant`` (rounds, any
mode, found in :mod:`protocol.rounds`), acting as its ``behaviour`` says (``attacks``
and ``fedavg_attacks`` are behaviours too); ``hostile`` is the harness of hostile
inputs below the protocol; ``metrics`` a node's Prometheus figures and ``httpserver``
the bounded HTTP server (a peer's ``--metrics-port``, the coordinator's API).

May import :mod:`protocol`; never :mod:`coordinator`.
"""
