"""The network node: one libp2p host, gossipsub, and our stream protocols.

Both the peer daemon and the coordinator run one of these. It moves bytes
and nothing else: it never decides whether a message is valid (that is
``protocol/``'s job, called by whoever subscribes). What it offers:

- ``subscribe(topic, handler)``: a reader task per topic that drains the
  subscription promptly (py-libp2p's queue holds 32 messages) and calls the
  handler with ``(data, origin_peer_id)``. A handler that raises is logged,
  never fatal.
- ``publish(topic, data)``: refuses data over :data:`GOSSIP_MAX` instead of
  letting gossipsub drop it silently (its outbound limit is 1 MiB).
- ``serve(protocol, handler)`` / ``request(peer, protocol, data)``: one
  length-prefixed request and one response per stream, both size-capped and
  under a deadline; ``serve_stream`` / ``open_stream`` for long-lived streams
  (the sessions of :mod:`peer.session`).
- a content-addressed blob store served on :data:`PROTO_BLOB`, so payloads
  too large for gossip are fetched by digest and checked on arrival.

Gossipsub settings differ from py-libp2p's defaults on purpose (each measured
on our 2-core machines): adaptive gossip off (it let heartbeats drift to
30-60 s), spam protection off (its 10 msg/s/topic limit drops bursts of
honest traffic; our own signature checks and caps do that job), eclipse
protection off (it wants 3 distinct IPs in a mesh, which loopback testnets
never have), degree 4 / high 12 and a 5 s prune back-off.
"""

from __future__ import annotations

import hashlib
import logging
import random
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import ifaddr
import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.tools.anyio_service import background_trio_service

from protocol.policy.ratelimit import Buckets, LogLimiter
from protocol.wire.identity import Identity
from protocol.wire.messages import PROTO_BLOB

from . import libp2p_patches

log = logging.getLogger("hypergossip.node")

GOSSIP_MAX = 512 * 1024
GOSSIPSUB_PROTOCOLS = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]
DEFAULT_REQUEST_MAX = 1024 * 1024
STREAM_TIMEOUT = 10.0
BLOB_MAX = 64 * 1024 * 1024

T = TypeVar("T")
Handler = Callable[[bytes, str], Awaitable[None]]
Validator = Callable[[bytes, str], bool]
RequestHandler = Callable[[bytes, str], Awaitable[bytes]]


class StreamProtocolError(Exception):
    """A request over a stream failed: refused, too large, timed out or cut."""


@dataclass(frozen=True)
class GossipConfig:
    degree: int = 4
    degree_low: int = 2
    degree_high: int = 12
    heartbeat_interval: float = 1.0
    prune_back_off: int = 5
    eclipse_protection: bool = False


DEFAULT_GOSSIP = GossipConfig()


@dataclass(frozen=True)
class Limits:
    """What remote peers may hold of a node at once; beyond a limit the input is refused
    (a stream reset, a message dropped), counted in :attr:`NetworkNode.faults` and logged
    once a minute per peer. The defaults fit a coordinator serving thousands of peers and
    a peer with a few dozen neighbours alike; README's "Hostile networks" says what each
    one protects against. A yamux stream never holds more than the window it was granted
    (:class:`peer.libp2p_patches.BoundedYamux`), whatever these say."""

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
    # a message costs one more for each 64 KiB it carries


DEFAULT_LIMITS = Limits()

async def write_frame(stream, data: bytes) -> None:
    await write_frames(stream, [data])


async def write_frames(stream, frames: list[bytes]) -> None:
    """Write ``frames`` back to back in one stream write: the reader sees them as separate
    frames, and the transport pays its per-write cost (a yamux frame, a Noise message, a
    socket write) once for all of them rather than once each."""
    try:
        await stream.write(b"".join(b for f in frames for b in (struct.pack(">I", len(f)), f)))
    except Exception as exc:  # libp2p raises many unrelated types for a broken stream
        raise StreamProtocolError(f"write failed: {exc!r}") from exc


async def read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(min(n - len(buf), 1 << 20))
        except Exception as exc:  # StreamEOF, StreamReset, MuxedConnUnavailable, ...
            raise StreamProtocolError(f"read failed: {exc!r}") from exc
        if not chunk:
            raise StreamProtocolError("stream ended early")
        buf += chunk
    return bytes(buf)


