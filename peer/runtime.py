"""Process plumbing shared by the daemons' command lines: logging, signal-driven shutdown,
and the network node's resource limits as flags."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import time
from collections.abc import Awaitable, Callable

import trio

from protocol.policy.ratelimit import LogLimiter

from .clock import SlackClock
from .limits import DEFAULT_LIMITS, Limits

log = logging.getLogger("hypergossip")


class StackLogLimit(logging.Filter):
    """At most one line a minute of each message py-libp2p logs (by logger and message
    template): what a hostile peer makes it say must not fill the disk. Our own loggers
    limit themselves, per peer and reason."""

    def __init__(self) -> None:
        super().__init__()
        self._limit = LogLimiter(60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("libp2p", "multiaddr")):
            return True
        return self._limit.allow((record.name, str(record.msg)[:80]), time.monotonic()) \
            is not None


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # py-libp2p logs routine connection churn at WARNING/ERROR; keep ours readable
    for noisy in ("libp2p", "multiaddr", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))
    quieter = StackLogLimit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quieter)


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

    trio.run(supervise, clock=SlackClock())  # timers coalesce: cheap idle peers
    # a stopped daemon must exit: if some library's non-daemon thread still holds the
    # interpreter after 5 s, dump every thread's stack to the log and exit anyway
    faulthandler.dump_traceback_later(5.0, exit=True)


def add_limit_args(p: argparse.ArgumentParser, d: Limits = DEFAULT_LIMITS) -> None:
    """Flags for :class:`peer.limits.Limits` (defaults from ``d``): what one remote may hold
    of this node at once, and how many connections it keeps."""
    g = p.add_argument_group("limits on what remote peers may hold of this node (beyond a "
                             "limit the input is refused and counted)")
    g.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                   help="connections in all; an inbound one beyond is refused before its "
                   "handshake (counted as 'connection limit'), and none admitted is ever "
                   "pruned (default: %(default)s)")
    g.add_argument("--dial-target", type=int, default=d.dial_target, metavar="N",
                   help="below this many connections, dial peers heard of through identify "
                   "and gossip, or named by the coordinator when those are too few, a few "
                   "every --dial-every seconds; 0: dial only --bootstrap (default: "
                   "%(default)s)")
    g.add_argument("--dial-every", type=float, default=d.dial_every, metavar="S",
                   help="seconds between the dialler's looks, jittered by +-50 %% "
                   "(default: %(default)s)")
    g.add_argument("--max-conns-per-ip", type=int, default=d.connections_per_ip, metavar="N",
                   help="inbound connections from one source address (default: %(default)s)")
    g.add_argument("--max-handshakes-per-ip", type=int, default=d.pending_per_ip, metavar="N",
                   help="inbound connections from one address still authenticating "
                   "(default: %(default)s)")
    g.add_argument("--max-handshakes", type=int, default=d.pending_total, metavar="N",
                   help="inbound connections authenticating at once, all addresses "
                   "(default: %(default)s)")
    g.add_argument("--handshake-timeout", type=float, default=d.handshake_timeout, metavar="S",
                   help="seconds an inbound connection has to authenticate (default: "
                   "%(default)s)")
    g.add_argument("--limit-loopback", action="store_true",
                   help="apply the per-address limits to 127.0.0.1 too (by default it is "
                   "exempt: a local testnet runs every peer there)")
    g.add_argument("--max-streams-per-conn", type=int, default=d.streams_per_connection,
                   metavar="N", help="inbound streams open at once on one connection "
                   "(default: %(default)s)")
    g.add_argument("--max-requests-per-peer", type=int, default=d.requests_per_peer,
                   metavar="N", help="request streams of one peer being read or answered at "
                   "once (default: %(default)s)")
    g.add_argument("--max-request-mib", type=int, default=d.request_bytes >> 20, metavar="MIB",
                   help="request bytes held at once, all peers together (default: "
                   "%(default)s)")
    g.add_argument("--gossip-rate", type=float, default=d.gossip_rate, metavar="MSGS",
                   help="gossip messages a second each forwarding peer may send us, with "
                   "bursts of 2 s of them (at least 200); beyond it they are dropped and the "
                   "peer's gossip score falls (default: %(default)s)")


def limits_from_args(args: argparse.Namespace) -> Limits:
    for name in ("max_streams_per_conn", "max_requests_per_peer", "max_request_mib",
                 "max_conns_per_ip", "max_handshakes_per_ip", "max_handshakes",
                 "max_connections"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.dial_target < 0:
        raise ValueError("--dial-target must not be negative")
    if args.gossip_rate <= 0 or args.handshake_timeout <= 0 or args.dial_every <= 0:
        raise ValueError("--gossip-rate, --handshake-timeout and --dial-every must be "
                         "positive")
    return Limits(max_connections=args.max_connections, dial_target=args.dial_target,
                  dial_every=args.dial_every,
                  connections_per_ip=args.max_conns_per_ip,
                  pending_per_ip=args.max_handshakes_per_ip,
                  pending_total=args.max_handshakes, handshake_timeout=args.handshake_timeout,
                  exempt_loopback=not args.limit_loopback,
                  streams_per_connection=args.max_streams_per_conn,
                  requests_per_peer=args.max_requests_per_peer,
                  request_bytes=args.max_request_mib << 20, gossip_rate=args.gossip_rate,
                  gossip_burst=max(DEFAULT_LIMITS.gossip_burst, 2 * args.gossip_rate))
