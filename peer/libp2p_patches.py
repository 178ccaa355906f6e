"""What we change in py-libp2p 0.8.1, and why: every change to the stack in one place.

Nothing changes on import. :func:`install` applies the process-wide changes
(idempotent; :class:`peer.node.NetworkNode` calls it before it builds a
host), and :class:`Faults` is where a node counts what remote input broke.

====================================  ================================================
change                                why
====================================  ================================================
per-input tasks are contained         py-libp2p runs per-message, per-peer and
(``TrioManager.run_task``)            per-connection work as service tasks, and any
                                      task that raises cancels its whole service:
                                      one gossip frame with a bad ``key`` field made
                                      ``push_msg`` raise protobuf's DecodeError, which
                                      stopped pubsub, the host and the process. Here
                                      such a task's failure ends that task (and, for
                                      a connection's own task, that connection), is
                                      counted and logged once per peer and minute.
                                      Daemon tasks (the services' main loops) keep
                                      failing loudly: they do not run on one input.
stream handlers are contained         a stream handler that raises (ours are guarded;
(``SwarmConn._handle_muxed_stream``)  identify's, ping's, multistream's are not) ended
                                      the connection's stream loop and then the swarm;
                                      here it resets that stream only.
receive windows enforced              yamux only logged "peer exceeded receive window"
(:class:`BoundedYamux`)               and kept buffering: 128 MiB sent past the window
                                      cost the coordinator 150 MB until disconnect. A
                                      DATA frame larger than the window we granted is a
                                      protocol error (as in go-yamux): the connection
                                      is closed before its body is read, so a stream
                                      never holds more than we granted. mplex, which has
                                      no flow control at all, is not offered.
inbound connections gated per IP      py-libp2p holds one of its 250 inbound slots per
(:mod:`peer.connections`)             connection for the connection's life, handshakes
                                      included: one host with 250 idle sockets (or 250
                                      free keys) shut everyone else out. Here each source
                                      address may hold ``connections_per_ip``
                                      connections, ``pending_per_ip`` of them still in
                                      their handshake, and all sources together
                                      ``pending_total`` handshakes (``peer.limits.Limits``);
                                      beyond, the socket is closed at once, counted.
finished streams forgotten            yamux re-created a read event for a stream that
(``BoundedYamux``)                    had just gone (one left behind per stream reset
                                      under a reader, for the connection's life), and
                                      kept a reset stream's unread data for a minute
                                      (up to 256 KiB a stream, for any number of them).
inbound streams per connection        yamux set no limit on streams a remote opens (it
capped (``_handle_muxed_stream``)     bounds only our own), and each one runs a
                                      negotiation and a handler; beyond
                                      :data:`MAX_INBOUND_STREAMS` a new one is reset.
services may run 65,536 tasks        py-libp2p's services raise (and stop) on their
(``TrioManager.run_task``)            1,001st task at once: a coordinator's pubsub, with
                                      a task per joining peer, died as 1,000 peers joined
                                      (998 ``_handle_new_peer_with_retry`` pending). What
                                      bounds tasks is ours: connection limits, admission.
a task's parent found by lookup       each new service task walked its service's whole
(:mod:`peer.libp2p_tasks`)            task tree for its parent: O(N) a spawn at a
                                      coordinator of N peers (22 % of its CPU enrolling
                                      600); here an index of running tasks.
yamux credit in halves                py-libp2p sent a WINDOW_UPDATE after nearly every
(``YamuxStream``)                     read (202 per 100 small submits); go-yamux's
                                      rule sends one per half window (0 for them).
yamux frames fit one Noise message    64 KiB data frames plus the 12-byte header were
(``yamux.MAX_MESSAGE_SIZE``)          two Noise messages each, the second of 29 bytes.
signed peer records built and         pubsub built the host's record for every RPC it
checked once (pubsub)                 sent (0.2 ms) and verified the sender's in every
                                      RPC it received (0.18 ms), though neither changes.
subscription queues of 512            py-libp2p's hold 32 messages and drop the rest
(``SUBSCRIPTION_CHANNEL_SIZE``)       silently: a burst one peer is allowed (200, see
                                      ``peer.limits.Limits``) must not push out another's.
multistream messages at most 64 KiB   GHSA-hmjq-g7pp-rw3x (fixed in 0.8.2, which the
(``read_delim``)                      registry lacks): the first bytes of a connection,
                                      before any authentication, were a length prefix
                                      read without bound (a 2^31 prefix buffered 128 MiB
                                      per connection; 2^62 raised MemoryError). 0.8.2's
                                      bound, backported.
connections admitted, not pruned      py-libp2p's defaults (300 connections, a pruner
(:mod:`peer.connections`)             above 300, an auto-connector dialling everyone
                                      heard of, a resource manager refusing the 257th
                                      inbound connection after its handshake, and an
                                      inbound handler holding its slot until the node
                                      stopped: after 300 connections in a node's life,
                                      each new one was closed silently). Here the
                                      limit is ours, refused before the handshake and
                                      counted, never pruned; the slot lives as long as
                                      its connection. See :mod:`peer.connections`.
QUIC certificates' key signature      GHSA-hrfr-7729-443m: 0.8.1 ignored the result of
checked (``PeerAuthenticator``)       the check that a QUIC peer holds the key its
                                      certificate names, so anyone could claim any peer
                                      id. We listen and dial on TCP only (no QUIC
                                      transport is built), so this is defence in depth.
Noise only (:func:`security`)         py-libp2p's default security options include
                                      ``/plaintext/2.0.0``, in which a peer *states* its
                                      public key: anyone could connect as any peer id
                                      (our coordinator would have taken the session of
                                      the peer it named). Hosts offer Noise alone.
TCP bytes counted                     for ``/metrics``: one addition per read and write
(``TrioTCPStream``)                   (:class:`Traffic`).
yamux's per-connection timers every   an RTT ping and a closed-stream sweep every 30 s
2 minutes (:mod:`peer.yamux`)         per connection: 67 wakes a second at a
                                      coordinator of 1,000 peers.
====================================  ================================================
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any

import libp2p.utils as _libp2p_utils
import trio
from cryptography.hazmat.primitives import serialization
from libp2p.abc import IMuxedConn, INetConn
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as _new_x25519
from libp2p.exceptions import ParseError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC as _env_to_send_in_rpc
from libp2p.protocol_muxer import multiselect_communicator as _multiselect_communicator
from libp2p.pubsub import gossipsub as _gossipsub_module
from libp2p.pubsub import pubsub as _pubsub_module
from libp2p.pubsub.utils import maybe_consume_signed_record as _maybe_consume_signed_record
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer import muxer_multistream as _muxer_multistream
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.utils import get_task_name
from libp2p.transport.quic import security as _quic_security
from libp2p.transport.quic.exceptions import QUICPeerVerificationError
from libp2p.utils import varint as _varint
from libp2p.utils.connection_shutdown import is_expected_connection_shutdown

from . import libp2p_tasks
from .connections import handle_inbound_connection, upgrade_inbound
from .faults import faults_of, peer_name
from .yamux import (
    NOISE_FRAME,
    RTT_EVERY,
    SWEEP_EVERY,
    BoundedYamux,
    credit_in_halves,
    read_exactly_noting_headers,
)

log = logging.getLogger("hypergossip.node")












def _peer_of(fn: Any, args: tuple) -> str:
    """The peer a task works for: an ID among its arguments, or its connection's peer."""
    for a in args:
        if isinstance(a, ID):
            return a.to_base58()
    owner = getattr(fn, "__self__", None)
    return peer_name(getattr(owner, "peer_id", None) or
                 getattr(getattr(owner, "muxed_conn", None), "peer_id", None))