async def read_frame(stream, max_len: int) -> bytes:
    (n,) = struct.unpack(">I", await read_exact(stream, 4))
    if n > max_len:
        raise StreamProtocolError(f"frame of {n} bytes exceeds limit {max_len}")
    return await read_exact(stream, n)


def _origin(msg) -> str:
    """The libp2p sender a gossip message names (pubsub checked its signature)."""
    try:
        return ID(msg.from_id).to_base58()
    except Exception:
        return "?"


@lru_cache(maxsize=65536)
def _peer(peer_id: str) -> ID:
    """libp2p's ID for a peer id string (its base58 decoding is slow; ids recur)."""
    return ID.from_base58(peer_id)


async def reset(stream) -> None:
    """Reset ``stream`` (both directions), shielded: an RST is a frame like any other.

    py-libp2p 0.8.1's yamux forgets a reset stream's read event without setting it, so a
    task blocked reading the stream would wait forever; we set it, and that reader wakes
    to a closed stream."""
    muxed = getattr(stream, "muxed_stream", None)
    events = getattr(getattr(muxed, "conn", None), "stream_events", None)
    event = events.get(getattr(muxed, "stream_id", None)) if isinstance(events, dict) else None
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:
            pass
    if event is not None:
        event.set()


async def grow_receive_window(stream, size: int) -> None:
    """Let the remote send up to ``size`` bytes on ``stream`` before it must wait for us.

    yamux starts every stream at a 256 KiB window; a sender that fills it polls every
    10 ms until the receiver has read half of it and said so. A long-lived stream that
    carries large messages (a session's masked vectors) is better told at once. No-op on
    streams that are not yamux's."""
    muxed = getattr(stream, "muxed_stream", None)
    current = getattr(muxed, "recv_window", None)
    if not isinstance(current, int) or size <= current:
        return
    muxed.target_recv_window = max(size, getattr(muxed, "target_recv_window", 0))
    muxed.recv_window = size
    with trio.CancelScope(shield=True):
        await muxed.send_window_update(size - current)


