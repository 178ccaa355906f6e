"""Sessions: one long-lived stream from each peer to the coordinator.

Theory of operation
-------------------
Opening a stream in py-libp2p costs a yamux SYN/ACK, a multistream-select
negotiation each way and a FIN each way, every frame a Noise message and a
few trio task switches. A secure round sent each peer's five messages and
its long polls on fresh streams, which cost more CPU than the round's data.
A session is opened once, after enrolment, and carries everything between
one peer and the coordinator for as long as both stay up:

=====================  ==========================  ================================
direction              frame                       meaning
=====================  ==========================  ================================
peer -> coordinator    ``Submit{seq, envelope}``   a signed message, as on submit
coordinator -> peer    ``Ack{seq, accepted, ..}``  the verdict on ``Submit`` seq
coordinator -> peer    ``Push{envelope}``          a signed announcement, phase
                                                   notice, result, or the peer's
                                                   own personal message
=====================  ==========================  ================================

Frames are :func:`peer.streams.write_frame` frames (4-byte length, then a
msgpack tagged struct), size-capped on both sides. What travels is the same
signed envelopes as on gossip, pull and submit, verified the same way: the
session adds speed, not trust. On open the coordinator first pushes the
peer its head (the open round's announcement, notices and that peer's own
personal messages, and the latest result), so a peer that reconnects is
current at once.

Nothing here is needed for correctness: when a session is down, peers
submit on ``/hypergossip/submit`` and learn of rounds by gossip and pull,
exactly as before sessions existed.

Backpressure: the coordinator queues at most :data:`QUEUE` frames per
session and disconnects a peer that does not keep up (it reconnects and
resyncs from the head) rather than buffering for it without bound. A peer
has one session; a new one replaces the old.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Annotated

import msgspec
import trio

from protocol.wire.messages import PROTO_SESSION, SubmitAck, encode

from .node import NetworkNode
from .streams import (
    StreamProtocolError,
    grow_receive_window,
    read_frame,
    reset,
    write_frame,
    write_frames,
)

log = logging.getLogger("hypergossip.session")

QUEUE = 256  # frames queued per session before the coordinator drops a slow peer
RECEIVE_WINDOW = 2 * 1024 * 1024  # per session, at the coordinator: a masked vector in one go
PUSH_MAX = 8 * 1024 * 1024 + 1024  # a personal message may be this large
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # peer's reconnect backoff, seconds
HEALTHY_S = 10.0  # a session that lived this long resets the backoff
COALESCE = 256 * 1024  # frames queued for one peer are written together up to this size
WRITE_LIMIT = 120.0  # a single frame write that takes longer: the connection is dead anyway


class Submit(msgspec.Struct, tag="submit", forbid_unknown_fields=True, frozen=True):
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    envelope: bytes


class Ack(msgspec.Struct, tag="ack", forbid_unknown_fields=True, frozen=True):
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    accepted: bool
    reason: Annotated[str, msgspec.Meta(max_length=512)] = ""
    receipt: Annotated[bytes, msgspec.Meta(max_length=1024)] = b""


class Push(msgspec.Struct, tag="push", forbid_unknown_fields=True, frozen=True):
    envelope: bytes


class SessionDown(Exception):
    """The session is not up, or ended before the coordinator answered."""


# --- coordinator side ---------------------------------------------------------------------------
class _Session:
    def __init__(self, stream) -> None:
        self.stream = stream
        self.send, self.receive = trio.open_memory_channel[bytes](QUEUE)
        self.closed = False


class SessionHub:
    """The coordinator's end: accepts sessions, pushes to them, turns submits into acks.

    ``on_open(peer)`` returns the envelopes to push first (the head), or None to refuse
    the peer (not admitted). ``on_submit(envelope, peer)`` is the coordinator's usual
    verify-and-apply, returning the ack."""

    def __init__(self, node: NetworkNode, *, on_open: Callable[[str], list[bytes] | None],
                 on_submit: Callable[[bytes, str], SubmitAck], max_submit: int):
        self.on_open, self.on_submit = on_open, on_submit
        self.max_frame = max_submit + 1024
        self._sessions: dict[str, _Session] = {}
        self._decoder = msgspec.msgpack.Decoder(Submit)
        node.serve_stream(PROTO_SESSION, self._run)

    def peers(self) -> set[str]:
        return set(self._sessions)

    def queued(self) -> int:
        """Frames queued on every session, not yet written."""
        return sum(s.send.statistics().current_buffer_used for s in self._sessions.values())

    def push(self, peer: str, envelope: bytes) -> bool:
        """Queue ``envelope`` for ``peer``; False when it has no session (it will pull)."""
        session = self._sessions.get(peer)
        return session is not None and self._queue(peer, session, encode(Push(envelope)))

    def broadcast(self, envelope: bytes, peers: Iterable[str] | None = None) -> int:
        """Queue ``envelope`` for every session (or those of ``peers``); how many took it."""
        frame = encode(Push(envelope))
        targets = self._sessions if peers is None else {
            p: self._sessions[p] for p in peers if p in self._sessions}
        return sum(self._queue(p, s, frame) for p, s in list(targets.items()))

    def _queue(self, peer: str, session: _Session, frame: bytes) -> bool:
        try:
            session.send.send_nowait(frame)
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("session of %s is %s; dropping it (the peer resyncs on reconnect)",
                        peer, "behind" if not session.closed else "closed")
            self._drop(peer, session)
            return False

    def _drop(self, peer: str, session: _Session) -> None:
        session.closed = True
        session.send.close()
        if self._sessions.get(peer) is session:
            del self._sessions[peer]

    async def _run(self, stream, peer: str) -> None:
        head = self.on_open(peer)
        if head is None:
            log.info("session from %s refused: not admitted", peer)
            return
        # registered with its head before anything awaits: a broadcast from then on reaches
        # this session, and one from before is in the head. (Registering after the window
        # update below lost a round announcement sent in between: the peer, its session up,
        # did not pull, and missed the round.)
        session = _Session(stream)
        old = self._sessions.get(peer)
        if old is not None:
            self._drop(peer, old)
        self._sessions[peer] = session
        for wire in head:
            self._queue(peer, session, encode(Push(wire)))
        log.debug("session from %s open (%d head envelopes)", peer, len(head))
        # neither loop is ever cancelled mid-frame (see peer.streams.guarded): the reader ends
        # when the stream does, the writer when the queue is closed, and each ends the other
        try:
            await grow_receive_window(stream, RECEIVE_WINDOW)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, session)
                await self._read_loop(session, peer)
                self._drop(peer, session)
        finally:
            self._drop(peer, session)

    async def _write_loop(self, session: _Session) -> None:
        try:
            async for frame in session.receive:
                # whatever queued meanwhile (an ack and the notice it completed, a personal
                # message and its notice) goes in the same write
                frames, size = [frame], len(frame)
                while size < COALESCE:
                    try:
                        frames.append(session.receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    size += len(frames[-1])
                await write_frames(session.stream, frames)
        except StreamProtocolError as exc:
            log.debug("session write failed: %s", exc)
        finally:  # dropped (slow peer, or the reader ended): make sure the reader ends too
            session.closed = True
            await reset(session.stream)

    async def _read_loop(self, session: _Session, peer: str) -> None:
        while True:
            try:
                raw = await read_frame(session.stream, self.max_frame)
            except StreamProtocolError as exc:
                log.debug("session of %s ended: %s", peer, exc)
                return
            try:
                msg = self._decoder.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.warning("session of %s sent a malformed frame (%s); closing it", peer, exc)
                return
            ack = self.on_submit(msg.envelope, peer)
            if not self._queue(peer, session, encode(Ack(msg.seq, ack.accepted, ack.reason,
                                                              ack.receipt))):
                return


# --- peer side ------------------------------------------------------------------------------------
class SessionClient:
    """A peer's end: keeps one session to the coordinator open while :meth:`run` runs, hands
    every pushed envelope to ``on_push``, and submits envelopes with :meth:`submit`."""

    def __init__(self, node: NetworkNode, coordinator_id: str,
                 on_push: Callable[[bytes], None]):
        self.node, self.coordinator_id, self.on_push = node, coordinator_id, on_push
        self._stream = None
        self._write_lock = trio.Lock()
        self._seq = 0
        self._waiting: dict[int, list] = {}  # seq -> [event, ack or None]
        self._decoder = msgspec.msgpack.Decoder(Ack | Push)
        self.opened = 0  # sessions opened so far

    @property
    def up(self) -> bool:
        return self._stream is not None

    async def run(self) -> None:
        """Open the session, read it until it ends, reopen with backoff; forever."""
        delay = RETRY_MIN
        while True:
            started = time.monotonic()
            try:
                stream = await self.node.open_stream(self.coordinator_id, PROTO_SESSION)
            except StreamProtocolError as exc:
                log.debug("session to the coordinator not opened: %s", exc)
            else:
                self._stream, self.opened = stream, self.opened + 1
                log.debug("session to the coordinator open")
                try:
                    await self._read_loop(stream)
                finally:
                    self._stream = None
                    for waiter in self._waiting.values():
                        waiter[0].set()  # without an ack: the caller falls back
                    self._waiting.clear()
                    await reset(stream)
                if time.monotonic() - started > HEALTHY_S:
                    delay = RETRY_MIN
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _read_loop(self, stream) -> None:
        while True:
            try:
                raw = await read_frame(stream, PUSH_MAX)
                msg = self._decoder.decode(raw)
            except (StreamProtocolError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.info("session to the coordinator ended: %s", exc)
                return
            if isinstance(msg, Push):
                self.on_push(msg.envelope)
            elif (waiter := self._waiting.pop(msg.seq, None)) is not None:
                waiter[1] = SubmitAck(accepted=msg.accepted, reason=msg.reason,
                                      receipt=msg.receipt)
                waiter[0].set()

    async def submit(self, envelope: bytes, *, timeout: float = 30.0) -> SubmitAck:
        """Send a signed envelope and wait for its ack; :class:`SessionDown` if the session is
        not up or ends first (the caller then submits another way)."""
        stream = self._stream
        if stream is None:
            raise SessionDown("no session")
        self._seq += 1
        seq, waiter = self._seq, [trio.Event(), None]
        self._waiting[seq] = waiter
        try:
            with trio.move_on_after(timeout):
                # the write itself is never cancelled mid-frame (see peer.streams.guarded);
                # yamux bounds it (no window for 5 s raises), and so does WRITE_LIMIT
                with trio.CancelScope(shield=True), trio.move_on_after(WRITE_LIMIT):
                    async with self._write_lock:
                        await write_frame(stream, encode(Submit(seq, envelope)))
                await waiter[0].wait()
        except StreamProtocolError as exc:  # the stream broke under the write
            raise SessionDown(f"session write failed: {exc}") from exc
        finally:
            self._waiting.pop(seq, None)
        if waiter[1] is None:
            raise SessionDown("session ended (or timed out) before the ack")
        return waiter[1]