# --- contained tasks --------------------------------------------------------------------------
_original_run_task = TrioManager.run_task
CHILDREN_CAP = 1 << 16  # a service's tasks at once (py-libp2p: 1,000); our limits bound them


def _contain(service: Any, fn: Any, name: str) -> Any:
    async def contained(*args: Any) -> None:
        try:
            await fn(*args)
        except Exception as exc:
            if is_expected_connection_shutdown(exc):
                return  # a peer went away: py-libp2p absorbs these too, at debug level
            faults_of(service).record(name, _peer_of(fn, args), exc)
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, INetConn | IMuxedConn):  # a connection's own task died:
                with trio.CancelScope(shield=True), trio.move_on_after(2.0):  # end it
                    try:
                        await owner.close()
                    except Exception:
                        pass

    contained.__name__ = name
    return contained


_original_manager_init = TrioManager.__init__


def _manager_init(self: TrioManager, service: Any, max_children_per_task: int = CHILDREN_CAP,
                  *args: Any, **kwargs: Any) -> None:
    _original_manager_init(self, service, max(max_children_per_task, CHILDREN_CAP),
                           *args, **kwargs)


def _run_task(self: TrioManager, async_fn: Any, *args: Any, daemon: bool = False,
              name: str | None = None, _internal: bool = False) -> None:
    if not daemon:
        name = get_task_name(async_fn, name)
        async_fn = _contain(self._service, async_fn, name)
    _original_run_task(self, async_fn, *args, daemon=daemon, name=name, _internal=_internal)


