"""Hostile wire traffic: what a modified client can send below and around our envelopes.

:mod:`peer.attacks` holds peers that lie inside the protocol; this module
holds the raw material for everything else: a bare libp2p host with no
pubsub and none of our protocols (so nothing of ours filters what it sends),
builders for frames that py-libp2p or our handlers must survive, and a
catalogue of hostile inputs by layer (:data:`LAYERS`) for the hostile
harness (``scripts/bench/hostile.py``) and the tests. Nothing in a node
imports it.

Every attack is ``async (Hostile, Target) -> Counter`` of outcomes as the
attacker sees them (``refused:<reason>``, ``reset``, ``closed``, ``4xx``,
...), one count per hostile input it sent; none of them should ever read
``accepted``. Each is bounded in time (no attack waits longer than a few
seconds) and in bytes.

The package: :mod:`.raw` (a raw libp2p host, frames and probes a modified peer can
send), :mod:`.layers` (the attack catalogue, layer by layer, in :data:`LAYERS`).
"""

from __future__ import annotations

from .layers import (
    LAYERS,
    Attack,
    enroll,
    http_junk,
    http_slow,
    meshsub_rpcs,
    multistream_junk,
    multistream_oversize,
    pull_and_blob_junk,
    session_junk,
    submit_junk,
    tcp_bad_security,
    tcp_huge_prefix,
    tcp_noise,
    topic_junk,
    yamux_bad_frames,
    yamux_over_window,
    yamux_stream_flood,
)
from .raw import (
    MESHSUB,
    Flood,
    Hostile,
    Outcomes,
    Target,
    bad_key_rpc,
    dial,
    flood_beside,
    frame,
    raw_host,
    send_rpcs,
    signed_messages,
    yamux_frame,
)

__all__ = [
    "Attack",
    "Flood",
    "Hostile",
    "LAYERS",
    "MESHSUB",
    "Outcomes",
    "Target",
    "bad_key_rpc",
    "dial",
    "enroll",
    "flood_beside",
    "frame",
    "http_junk",
    "http_slow",
    "meshsub_rpcs",
    "multistream_junk",
    "multistream_oversize",
    "pull_and_blob_junk",
    "raw_host",
    "send_rpcs",
    "session_junk",
    "signed_messages",
    "submit_junk",
    "tcp_bad_security",
    "tcp_huge_prefix",
    "tcp_noise",
    "topic_junk",
    "yamux_bad_frames",
    "yamux_frame",
    "yamux_over_window",
    "yamux_stream_flood",
]
