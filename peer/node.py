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

Gossipsub as we run it is :mod:`peer.gossip`; frames and guarded stream I/O are
:mod:`peer.streams`; what a remote peer may use is :mod:`peer.limits`.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import lru_cache

import ifaddr
import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from protocol.policy.ratelimit import LogLimiter
from protocol.wire.identity import Identity
from protocol.wire.messages import PROTO_BLOB

from . import connections, libp2p_patches
from .blobs import BLOB_MAX, BLOB_REQUEST_MAX, COMING_WAIT, BlobStore, fetch_blob
from .faults import Faults, register
from .gossip import (
    DEFAULT_GOSSIP,
    GOSSIP_MAX,
    GossipConfig,
    GuardedPubsub,
    make_router,
    origin_of,
)
from .limits import DEFAULT_LIMITS, REPLY_RATE, STREAM_TIMEOUT, Limits
from .streams import (
    StreamProtocolError,
    guarded,
    read_exact,
    read_frame,
    reset,
    write_frame,
)
from .yamux import muxers

log = logging.getLogger("hypergossip.node")

DEFAULT_REQUEST_MAX = 1024 * 1024
OPEN_TIMEOUT = 30.0  # the most a stream's opening may take, dial and negotiation

Handler = Callable[[bytes, str], Awaitable[None]]
Validator = Callable[[bytes, str], bool]
RequestHandler = Callable[[bytes, str], Awaitable[bytes]]








    # a message costs one more for each 64 KiB it carries













@lru_cache(maxsize=65536)
def _peer(peer_id: str) -> ID:
    """libp2p's ID for a peer id string (its base58 decoding is slow; ids recur)."""
    return ID.from_base58(peer_id)








def _local_ipv4() -> list[str]:
    ips = ["127.0.0.1"]
    for adapter in ifaddr.get_adapters():
        ips += [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
    return list(dict.fromkeys(ips))








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
        self.gossip_config, self.limits = gossip, limits
        self.faults = Faults()  # remote input refused or contained, by kind
        self._requests: Counter[str] = Counter()  # peer -> request streams it has open
        self._request_bytes = 0
        self._log = LogLimiter(60.0)  # stream refusals: one line a minute per (protocol, peer)
        key_pair = create_new_key_pair(identity.seed)
        max_connections = connections.fd_bounded(limits.max_connections)
        self.host = new_host(key_pair=key_pair, sec_opt=libp2p_patches.security(key_pair),
                             muxer_opt=muxers(),
                             peerstore_opt=connections.SizedPeerStore(key_pair, max_connections),
                             connection_config=connections.connection_config(
                                 max_connections, limits.handshake_timeout),
                             resource_manager=connections.resource_manager(
                                 max_connections, limits.streams_per_connection))
        connections.own_dialling(self.host.get_network())
        transports = self.host.get_network().transport_manager.get_transports()
        if any("quic" in type(t).__name__.lower() for t in transports):  # see libp2p_patches
            raise RuntimeError("refusing to run a QUIC transport (GHSA-hrfr-7729-443m)")
        self.router = make_router(gossip)
        self.pubsub = GuardedPubsub(self.host, self.router, strict_signing=True,
                                    faults=self.faults, limits=limits)
        for service in (self.host.get_network(), self.pubsub, self.router):
            register(service, self.faults)
        self.host.get_network()._hg_max_inbound_streams = limits.streams_per_connection
        self.host.get_network()._hg_limits = limits  # read by libp2p_patches' gates
        self.blobs = BlobStore()
        # who names peers to dial when we know too few (the daemon: its coordinator)
        self.discover: connections.Discover | None = None
        self._nursery: trio.Nursery | None = None
        self.serve(PROTO_BLOB, self.blobs.serve, max_request=BLOB_REQUEST_MAX,
                   timeout=COMING_WAIT + STREAM_TIMEOUT)  # a request may be held (blobs)
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
                if self.limits.dial_target > 0:
                    nursery.start_soon(connections.dial_toward, self.host,
                                       self.limits.dial_target, self.limits.dial_every,
                                       lambda: self.discover)
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
                    return bool(validate(msg.data, origin_of(msg)))
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
            origin = origin_of(msg)
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
        """Answer ``protocol``: one request frame (at most ``max_request`` bytes) read and
        handled within ``timeout``, then one response written within STREAM_TIMEOUT plus
        its length at REPLY_RATE. A peer may have :attr:`Limits.requests_per_peer` such
        streams at once, and all peers together :attr:`Limits.request_bytes` of requests
        (each reserved by its length before its body is read); beyond, reset and counted."""
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

                await guarded(stream, trio.current_time() + STREAM_TIMEOUT
                              + len(response) / REPLY_RATE, reply)
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
            # shielded, but not for ever: a dial or negotiation py-libp2p never ends must
            # not hold a cancelled caller (a node's stop) with it
            with trio.CancelScope(shield=True, deadline=trio.current_time() + OPEN_TIMEOUT):
                return await self.host.new_stream(_peer(peer_id), [TProtocol(protocol)])
        except Exception as exc:
            raise StreamProtocolError(f"{protocol} to {peer_id}: {_why(exc)}") from exc
        raise StreamProtocolError(f"{protocol} to {peer_id}: no stream in {OPEN_TIMEOUT:g} s")

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
    async def fetch_blob(self, digest: bytes, peers: Iterable[str], *,
                         max_size: int = BLOB_MAX, seed: str | None = None,
                         attempts: int = 1) -> bytes:
        """Fetch a blob by digest from ``peers``, then ``seed`` (the coordinator), verify
        its hash and keep it (:func:`peer.blobs.fetch_blob`)."""
        return await fetch_blob(self.blobs, self.request, digest, peers, max_size, seed=seed,
                                attempts=attempts)


def _why(exc: BaseException) -> str:
    """An exception and its cause (py-libp2p's StreamFailure hides why in its cause)."""
    return f"{exc!r} ({exc.__cause__})" if exc.__cause__ is not None else repr(exc)
