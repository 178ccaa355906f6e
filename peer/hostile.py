"""Hostile wire traffic: what a modified client can send below our envelopes.

:mod:`peer.attacks` holds peers that lie inside the protocol; this module
holds the raw material for the layers under it: a bare libp2p host with no
pubsub and none of our protocols (so nothing of ours filters what it sends),
and builders for frames that py-libp2p or our handlers must survive. The
hostile harness (``scripts/bench/hostile.py``) and the tests use it; nothing
in a node imports it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils import encode_varint_prefixed

MESHSUB = TProtocol("/meshsub/1.1.0")


@asynccontextmanager
async def raw_host(seed: bytes | None = None, **options: Any) -> AsyncIterator[Any]:
    """A running libp2p host (TCP on 127.0.0.1) that runs nothing but what its user sends."""
    host = new_host(key_pair=create_new_key_pair(seed or os.urandom(32)), **options)
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


async def dial(host: Any, addr: str) -> Any:
    """Connect ``host`` to the node at ``addr`` (``/ip4/../tcp/../p2p/<id>``); its peer ID."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    await host.connect(info)
    return info.peer_id


async def send_rpcs(host: Any, addr: str, rpcs: list[bytes]) -> Any:
    """Open a meshsub stream to ``addr`` and write each RPC, varint-prefixed as gossipsub
    frames them; returns the stream (still open)."""
    peer = await dial(host, addr)
    stream = await host.new_stream(peer, [MESHSUB])
    await stream.write(b"".join(encode_varint_prefixed(r) for r in rpcs))
    return stream


def signed_messages(host: Any, topic: str, payloads: list[bytes]) -> bytes:
    """One RPC publishing ``payloads`` on ``topic``, each signed by ``host``'s key as strict
    signing wants: valid gossip as far as py-libp2p can tell (a flood, in numbers)."""
    from_id = host.get_id().to_bytes()
    key = host.get_private_key()
    msgs = []
    for data in payloads:
        msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=from_id,
                              seqno=os.urandom(8))
        msg.signature = key.sign(b"libp2p-pubsub:" + msg.SerializeToString())
        msgs.append(msg)
    return rpc_pb2.RPC(publish=msgs).SerializeToString()


def bad_key_rpc(topic: str) -> bytes:
    """One meshsub RPC whose message claims a sender id without an embedded key (a SHA-256
    multihash) and carries a ``key`` field that is not a protobuf public key: py-libp2p
    0.8.1's signature check raised on it inside a per-message task, and the node died."""
    msg = rpc_pb2.Message(from_id=b"\x12\x20" + os.urandom(32), data=b"x",
                          seqno=os.urandom(8), topicIDs=[topic], signature=b"\x01" * 64,
                          key=b"\xff\xff\xff")
    return rpc_pb2.RPC(publish=[msg]).SerializeToString()