async def guarded(stream, deadline: float, io: Callable[[], Awaitable[T]]) -> T:
    """Run ``io()`` -- reads and writes on ``stream`` -- so that neither its deadline nor a
    cancellation from outside cuts a libp2p frame in half.

    py-libp2p encrypts a Noise message, then sends it; a trio cancellation between the two
    (or in the middle of the send) leaves the connection's cipher state out of step with
    the peer's, whose next decryption fails, and the whole connection -- every stream on
    it -- dies (``tests/test_node.py`` shows it). Window updates are written from inside
    ``read()``, so reads are no safer. Here ``io()`` runs shielded, and a watchdog task
    *resets* the stream at ``deadline`` (trio time) or when we are cancelled, which ends
    any read or write blocked on it with an error instead. Returns what ``io()`` returned;
    raises :class:`StreamProtocolError` on failure or at the deadline; a cancellation from
    outside propagates as usual once ``io()`` has stopped.
    """
    state: dict[str, Any] = {}

    async def watchdog() -> None:
        try:
            await trio.sleep_until(deadline)
            state["why"] = "timed out"
        finally:  # the deadline passed, or we were cancelled (not by the body finishing)
            if "done" not in state:
                state.setdefault("why", "cancelled")
                await reset(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        with trio.CancelScope(shield=True):
            try:
                state["result"] = await io()
            except Exception as exc:  # libp2p's own types too (close() raises them)
                state["error"] = exc if isinstance(exc, StreamProtocolError) else \
                    StreamProtocolError(repr(exc))
            finally:
                state["done"] = True
        nursery.cancel_scope.cancel()
    if "error" in state:  # raised here, outside the nursery: no exception group
        why = state.get("why")
        raise StreamProtocolError("timed out" if why == "timed out" else str(state["error"]))
    return state["result"]


def _local_ipv4() -> list[str]:
    ips = ["127.0.0.1"]
    for adapter in ifaddr.get_adapters():
        ips += [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
    return list(dict.fromkeys(ips))


class BlobStore:
    """Content-addressed bytes by SHA-256, bounded in total size (oldest evicted)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0

    def put(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        if digest not in self._blobs:
            self._blobs[digest] = data
            self._size += len(data)
            while self._size > self.max_bytes and len(self._blobs) > 1:
                _, old = self._blobs.popitem(last=False)
                self._size -= len(old)
        return digest

    def get(self, digest: bytes) -> bytes | None:
        return self._blobs.get(digest)


class GuardedPubsub(Pubsub):
    """Pubsub that one peer can neither crash nor flood.

    py-libp2p 0.8.1's pubsub lets remote input escape in two places: its stream handler (a
    malformed RPC raises protobuf's DecodeError), and ``push_msg``, a task per received
    message, whose signature check raises on a ``key`` field that is not a public key.
    Either stopped the pubsub service, the host and the process. Here a failure on one
    peer's stream ends that stream and forgets that peer's subscriptions, and a failure on
    one message drops that message; both are counted in ``faults`` against the peer that
    sent it (:mod:`peer.libp2p_patches` contains every other per-input task the same way).

    Floods: each forwarding peer has a budget of :attr:`Limits.gossip_rate` messages a
    second (burst :attr:`Limits.gossip_burst`; a message costs one more per 64 KiB it
    carries), spent before anything else is done with a message. py-libp2p's bounded
    queues otherwise dropped 99.6 % of a 3,400 msg/s flood, silently, and honest messages
    shared those queues. Beyond its budget a peer's messages are dropped unread, counted,
    and raise its gossipsub behaviour penalty (P5), so that a peer which keeps flooding is
    pruned from our meshes and its messages are refused by score before they cost a
    signature check."""

    def __init__(self, *args: Any, faults: libp2p_patches.Faults, limits: Limits,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.faults = faults
        self.budgets = Buckets(limits.gossip_rate, limits.gossip_burst, max_keys=16384)
        self._inbound: dict[ID, Any] = {}  # peer -> its inbound pubsub stream

    async def stream_handler(self, stream) -> None:
        """One inbound stream per peer, as in go-libp2p-pubsub: a newer one resets the older
        (py-libp2p read every stream a peer opened, each holding its last RPC, up to 1 MiB
        parsed: 63 streams of subscription floods held 34 MB)."""
        peer_id = stream.muxed_conn.peer_id
        older = self._inbound.get(peer_id)
        self._inbound[peer_id] = stream
        if older is not None:
            await reset(older)  # its reader ends quietly: a reset stream is not a dead peer
        try:
            await super().stream_handler(stream)
        except Exception as exc:
            self.faults.record("pubsub stream", peer_id.to_base58(), exc)
            try:
                await stream.reset()
            except Exception:
                pass
            self._handle_dead_peer(peer_id)
        finally:
            if self._inbound.get(peer_id) is stream:
                del self._inbound[peer_id]

    async def push_msg(self, msg_forwarder: ID, msg) -> None:
        if msg_forwarder == self.my_id:  # our own publish: its caller sees any error
            return await super().push_msg(msg_forwarder, msg)
        if not self.budgets.take(msg_forwarder, time.monotonic(), 1 + len(msg.data) // 65536):
            self.faults.record("gossip flood", msg_forwarder.to_base58(), StreamProtocolError(
                f"over its budget of {self.budgets.rate:g} messages/s"))
            scorer = getattr(self.router, "scorer", None)
            if scorer is not None:
                scorer.penalize_behavior(msg_forwarder, 1.0)
            return
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            self.faults.record("gossip message", msg_forwarder.to_base58(), exc)


# gossipsub v1.1 peer scores (py-libp2p's thresholds default to minus infinity: no effect).
# Only penalties count here; an honest peer scores 0. Each message a validator refuses costs
# its forwarder 10 (P4), each message over its flood budget 1 (P5, past a slack of 20);
# both decay by 1 % a heartbeat (about a minute's half-life at 1 s). Below -100 a peer's
# messages are refused before validation, below -50 we stop gossiping to it, below -200
# it is graylisted (pruned from meshes, its GRAFTs refused). IP colocation (P7) stays off:
# loopback testnets put every peer on one address.
SCORING = ScoreParams(
    p4_invalid_messages=TopicScoreParams(weight=10.0, cap=1000.0, decay=0.99),
    p5_behavior_penalty_weight=1.0, p5_behavior_penalty_decay=0.99,
    p5_behavior_penalty_threshold=20.0,
    publish_threshold=-100.0, gossip_threshold=-50.0, graylist_threshold=-200.0,
    accept_px_threshold=0.0)


class NetworkNode:
    def __init__(
        self,
        identity: Identity,
        listen: Iterable[str] = ("/ip4/127.0.0.1/tcp/0",),
        gossip: GossipConfig = DEFAULT_GOSSIP,
        limits: Limits = DEFAULT_LIMITS,
    ):
        libp2p_patches.install()
        self.identity = identity
        self.listen = [multiaddr.Multiaddr(a) for a in listen]
        self.gossip_config = gossip
        self.limits = limits
        self.faults = libp2p_patches.Faults()  # remote input refused or contained, by kind
        self._requests: Counter[str] = Counter()  # peer -> request streams it has open
        self._request_bytes = 0
        self._log = LogLimiter(60.0)  # stream refusals: one line a minute per (protocol, peer)
        key_pair = create_new_key_pair(identity.seed)
        self.host = new_host(key_pair=key_pair, sec_opt=libp2p_patches.security(key_pair),
                             muxer_opt=libp2p_patches.muxers(),
                             connection_config=ConnectionConfig(
                                 inbound_upgrade_timeout=limits.handshake_timeout))
        transports = self.host.get_network().transport_manager.get_transports()
        if any("quic" in type(t).__name__.lower() for t in transports):  # see libp2p_patches
            raise RuntimeError("refusing to run a QUIC transport (GHSA-hrfr-7729-443m)")
        self.router = GossipSub(
            protocols=GOSSIPSUB_PROTOCOLS,
            degree=gossip.degree,
            degree_low=gossip.degree_low,
            degree_high=gossip.degree_high,
            heartbeat_interval=gossip.heartbeat_interval,  # type: ignore[arg-type]
            prune_back_off=gossip.prune_back_off,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=gossip.eclipse_protection,
            score_params=SCORING,
        )
        self.pubsub = GuardedPubsub(self.host, self.router, strict_signing=True,
                                    faults=self.faults, limits=limits)
        for service in (self.host.get_network(), self.pubsub, self.router):
            libp2p_patches.register(service, self.faults)
        self.host.get_network()._hg_max_inbound_streams = limits.streams_per_connection
        self.host.get_network()._hg_limits = limits  # read by libp2p_patches' gates
        self.blobs = BlobStore()
        self._nursery: trio.Nursery | None = None
        self.serve(PROTO_BLOB, self._serve_blob, max_request=32)
        if self.host.get_id().to_base58() != identity.peer_id:
            raise RuntimeError("libp2p derived a different peer id for our key")

    # --- lifetime --------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self) -> AsyncIterator[NetworkNode]:
        """Listen, start pubsub, and keep reader tasks alive for the block's duration."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.host.run(self.listen))
            await stack.enter_async_context(background_trio_service(self.pubsub))
            await stack.enter_async_context(background_trio_service(self.router))
            await self.pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
                    self._nursery = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def start_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a background task for as long as the node runs."""
        if self._nursery is None:
            raise RuntimeError("node is not running")
        self._nursery.start_soon(fn)

    @property
    def addrs(self) -> list[str]:
        """Dialable addresses with /p2p/<id>; a wildcard listen address is expanded into
        this machine's IPv4 interface addresses, loopback first."""
        out: list[str] = []
        for a in map(str, self.host.get_addrs()):
            if a.startswith("/ip4/0.0.0.0/"):
                out += [a.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1) for ip in _local_ipv4()]
            else:
                out.append(a)
        return list(dict.fromkeys(out))

    # --- connections -----------------------------------------------------------------------
    async def connect(self, addr: str) -> bool:
        """Dial a ``/ip4/.../tcp/.../p2p/<id>`` address; log and return False on failure."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            if info.peer_id == self.host.get_id():
                return False
            # libp2p refuses to dial a peer for 60 s after a failed dial; we pace our own
            # redials, and a coordinator that restarts must be reachable again at once
            self.host.get_network().unblock_peer(info.peer_id)
            with trio.fail_after(STREAM_TIMEOUT):
                await self.host.connect(info)
            return True
        except Exception as exc:  # libp2p raises many unrelated types here
            log.warning("connect %s failed: %s", addr, exc)
            return False

    def is_connected(self, peer_id: str) -> bool:
        return _peer(peer_id) in self.host.get_network().connections

    def remote_ip(self, peer_id: str) -> str | None:
        """The IP address ``peer_id`` is connected from (its first connection), if any: what
        the transport authenticated about where it is, which a key cannot fake."""
        try:
            conns = self.host.get_network().connections.get(_peer(peer_id)) or []
        except ValueError:
            return None
        for conn in conns:
            try:
                address = conn.muxed_conn.get_remote_address()
            except Exception:
                continue
            if address:
                return str(address[0])
        return None

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self.host.get_connected_peers()]

    def mesh_sizes(self) -> dict[str, int]:
        return {topic: len(peers) for topic, peers in self.router.mesh.items()}

    # --- gossip ----------------------------------------------------------------------------
    async def subscribe(self, topic: str, handler: Handler,
                        validate: Validator | None = None) -> None:
        """Read ``topic``: ``handler(data, origin)`` for each message delivered.

        ``validate(data, origin) -> bool``, when given, runs on every message before it is
        delivered or forwarded to the mesh: a message it refuses (or one over
        :data:`GOSSIP_MAX`) goes nowhere and counts as invalid against the peer that
        forwarded it (gossipsub's P4 score: enough of them and that peer's messages are
        dropped unread, and it is pruned from our meshes). It must be cheap and
        synchronous; without one, whatever is correctly signed by its libp2p sender is
        delivered and forwarded."""
        if self._nursery is None:
            raise RuntimeError("node is not running")
        if validate is not None:
            def check(forwarder: ID, msg) -> bool:
                if len(msg.data) > GOSSIP_MAX:
                    return False
                try:
                    return bool(validate(msg.data, _origin(msg)))
                except Exception as exc:  # a validator bug must not become a fault
                    self.faults.record(f"validator of {topic}", forwarder.to_base58(), exc)
                    return False

            self.pubsub.set_topic_validator(topic, check, is_async_validator=False)
        sub = await self.pubsub.subscribe(topic)
        self._nursery.start_soon(self._read_topic, topic, sub, handler)

    async def _read_topic(self, topic: str, sub, handler: Handler) -> None:
        while True:
            msg = await sub.get()
            if len(msg.data) > GOSSIP_MAX:
                log.warning("dropped %d-byte gossip on %s (limit %d)", len(msg.data), topic,
                            GOSSIP_MAX)
                continue
            origin = _origin(msg)
            try:
                await handler(msg.data, origin)
            except Exception:
                log.exception("handler for %s failed on a message from %s", topic, origin)

    async def publish(self, topic: str, data: bytes) -> None:
        if len(data) > GOSSIP_MAX:
            raise ValueError(
                f"{len(data)} bytes is over the gossip limit {GOSSIP_MAX}; send a blob ref"
            )
        await self.pubsub.publish(topic, data)

    # --- request/response streams ----------------------------------------------------------
    def serve(self, protocol: str, handler: RequestHandler, *, max_request: int,
              timeout: float = STREAM_TIMEOUT) -> None:
        """Answer ``protocol``: one request frame (at most ``max_request`` bytes), one
        response, within ``timeout``. A peer may have :attr:`Limits.requests_per_peer` such
        streams at once, and all peers together :attr:`Limits.request_bytes` of requests
        (each reserved by its declared length before its body is read); beyond either the
        stream is reset and counted."""
        async def on_stream(stream) -> None:
            remote = stream.muxed_conn.peer_id.to_base58()
            deadline = trio.current_time() + timeout
            if self._requests[remote] >= self.limits.requests_per_peer:
                self.faults.record("request limit", remote, StreamProtocolError(
                    f"{self._requests[remote]} requests of this peer already open"))
                await reset(stream)
                return
            self._requests[remote] += 1
            reserved = 0

            async def read_request() -> bytes:
                nonlocal reserved
                (n,) = struct.unpack(">I", await read_exact(stream, 4))
                if n > max_request:
                    raise StreamProtocolError(f"frame of {n} bytes exceeds limit {max_request}")
                if self._request_bytes + n > self.limits.request_bytes:
                    self.faults.record("request bytes", remote, StreamProtocolError(
                        f"{self._request_bytes} request bytes already held"))
                    raise StreamProtocolError("node busy: too many request bytes held")
                self._request_bytes += n
                reserved = n
                return await read_exact(stream, n)

            try:
                request = await guarded(stream, deadline, read_request)
                with trio.move_on_at(deadline) as scope:  # no I/O on this stream meanwhile
                    response = await handler(request, remote)
                if scope.cancelled_caught:
                    raise StreamProtocolError(f"handler took over {timeout:g} s")

                async def reply() -> None:
                    await write_frame(stream, response)
                    await stream.close()

                await guarded(stream, deadline, reply)
            except Exception as exc:
                muted = self._log.allow((protocol, remote), time.monotonic())
                if muted is not None:
                    log.info("%s from %s: %s%s", protocol, remote, exc or type(exc).__name__,
                             f" ({muted} more muted)" if muted else "")
                await reset(stream)
            finally:
                self._request_bytes -= reserved
                self._requests[remote] -= 1
                if not self._requests[remote]:
                    del self._requests[remote]

        self.host.set_stream_handler(TProtocol(protocol), on_stream)

    def serve_stream(self, protocol: str,
                     handler: Callable[[object, str], Awaitable[None]]) -> None:
        """A long-lived stream protocol: ``handler(stream, remote peer id)`` owns the stream
        until it returns; then the stream is reset. The handler must not cancel its own I/O
        on the stream (see :func:`guarded`); it ends it by resetting the stream."""
        async def on_stream(stream) -> None:
            remote = stream.muxed_conn.peer_id.to_base58()
            try:
                await handler(stream, remote)
            except Exception as exc:
                log.info("%s from %s: %s", protocol, remote, exc or type(exc).__name__)
            finally:
                await reset(stream)

        self.host.set_stream_handler(TProtocol(protocol), on_stream)

    async def open_stream(self, peer_id: str, protocol: str):
        """A new stream to ``peer_id`` speaking ``protocol``; the caller owns (and resets) it.
        Shielded: the protocol negotiation writes frames too (libp2p bounds it itself)."""
        try:
            with trio.CancelScope(shield=True):
                return await self.host.new_stream(_peer(peer_id), [TProtocol(protocol)])
        except Exception as exc:
            raise StreamProtocolError(f"{protocol} to {peer_id}: {exc!r}") from exc

    async def request(
        self,
        peer_id: str,
        protocol: str,
        data: bytes,
        *,
        max_response: int = DEFAULT_REQUEST_MAX,
        timeout: float = STREAM_TIMEOUT,
    ) -> bytes:
        deadline = trio.current_time() + timeout
        stream = await self.open_stream(peer_id, protocol)

        async def exchange() -> bytes:
            await write_frame(stream, data)
            response = await read_frame(stream, max_response)
            await stream.close()
            return response

        try:
            return await guarded(stream, deadline, exchange)
        except StreamProtocolError as exc:
            await reset(stream)
            raise StreamProtocolError(f"{protocol} to {peer_id}: {exc}") from exc
        except Exception as exc:
            await reset(stream)
            raise StreamProtocolError(f"{protocol} to {peer_id}: {exc!r}") from exc

    # --- blobs -----------------------------------------------------------------------------
    async def _serve_blob(self, request: bytes, remote: str) -> bytes:
        if len(request) != 32:
            raise StreamProtocolError("blob request must be a 32-byte digest")
        data = self.blobs.get(request)
        if data is None:
            raise StreamProtocolError("blob not found")
        return data

    async def fetch_blob(
        self, digest: bytes, peers: Iterable[str], *, max_size: int = BLOB_MAX
    ) -> bytes:
        """Fetch a blob by digest from the first of ``peers`` that has it; verify the hash."""
        have = self.blobs.get(digest)
        if have is not None:
            return have
        candidates = list(dict.fromkeys(peers))
        random.shuffle(candidates)
        for peer in candidates:
            try:
                data = await self.request(peer, PROTO_BLOB, digest, max_response=max_size,
                                          timeout=60.0)
            except StreamProtocolError as exc:
                log.debug("blob %s from %s: %s", digest.hex()[:12], peer, exc)
                continue
            if hashlib.sha256(data).digest() != digest:
                log.warning("peer %s served a blob that does not match its digest", peer)
                continue
            self.blobs.put(data)
            return data
        raise StreamProtocolError(f"blob {digest.hex()[:12]} not available from any peer")
