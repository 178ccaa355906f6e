"""Process plumbing shared by the daemons' command lines: logging and signal-driven shutdown."""

from __future__ import annotations

import faulthandler
import logging
import signal
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("hypergossip")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # py-libp2p logs routine connection churn at WARNING/ERROR; keep ours readable
    for noisy in ("libp2p", "multiaddr", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))


def run_until_signal(main: Callable[[], Awaitable[None]],
                     on_signal: Callable[[], None] | None = None) -> None:
    """Run ``main`` under trio; SIGINT/SIGTERM cancel it cleanly (no traceback).

    ``main`` returning on its own also ends the run.
    """

    async def watch(scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s received; shutting down", signal.Signals(signum).name)
                if on_signal is not None:
                    on_signal()
                scope.cancel()

    async def supervise() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            await main()
            nursery.cancel_scope.cancel()

    trio.run(supervise)
    # a stopped daemon must exit: if some library's non-daemon thread still holds the
    # interpreter after 5 s, dump every thread's stack to the log and exit anyway
    faulthandler.dump_traceback_later(5.0, exit=True)