# --- contained stream handlers, at most MAX_INBOUND_STREAMS at a time per connection -------------
_original_handle_muxed_stream = SwarmConn._handle_muxed_stream
MAX_INBOUND_STREAMS = 64  # per connection, unless the node sets its own (peer.limits.Limits)


async def _handle_muxed_stream(self: SwarmConn, muxed_stream: Any) -> None:
    inbound = getattr(self, "_hg_inbound", 0)
    if inbound >= getattr(self.swarm, "_hg_max_inbound_streams", MAX_INBOUND_STREAMS):
        faults_of(self.swarm).record("inbound stream limit", peer_name(self.muxed_conn.peer_id),
                                     RuntimeError(f"{inbound} inbound streams already open"))
        await _reset_quietly(muxed_stream)
        return
    self._hg_inbound = inbound + 1
    try:
        await _original_handle_muxed_stream(self, muxed_stream)
    except Exception as exc:
        if not is_expected_connection_shutdown(exc):
            peer = getattr(self.muxed_conn, "peer_id", None)
            faults_of(self.swarm).record("stream handler", peer_name(peer), exc)
        await _reset_quietly(muxed_stream)
    finally:
        self._hg_inbound -= 1


async def _reset_quietly(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        try:
            await stream.reset()
        except Exception:
            pass


# --- pubsub: signed peer records built and checked once ------------------------------------------
# py-libp2p's pubsub puts the host's signed peer record into every RPC it sends and checks
# the one in every RPC it receives (twice for an RPC with control messages): about 0.2 ms to
# assemble it (host.get_addrs() each time) and 0.18 ms to verify its Ed25519 signature and
# store it, per RPC, measured here. Neither answer changes between RPCs: a host's record
# changes only with its listen addresses, and a sender's record bytes verified once verify
# again. So the record sent is rebuilt at most every RECORD_RECHECK seconds, and a record
# received is checked once per (host, sender, exact bytes) every RECORD_REFRESH seconds (so
# that the peerstore's 2-hour record TTL is still renewed); a new or changed record is still
# checked in full, and one that fails is refused as before.
RECORD_RECHECK = 10.0
RECORD_REFRESH = 600.0
_RECORDS_SEEN_MAX = 4096
_sent_records: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()
_seen_records: weakref.WeakKeyDictionary[Any, dict[tuple[bytes, bytes], float]] = \
    weakref.WeakKeyDictionary()


def _cached_record_to_send(host: Any) -> tuple[bytes, bool]:
    now = time.monotonic()
    built, record = _sent_records.get(host, (-RECORD_RECHECK, b""))
    if now - built < RECORD_RECHECK:
        return record, False
    record, fresh = _env_to_send_in_rpc(host)
    _sent_records[host] = (now, record)
    return record, fresh


def _consume_record_once(msg: Any, host: Any, peer_id: ID) -> bool:
    if not msg.HasField("senderRecord"):
        return True
    seen = _seen_records.setdefault(host, {})
    key, now = (peer_id.to_bytes(), msg.senderRecord), time.monotonic()
    if now - seen.get(key, -RECORD_REFRESH) < RECORD_REFRESH:
        return True
    if not _maybe_consume_signed_record(msg, host, peer_id):
        return False
    if len(seen) >= _RECORDS_SEEN_MAX:
        seen.clear()
    seen[key] = now
    return True


SUBSCRIPTION_QUEUE = 512


# --- multistream: bounded reads (GHSA-hmjq-g7pp-rw3x) -------------------------------------------
MULTISTREAM_MAX = 64 * 1024  # 0.8.2's bound; a protocol name is a few dozen bytes


async def bounded_read_delim(reader: Any) -> bytes:
    """py-libp2p's ``read_delim`` (one newline-terminated multistream message), refusing a
    length prefix over :data:`MULTISTREAM_MAX` before reading the body."""
    msg = await _varint.read_varint_prefixed_bytes_limited(reader, MULTISTREAM_MAX)
    if not msg:
        raise ParseError("empty multistream message")
    if msg[-1:] != b"\n":
        raise ParseError("multistream message is not newline-terminated")
    return msg[:-1]


# --- QUIC: the certificate's key signature is checked (GHSA-hrfr-7729-443m) ----------------------
_original_verify_certificate = _quic_security.PeerAuthenticator.verify_peer_certificate


def _verify_peer_certificate(self: Any, certificate: Any, expected_peer_id: Any = None) -> ID:
    peer_id = _original_verify_certificate(self, certificate, expected_peer_id)
    ext = next(e for e in certificate.extensions
               if e.oid == _quic_security.LIBP2P_TLS_EXTENSION_OID)  # the original found it
    public_key, signature = self.extension_handler.parse_signed_key_extension(ext)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public_key.verify(b"libp2p-tls-handshake:" + spki, signature):
        raise QUICPeerVerificationError("the certificate's libp2p key signature is invalid")
    return peer_id


# --- security: Noise only -----------------------------------------------------------------------
def security(key_pair: KeyPair) -> dict:
    """The ``sec_opt`` of every host we build: Noise alone (no plaintext, no secio, no TLS
    we do not test)."""
    return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair,
                                              noise_privkey=_new_x25519().private_key)}


