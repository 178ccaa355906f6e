"""The HTTP server under the AIM app: hypercorn's trio worker, bounded against slow clients.

hypercorn 0.18 writes each response with no deadline (``TCPServer.protocol_send``
shields ``send_all``), so a client that asks and never reads pins its answer
in memory for as long as it keeps the connection: 100 unread ``GET /peers``
held about 100 MB. Here every write must be taken by the client within
``write_timeout`` seconds, or the connection is closed and its buffers go;
and each read of a request must arrive within ``read_timeout`` (a request
trickled in a byte at a time, slowloris-style, is cut off the same way).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from hypercorn.trio import run as _hypercorn_run
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger("hypergossip.http")

WRITE_TIMEOUT = 10.0  # seconds a client has to take one write of its response
READ_TIMEOUT = 30.0  # seconds between two reads of a request (and of an idle connection)


class BoundedTCPServer(TCPServer):
    """hypercorn's connection, with a deadline on every write (``write_timeout`` on the
    config object) instead of a write that may wait for ever."""

    async def protocol_send(self, event: Any) -> None:
        if not isinstance(event, RawData):
            return await super().protocol_send(event)
        timeout = getattr(self.config, "write_timeout", WRITE_TIMEOUT)
        async with self.send_lock:
            try:
                with trio.move_on_after(timeout) as scope:
                    await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
                return
            if scope.cancelled_caught:  # half a write went out: the connection is done
                log.info("HTTP client too slow to read its answer (%g s); closing it",
                         timeout)
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()
                await self.protocol.handle(Closed())


def config(host: str, port: int, *, write_timeout: float = WRITE_TIMEOUT,
           read_timeout: float = READ_TIMEOUT) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{host}:{port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 1.0
    hc.read_timeout = max(1, round(read_timeout))
    hc.write_timeout = write_timeout  # read by BoundedTCPServer
    return hc


async def serve_http(app: Any, hc: HypercornConfig, *, shutdown_trigger: Any,
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """hypercorn's ``serve`` with :class:`BoundedTCPServer` connections."""
    _hypercorn_run.TCPServer = BoundedTCPServer  # it builds connections by this name
    await serve(app, hc, task_status=task_status, shutdown_trigger=shutdown_trigger)
