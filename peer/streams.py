"""Length-prefixed frames on libp2p streams, and doing stream I/O without cutting a frame.

py-libp2p's streams are fragile under trio cancellation (a Noise message cut in half
kills the whole connection): every read and write of ours goes through :func:`guarded`,
and a stream we give up on is :func:`reset`, shielded.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class StreamProtocolError(Exception):
    """A request over a stream failed: refused, too large, timed out or cut."""


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


RESET_LIMIT = 5.0  # s a reset may take (its RST frame waits for the connection's writer)
RESET_GRACE = 5.0  # s guarded I/O may go on after its stream was reset, then it is cut


async def reset(stream) -> None:
    """Reset ``stream`` (both directions), shielded but bounded: an RST is a frame like any
    other, and it waits for the connection's writer.

    py-libp2p 0.8.1's yamux forgets a reset stream's read event without setting it, so a
    task blocked reading the stream would wait forever; we set the event the stream has
    once it is marked closed, and that reader wakes to a closed stream (and
    :class:`peer.yamux.WakingEvents` sets any event yamux drops or replaces)."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + RESET_LIMIT):
        try:
            await stream.reset()
        except Exception:
            pass
    muxed = getattr(stream, "muxed_stream", None)
    events = getattr(getattr(muxed, "conn", None), "stream_events", None)
    event = events.get(getattr(muxed, "stream_id", None)) if isinstance(events, dict) else None
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
                # a reset ends any read or write py-libp2p does right; if it did not, cut
                # the I/O after a grace: a frame cut in half beats a task held for ever
                body.deadline = trio.current_time() + RESET_GRACE

    body = trio.CancelScope(shield=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        with body:
            try:
                state["result"] = await io()
            except Exception as exc:  # libp2p's own types too (close() raises them)
                state["error"] = exc if isinstance(exc, StreamProtocolError) else \
                    StreamProtocolError(repr(exc))
            finally:
                state["done"] = True
        if body.cancelled_caught and "result" not in state and "error" not in state:
            state["error"] = StreamProtocolError(f"{state['why']}, and the I/O outlived its "
                                                 f"reset (cut {RESET_GRACE:g} s after)")
            state["why"] = "cut"
        nursery.cancel_scope.cancel()
    if "error" in state:  # raised here, outside the nursery: no exception group
        why = state.get("why")
        raise StreamProtocolError("timed out" if why == "timed out" else str(state["error"]))
    return state["result"]
