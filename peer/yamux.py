"""py-libp2p's yamux as we run it: receive windows enforced, credit in halves, frames
that fit one Noise message (see the table in :mod:`peer.libp2p_patches`, whose
:func:`~peer.libp2p_patches.install` puts these in place).
"""

from __future__ import annotations

import struct
import weakref
from typing import Any

from libp2p.custom_types import TProtocol
from libp2p.network.connection.exceptions import RawConnError
from libp2p.stream_muxer.yamux import yamux as _yamux

from .faults import faults_of, peer_name


# --- yamux: receive windows enforced --------------------------------------------------------------
class WindowExceeded(RawConnError):
    """The remote sent more on a stream than the receive window we granted it."""


_headers: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
_original_read_exactly = _yamux.read_exactly


async def read_exactly_noting_headers(conn: Any, n: int) -> bytes:
    data = await _original_read_exactly(conn, n)
    if n == _yamux.HEADER_SIZE:  # the frame header handle_incoming just read (or a
        _headers[conn] = data  # 12-byte body, read only after the check that needs it)
    return data


class WakingEvents(dict):
    """A connection's per-stream read events, which wake their waiters when dropped.

    py-libp2p removes a stream's event (a stream finalised, a reset, a cleanup) without
    setting it in several places, and a reader that woke while the stream was being reset
    makes itself a fresh one; a task blocked on a removed or replaced event waited for ever
    (the coordinator's blob fetch hung that way, about one test run in three). Here every
    event that leaves the dict, or is replaced in it, is set: its waiter wakes, looks at
    the stream again and returns or raises. A spurious wake costs one loop."""

    def __setitem__(self, key: Any, value: Any) -> None:
        old = self.get(key)
        if old is not None and old is not value:
            old.set()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        event = self.get(key)
        super().__delitem__(key)
        if event is not None:
            event.set()

    def pop(self, key: Any, *default: Any) -> Any:
        event = super().pop(key, *default)
        if event is not None:
            event.set()
        return event

    def clear(self) -> None:
        for event in self.values():
            event.set()
        super().clear()


class BoundedYamux(_yamux.Yamux):
    """py-libp2p's yamux with the receive window enforced.

    Before a DATA frame's body is read, its length is checked against the window we granted
    on its stream: the stream's ``recv_window`` (what is left of every credit we sent), or,
    for a frame that opens a stream, yamux's initial 256 KiB. A frame over it closes the
    connection, counted in the node's faults. ``buffered_max`` records the most any stream
    of this connection ever held unread (tests read it: bytes, not time)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stream_events = WakingEvents(self.stream_events)
        self.buffered_max = 0
        self.violations = 0
        self._cleaned = False

    def _granted(self, flags: int, stream_id: int) -> int:
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream.recv_window
        if flags & _yamux.FLAG_SYN:
            return _yamux.DEFAULT_WINDOW_SIZE
        return 1 << 62  # no such stream: the body is read and dropped, nothing is held

    async def _read_data_body(self, length: int) -> bytes:
        header = _headers.get(self.secured_conn)
        if header is not None:
            _, _, flags, stream_id, _ = struct.unpack(_yamux.YAMUX_HEADER_FORMAT, header)
            granted = self._granted(flags, stream_id)
            if length > granted:
                self.violations += 1
                exc = WindowExceeded(f"{length}-byte DATA frame on stream {stream_id}, whose "
                                     f"receive window is {granted}")
                faults_of(getattr(self, "swarm", None)).record("yamux window",
                                                               peer_name(self.peer_id), exc)
                await self._cleanup_on_error()  # close it before reading any of the body
                raise exc
            buffered = len(self.stream_buffers.get(stream_id, b"")) + length
            self.buffered_max = max(self.buffered_max, buffered)
        return await super()._read_data_body(length)

    async def read_stream(self, stream_id: int, n: int = -1) -> bytes:
        """py-libp2p's, which re-creates a stream's read event after waking even when the
        stream was removed meanwhile: one Event left behind on the connection for every
        stream reset under a waiting reader, for the connection's life."""
        try:
            return await super().read_stream(stream_id, n)
        finally:
            if stream_id not in self.streams:
                self.stream_events.pop(stream_id, None)

    def _finalize_stream_locked(self, stream: Any, *, fully_closed: bool) -> None:
        """A reset stream (by either side) is dropped with whatever it still buffered:
        py-libp2p kept a reset stream's unread data for a minute's grace, so a peer that
        opened streams, filled their windows and reset them held 256 KiB per stream (a
        meshsub flood pinned 31 MB that way)."""
        if fully_closed and stream.reset_received:
            self.stream_buffers.pop(stream.stream_id, None)
        super()._finalize_stream_locked(stream, fully_closed=fully_closed)

    async def _cleanup_on_error(self) -> None:  # once: the error can reach it twice
        if not self._cleaned:
            self._cleaned = True
            await super()._cleanup_on_error()


def muxers() -> dict:
    """The ``muxer_opt`` of every host we build: yamux alone (:func:`install` makes every
    yamux connection a :class:`BoundedYamux`)."""
    return {TProtocol(_yamux.PROTOCOL_ID): BoundedYamux}


# --- yamux: credit in halves, frames that fit one Noise message -------------------------------
# py-libp2p's yamux returns receive window to the sender (a WINDOW_UPDATE frame, each a
# Noise message, a socket write and several task switches) after nearly every read: its
# "partial slack" rule credits any consumed bytes below its half-window threshold at once,
# so a length-prefixed message read as prefix then body sent two updates, and a small
# request and its answer cost three extra frames. go-yamux credits only once half the
# window is consumed, and so do we: a sender can always send up to the window, it never
# waits on credit the receiver holds back, since whoever drains the window gets it all
# back. Its auto-tuning (doubling the window for fast bulk readers) is kept. The rule is the
# receiver's alone: senders need not run it. ``HG_YAMUX_EAGER_CREDIT=1`` keeps py-libp2p's
# rule, to compare the two (``scripts/bench/secagg.py``: about 13 % less CPU for a secure
# round at N=100 with ours, the same round's wall time about 7 % shorter).
async def credit_in_halves(self: Any, *, bytes_read: int = 0) -> None:
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta < self.target_recv_window // 2:  # nothing, or too little, to give back yet
            return
        self.recv_window += delta
        delta += self._apply_autotune_epoch(buffered)
    await self.send_window_update(delta, skip_lock=True)


# Its data frames carry up to 64 KiB, so with the 12-byte frame header each one is two Noise
# messages (at most 65519 bytes of plaintext each), the second of 29 bytes; frames that fit
# one Noise message cut the messages (and their reads, decryptions and syscalls) of a bulk
# transfer by almost half. Frame size is the sender's choice in yamux: peers need not agree.
NOISE_FRAME = 65535 - 16 - 12


# --- yamux: the per-connection timers, every 2 minutes -------------------------------------------
# py-libp2p wakes each connection twice every 30 s: an RTT ping (its RTT paces only the
# window auto-tuning's epochs, and the first ping, 0.5 s after the connection opens, gives
# it) and a sweep of fully closed streams' bookkeeping. A coordinator of 1,000 peers woke 67
# times a second for them: 0.6 ms of CPU per peer in a 94-s SecAgg+ round at N=1,000, and
# 0.06 ms/s of an idle peer's ~1 ms/s (``scripts/bench/scale.py --task-profile``). Every
# 120 s here; a closed stream's bookkeeping then waits up to 3 minutes instead of 1.5
# (a reset one's buffer is dropped at once: BoundedYamux).
RTT_EVERY = 120.0
SWEEP_EVERY = 120.0
