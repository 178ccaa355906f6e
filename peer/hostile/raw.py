"""What a modified peer sends with: a raw libp2p host, hand-built frames (gossipsub
RPCs, yamux headers, length prefixes), TCP probes, and a flood beside honest traffic.

See :mod:`peer.hostile`.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils import encode_varint_prefixed

from protocol.wire.identity import Identity
from protocol.wire.messages import (
    PROTO_SUBMIT,
    SubmitAck,
    decode,
)

MESHSUB = TProtocol("/meshsub/1.1.0")
Outcomes = Counter


# --- raw material ------------------------------------------------------------------------------
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


def yamux_frame(typ: int, flags: int, stream_id: int, length: int, body: bytes = b"",
                version: int = 0) -> bytes:
    return struct.pack("!BBHII", version, typ, flags, stream_id, length) + body


def frame(data: bytes) -> bytes:
    """Our stream protocols' frame: a 4-byte big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + data


# --- a flood beside an honest peer ----------------------------------------------------------------
@dataclass
class Flood:
    honest: int  # honest messages the victim's handler got
    flood: int  # flood messages it got
    budget_drops: int  # flood messages its budget dropped (counted)
    seconds: float
    flooder_score: float
    publish_threshold: float


async def flood_beside(limits: Any, *, flood: int, honest: int, gap: float = 0.01) -> Flood:
    """A victim node subscribed to a topic; an honest node publishes ``honest`` messages
    ``gap`` seconds apart while a bare host writes ``flood`` validly signed messages at the
    victim as fast as it can (RPCs of 100). Waits until the victim has read everything."""
    from ..node import NetworkNode  # a node, to attack (nodes never import this module

    victim, sender = NetworkNode(Identity.generate(), limits=limits), \
        NetworkNode(Identity.generate())
    got: Counter = Counter()

    async def count(data: bytes, origin: str) -> None:
        got[origin] += 1

    async with victim.running(), sender.running(), raw_host() as flooder:
        await victim.subscribe("t", count)
        await sender.subscribe("t", lambda data, origin: trio.sleep(0))
        assert await sender.connect(victim.addrs[0])
        me = ID.from_base58(victim.peer_id)
        with trio.fail_after(20):  # until the honest node knows we are subscribed
            while me not in sender.pubsub.peer_topics.get("t", ()):
                await trio.sleep(0.05)
        flooder_id = flooder.get_id().to_base58()
        started = trio.current_time()

        async def burst() -> None:
            stream = None
            for i in range(0, flood, 100):
                rpc = signed_messages(flooder, "t", [b"f%d" % k for k in range(i, i + 100)])
                if stream is None:
                    stream = await send_rpcs(flooder, victim.addrs[0], [rpc])
                else:
                    await stream.write(encode_varint_prefixed(rpc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(burst)
            for i in range(honest):
                await sender.publish("t", b"honest %d" % i)
                await trio.sleep(gap)
        with trio.move_on_after(20):
            while got[sender.peer_id] < honest:
                await trio.sleep(0.05)
        seen = -1  # then until the victim has read all of the flood (its counts stand still)
        while seen != (seen := got[flooder_id] + victim.faults.by_kind["gossip flood"]):
            await trio.sleep(0.5)
        scorer = victim.router.scorer
        return Flood(got[sender.peer_id], got[flooder_id], victim.faults.by_kind["gossip flood"],
                     trio.current_time() - started,
                     scorer.score(ID.from_base58(flooder_id), ["t"]),
                     scorer.params.publish_threshold)


# --- the hostile client ---------------------------------------------------------------------------
@dataclass
class Target:
    peer_id: str
    addr: str  # /ip4/127.0.0.1/tcp/PORT/p2p/ID
    http: str | None = None  # the coordinator's base URL
    coordinator: bool = False

    @property
    def tcp(self) -> tuple[str, int]:
        parts = self.addr.split("/")
        return parts[2], int(parts[4])


@dataclass
class Hostile:
    """One attacker: a bare libp2p host under a key the coordinator admitted (``mallory``),
    a stranger's key, and what it learned (``seen``: envelopes it was sent, to replay)."""

    host: Any
    mallory: Identity
    coordinator_id: str
    round_hint: int = 1
    seen: list[bytes] = field(default_factory=list)
    http: httpx.AsyncClient | None = None

    async def stream(self, target: Target, protocol: str) -> Any:
        peer = await dial(self.host, target.addr)
        return await self.host.new_stream(peer, [TProtocol(protocol)])

    async def exchange(self, target: Target, protocol: str, data: bytes, *,
                       timeout: float = 3.0) -> str:
        """Write raw ``data`` on a fresh stream, read one framed answer: the outcome."""
        try:
            with trio.fail_after(timeout):
                stream = await self.stream(target, protocol)
                await stream.write(data)
                head = await read_some(stream, 4)
                if head is None:
                    return "reset"
                (n,) = struct.unpack(">I", head)
                if n > 16 << 20:
                    return "bad answer"
                body = await read_some(stream, n)
                await reset_quietly(stream)
        except trio.TooSlowError:
            return "timeout"
        except Exception:
            return "reset"
        if body is None:
            return "reset"
        if protocol == PROTO_SUBMIT:
            try:
                ack = decode(body, SubmitAck)
            except Exception:
                return "answered"
            return "accepted" if ack.accepted else f"refused:{ack.reason.split(':')[0]}"
        return "answered" if body else "empty"


async def read_some(stream: Any, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except Exception:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


async def reset_quietly(stream: Any) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:
            pass


async def tcp_probes(target: Target, make: Callable[[], bytes], n: int = 8) -> Outcomes:
    """``n`` fresh TCP connections at once, each writing ``make()``: how many the node closed
    (at once, or at its 5 s handshake deadline), and how many it still held after 12 s."""
    out: Outcomes = Counter()

    async def one() -> None:
        out[await _tcp_probe(target, make(), wait=12.0)] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return out


async def _tcp_probe(target: Target, data: bytes, *, wait: float = 3.0) -> str:
    """Write raw bytes on a fresh TCP connection: closed by the node, or still open."""
    try:
        stream = await trio.open_tcp_stream(*target.tcp)
    except OSError:
        return "refused"
    try:
        with trio.move_on_after(wait) as scope:
            await stream.send_all(data)
            while await stream.receive_some(65536):
                pass
        return "open" if scope.cancelled_caught else "closed"
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return "closed"
    finally:
        await stream.aclose()