# --- install ----------------------------------------------------------------------------------
class Traffic:
    """Every TCP byte this process's libp2p connections write and read (all its nodes
    together): for ``/metrics`` (:mod:`peer.metrics`)."""

    sent = 0
    received = 0


_tcp_write, _tcp_read = TrioTCPStream.write, TrioTCPStream.read


async def _counted_write(self: TrioTCPStream, data: bytes) -> None:
    Traffic.sent += len(data)
    await _tcp_write(self, data)


async def _counted_read(self: TrioTCPStream, n: int | None = None) -> bytes:
    data = await _tcp_read(self, n)
    Traffic.received += len(data)
    return data


_installed = False


def install() -> None:
    """Apply the process-wide changes above (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    _installed = True
    TrioManager.run_task = _run_task  # type: ignore[method-assign]
    libp2p_tasks.install()
    TrioTCPStream.write, TrioTCPStream.read = _counted_write, _counted_read  # type: ignore
    TrioManager.__init__ = _manager_init  # type: ignore[method-assign]
    _yamux.read_exactly = read_exactly_noting_headers
    _muxer_multistream.Yamux = BoundedYamux  # it builds yamux by this name, not from muxer_opt
    SwarmConn._handle_muxed_stream = _handle_muxed_stream  # type: ignore[method-assign]
    Swarm._handle_inbound_connection = handle_inbound_connection  # type: ignore[method-assign]
    Swarm.upgrade_inbound_raw_conn = upgrade_inbound  # type: ignore[method-assign]
    if os.environ.get("HG_YAMUX_EAGER_CREDIT") != "1" and \
            hasattr(_yamux.YamuxStream, "_auto_tune_and_send_window_update"):
        _yamux.YamuxStream._auto_tune_and_send_window_update = credit_in_halves
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")  # the same, should that not apply
    if getattr(_yamux, "MAX_MESSAGE_SIZE", 0) > NOISE_FRAME:
        _yamux.MAX_MESSAGE_SIZE = NOISE_FRAME
    _yamux.RTT_MEASURE_INTERVAL, _yamux._STALE_STREAM_SWEEP_INTERVAL = RTT_EVERY, SWEEP_EVERY
    _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_QUEUE
    for module in (_multiselect_communicator, _libp2p_utils, _varint):  # imported by name
        module.read_delim = bounded_read_delim
    _quic_security.PeerAuthenticator.verify_peer_certificate = _verify_peer_certificate
    for module in (_pubsub_module, _gossipsub_module):
        if getattr(module, "env_to_send_in_RPC", None) is _env_to_send_in_rpc:
            module.env_to_send_in_RPC = _cached_record_to_send
        if getattr(module, "maybe_consume_signed_record", None) is _maybe_consume_signed_record:
            module.maybe_consume_signed_record = _consume_record_once


def not_applied() -> list[str]:
    """The changes :func:`install` made that no longer hold (after it ran): each names a
    py-libp2p attribute that is not ours. Not empty means the installed py-libp2p moved
    something we patch: ``tests/test_node.py`` fails on it, so an upgrade cannot drop a
    fix silently."""
    checks = {
        "TrioManager.run_task": TrioManager.run_task is _run_task,
        "TrioManager.__init__ (children cap)": TrioManager.__init__ is _manager_init,
        "TrioManager._find_parent_task": libp2p_tasks.applied(),
        "yamux.read_exactly": _yamux.read_exactly is read_exactly_noting_headers,
        "muxer_multistream.Yamux": _muxer_multistream.Yamux is BoundedYamux,
        "SwarmConn._handle_muxed_stream":
            SwarmConn._handle_muxed_stream is _handle_muxed_stream,
        "Swarm._handle_inbound_connection":
            Swarm._handle_inbound_connection is handle_inbound_connection,
        "Swarm.upgrade_inbound_raw_conn": Swarm.upgrade_inbound_raw_conn is upgrade_inbound,
        "YamuxStream window credit": os.environ.get("HG_YAMUX_EAGER_CREDIT") == "1" or
            getattr(_yamux.YamuxStream, "_auto_tune_and_send_window_update", None)
            is credit_in_halves,
        "yamux.MAX_MESSAGE_SIZE": getattr(_yamux, "MAX_MESSAGE_SIZE", 0) == NOISE_FRAME,
        "yamux timers": getattr(_yamux, "RTT_MEASURE_INTERVAL", 0) == RTT_EVERY and
            getattr(_yamux, "_STALE_STREAM_SWEEP_INTERVAL", 0) == SWEEP_EVERY,
        "pubsub.SUBSCRIPTION_CHANNEL_SIZE":
            _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE == SUBSCRIPTION_QUEUE,
        "multistream read_delim": all(m.read_delim is bounded_read_delim for m in (
            _multiselect_communicator, _libp2p_utils, _varint)),
        "QUIC verify_peer_certificate":
            _quic_security.PeerAuthenticator.verify_peer_certificate
            is _verify_peer_certificate,
        "pubsub signed records": all(
            getattr(m, "env_to_send_in_RPC", None) is _cached_record_to_send and
            getattr(m, "maybe_consume_signed_record", None) is _consume_record_once
            for m in (_pubsub_module, _gossipsub_module)),
        "BoundedYamux hooks": all(hasattr(_yamux.Yamux, name) for name in (
            "_read_data_body", "read_stream", "_finalize_stream_locked",
            "_cleanup_on_error")),
    }
    return [name for name, ok in checks.items() if not ok]
